-- amebo 1.5, whole: every object of the extension, defined once with all its attributes
-- (body, SECURITY DEFINER, search_path, privileges), grouped by module. The Makefile copies
-- this file to amebo--1.5.sql for CREATE EXTENSION. A database on an older version takes the
-- delta scripts instead (amebo--1.0--1.1.sql ... amebo--1.4--1.5.sql);
-- test/scripts/upgrade_compare.sh checks that both roads end in the same catalogs.
--
-- Schema amebo holds what users call; amebo_internal holds the functions only amebo calls
-- (trigger functions, the background worker's steps, helpers of other functions).
\echo Use "CREATE EXTENSION amebo" to load this file. \quit

-------------------------------------------------------------------------------------------
-- Schemas and roles
-------------------------------------------------------------------------------------------

-- Three roles, each including the one before it (admin is a member of writer, writer of
-- reader), so that a login role needs one GRANT and every privilege is granted once:
--   amebo_reader  reads events, snapshots, states, the registry (without secrets), status;
--   amebo_writer  also appends events and saves snapshots (load_state then saves them too);
--   amebo_admin   also manages applications (and their secrets), actions, reducers,
--                 projections and subscriptions.
-- Roles belong to the cluster, the extension to one database: they are created only when
-- missing (a second database's CREATE EXTENSION finds them), and DROP EXTENSION leaves them.
-- Nobody but the tables' owner (the role that created the extension) writes amebo's tables:
-- writes go through functions. Those written in SQL are SECURITY DEFINER with
-- search_path = pg_catalog, pg_temp; the C functions either write through PostgreSQL's heap
-- and index routines directly (append_event: no search_path, no per-call setting to save
-- and restore) or switch to the owner themselves only around their own table access
-- (src/pg/owner_access.hpp). Users' code (projection handlers and resets, reducers) always
-- runs as the calling role, never as the owner. PUBLIC gets nothing (see the end).

DO $roles$
DECLARE
    role_name text;
    member_of text[][] := ARRAY[['amebo_writer', 'amebo_reader'], ['amebo_admin', 'amebo_writer']];
BEGIN
    FOREACH role_name IN ARRAY ARRAY['amebo_reader', 'amebo_writer', 'amebo_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = role_name) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;
    FOR i IN 1 .. pg_catalog.array_length(member_of, 1) LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m
                       WHERE m.member = member_of[i][1]::regrole
                         AND m.roleid = member_of[i][2]::regrole) THEN
            EXECUTE pg_catalog.format('GRANT %I TO %I', member_of[i][2], member_of[i][1]);
        END IF;
    END LOOP;
END
$roles$;

-- The user API: readers may look names up in it.
REVOKE ALL ON SCHEMA amebo FROM PUBLIC;
GRANT USAGE ON SCHEMA amebo TO amebo_reader;

-- The functions only amebo calls. amebo_admin looks up lock_projection and
-- mark_projection_running, which resume_projection (running as its caller) calls; no role
-- may execute any other.
CREATE SCHEMA amebo_internal;
COMMENT ON SCHEMA amebo_internal IS
    'amebo: functions only amebo itself calls (not a stable interface)';
GRANT USAGE ON SCHEMA amebo_internal TO amebo_admin;

-------------------------------------------------------------------------------------------
-- Store: events
-------------------------------------------------------------------------------------------

-- Global order of all events. No CACHE: read_all's horizon relies on positions being handed
-- out in sequence order (see src/store/inflight.hpp).
CREATE SEQUENCE amebo.events_position_seq AS bigint NO CYCLE;
SELECT pg_catalog.pg_extension_config_dump('amebo.events_position_seq', '');

-- Every event, immutable once appended. Written only by amebo.append_event(s).
CREATE TABLE amebo.events (
    position       bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    stream         text        NOT NULL,
    version        bigint      NOT NULL,
    action         text        NOT NULL,
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL,
    -- the schema version the payload was validated against (NULL: none)
    schema_version integer,
    -- read_all pages by position.
    CONSTRAINT events_pkey PRIMARY KEY (position),
    -- read_stream, stream_version and the append path's head lookup; also the guard that
    -- no stream ever holds two events with one version.
    CONSTRAINT events_stream_version_key UNIQUE (stream, version),
    -- Idempotent retries look events up by id.
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);
ALTER SEQUENCE amebo.events_position_seq OWNED BY amebo.events.position;
COMMENT ON TABLE amebo.events IS 'amebo: every appended event, in global position order';
SELECT pg_catalog.pg_extension_config_dump('amebo.events', '');
GRANT SELECT ON amebo.events TO amebo_reader;

-- Refuses UPDATE, DELETE and TRUNCATE of events, for every role including the owner (AM003),
-- except the removals and redactions of the section "Retention, deletion, erasure", which
-- only amebo's own C code can let through (src/store/removal.cpp).
CREATE FUNCTION amebo_internal.refuse_event_change() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'amebo_refuse_event_change';

-- Events are immutable.
CREATE TRIGGER events_immutable
    BEFORE UPDATE OR DELETE OR TRUNCATE ON amebo.events
    FOR EACH STATEMENT EXECUTE FUNCTION amebo_internal.refuse_event_change();

-- Appends one event to a stream; returns the stream's new version.
CREATE FUNCTION amebo.append_event(stream text, action text, payload jsonb,
                                   expected_version bigint DEFAULT NULL,
                                   metadata jsonb DEFAULT NULL,
                                   event_id uuid DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'amebo_append_event' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION amebo.append_event(text, text, jsonb, bigint, jsonb, uuid) IS
    'appends one event to a stream; returns the stream''s new version';
GRANT EXECUTE ON FUNCTION amebo.append_event(text, text, jsonb, bigint, jsonb, uuid) TO amebo_writer;

-- Appends a JSON array of events to a stream atomically.
CREATE FUNCTION amebo.append_events(stream text, events jsonb,
                                    expected_version bigint DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'amebo_append_events' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION amebo.append_events(text, jsonb, bigint) IS
    'appends a JSON array of events to a stream atomically; returns the stream''s new version';
GRANT EXECUTE ON FUNCTION amebo.append_events(text, jsonb, bigint) TO amebo_writer;

-- The number of events in a stream.
CREATE FUNCTION amebo.stream_version(stream text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'amebo_stream_version' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION amebo.stream_version(text) IS
    'the number of events in a stream (0 when empty)';
GRANT EXECUTE ON FUNCTION amebo.stream_version(text) TO amebo_reader;

-- A stream's events after a version.
CREATE FUNCTION amebo.read_stream(stream text, after_version bigint DEFAULT 0,
                                  max_count integer DEFAULT NULL)
RETURNS SETOF amebo.events
AS 'MODULE_PATHNAME', 'amebo_read_stream' LANGUAGE C STABLE PARALLEL SAFE ROWS 100;
COMMENT ON FUNCTION amebo.read_stream(text, bigint, integer) IS
    'a stream''s events after a version, in version order';
GRANT EXECUTE ON FUNCTION amebo.read_stream(text, bigint, integer) TO amebo_reader;

-- Committed events after a position, never skipping a late commit.
CREATE FUNCTION amebo.read_all(after_position bigint DEFAULT 0, max_count integer DEFAULT 1000,
                               actions text[] DEFAULT NULL, since timestamptz DEFAULT NULL,
                               payload_filter jsonb DEFAULT NULL)
RETURNS SETOF amebo.events
AS 'MODULE_PATHNAME', 'amebo_read_all' LANGUAGE C VOLATILE ROWS 1000;
COMMENT ON FUNCTION amebo.read_all(bigint, integer, text[], timestamptz, jsonb) IS
    'committed events after a position, in position order, never skipping a late commit';
GRANT EXECUTE ON FUNCTION amebo.read_all(bigint, integer, text[], timestamptz, jsonb) TO amebo_reader;

-- Open transactions that appended events and hold read_all back.
CREATE FUNCTION amebo.inflight_appends(OUT pid integer, OUT first_position bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'amebo_inflight_appends' LANGUAGE C VOLATILE ROWS 10;
COMMENT ON FUNCTION amebo.inflight_appends() IS
    'open transactions that appended events, which hold read_all back at their first position';
GRANT EXECUTE ON FUNCTION amebo.inflight_appends() TO amebo_reader;

-- A new time-ordered event id (UUID version 7).
CREATE FUNCTION amebo.new_event_id()
RETURNS uuid
AS 'MODULE_PATHNAME', 'amebo_new_event_id' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION amebo.new_event_id() IS
    'a new time-ordered event id (UUID version 7), as append_event generates';
GRANT EXECUTE ON FUNCTION amebo.new_event_id() TO amebo_reader;

-- Every position at or below this is settled: committed and visible, or never to commit.
CREATE FUNCTION amebo.settled_position() RETURNS bigint
AS 'MODULE_PATHNAME', 'amebo_settled_position' LANGUAGE C VOLATILE;
GRANT EXECUTE ON FUNCTION amebo.settled_position() TO amebo_reader;

-- The settled position for hot standbys (see src/store/settled_horizon.hpp): the primary's
-- worker writes amebo.settled_position() here when it advanced, at most every
-- amebo.standby_horizon_interval (its first publication inserts the row). A standby that
-- replayed this row's commit has replayed the commit of every event at or below position, so
-- its read_all stops there.
CREATE TABLE amebo.settled_horizon (
    singleton    boolean     NOT NULL DEFAULT true,
    position     bigint      NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT settled_horizon_pkey PRIMARY KEY (singleton),
    CONSTRAINT settled_horizon_singleton_check CHECK (singleton)
);
SELECT pg_catalog.pg_extension_config_dump('amebo.settled_horizon', '');
GRANT SELECT ON amebo.settled_horizon TO amebo_reader;

-------------------------------------------------------------------------------------------
-- Registry: applications, actions and their JSON Schemas
-------------------------------------------------------------------------------------------

-- Services that publish or consume events. The secret signs webhooks (Standard Webhooks);
-- after a rotation the previous secret signs too, until previous_secret_expires_at.
CREATE TABLE amebo.applications (
    name       text        NOT NULL,
    address    text,
    secret     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    CONSTRAINT applications_pkey PRIMARY KEY (name),
    CONSTRAINT applications_name_check CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$')
);

SELECT pg_catalog.pg_extension_config_dump('amebo.applications', '');
-- Readers see every column but the secret.
GRANT SELECT (name, address, created_at, updated_at) ON amebo.applications TO amebo_reader;
GRANT SELECT ON amebo.applications TO amebo_admin;

-- Event types, each owned by an application; schema_version 0 means "no schema".
CREATE TABLE amebo.actions (
    action         text        NOT NULL,
    application    text        NOT NULL,
    compatibility  text        NOT NULL DEFAULT 'none',
    schema_version integer     NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT actions_pkey PRIMARY KEY (action),
    CONSTRAINT actions_application_fkey FOREIGN KEY (application)
        REFERENCES amebo.applications (name) ON UPDATE CASCADE,
    CONSTRAINT actions_name_check
        CHECK (action ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$' AND length(action) <= 255),
    CONSTRAINT actions_compatibility_check CHECK (compatibility IN ('none', 'backward'))
);

-- Listing an application's actions and the foreign key's checks on drop.
CREATE INDEX actions_application_idx ON amebo.actions (application);
SELECT pg_catalog.pg_extension_config_dump('amebo.actions', '');
GRANT SELECT ON amebo.actions TO amebo_reader;

-- Every schema an action has had; the action's schema_version names the current one.
CREATE TABLE amebo.action_schemas (
    action     text        NOT NULL,
    version    integer     NOT NULL,
    schema     jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT action_schemas_pkey PRIMARY KEY (action, version),
    CONSTRAINT action_schemas_action_fkey FOREIGN KEY (action)
        REFERENCES amebo.actions (action) ON DELETE CASCADE
);

SELECT pg_catalog.pg_extension_config_dump('amebo.action_schemas', '');
GRANT SELECT ON amebo.action_schemas TO amebo_reader;

-- Compiles a JSON Schema (draft 7); raises AM007 with the parser's reason if it is broken.
CREATE FUNCTION amebo.check_schema(schema jsonb) RETURNS void
AS 'MODULE_PATHNAME', 'amebo_check_schema' LANGUAGE C STABLE PARALLEL SAFE;
GRANT EXECUTE ON FUNCTION amebo.check_schema(jsonb) TO amebo_reader;

-- The ways a document fails a schema: a JSON Pointer and the rule, most specific first.
CREATE FUNCTION amebo.schema_violations(schema jsonb, document jsonb,
                                        OUT path text, OUT rule text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'amebo_schema_violations' LANGUAGE C STABLE PARALLEL SAFE;
GRANT EXECUTE ON FUNCTION amebo.schema_violations(jsonb, jsonb) TO amebo_reader;

-- Why new_schema may reject a payload old_schema accepted (empty: backward compatible).
CREATE FUNCTION amebo.schema_incompatibilities(old_schema jsonb, new_schema jsonb)
RETURNS text[]
AS 'MODULE_PATHNAME', 'amebo_schema_incompatibilities' LANGUAGE C IMMUTABLE PARALLEL SAFE;
GRANT EXECUTE ON FUNCTION amebo.schema_incompatibilities(jsonb, jsonb) TO amebo_reader;

-- A new webhook secret: "whsec_" and the base64 of 32 random bytes.
CREATE FUNCTION amebo_internal.generate_secret() RETURNS text
AS 'MODULE_PATHNAME', 'amebo_generate_secret' LANGUAGE C VOLATILE PARALLEL SAFE;

-- Tells every backend, at commit, to drop its cached action rules and inline projections.
CREATE FUNCTION amebo_internal.registry_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'amebo_registry_changed' LANGUAGE C;

-- Backends cache the action rules: tell them when actions or schemas change.
CREATE TRIGGER actions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON amebo.actions
    FOR EACH STATEMENT EXECUTE FUNCTION amebo_internal.registry_changed();
CREATE TRIGGER action_schemas_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON amebo.action_schemas
    FOR EACH STATEMENT EXECUTE FUNCTION amebo_internal.registry_changed();

-- Raises 22023 unless name is a valid application name.
CREATE FUNCTION amebo_internal.check_application_name(name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'application name must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF name !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid application name "%"', name USING ERRCODE = '22023',
            HINT = 'An application name is 1 to 63 lower-case letters, digits, "_" or "-", starting with a letter.';
    END IF;
END
$$;

-- Raises 22023 unless address is NULL or an http(s) URL.
CREATE FUNCTION amebo_internal.check_application_address(address text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
BEGIN
    IF address IS NOT NULL AND address !~ '^https?://[^\s/?#@]+(/[^\s]*)?$' THEN
        RAISE EXCEPTION 'invalid application address "%"', address USING ERRCODE = '22023',
            HINT = 'An address is an http:// or https:// URL without user information.';
    END IF;
END
$$;

-- Raises 22023 unless secret is whsec_ and the base64 of 24 to 64 bytes.
CREATE FUNCTION amebo_internal.check_secret(secret text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    key bytea;
BEGIN
    BEGIN
        key := decode(substr(secret, 7), 'base64');
    EXCEPTION WHEN OTHERS THEN
        key := NULL;
    END;
    IF secret !~ '^whsec_[A-Za-z0-9+/]+={0,2}$' OR key IS NULL
       OR length(key) NOT BETWEEN 24 AND 64 THEN
        RAISE EXCEPTION 'invalid secret' USING ERRCODE = '22023',
            HINT = 'A secret is "whsec_" followed by the base64 of 24 to 64 random bytes; omit it to have one generated.';
    END IF;
END
$$;

-- Registers an application; returns its secret (generated when none is given). The
-- functions that take a secret keep an error they raise from logging the statement
-- (with the secret in it): the error is reported while their settings still hold.
CREATE FUNCTION amebo.create_application(name text, address text DEFAULT NULL,
                                         secret text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic AS $$
DECLARE
    stored text := coalesce(secret, amebo_internal.generate_secret());
BEGIN
    PERFORM amebo_internal.check_application_name(name);
    PERFORM amebo_internal.check_application_address(address);
    PERFORM amebo_internal.check_secret(stored);
    INSERT INTO amebo.applications (name, address, secret) VALUES (name, address, stored);
    RETURN stored;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'application "%" already exists', name USING ERRCODE = '42710';
END
$$;
GRANT EXECUTE ON FUNCTION amebo.create_application(text, text, text) TO amebo_admin;

-- Changes an application's address; NULL clears it.
CREATE FUNCTION amebo.update_application(name text, address text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM amebo_internal.check_application_address(address);
    UPDATE amebo.applications a SET address = update_application.address, updated_at = now()
    WHERE a.name = update_application.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'application "%" does not exist', name USING ERRCODE = '42704';
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.update_application(text, text) TO amebo_admin;

-- Raises 22023 unless overlap (how long a replaced secret keeps signing) is 0 to 30 days.
CREATE FUNCTION amebo_internal.check_secret_overlap(overlap interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
BEGIN
    IF overlap IS NULL THEN
        RAISE EXCEPTION 'overlap must not be NULL' USING ERRCODE = '22004',
            HINT = 'Pass interval ''0'' to stop signing with the replaced secret at once.';
    END IF;
    IF overlap < interval '0' OR overlap > interval '30 days' THEN
        RAISE EXCEPTION 'overlap % is out of range', overlap USING ERRCODE = '22023',
            DETAIL = 'The replaced secret may keep signing for 0 to 30 days.';
    END IF;
END
$$;

-- Replaces an application's secret (a new random one when none is given); returns it.
-- During overlap the worker signs with both the new and the replaced secret (two signatures
-- in webhook-signature), so that receivers can switch at their pace; after it, with the new
-- one only. A rotation during an overlap ends it: only the secret just replaced stays valid.
-- Rotating to the secret already in use changes nothing (a retried rotation keeps its overlap).
CREATE FUNCTION amebo.rotate_application_secret(name text, secret text DEFAULT NULL,
                                                overlap interval DEFAULT '24 hours')
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic AS $$
DECLARE
    stored text := coalesce(secret, amebo_internal.generate_secret());
BEGIN
    PERFORM amebo_internal.check_secret(stored);
    PERFORM amebo_internal.check_secret_overlap(overlap);
    UPDATE amebo.applications a
    SET previous_secret = CASE WHEN overlap > interval '0' THEN a.secret END,
        previous_secret_expires_at = CASE WHEN overlap > interval '0' THEN now() + overlap END,
        secret = stored, updated_at = now()
    WHERE a.name = rotate_application_secret.name AND a.secret <> stored;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM amebo.applications a
                                 WHERE a.name = rotate_application_secret.name) THEN
        RAISE EXCEPTION 'application "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    RETURN stored;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.rotate_application_secret(text, text, interval) TO amebo_admin;

-- Removes an application; with cascade also its actions and subscriptions, otherwise they
-- must be gone.
CREATE FUNCTION amebo.drop_application(name text, cascade boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owned integer;
    subscribed integer;
BEGIN
    PERFORM 1 FROM amebo.applications a WHERE a.name = drop_application.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'application "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    SELECT count(*) INTO owned FROM amebo.actions WHERE application = drop_application.name;
    SELECT count(*) INTO subscribed FROM amebo.subscriptions s
    WHERE s.application = drop_application.name;
    IF (owned > 0 OR subscribed > 0) AND NOT cascade THEN
        RAISE EXCEPTION 'application "%" still owns % action(s) and % subscription(s)', name,
            owned, subscribed
            USING ERRCODE = '2BP01', HINT = 'Drop them first, or pass cascade => true.';
    END IF;
    DELETE FROM amebo.actions WHERE application = drop_application.name;
    DELETE FROM amebo.applications a WHERE a.name = drop_application.name;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.drop_application(text, boolean) TO amebo_admin;

-- Applications without their secrets.
CREATE VIEW amebo.application_list AS
SELECT a.name, a.address, a.created_at, a.updated_at,
       (SELECT count(*) FROM amebo.actions x WHERE x.application = a.name) AS actions
FROM amebo.applications a;

GRANT SELECT ON amebo.application_list TO amebo_reader;

-- An application's secret (amebo_admin only).
CREATE FUNCTION amebo.application_secret(name text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.secret FROM amebo.applications a WHERE a.name = application_secret.name
$$;
GRANT EXECUTE ON FUNCTION amebo.application_secret(text) TO amebo_admin;

COMMENT ON FUNCTION amebo.application_secret(text) IS
    'an application''s webhook secret (amebo_admin only)';

-- Raises 22023 unless action is a valid registered action name.
CREATE FUNCTION amebo_internal.check_action_name(action text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
BEGIN
    IF action IS NULL THEN
        RAISE EXCEPTION 'action must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF action !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$' OR length(action) > 255 THEN
        RAISE EXCEPTION 'invalid action name "%"', action USING ERRCODE = '22023',
            HINT = 'An action name is dotted lower-case words of letters, digits and "_", such as user.created.';
    END IF;
END
$$;

-- Stores schema as the action's next version, checking it compiles and, in backward mode,
-- that it accepts every payload the current version accepts; returns the new version.
CREATE FUNCTION amebo_internal.add_action_schema(action text, schema jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    current amebo.actions;
    previous jsonb;
    reasons text[];
BEGIN
    PERFORM amebo.check_schema(schema);
    SELECT * INTO current FROM amebo.actions a WHERE a.action = add_action_schema.action FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'action "%" does not exist', action USING ERRCODE = '42704';
    END IF;
    IF current.compatibility = 'backward' AND current.schema_version > 0 THEN
        SELECT s.schema INTO previous FROM amebo.action_schemas s
        WHERE s.action = current.action AND s.version = current.schema_version;
        reasons := amebo.schema_incompatibilities(previous, schema);
        IF cardinality(reasons) > 0 THEN
            RAISE EXCEPTION 'schema version % of action "%" is not backward compatible with version %',
                current.schema_version + 1, action, current.schema_version
                USING ERRCODE = 'AM006', DETAIL = array_to_string(reasons, '; '),
                      HINT = 'Payloads valid under the current schema must stay valid; or set compatibility => ''none''.';
        END IF;
    END IF;
    INSERT INTO amebo.action_schemas (action, version, schema)
    VALUES (current.action, current.schema_version + 1, schema);
    UPDATE amebo.actions a SET schema_version = current.schema_version + 1, updated_at = now()
    WHERE a.action = current.action;
    RETURN current.schema_version + 1;
END
$$;

-- Registers an action of an application, optionally with a schema (version 1); returns the
-- schema version (0 without a schema).
CREATE FUNCTION amebo.create_action(action text, application text, schema jsonb DEFAULT NULL,
                                    compatibility text DEFAULT 'none')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM amebo_internal.check_action_name(action);
    IF compatibility IS NULL OR compatibility NOT IN ('none', 'backward') THEN
        RAISE EXCEPTION 'invalid compatibility "%"', compatibility USING ERRCODE = '22023',
            HINT = 'Use ''none'' or ''backward''.';
    END IF;
    PERFORM 1 FROM amebo.applications a WHERE a.name = create_action.application FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'application "%" does not exist', application USING ERRCODE = '42704',
            HINT = 'Create it with amebo.create_application().';
    END IF;
    IF schema IS NOT NULL THEN
        PERFORM amebo.check_schema(schema);
    END IF;
    BEGIN
        INSERT INTO amebo.actions (action, application, compatibility)
        VALUES (action, application, compatibility);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'action "%" already exists', action USING ERRCODE = '42710';
    END;
    IF schema IS NULL THEN
        RETURN 0;
    END IF;
    RETURN amebo_internal.add_action_schema(action, schema);
END
$$;
GRANT EXECUTE ON FUNCTION amebo.create_action(text, text, jsonb, text) TO amebo_admin;

-- Changes an action: its owner, its compatibility mode, and (as a new version) its schema.
-- Arguments left NULL keep their value; returns the current schema version.
CREATE FUNCTION amebo.update_action(action text, application text DEFAULT NULL,
                                    schema jsonb DEFAULT NULL, compatibility text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    version integer;
BEGIN
    IF compatibility IS NOT NULL AND compatibility NOT IN ('none', 'backward') THEN
        RAISE EXCEPTION 'invalid compatibility "%"', compatibility USING ERRCODE = '22023',
            HINT = 'Use ''none'' or ''backward''.';
    END IF;
    IF application IS NOT NULL THEN
        PERFORM 1 FROM amebo.applications a WHERE a.name = update_action.application;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'application "%" does not exist', application USING ERRCODE = '42704';
        END IF;
    END IF;
    UPDATE amebo.actions a
    SET application = coalesce(update_action.application, a.application),
        compatibility = coalesce(update_action.compatibility, a.compatibility),
        updated_at = now()
    WHERE a.action = update_action.action
    RETURNING a.schema_version INTO version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'action "%" does not exist', action USING ERRCODE = '42704';
    END IF;
    IF schema IS NOT NULL THEN
        version := amebo_internal.add_action_schema(action, schema);
    END IF;
    RETURN version;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.update_action(text, text, jsonb, text) TO amebo_admin;

-- Removes an action's registration and schemas; its events stay.
CREATE FUNCTION amebo.drop_action(action text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM amebo.actions a WHERE a.action = drop_action.action;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'action "%" does not exist', action USING ERRCODE = '42704';
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.drop_action(text) TO amebo_admin;

-- Actions with their owner, mode and current schema.
CREATE VIEW amebo.action_list AS
SELECT a.action, a.application, a.compatibility, a.schema_version, s.schema,
       a.created_at, a.updated_at
FROM amebo.actions a
LEFT JOIN amebo.action_schemas s ON s.action = a.action AND s.version = a.schema_version;

GRANT SELECT ON amebo.action_list TO amebo_reader;

-- An application's events (those of the actions it owns now), in position order, with
-- read_all's commit-order safety.
CREATE FUNCTION amebo.application_events(application text, after_position bigint DEFAULT 0,
                                         max_count integer DEFAULT 1000)
RETURNS SETOF amebo.events
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog AS $$
DECLARE
    owned text[];
BEGIN
    PERFORM 1 FROM amebo.applications a WHERE a.name = application_events.application;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'application "%" does not exist', application USING ERRCODE = '42704';
    END IF;
    SELECT array_agg(x.action) INTO owned FROM amebo.actions x
    WHERE x.application = application_events.application;
    IF owned IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM amebo.read_all(after_position, max_count, owned);
END
$$;
GRANT EXECUTE ON FUNCTION amebo.application_events(text, bigint, integer) TO amebo_reader;

-------------------------------------------------------------------------------------------
-- State: snapshots, reducers, projections
-------------------------------------------------------------------------------------------

-- Saved states of streams. The newest amebo.snapshots_to_keep per stream are kept.
CREATE TABLE amebo.snapshots (
    stream      text        NOT NULL,
    version     bigint      NOT NULL,
    state       jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT snapshots_pkey PRIMARY KEY (stream, version),
    CONSTRAINT snapshots_version_check CHECK (version > 0)
);

SELECT pg_catalog.pg_extension_config_dump('amebo.snapshots', '');
GRANT SELECT ON amebo.snapshots TO amebo_reader;

-- Saves the state of a stream at a version (at most the stream's current version), replacing
-- one saved at the same version, and prunes all but the newest amebo.snapshots_to_keep.
CREATE FUNCTION amebo.save_snapshot(stream text, version bigint, state jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    current_version bigint;
    keep integer := current_setting('amebo.snapshots_to_keep')::integer;
BEGIN
    IF stream IS NULL OR version IS NULL OR state IS NULL THEN
        RAISE EXCEPTION 'stream, version and state must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF version < 1 THEN
        RAISE EXCEPTION 'snapshot version must be at least 1' USING ERRCODE = '22023';
    END IF;
    current_version := amebo.stream_version(stream);
    IF version > current_version THEN
        RAISE EXCEPTION 'snapshot version % is beyond stream "%"', version, stream
            USING ERRCODE = 'AM008',
                  DETAIL = format('Stream "%s" is at version %s.', stream, current_version);
    END IF;
    INSERT INTO amebo.snapshots AS s (stream, version, state)
    VALUES (save_snapshot.stream, save_snapshot.version, save_snapshot.state)
    ON CONFLICT ON CONSTRAINT snapshots_pkey
    DO UPDATE SET state = EXCLUDED.state, recorded_at = now();
    DELETE FROM amebo.snapshots s
    WHERE s.stream = save_snapshot.stream
      AND s.version < (SELECT k.version FROM amebo.snapshots k
                       WHERE k.stream = save_snapshot.stream
                       ORDER BY k.version DESC OFFSET keep - 1 LIMIT 1);
END
$$;
GRANT EXECUTE ON FUNCTION amebo.save_snapshot(text, bigint, jsonb) TO amebo_writer;

-- The newest snapshot of a stream; NULL when it has none.
CREATE FUNCTION amebo.load_snapshot(stream text) RETURNS amebo.snapshots
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT s.* FROM amebo.snapshots s WHERE s.stream = load_snapshot.stream
    ORDER BY s.version DESC LIMIT 1
$$;
GRANT EXECUTE ON FUNCTION amebo.load_snapshot(text) TO amebo_reader;

-- Raises 42P13 unless fn has exactly the argument types and result type given.
CREATE FUNCTION amebo_internal.check_signature(fn regprocedure, argtypes regtype[], rettype regtype,
                                               role text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    p pg_proc;
BEGIN
    IF fn IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', role USING ERRCODE = '22004';
    END IF;
    SELECT * INTO p FROM pg_proc WHERE oid = fn;
    IF ARRAY(SELECT unnest(p.proargtypes::oid[])) IS DISTINCT FROM argtypes::oid[]
       OR p.prorettype <> rettype
       OR p.proretset OR p.prokind <> 'f' THEN
        RAISE EXCEPTION '% % has the wrong signature', role, fn USING ERRCODE = '42P13',
            HINT = format('A %s takes (%s) and returns %s.', role,
                          array_to_string(argtypes::text[], ', '), rettype);
    END IF;
END
$$;

-- How the events of a stream category fold into a state.
CREATE TABLE amebo.reducers (
    category       text          NOT NULL,
    reducer        regprocedure  NOT NULL,
    initial_state  jsonb         NOT NULL DEFAULT '{}',
    snapshot_every integer       NOT NULL DEFAULT 10,
    created_at     timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT reducers_pkey PRIMARY KEY (category),
    CONSTRAINT reducers_snapshot_every_check CHECK (snapshot_every > 0)
);

SELECT pg_catalog.pg_extension_config_dump('amebo.reducers', '');
GRANT SELECT ON amebo.reducers TO amebo_reader;

-- Registers the reducer (state jsonb, event amebo.events) RETURNS jsonb of a category;
-- load_state writes a snapshot when it had to replay more than snapshot_every events.
CREATE FUNCTION amebo.create_reducer(category text, reducer regprocedure,
                                     initial_state jsonb DEFAULT '{}',
                                     snapshot_every integer DEFAULT 10) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF category IS NULL OR category = '' OR position('-' IN category) > 0 THEN
        RAISE EXCEPTION 'invalid category "%"', category USING ERRCODE = '22023',
            HINT = 'A category is the part of a stream name before its first "-".';
    END IF;
    PERFORM amebo_internal.check_signature(reducer, ARRAY['jsonb', 'amebo.events']::regtype[],
                                  'jsonb', 'reducer');
    IF initial_state IS NULL THEN
        RAISE EXCEPTION 'initial_state must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF snapshot_every IS NULL OR snapshot_every < 1 THEN
        RAISE EXCEPTION 'snapshot_every must be positive' USING ERRCODE = '22023';
    END IF;
    INSERT INTO amebo.reducers (category, reducer, initial_state, snapshot_every)
    VALUES (category, reducer, initial_state, snapshot_every);
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'category "%" already has a reducer', category USING ERRCODE = '42710';
END
$$;
GRANT EXECUTE ON FUNCTION amebo.create_reducer(text, regprocedure, jsonb, integer) TO amebo_admin;

-- Removes a category's reducer (its snapshots stay).
CREATE FUNCTION amebo.drop_reducer(category text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM amebo.reducers r WHERE r.category = drop_reducer.category;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'category "%" has no reducer', category USING ERRCODE = '42704';
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.drop_reducer(text) TO amebo_admin;

-- The current state and version of a stream: the newest snapshot folded with the events
-- after it through the category's reducer; writes a snapshot when more than snapshot_every
-- events had to be replayed (not on a standby or in a read-only transaction).
CREATE FUNCTION amebo.load_state(stream text, OUT state jsonb, OUT version bigint)
AS 'MODULE_PATHNAME', 'amebo_load_state' LANGUAGE C VOLATILE;
GRANT EXECUTE ON FUNCTION amebo.load_state(text) TO amebo_reader;

-- The state of a stream at a version (NULL: its current one) from a full replay of its
-- events, without snapshots: what load_state must equal.
CREATE FUNCTION amebo.replay_state(stream text, up_to_version bigint DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'amebo_replay_state' LANGUAGE C STABLE;
GRANT EXECUTE ON FUNCTION amebo.replay_state(text, bigint) TO amebo_reader;

-- Read models kept up to date from events by a handler (event amebo.events) RETURNS void.
CREATE TABLE amebo.projections (
    name           text         NOT NULL,
    handler        regprocedure NOT NULL,
    reset_handler  regprocedure,
    actions        text[],
    mode           text         NOT NULL,
    state          text         NOT NULL DEFAULT 'running',
    position       bigint       NOT NULL DEFAULT 0,
    applied_at     timestamptz,
    error          text,
    error_position bigint,
    error_at       timestamptz,
    owner          regrole      NOT NULL DEFAULT current_user::regrole,
    created_at     timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT projections_pkey PRIMARY KEY (name),
    CONSTRAINT projections_name_check CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    CONSTRAINT projections_mode_check CHECK (mode IN ('inline', 'async')),
    CONSTRAINT projections_state_check CHECK (state IN ('running', 'paused'))
);

SELECT pg_catalog.pg_extension_config_dump('amebo.projections', '');
GRANT SELECT ON amebo.projections TO amebo_reader;
-- Backends cache the inline projections: tell them when a definition changes (not when the
-- worker moves a checkpoint, which would make every appender reload after every batch).
CREATE TRIGGER projections_changed
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF name, handler, actions, mode, state
    ON amebo.projections
    FOR EACH STATEMENT EXECUTE FUNCTION amebo_internal.registry_changed();

-- A projection's owner is the role that created it; only a superuser may change it.
CREATE FUNCTION amebo_internal.set_projection_owner() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            NEW.owner := current_user::regrole;
        END IF;
    ELSIF NEW.owner IS DISTINCT FROM OLD.owner
          AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'only a superuser may change the owner of a projection'
            USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END
$$;

-- Keeps a projection's owner its creator's role (see set_projection_owner).
CREATE TRIGGER projections_owner BEFORE INSERT OR UPDATE OF owner ON amebo.projections
    FOR EACH ROW EXECUTE FUNCTION amebo_internal.set_projection_owner();

-- Registers a projection. inline: the handler runs in every appending transaction;
-- async: the background worker applies committed events in order from position 0.
-- reset (no arguments, returns void) empties the read model for rebuild_projection.
-- Existing events are not replayed for inline projections: call rebuild_projection.
-- The calling role, which must be allowed to execute the handler and the reset function,
-- becomes its owner (a SECURITY DEFINER function cannot know it: this one is C, and runs
-- register_projection as the tables' owner).
CREATE FUNCTION amebo.create_projection(name text, handler regprocedure,
                                                   actions text[] DEFAULT NULL,
                                                   mode text DEFAULT 'inline',
                                                   reset regprocedure DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'amebo_create_projection' LANGUAGE C VOLATILE;
GRANT EXECUTE ON FUNCTION amebo.create_projection(text, regprocedure, text[], text, regprocedure) TO amebo_admin;

-- Validates and inserts a projection with its owner (create_projection runs it as the
-- tables' owner).
CREATE FUNCTION amebo_internal.register_projection(name text, handler regprocedure, actions text[],
                                                   mode text, reset regprocedure, owner regrole)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid projection name "%"', name USING ERRCODE = '22023',
            HINT = 'A projection name is 1 to 63 lower-case letters, digits, "_" or "-", starting with a letter.';
    END IF;
    IF mode IS NULL OR mode NOT IN ('inline', 'async') THEN
        RAISE EXCEPTION 'invalid projection mode "%"', mode USING ERRCODE = '22023',
            HINT = 'Use ''inline'' or ''async''.';
    END IF;
    IF actions IS NOT NULL AND (cardinality(actions) = 0 OR array_position(actions, NULL) IS NOT NULL) THEN
        RAISE EXCEPTION 'actions must be NULL (every action) or a non-empty list without NULLs'
            USING ERRCODE = '22023';
    END IF;
    PERFORM amebo_internal.check_signature(handler, ARRAY['amebo.events']::regtype[], 'void',
                                  'projection handler');
    IF reset IS NOT NULL THEN
        PERFORM amebo_internal.check_signature(reset, ARRAY[]::regtype[], 'void', 'reset function');
    END IF;
    INSERT INTO amebo.projections (name, handler, reset_handler, actions, mode, owner)
    VALUES (name, handler, reset, actions, mode, owner);
    IF mode = 'async' THEN
        PERFORM amebo.wake_worker();
    END IF;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'projection "%" already exists', name USING ERRCODE = '42710';
END
$$;

-- Locks and returns a projection, or raises 42704.
CREATE FUNCTION amebo_internal.lock_projection(name text) RETURNS amebo.projections
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p amebo.projections;
BEGIN
    SELECT * INTO p FROM amebo.projections x WHERE x.name = lock_projection.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'projection "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    RETURN p;
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.lock_projection(text) TO amebo_admin;

-- Removes a projection (its read model stays).
CREATE FUNCTION amebo.drop_projection(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM amebo_internal.lock_projection(name);
    DELETE FROM amebo.projections x WHERE x.name = drop_projection.name;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.drop_projection(text) TO amebo_admin;

-- Pauses a projection. async: the worker stops applying it. inline: appends stop calling it;
-- the pause waits for open appends to finish (SHARE lock on amebo.events) and records the
-- last position applied, so that resume_projection can replay exactly what it missed.
CREATE FUNCTION amebo.pause_projection(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p amebo.projections := amebo_internal.lock_projection(name);
BEGIN
    IF p.state = 'paused' THEN
        RETURN;
    END IF;
    IF p.mode = 'inline' THEN
        LOCK TABLE amebo.events IN SHARE MODE;
        UPDATE amebo.projections x SET state = 'paused', position = amebo.settled_position()
        WHERE x.name = pause_projection.name;
    ELSE
        UPDATE amebo.projections x SET state = 'paused' WHERE x.name = pause_projection.name;
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.pause_projection(text) TO amebo_admin;

-- Marks a projection running again, without its error (for resume_projection).
CREATE FUNCTION amebo_internal.mark_projection_running(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE amebo.projections x
    SET state = 'running', error = NULL, error_position = NULL, error_at = NULL
    WHERE x.name = mark_projection_running.name;
    PERFORM amebo.wake_worker();
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.mark_projection_running(text) TO amebo_admin;

-- Resumes a projection from the event after its checkpoint (the failed one, after an error).
-- async: the worker applies it again. inline: the events appended while it was paused are
-- replayed first, with appends blocked until the resume commits. Not SECURITY DEFINER: an
-- inline replay runs the handler, which must run as the caller, with the caller's
-- search_path.
CREATE FUNCTION amebo.resume_projection(name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p amebo.projections := amebo_internal.lock_projection(name);
BEGIN
    IF p.mode = 'inline' AND p.state = 'paused' THEN
        PERFORM amebo.replay_projection(name, p.position);
    END IF;
    PERFORM amebo_internal.mark_projection_running(name);
END
$$;
GRANT EXECUTE ON FUNCTION amebo.resume_projection(text) TO amebo_admin;

-- Replays the matching events after a position into a projection without resetting it, then
-- sets its checkpoint and state running (what resuming an inline projection does).
CREATE FUNCTION amebo.replay_projection(name text, after_position bigint) RETURNS bigint
AS 'MODULE_PATHNAME', 'amebo_replay_projection' LANGUAGE C VOLATILE;
GRANT EXECUTE ON FUNCTION amebo.replay_projection(text, bigint) TO amebo_admin;

-- Empties a projection's read model (through its reset function) and replays the matching
-- events (recorded at or after since) in position order; returns how many. Progress shows in
-- amebo.projection_status; cancel it like any query. Rebuilding an inline projection blocks
-- appends until it commits, so the read model matches the events.
CREATE FUNCTION amebo.rebuild_projection(name text, since timestamptz DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'amebo_rebuild_projection' LANGUAGE C VOLATILE;
GRANT EXECUTE ON FUNCTION amebo.rebuild_projection(text, timestamptz) TO amebo_admin;

-- Rebuilds in progress: backend, projection, events replayed and to replay.
CREATE FUNCTION amebo.rebuild_progress(OUT pid integer, OUT projection text,
                                       OUT replayed bigint, OUT total bigint,
                                       OUT started_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'amebo_rebuild_progress' LANGUAGE C VOLATILE;
GRANT EXECUTE ON FUNCTION amebo.rebuild_progress() TO amebo_reader;

-- Per projection: mode, state, checkpoint, lag in events and seconds, last error, and the
-- progress of a rebuild that is running.
CREATE VIEW amebo.projection_status AS
SELECT p.name, p.mode, p.state,
       CASE WHEN p.mode = 'async' OR p.state = 'paused' THEN p.position END AS position,
       CASE WHEN p.mode = 'inline' AND p.state = 'running' THEN 0
            ELSE (SELECT count(*) FROM amebo.events e
                  WHERE e.position > p.position
                    AND (p.actions IS NULL OR e.action = ANY (p.actions))) END AS lag_events,
       CASE WHEN p.mode = 'inline' AND p.state = 'running' THEN 0
            ELSE coalesce(extract(epoch FROM now() - (
                     SELECT min(e.recorded_at) FROM amebo.events e
                     WHERE e.position > p.position
                       AND (p.actions IS NULL OR e.action = ANY (p.actions)))), 0) END
           AS lag_seconds,
       p.applied_at, p.error, p.error_position, p.error_at,
       r.replayed AS rebuild_replayed, r.total AS rebuild_total, r.pid AS rebuild_pid
FROM amebo.projections p
LEFT JOIN amebo.rebuild_progress() r ON r.projection = p.name;

GRANT SELECT ON amebo.projection_status TO amebo_reader;

-- Projections with their definitions.
CREATE VIEW amebo.projection_list AS
SELECT name, mode, state, handler, reset_handler, actions, owner, created_at
FROM amebo.projections;

GRANT SELECT ON amebo.projection_list TO amebo_reader;

-------------------------------------------------------------------------------------------
-- Delivery: subscriptions and webhooks
--
-- The worker learns of committed events from a logical replication slot with amebo's own
-- output plugin (the append path writes nothing for delivery), POSTs them to subscribed
-- handlers, and stores here only what it could not deliver at once: messages waiting for a
-- retry or a later time, and dead ones. Every attempt is logged.
-------------------------------------------------------------------------------------------

-- A webhook subscription of an application to an action (or an action pattern).
CREATE TABLE amebo.subscriptions (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    application     text        NOT NULL,
    name            text        NOT NULL,
    -- an action name, or a pattern in which '*' matches any run of characters
    action          text        NOT NULL,
    handler         text        NOT NULL,
    max_retries     integer     NOT NULL DEFAULT 5,
    -- deliver only events whose payload contains this (jsonb @>); NULL: every event
    filter          jsonb,
    -- one request at a time, so that each stream's events arrive in order, retries included
    ordered         boolean     NOT NULL DEFAULT false,
    -- events per request; above 1 the body is {"events": [...]}
    batch_size      integer     NOT NULL DEFAULT 1,
    state           text        NOT NULL DEFAULT 'active',
    disabled_reason text,
    -- events at or below this position predate the subscription and are not delivered
    start_position  bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- requests per second at most, with a burst of a tenth of a second's worth (at least
    -- one); NULL: no limit
    rate_limit      double precision,
    CONSTRAINT subscriptions_pkey PRIMARY KEY (id),
    CONSTRAINT subscriptions_application_name_key UNIQUE (application, name),
    CONSTRAINT subscriptions_application_fkey FOREIGN KEY (application)
        REFERENCES amebo.applications (name) ON UPDATE CASCADE ON DELETE CASCADE,
    CONSTRAINT subscriptions_name_check CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    CONSTRAINT subscriptions_action_check CHECK (action ~ '^[a-z0-9_.*]{1,255}$'),
    CONSTRAINT subscriptions_max_retries_check CHECK (max_retries BETWEEN 0 AND 100),
    CONSTRAINT subscriptions_batch_size_check CHECK (batch_size BETWEEN 1 AND 1000),
    CONSTRAINT subscriptions_state_check CHECK (state IN ('active', 'paused', 'disabled')),
    CONSTRAINT subscriptions_rate_limit_check CHECK (rate_limit BETWEEN 0.001 AND 1000000)
);

-- Users fill the delivery tables: pg_dump keeps their rows, and the state of the identity
-- sequences (without which a restored database would hand out taken ids). No amebo script
-- inserts rows into them, so none needs a WHERE filter.
SELECT pg_catalog.pg_extension_config_dump('amebo.subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('amebo.subscriptions_id_seq', '');
GRANT SELECT ON amebo.subscriptions TO amebo_reader;

-- Messages the worker could not deliver at once: waiting for a retry or a later time
-- (pending), or out of retries (dead). A message is one request: one event, or a batch.
CREATE TABLE amebo.deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    subscription_id bigint      NOT NULL,
    webhook_id      text        NOT NULL,
    positions       bigint[]    NOT NULL,
    state           text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deliveries_pkey PRIMARY KEY (id),
    CONSTRAINT deliveries_subscription_webhook_key UNIQUE (subscription_id, webhook_id),
    CONSTRAINT deliveries_subscription_fkey FOREIGN KEY (subscription_id)
        REFERENCES amebo.subscriptions (id) ON DELETE CASCADE,
    CONSTRAINT deliveries_state_check CHECK (state IN ('pending', 'dead'))
);

-- The worker's scan for due messages.
CREATE INDEX deliveries_due ON amebo.deliveries (next_attempt_at) WHERE state = 'pending';
SELECT pg_catalog.pg_extension_config_dump('amebo.deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('amebo.deliveries_id_seq', '');
GRANT SELECT ON amebo.deliveries TO amebo_reader;

-- The delivery log, compact: each recording of the worker (one every 20 ms or so while it
-- delivers) writes one row holding that recording's attempts as a JSON array, which
-- PostgreSQL compresses once it passes 2 kB (a row per attempt, with its index entry, wrote
-- more WAL than the event itself). amebo.delivery_log shows one row per attempt.
CREATE TABLE amebo.delivery_log_entries (
    recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- [{subscription_id, webhook_id, positions, attempt, status, error, duration_ms,
    --   attempted_at}, ...]
    attempts    jsonb       NOT NULL
);

-- prune_delivery_log and readers of recent attempts find entries by age.
CREATE INDEX delivery_log_entries_recorded_at
    ON amebo.delivery_log_entries USING brin (recorded_at);
-- The attempt log is the history of what was sent; a backup keeps it (pg_dump
-- --exclude-table-data=amebo.delivery_log_entries leaves it out).
SELECT pg_catalog.pg_extension_config_dump('amebo.delivery_log_entries', '');
GRANT SELECT ON amebo.delivery_log_entries TO amebo_reader;

-- Every delivery attempt, one row each; recorded_at (when the worker wrote it down, at most
-- a few seconds after attempted_at) is what the table is indexed by: filter on it for speed.
CREATE VIEW amebo.delivery_log AS
SELECT a.subscription_id, a.webhook_id, a.positions, a.attempt, a.status, a.error,
       a.duration_ms, a.attempted_at, e.recorded_at
FROM amebo.delivery_log_entries e,
     pg_catalog.jsonb_to_recordset(e.attempts) AS a(subscription_id bigint, webhook_id text,
                                                   positions bigint[], attempt integer,
                                                   status integer, error text,
                                                   duration_ms double precision,
                                                   attempted_at timestamptz);

GRANT SELECT ON amebo.delivery_log TO amebo_reader;

-- Per subscription: the last success and the last failure.
CREATE TABLE amebo.subscription_progress (
    subscription_id bigint      NOT NULL,
    delivered       bigint      NOT NULL DEFAULT 0,
    last_success_at timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    -- the first of the failed attempts since the last success (NULL: the last one succeeded)
    failing_since   timestamptz,
    CONSTRAINT subscription_progress_pkey PRIMARY KEY (subscription_id),
    CONSTRAINT subscription_progress_subscription_fkey FOREIGN KEY (subscription_id)
        REFERENCES amebo.subscriptions (id) ON DELETE CASCADE
);

SELECT pg_catalog.pg_extension_config_dump('amebo.subscription_progress', '');
GRANT SELECT ON amebo.subscription_progress TO amebo_reader;

-- The delivery checkpoint, in a replicated table: every event at or below position has been
-- delivered or stored in amebo.deliveries. A promoted standby, which has no slot, catches up
-- from here through the events table.
CREATE TABLE amebo.delivery_checkpoint (
    singleton  boolean     NOT NULL DEFAULT true,
    position   bigint      NOT NULL,
    slot_name  text        NOT NULL,
    -- A catch-up after a new slot: up to which position the events table is read, and at or
    -- below which position the slot's events are skipped (they are caught up).
    catch_up_through  bigint NOT NULL DEFAULT 0,
    slot_skip_through bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT delivery_checkpoint_pkey PRIMARY KEY (singleton),
    CONSTRAINT delivery_checkpoint_singleton_check CHECK (singleton)
);

SELECT pg_catalog.pg_extension_config_dump('amebo.delivery_checkpoint', '');
GRANT SELECT ON amebo.delivery_checkpoint TO amebo_reader;

-- Raises 22023 unless url is an http(s) handler amebo may call (see
-- amebo.allow_private_targets); resolves the host name.
CREATE FUNCTION amebo_internal.check_handler(url text) RETURNS void
AS 'MODULE_PATHNAME', 'amebo_check_handler' LANGUAGE C STRICT VOLATILE;

-- True when action matches a subscription's pattern ('*' matches any run of characters).
CREATE FUNCTION amebo.action_matches(pattern text, action text) RETURNS boolean
AS 'MODULE_PATHNAME', 'amebo_action_matches' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
GRANT EXECUTE ON FUNCTION amebo.action_matches(text, text) TO amebo_reader;

-- The position after which a new subscription's events are delivered: below every append
-- still in flight, so that nothing committing after the subscription is missed.
CREATE FUNCTION amebo_internal.subscription_start_position() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    RETURN amebo.settled_position();
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    RAISE WARNING 'subscriptions are delivered by amebo''s background worker, which is not running'
        USING HINT = 'Add amebo to shared_preload_libraries, set wal_level = logical, and restart.';
    RETURN coalesce((SELECT max(position) FROM amebo.events), 0);
END
$$;

-- Checks a subscription's settings (other than its handler), raising the matching error.
CREATE FUNCTION amebo_internal.check_subscription(action text, max_retries integer, batch_size integer,
                                                  filter jsonb, rate_limit double precision)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF filter IS NOT NULL AND jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION 'filter must be a JSON object, not %', jsonb_typeof(filter)
            USING ERRCODE = '22023',
                  HINT = 'A filter matches payloads that contain it, as jsonb @> does.';
    END IF;
    IF action !~ '^[a-z0-9_.*]{1,255}$' THEN
        RAISE EXCEPTION 'invalid action pattern "%"', action USING ERRCODE = '22023',
            HINT = 'Use an action name, or a pattern of lowercase letters, digits, "_", "." and "*".';
    END IF;
    IF position('*' IN action) = 0 AND action <> ALL (amebo_internal.operational_actions())
       AND NOT EXISTS (SELECT 1 FROM amebo.actions a WHERE a.action = check_subscription.action) THEN
        RAISE EXCEPTION 'action "%" does not exist', action USING ERRCODE = 'AM005',
            HINT = 'Create it with amebo.create_action(), or subscribe with a pattern.';
    END IF;
    IF max_retries NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'max_retries must be between 0 and 100, not %', max_retries
            USING ERRCODE = '22023';
    END IF;
    IF batch_size NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 1000, not %', batch_size
            USING ERRCODE = '22023';
    END IF;
    IF NOT rate_limit BETWEEN 0.001 AND 1000000 THEN
        RAISE EXCEPTION 'rate_limit must be between 0.001 and 1000000 requests per second, not %',
            rate_limit USING ERRCODE = '22023',
            HINT = 'NULL (or ''Infinity'') means no limit.';
    END IF;
END
$$;

-- Subscribes application's handler to action; returns the subscription's id.
CREATE FUNCTION amebo.create_subscription(application text, subscription text, action text,
                                          handler text, max_retries integer DEFAULT 5,
                                          filter jsonb DEFAULT NULL,
                                          ordered boolean DEFAULT false,
                                          batch_size integer DEFAULT 1,
                                          rate_limit double precision DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    created bigint;
BEGIN
    IF application IS NULL OR subscription IS NULL OR action IS NULL OR handler IS NULL
       OR max_retries IS NULL OR ordered IS NULL OR batch_size IS NULL THEN
        RAISE EXCEPTION 'only filter may be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM amebo.applications a WHERE a.name = application) THEN
        RAISE EXCEPTION 'application "%" does not exist', application USING ERRCODE = '42704';
    END IF;
    IF subscription !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid subscription name "%"', subscription USING ERRCODE = '22023',
            HINT = 'Use 1 to 63 lowercase letters, digits, "_" or "-", starting with a letter.';
    END IF;
    IF rate_limit = 'Infinity' THEN
        rate_limit := NULL;
    END IF;
    PERFORM amebo_internal.check_subscription(action, max_retries, batch_size, filter, rate_limit);
    PERFORM amebo_internal.check_handler(handler);
    INSERT INTO amebo.subscriptions AS s (application, name, action, handler, max_retries,
                                          filter, ordered, batch_size, start_position, rate_limit)
    VALUES (application, subscription, action, handler, max_retries, filter, ordered,
            batch_size, amebo_internal.subscription_start_position(), rate_limit)
    RETURNING s.id INTO created;
    RETURN created;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'subscription "%" of application "%" already exists', subscription,
        application USING ERRCODE = '42710';
END
$$;
GRANT EXECUTE ON FUNCTION amebo.create_subscription(text, text, text, text, integer, jsonb, boolean, integer, double precision) TO amebo_admin;

-- Locks and returns a subscription, or raises 42704.
CREATE FUNCTION amebo_internal.lock_subscription(application text, subscription text)
RETURNS amebo.subscriptions
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    locked amebo.subscriptions;
BEGIN
    IF application IS NULL OR subscription IS NULL THEN
        RAISE EXCEPTION 'application and subscription must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO locked FROM amebo.subscriptions s
    WHERE s.application = lock_subscription.application AND s.name = subscription FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" of application "%" does not exist', subscription,
            application USING ERRCODE = '42704';
    END IF;
    RETURN locked;
END
$$;

-- Changes a subscription; NULL leaves a setting as it is ('{}' as filter matches every event).
CREATE FUNCTION amebo.update_subscription(application text, subscription text,
                                          action text DEFAULT NULL, handler text DEFAULT NULL,
                                          max_retries integer DEFAULT NULL,
                                          filter jsonb DEFAULT NULL,
                                          ordered boolean DEFAULT NULL,
                                          batch_size integer DEFAULT NULL,
                                          rate_limit double precision DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s amebo.subscriptions := amebo_internal.lock_subscription(application, subscription);
BEGIN
    s.action := coalesce(action, s.action);
    s.handler := coalesce(handler, s.handler);
    s.max_retries := coalesce(max_retries, s.max_retries);
    s.filter := CASE WHEN filter = '{}'::jsonb THEN NULL ELSE coalesce(filter, s.filter) END;
    s.ordered := coalesce(ordered, s.ordered);
    s.batch_size := coalesce(batch_size, s.batch_size);
    s.rate_limit := CASE WHEN rate_limit = 'Infinity' THEN NULL
                         ELSE coalesce(rate_limit, s.rate_limit) END;
    PERFORM amebo_internal.check_subscription(s.action, s.max_retries, s.batch_size, s.filter,
                                              s.rate_limit);
    IF handler IS NOT NULL THEN
        PERFORM amebo_internal.check_handler(s.handler);
    END IF;
    UPDATE amebo.subscriptions x
    SET action = s.action, handler = s.handler, max_retries = s.max_retries,
        filter = s.filter, ordered = s.ordered, batch_size = s.batch_size,
        rate_limit = s.rate_limit, updated_at = now()
    WHERE x.id = s.id;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.update_subscription(text, text, text, text, integer, jsonb, boolean, integer, double precision) TO amebo_admin;

-- Removes a subscription with its stored messages.
CREATE FUNCTION amebo.drop_subscription(application text, subscription text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target bigint := (amebo_internal.lock_subscription(application, subscription)).id;
BEGIN
    DELETE FROM amebo.subscriptions s WHERE s.id = target;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.drop_subscription(text, text) TO amebo_admin;

-- Stops deliveries to a subscription; events keep being queued for it.
CREATE FUNCTION amebo.pause_subscription(application text, subscription text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target bigint := (amebo_internal.lock_subscription(application, subscription)).id;
BEGIN
    UPDATE amebo.subscriptions s SET state = 'paused', updated_at = now() WHERE s.id = target;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.pause_subscription(text, text) TO amebo_admin;

-- Resumes a paused or disabled subscription; the circuit breaker's period starts over.
CREATE FUNCTION amebo.resume_subscription(application text, subscription text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target bigint := (amebo_internal.lock_subscription(application, subscription)).id;
BEGIN
    UPDATE amebo.subscriptions s
    SET state = 'active', disabled_reason = NULL, updated_at = now()
    WHERE s.id = target;
    UPDATE amebo.subscription_progress p SET failing_since = NULL WHERE p.subscription_id = target;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.resume_subscription(text, text) TO amebo_admin;

-- Makes a subscription's dead messages pending again, with fresh retries; returns how many.
CREATE FUNCTION amebo.redeliver(application text, subscription text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target bigint := (amebo_internal.lock_subscription(application, subscription)).id;
    revived bigint;
BEGIN
    UPDATE amebo.deliveries d
    SET state = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()
    WHERE d.subscription_id = target AND d.state = 'dead';
    GET DIAGNOSTICS revived = ROW_COUNT;
    RETURN revived;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.redeliver(text, text) TO amebo_admin;

-- Delivers again, one request per event, every matching event after position
-- after_position; returns how many messages it queued. Webhook ids are the worker's (with
-- the shard on a shard of amebo_router), so a message it already stored is queued again.
CREATE FUNCTION amebo.replay_subscription(application text, subscription text,
                                          after_position bigint)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s amebo.subscriptions := amebo_internal.lock_subscription(application, subscription);
    queued bigint;
BEGIN
    IF after_position IS NULL THEN
        RAISE EXCEPTION 'after_position must not be NULL' USING ERRCODE = '22004';
    END IF;
    INSERT INTO amebo.deliveries AS d (subscription_id, webhook_id, positions)
    SELECT s.id, 'msg_' || coalesce((SELECT 's' || i.shard || '_' FROM amebo.shard_identity i), '')
                 || replace(e.event_id::text, '-', '')
                 || CASE WHEN s.batch_size > 1 THEN '_1' ELSE '' END, ARRAY[e.position]
    FROM amebo.events e
    WHERE e.position > after_position AND amebo.action_matches(s.action, e.action)
      AND (s.filter IS NULL OR e.payload @> s.filter)
    ORDER BY e.position
    ON CONFLICT (subscription_id, webhook_id) DO UPDATE
    SET state = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now();
    GET DIAGNOSTICS queued = ROW_COUNT;
    RETURN queued;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.replay_subscription(text, text, bigint) TO amebo_admin;

-- Delivers again every matching event recorded at or after since.
CREATE FUNCTION amebo.replay_subscription(application text, subscription text,
                                          since timestamptz)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be NULL' USING ERRCODE = '22004';
    END IF;
    RETURN amebo.replay_subscription(application, subscription,
        coalesce((SELECT min(e.position) - 1 FROM amebo.events e WHERE e.recorded_at >= since),
                 (SELECT max(e.position) FROM amebo.events e), 0));
END
$$;
GRANT EXECUTE ON FUNCTION amebo.replay_subscription(text, text, timestamptz) TO amebo_admin;

-- Subscriptions with their settings.
CREATE VIEW amebo.subscription_list AS
SELECT s.application, s.name, s.action, s.handler, s.max_retries, s.filter, s.ordered,
       s.batch_size, s.state, s.disabled_reason, s.created_at, s.updated_at, s.rate_limit
FROM amebo.subscriptions s;

GRANT SELECT ON amebo.subscription_list TO amebo_reader;

-- The worker's live figures per subscription (requests in flight, messages in memory).
-- Readers may execute it: a view's functions run with the privileges of its reader.
CREATE FUNCTION amebo_internal.delivery_worker_stats(OUT subscription_id bigint, OUT in_flight integer,
                                                     OUT queued integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'amebo_delivery_worker_stats' LANGUAGE C VOLATILE;
GRANT EXECUTE ON FUNCTION amebo_internal.delivery_worker_stats() TO amebo_reader;

-- Per subscription: state, requests in flight, pending and dead messages, lag, and the last
-- success and error.
CREATE VIEW amebo.subscription_status AS
SELECT s.application, s.name, s.state,
       coalesce(w.in_flight, 0) AS in_flight,
       coalesce(w.queued, 0) AS queued,
       (SELECT count(*) FROM amebo.deliveries d
        WHERE d.subscription_id = s.id AND d.state = 'pending') AS pending,
       (SELECT count(*) FROM amebo.deliveries d
        WHERE d.subscription_id = s.id AND d.state = 'dead') AS dead,
       coalesce(extract(epoch FROM now() - (
           SELECT min(d.created_at) FROM amebo.deliveries d
           WHERE d.subscription_id = s.id AND d.state = 'pending')), 0) AS lag_seconds,
       coalesce(p.delivered, 0) AS delivered, p.last_success_at, p.last_error, p.last_error_at, s.disabled_reason,
       p.failing_since
FROM amebo.subscriptions s
LEFT JOIN amebo.subscription_progress p ON p.subscription_id = s.id
LEFT JOIN amebo_internal.delivery_worker_stats() w ON w.subscription_id = s.id;

GRANT SELECT ON amebo.subscription_status TO amebo_reader;

-- The logical queue: its slot (only one of this database), the WAL it retains, how far
-- decoding is behind (on a standby, measured against the WAL it replayed), and the delivery
-- checkpoint.
CREATE VIEW amebo.delivery_queue AS
SELECT c.slot_name, r.active, r.active_pid, r.restart_lsn, r.confirmed_flush_lsn,
       pg_catalog.pg_wal_lsn_diff(w.lsn, r.restart_lsn) AS retained_wal_bytes,
       pg_catalog.pg_wal_lsn_diff(w.lsn, r.confirmed_flush_lsn) AS unconfirmed_wal_bytes,
       r.wal_status, c.position AS checkpoint_position,
       (SELECT count(*) FROM amebo.events e WHERE e.position > c.position) AS events_behind,
       c.updated_at AS checkpoint_at
FROM amebo.delivery_checkpoint c
CROSS JOIN LATERAL (SELECT CASE WHEN pg_catalog.pg_is_in_recovery()
                                THEN pg_catalog.pg_last_wal_replay_lsn()
                                ELSE pg_catalog.pg_current_wal_lsn() END AS lsn) w
LEFT JOIN pg_catalog.pg_replication_slots r
       ON r.slot_name = c.slot_name AND r.database = pg_catalog.current_database();

GRANT SELECT ON amebo.delivery_queue TO amebo_reader;

-- Wakes the worker at commit and tells it that subscriptions (or stored messages) changed.
CREATE FUNCTION amebo_internal.note_subscription_change() RETURNS void
AS 'MODULE_PATHNAME', 'amebo_note_subscription_change' LANGUAGE C VOLATILE;

-- Tells the worker that subscriptions, applications or stored messages changed.
CREATE FUNCTION amebo_internal.subscriptions_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    PERFORM amebo_internal.note_subscription_change();
    RETURN NULL;
END
$$;

-- The worker hears of changed subscriptions, applications and stored messages (not of its
-- own writes).
CREATE TRIGGER subscriptions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
ON amebo.subscriptions FOR EACH STATEMENT EXECUTE FUNCTION amebo_internal.subscriptions_changed();
CREATE TRIGGER applications_changed AFTER UPDATE OR DELETE OR TRUNCATE
ON amebo.applications FOR EACH STATEMENT EXECUTE FUNCTION amebo_internal.subscriptions_changed();
CREATE TRIGGER deliveries_changed AFTER INSERT OR UPDATE
ON amebo.deliveries FOR EACH STATEMENT
WHEN (pg_catalog.current_setting('application_name') <> 'amebo worker')
EXECUTE FUNCTION amebo_internal.subscriptions_changed();

-------------------------------------------------------------------------------------------
-- Worker: the background worker's steps, its status, and the waits on it
-------------------------------------------------------------------------------------------

-- Wakes the background worker (after resume_projection, say).
CREATE FUNCTION amebo.wake_worker() RETURNS void
AS 'MODULE_PATHNAME', 'amebo_wake_worker' LANGUAGE C VOLATILE;

-- Calls a projection handler with one event as the projection's owner, in a
-- security-restricted operation (the handler cannot SET ROLE back to the caller).
-- Superuser-only: it is how the worker drops its privileges.
CREATE FUNCTION amebo_internal.call_as_owner(handler regprocedure, owner regrole, event amebo.events)
RETURNS void
AS 'MODULE_PATHNAME', 'amebo_call_as_owner' LANGUAGE C VOLATILE;

-- Applies up to max_events committed events to an async projection, in position order, each
-- in its own subtransaction and as the role that created the projection; on a handler error
-- records it with the event's position and pauses the projection. Returns the number
-- applied. Called by the background worker (with the session's search_path, which the
-- handler sees).
CREATE FUNCTION amebo_internal.run_projection(name text, max_events integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    p amebo.projections;
    e amebo.events;
    settled bigint;
    last bigint;
    applied integer := 0;
BEGIN
    SELECT * INTO p FROM amebo.projections x
    WHERE x.name = run_projection.name FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR p.mode <> 'async' OR p.state <> 'running' THEN
        RETURN 0;
    END IF;
    -- Taken before read_all's own horizon, so every event at or below it is read.
    settled := amebo.settled_position();
    last := p.position;
    FOR e IN SELECT * FROM amebo.read_all(p.position, max_events, p.actions) LOOP
        BEGIN
            PERFORM amebo_internal.call_as_owner(p.handler, p.owner, e);
        EXCEPTION WHEN OTHERS THEN
            UPDATE amebo.projections x
            SET state = 'paused', position = last, applied_at = now(), error = SQLERRM,
                error_position = e.position, error_at = now()
            WHERE x.name = p.name;
            RETURN applied;
        END;
        last := e.position;
        applied := applied + 1;
    END LOOP;
    IF applied < max_events THEN
        last := greatest(last, settled);
    END IF;
    IF last <> p.position THEN
        UPDATE amebo.projections x SET position = last, applied_at = now()
        WHERE x.name = p.name;
    END IF;
    RETURN applied;
END
$$;

-- Actions amebo itself appends (operational events): anyone may subscribe to them, though no
-- application registers them.
CREATE FUNCTION amebo_internal.operational_actions() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog AS $$
    SELECT ARRAY['amebo.subscription_disabled']
$$;

-- Appends an operational event to the stream amebo-operations, whatever amebo.unknown_actions
-- says; an error (a schema someone registered for the action refusing it) is a warning, so
-- that the bookkeeping it is part of goes on.
CREATE FUNCTION amebo_internal.append_operational_event(action text, payload jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    policy text := current_setting('amebo.unknown_actions', true);
BEGIN
    PERFORM set_config('amebo.unknown_actions', 'allow', true);
    PERFORM amebo.append_event('amebo-operations', action, payload);
    PERFORM set_config('amebo.unknown_actions', coalesce(policy, 'allow'), true);
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'amebo could not append its operational event %: %', action, SQLERRM;
END
$$;

-- The circuit breaker, run by the worker with each batch of logged attempts: keeps per
-- subscription when its failed attempts since the last success began, and disables every
-- active subscription with a failed attempt in the batch whose attempts have all failed for
-- amebo.disable_after (0: never), appending an amebo.subscription_disabled event for each.
CREATE FUNCTION amebo_internal.trip_circuit_breakers(attempts jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    period interval;
    tripped record;
BEGIN
    -- The common case, every attempt succeeded: only subscriptions that were failing change.
    IF NOT jsonb_path_exists(attempts, '$[*] ? (exists (@.error))') THEN
        UPDATE amebo.subscription_progress p SET failing_since = NULL
        WHERE p.failing_since IS NOT NULL
          AND p.subscription_id IN (SELECT (a->>'subscription_id')::bigint
                                    FROM jsonb_array_elements(attempts) a);
        RETURN;
    END IF;
    WITH attempt AS (
        SELECT o.subscription_id, o.error, o.attempted_at,
               max(o.attempted_at) FILTER (WHERE o.error IS NULL)
                   OVER (PARTITION BY o.subscription_id) AS succeeded_at
        FROM jsonb_to_recordset(attempts) AS o(subscription_id bigint, error text,
                                               attempted_at timestamptz)
    ), outcome AS (
        SELECT a.subscription_id, bool_or(a.succeeded_at IS NOT NULL) AS succeeded,
               min(a.attempted_at) FILTER (WHERE a.error IS NOT NULL
                   AND a.attempted_at > coalesce(a.succeeded_at, '-infinity')) AS failing_from
        FROM attempt a
        GROUP BY a.subscription_id
    ), recomputed AS (
        SELECT o.subscription_id,
               CASE WHEN o.succeeded THEN o.failing_from
                    ELSE least(x.failing_since, o.failing_from) END AS failing_since
        FROM outcome o JOIN amebo.subscription_progress x ON x.subscription_id = o.subscription_id
    )
    UPDATE amebo.subscription_progress p
    SET failing_since = n.failing_since
    FROM recomputed n
    WHERE p.subscription_id = n.subscription_id
      AND p.failing_since IS DISTINCT FROM n.failing_since; -- healthy ones are not rewritten
    -- The setting's text ('3d', '2s', '90min', '0') reads as an interval.
    period := coalesce(current_setting('amebo.disable_after', true), '3d')::interval;
    IF period <= interval '0' THEN
        RETURN;
    END IF;
    FOR tripped IN
        UPDATE amebo.subscriptions s
        SET state = 'disabled', updated_at = now(),
            disabled_reason = format('every delivery attempt failed for at least %s '
                                     '(amebo.disable_after)',
                                     current_setting('amebo.disable_after', true))
        FROM amebo.subscription_progress p
        WHERE p.subscription_id = s.id AND s.state = 'active'
          AND p.failing_since <= now() - period
          AND s.id IN (SELECT o.subscription_id
                       FROM jsonb_to_recordset(attempts) AS o(subscription_id bigint, error text)
                       WHERE o.error IS NOT NULL)
        RETURNING s.application, s.name, s.disabled_reason, p.failing_since, p.last_error
    LOOP
        PERFORM amebo_internal.append_operational_event('amebo.subscription_disabled',
            jsonb_build_object('subscription', tripped.name, 'application', tripped.application,
                               'reason', tripped.disabled_reason,
                               'since', tripped.failing_since,
                               'last_error', tripped.last_error, 'disabled_at', now()));
    END LOOP;
END
$$;

-- The worker's bookkeeping, in one transaction per batch of outcomes: logs attempts (as one
-- delivery_log_entries row), stores, updates or removes messages, disables subscriptions that
-- answered 410, records progress and the checkpoint. outcomes: {"log": [attempt...],
-- "operations": [the last store or delete per message], "disable": [subscription id...],
-- "subscriptions": [every id touched]}.
CREATE FUNCTION amebo_internal.record_deliveries(outcomes jsonb, checkpoint bigint,
                                                            slot_name text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    -- Subscriptions dropped meanwhile are skipped; those touched stay until commit.
    PERFORM 1 FROM amebo.subscriptions s
    WHERE s.id IN (SELECT x::text::bigint FROM jsonb_array_elements(outcomes->'subscriptions') x)
    FOR KEY SHARE;
    IF jsonb_array_length(outcomes->'log') > 0 THEN
        INSERT INTO amebo.delivery_log_entries (attempts)
        SELECT jsonb_agg(a - '{logged,seq,op,state,next_attempt_at}'::text[]
                         ORDER BY (a->>'seq')::bigint)
        FROM jsonb_array_elements(outcomes->'log') a;
        INSERT INTO amebo.subscription_progress AS p (subscription_id, delivered,
                                                      last_success_at, last_error, last_error_at)
        SELECT o.subscription_id, count(*) FILTER (WHERE o.status BETWEEN 200 AND 299),
               max(o.attempted_at) FILTER (WHERE o.status BETWEEN 200 AND 299),
               (array_agg(o.error ORDER BY o.attempted_at DESC)
                   FILTER (WHERE o.error IS NOT NULL))[1],
               max(o.attempted_at) FILTER (WHERE o.error IS NOT NULL)
        FROM jsonb_to_recordset(outcomes->'log') AS o(subscription_id bigint, status integer,
                                                      error text, attempted_at timestamptz)
        WHERE EXISTS (SELECT 1 FROM amebo.subscriptions s WHERE s.id = o.subscription_id)
        GROUP BY o.subscription_id
        ON CONFLICT (subscription_id) DO UPDATE
        SET delivered = p.delivered + excluded.delivered,
            last_success_at = coalesce(excluded.last_success_at, p.last_success_at),
            last_error = coalesce(excluded.last_error, p.last_error),
            last_error_at = coalesce(excluded.last_error_at, p.last_error_at);
        -- Circuit breaker: how long each subscription has failed, and those disabled for it.
        PERFORM amebo_internal.trip_circuit_breakers(outcomes->'log');
    END IF;
    IF jsonb_array_length(outcomes->'operations') > 0 THEN
        -- Delivered: drop the stored message, if any.
        DELETE FROM amebo.deliveries d
        USING jsonb_to_recordset(outcomes->'operations') AS o(subscription_id bigint,
                                                              webhook_id text, op text)
        WHERE o.op = 'delete' AND d.subscription_id = o.subscription_id
          AND d.webhook_id = o.webhook_id;
        -- Store (or update) messages waiting for a retry or a later time, and dead ones.
        INSERT INTO amebo.deliveries AS d (subscription_id, webhook_id, positions, state,
                                           attempts, next_attempt_at, last_status, last_error)
        SELECT o.subscription_id, o.webhook_id, o.positions, o.state, o.attempt,
               o.next_attempt_at, o.status, o.error
        FROM jsonb_to_recordset(outcomes->'operations') AS o(subscription_id bigint,
            webhook_id text, positions bigint[], op text, state text, attempt integer,
            next_attempt_at timestamptz, status integer, error text, seq bigint)
        WHERE o.op = 'store'
          AND EXISTS (SELECT 1 FROM amebo.subscriptions s WHERE s.id = o.subscription_id)
        ORDER BY o.seq
        ON CONFLICT (subscription_id, webhook_id) DO UPDATE
        SET state = excluded.state, attempts = excluded.attempts,
            next_attempt_at = excluded.next_attempt_at, last_status = excluded.last_status,
            last_error = excluded.last_error, updated_at = now();
    END IF;
    -- A 410 Gone disables the subscription.
    IF jsonb_array_length(outcomes->'disable') > 0 THEN
        UPDATE amebo.subscriptions s
        SET state = 'disabled', updated_at = now(),
            disabled_reason = 'the handler answered 410 Gone'
        WHERE s.id IN (SELECT x::text::bigint FROM jsonb_array_elements(outcomes->'disable') x)
          AND s.state = 'active';
    END IF;
    IF checkpoint IS NOT NULL THEN
        INSERT INTO amebo.delivery_checkpoint AS c (position, slot_name)
        VALUES (checkpoint, slot_name)
        ON CONFLICT (singleton) DO UPDATE
        SET position = greatest(c.position, excluded.position), slot_name = excluded.slot_name,
            updated_at = now();
    END IF;
END
$$;

-- Records the plan of the catch-up the worker starts after creating its slot (through 0:
-- none), so that a worker restarted before the catch-up ended finishes it.
CREATE FUNCTION amebo_internal.plan_catch_up(slot_name text, after_position bigint,
                                              through_position bigint, skip_through bigint)
RETURNS void
LANGUAGE sql SET search_path = pg_catalog AS $$
    INSERT INTO amebo.delivery_checkpoint AS c (position, slot_name, catch_up_through,
                                                slot_skip_through)
    VALUES (after_position, slot_name, through_position, skip_through)
    ON CONFLICT (singleton) DO UPDATE
    SET position = excluded.position, slot_name = excluded.slot_name,
        catch_up_through = excluded.catch_up_through,
        slot_skip_through = excluded.slot_skip_through, updated_at = now()
$$;

-- Stored messages due now, at most max_messages, with their events, for the worker; an
-- ordered subscription offers only its oldest pending message, and only when it is due.
-- Messages in skip (in flight in the worker) are left out.
CREATE FUNCTION amebo_internal.due_deliveries(max_messages integer, skip text[])
RETURNS TABLE (subscription_id bigint, webhook_id text, attempts integer, message_id bigint,
               event_position bigint, event_id uuid, stream text, version bigint,
               action text, payload text, metadata text, recorded_at bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    WITH due AS (
        SELECT d.* FROM amebo.deliveries d JOIN amebo.subscriptions s ON s.id = d.subscription_id
        WHERE d.state = 'pending' AND s.state = 'active' AND NOT s.ordered
          AND d.next_attempt_at <= now()
          AND d.subscription_id::text || ' ' || d.webhook_id NOT IN (SELECT unnest(skip))
        UNION ALL
        SELECT first.* FROM amebo.subscriptions s
        CROSS JOIN LATERAL (SELECT * FROM amebo.deliveries d
                            WHERE d.subscription_id = s.id AND d.state = 'pending'
                            ORDER BY d.id LIMIT 1) first
        WHERE s.ordered AND s.state = 'active' AND first.next_attempt_at <= now()
          AND first.subscription_id::text || ' ' || first.webhook_id NOT IN (SELECT unnest(skip))
        ORDER BY next_attempt_at
        LIMIT max_messages
    )
    SELECT d.subscription_id, d.webhook_id, d.attempts, d.id, e.position, e.event_id, e.stream,
           e.version, e.action, e.payload::text, e.metadata::text,
           ((extract(epoch FROM e.recorded_at) - 946684800) * 1000000)::bigint
    FROM due d CROSS JOIN LATERAL unnest(d.positions) WITH ORDINALITY AS p(position, n)
    JOIN amebo.events e ON e.position = p.position
    ORDER BY d.id, p.n
$$;

-- When the next pending message of an active subscription is due, leaving out those in
-- skip (in the worker's memory), in microseconds since 2000-01-01 UTC; NULL when none.
CREATE FUNCTION amebo_internal.next_due_at(skip text[]) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT ((extract(epoch FROM min(d.next_attempt_at)) - 946684800) * 1000000)::bigint
    FROM amebo.deliveries d JOIN amebo.subscriptions s ON s.id = d.subscription_id
    WHERE d.state = 'pending' AND s.state = 'active'
      AND d.subscription_id::text || ' ' || d.webhook_id NOT IN (SELECT unnest(skip))
$$;

-- Ordered subscriptions with pending messages: their new events queue behind them.
CREATE FUNCTION amebo_internal.blocked_subscriptions() RETURNS SETOF bigint
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT DISTINCT d.subscription_id FROM amebo.deliveries d
    JOIN amebo.subscriptions s ON s.id = d.subscription_id
    WHERE s.ordered AND d.state = 'pending'
$$;

-- Removes delivery log entries recorded before keep ago; returns how many attempts they held.
CREATE FUNCTION amebo_internal.prune_delivery_log(keep interval) RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog AS $$
    WITH removed AS (
        DELETE FROM amebo.delivery_log_entries e WHERE e.recorded_at < now() - keep
        RETURNING jsonb_array_length(e.attempts) AS attempts
    )
    SELECT coalesce(sum(attempts), 0)::bigint FROM removed
$$;

-- The background worker's state: its process, database, and when it last ran.
CREATE FUNCTION amebo.worker_status(OUT pid integer, OUT database text,
                                    OUT started_at timestamptz, OUT last_run_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'amebo_worker_status' LANGUAGE C VOLATILE;
GRANT EXECUTE ON FUNCTION amebo.worker_status() TO amebo_reader;

-- Waits until the background worker runs (at most timeout seconds); true when it does.
CREATE FUNCTION amebo.wait_for_worker(timeout double precision DEFAULT 10) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => timeout);
BEGIN
    LOOP
        IF EXISTS (SELECT 1 FROM amebo.worker_status() w WHERE w.last_run_at IS NOT NULL) THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.wait_for_worker(double precision) TO amebo_reader;

-- Waits until an async projection has applied every settled event (or timeout seconds
-- passed, or it paused); true when it caught up. It wakes the worker, which readers may
-- not do otherwise.
CREATE FUNCTION amebo.wait_for_projection(name text, timeout double precision DEFAULT 10)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => timeout);
    target bigint := amebo.settled_position();
    p amebo.projections;
BEGIN
    PERFORM amebo.wake_worker();
    LOOP
        SELECT * INTO p FROM amebo.projections x WHERE x.name = wait_for_projection.name;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'projection "%" does not exist', name USING ERRCODE = '42704';
        END IF;
        IF p.mode = 'inline' OR p.position >= target THEN
            RETURN true;
        END IF;
        IF p.state = 'paused' OR clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.wait_for_projection(text, double precision) TO amebo_reader;

-- Waits until the worker has handled every event committed before the call and no message is
-- pending or in flight (or timeout seconds passed); true when it has. It wakes the worker.
CREATE FUNCTION amebo.wait_for_deliveries(timeout double precision DEFAULT 10) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => timeout);
    target bigint := amebo.settled_position();
BEGIN
    PERFORM amebo.wake_worker();
    LOOP
        IF coalesce((SELECT c.position >= target FROM amebo.delivery_checkpoint c), false)
           AND NOT EXISTS (SELECT 1 FROM amebo.deliveries d
                           JOIN amebo.subscriptions s ON s.id = d.subscription_id
                           WHERE d.state = 'pending' AND s.state = 'active')
           AND NOT EXISTS (SELECT 1 FROM amebo_internal.delivery_worker_stats() w
                           WHERE w.in_flight > 0 OR w.queued > 0) THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.wait_for_deliveries(double precision) TO amebo_reader;

-------------------------------------------------------------------------------------------
-- Privileges of PUBLIC
-------------------------------------------------------------------------------------------

-- PUBLIC gets nothing: no table, sequence or function of amebo is usable without one of
-- amebo's roles (the grants stand next to each object above).
REVOKE ALL ON ALL TABLES IN SCHEMA amebo FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA amebo FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA amebo, amebo_internal FROM PUBLIC;
-------------------------------------------------------------------------------------------
-- Pull consumers: consumer groups with leases, acknowledgements, retries and parking
-------------------------------------------------------------------------------------------

-- Privileges: amebo_admin manages consumers (create, alter, pause, resume, reset, drop,
-- replay_parked); amebo_writer consumes (poll, ack, nack: they write the consumer's
-- bookkeeping, so readers may not); amebo_reader sees the tables, the views and the member
-- of a stream. Every function here is SECURITY DEFINER: the bookkeeping tables are written
-- only through them. See docs/design.md "Pull consumers" for how leases and order work.

-- Consumer groups: which actions they take, how many members share the streams, and how
-- many retries an event gets before it is parked.
CREATE TABLE amebo.consumers (
    name        text        NOT NULL,
    actions     text[],
    members     integer     NOT NULL,
    max_retries integer     NOT NULL,
    state       text        NOT NULL DEFAULT 'active',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT consumers_pkey PRIMARY KEY (name),
    CONSTRAINT consumers_name_check CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    CONSTRAINT consumers_members_check CHECK (members BETWEEN 1 AND 1024),
    CONSTRAINT consumers_max_retries_check CHECK (max_retries >= 0),
    CONSTRAINT consumers_state_check CHECK (state IN ('active', 'paused'))
);
COMMENT ON TABLE amebo.consumers IS 'amebo: pull consumers (consumer groups)';
SELECT pg_catalog.pg_extension_config_dump('amebo.consumers', '');
GRANT SELECT ON amebo.consumers TO amebo_reader;

-- Backends cache the consumers for the NOTIFY of the append path: tell them of changes.
CREATE TRIGGER consumers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON amebo.consumers
    FOR EACH STATEMENT EXECUTE FUNCTION amebo_internal.registry_changed();

-- Each member's cursor: every event of its share at or below position has been handed out
-- (or recorded as held behind an earlier event of its stream). Every event of the member in
-- flight and not parked lies after in_flight_after, where the scans of its in-flight events
-- (poll's and ack's) start: acknowledged events leave dead index entries behind until VACUUM, and the
-- scans step over them only once.
CREATE TABLE amebo.consumer_members (
    consumer        text    NOT NULL,
    member          integer NOT NULL,
    position        bigint  NOT NULL DEFAULT 0,
    in_flight_after bigint  NOT NULL DEFAULT 0,
    CONSTRAINT consumer_members_pkey PRIMARY KEY (consumer, member),
    CONSTRAINT consumer_members_consumer_fkey FOREIGN KEY (consumer)
        REFERENCES amebo.consumers (name) ON DELETE CASCADE
);
COMMENT ON TABLE amebo.consumer_members IS 'amebo: the cursor of each member of a consumer';
SELECT pg_catalog.pg_extension_config_dump('amebo.consumer_members', '');
GRANT SELECT ON amebo.consumer_members TO amebo_reader;

-- The events in flight for a member, and only those: leased (due_at: the lease's end),
-- waiting for a retry (due_at: when it may go out again), parked, or held behind an
-- earlier event of its stream. An acknowledged event leaves no row. No foreign key: a
-- poll inserts up to max_count rows, and drop_consumer removes them itself.
CREATE TABLE amebo.consumer_events (
    consumer   text        NOT NULL,
    member     integer     NOT NULL,
    event_id   uuid        NOT NULL,
    position   bigint      NOT NULL,
    stream     text        NOT NULL,
    state      text        NOT NULL,
    attempt    integer     NOT NULL,
    due_at     timestamptz,
    updated_at timestamptz NOT NULL,
    CONSTRAINT consumer_events_pkey PRIMARY KEY (consumer, member, position),
    CONSTRAINT consumer_events_state_check CHECK (state IN ('leased', 'retry', 'parked', 'held'))
);
COMMENT ON TABLE amebo.consumer_events IS
    'amebo: events leased, waiting for a retry, parked or held, per consumer member';
SELECT pg_catalog.pg_extension_config_dump('amebo.consumer_events', '');
GRANT SELECT ON amebo.consumer_events TO amebo_reader;

-- The member of a consumer with members members that receives a stream's events:
-- PostgreSQL's hashtext(stream) made non-negative, modulo members. Clients may call it.
CREATE FUNCTION amebo.consumer_member(stream text, members integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ((pg_catalog.hashtext(stream)::bigint OPERATOR(pg_catalog.+) 2147483648)
        OPERATOR(pg_catalog.%) members)::integer;
COMMENT ON FUNCTION amebo.consumer_member(text, integer) IS
    'the member (0 .. members - 1) that receives a stream''s events';
GRANT EXECUTE ON FUNCTION amebo.consumer_member(text, integer) TO amebo_reader;

-- Raises 22023 unless the consumer settings are valid.
CREATE FUNCTION amebo_internal.check_consumer(name text, actions text[], members integer,
                                               max_retries integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL OR members IS NULL OR max_retries IS NULL THEN
        RAISE EXCEPTION 'name, members and max_retries must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF name !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid consumer name "%"', name USING ERRCODE = '22023',
            HINT = 'A name is 1 to 63 characters: a lowercase letter, then a-z, 0-9, _ or -.';
    END IF;
    IF cardinality(actions) = 0 THEN
        RAISE EXCEPTION 'actions must not be empty' USING ERRCODE = '22023',
            HINT = 'Use NULL for every action.';
    END IF;
    IF array_position(actions, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'actions must not contain NULL' USING ERRCODE = '22004';
    END IF;
    IF members NOT BETWEEN 1 AND 1024 THEN
        RAISE EXCEPTION 'members must be between 1 and 1024, not %', members
            USING ERRCODE = '22023';
    END IF;
    IF max_retries < 0 THEN
        RAISE EXCEPTION 'max_retries must not be negative' USING ERRCODE = '22023';
    END IF;
END
$$;

-- The consumer's row, locked FOR UPDATE; raises 42704 when there is none.
CREATE FUNCTION amebo_internal.lock_consumer(name text) RETURNS amebo.consumers
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers;
BEGIN
    SELECT * INTO c FROM amebo.consumers x WHERE x.name = lock_consumer.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'consumer "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    RETURN c;
END
$$;

-- The consumer's row (not locked) after checking that member is one of its members; raises
-- 42704 for an unknown consumer and 22023 for a member outside 0 .. members - 1.
CREATE FUNCTION amebo_internal.consumer_of_member(name text, member integer)
RETURNS amebo.consumers
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers;
BEGIN
    SELECT * INTO c FROM amebo.consumers x WHERE x.name = consumer_of_member.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'consumer "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    IF member IS NULL OR member < 0 OR member >= c.members THEN
        RAISE EXCEPTION 'member % is not a member of consumer "%"', member, name
            USING ERRCODE = '22023',
                  DETAIL = format('Consumer "%s" has members 0 to %s.', name, c.members - 1);
    END IF;
    RETURN c;
END
$$;

-- Creates a consumer whose members start at position 0 (every event of their share);
-- reset_consumer moves them.
CREATE FUNCTION amebo.create_consumer(name text, actions text[] DEFAULT NULL,
                                      members integer DEFAULT 1, max_retries integer DEFAULT 5)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM amebo_internal.check_consumer(name, actions, members, max_retries);
    INSERT INTO amebo.consumers (name, actions, members, max_retries)
    VALUES (name, actions, members, max_retries);
    INSERT INTO amebo.consumer_members (consumer, member)
    SELECT create_consumer.name, m FROM generate_series(0, members - 1) m;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'consumer "%" already exists', name USING ERRCODE = '42710';
END
$$;
COMMENT ON FUNCTION amebo.create_consumer(text, text[], integer, integer) IS
    'creates a pull consumer (a consumer group) of some actions (NULL: all)';
GRANT EXECUTE ON FUNCTION amebo.create_consumer(text, text[], integer, integer) TO amebo_admin;

-- Changes a consumer's members count or max_retries (NULL keeps the value). A new members
-- count is refused while events are leased, waiting for a retry or held (55000); it starts
-- every member at the lowest position of the old ones (events between are handed out
-- again) and moves parked events to the member of their stream.
CREATE FUNCTION amebo.alter_consumer(name text, members integer DEFAULT NULL,
                                     max_retries integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.lock_consumer(name);
    start bigint;
BEGIN
    PERFORM amebo_internal.check_consumer(c.name, c.actions, coalesce(members, c.members),
                                          coalesce(max_retries, c.max_retries));
    IF members IS NOT NULL AND members <> c.members THEN
        PERFORM 1 FROM amebo.consumer_members m WHERE m.consumer = c.name FOR UPDATE;
        IF EXISTS (SELECT 1 FROM amebo.consumer_events e
                   WHERE e.consumer = c.name AND e.state <> 'parked') THEN
            RAISE EXCEPTION 'consumer "%" has events in flight', c.name USING ERRCODE = '55000',
                DETAIL = 'Its members count cannot change while events are leased, waiting for a retry or held.',
                HINT = 'Pause the consumer, let its members acknowledge their events, then retry.';
        END IF;
        SELECT min(m.position) INTO start FROM amebo.consumer_members m WHERE m.consumer = c.name;
        DELETE FROM amebo.consumer_members m WHERE m.consumer = c.name;
        INSERT INTO amebo.consumer_members (consumer, member, position, in_flight_after)
        SELECT c.name, m, start, start FROM generate_series(0, alter_consumer.members - 1) m;
        UPDATE amebo.consumer_events e
        SET member = amebo.consumer_member(e.stream, alter_consumer.members)
        WHERE e.consumer = c.name;
    END IF;
    UPDATE amebo.consumers x
    SET members = coalesce(alter_consumer.members, x.members),
        max_retries = coalesce(alter_consumer.max_retries, x.max_retries), updated_at = now()
    WHERE x.name = c.name;
END
$$;
COMMENT ON FUNCTION amebo.alter_consumer(text, integer, integer) IS
    'changes a consumer''s members count or max_retries';
GRANT EXECUTE ON FUNCTION amebo.alter_consumer(text, integer, integer) TO amebo_admin;

-- Removes a consumer with its cursors and in-flight events.
CREATE FUNCTION amebo.drop_consumer(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.lock_consumer(name);
BEGIN
    DELETE FROM amebo.consumer_events e WHERE e.consumer = c.name;
    DELETE FROM amebo.consumers x WHERE x.name = c.name;
END
$$;
COMMENT ON FUNCTION amebo.drop_consumer(text) IS 'removes a consumer and its bookkeeping';
GRANT EXECUTE ON FUNCTION amebo.drop_consumer(text) TO amebo_admin;

-- Stops handing out events (poll returns none) until resume_consumer.
CREATE FUNCTION amebo.pause_consumer(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.lock_consumer(name);
BEGIN
    UPDATE amebo.consumers x SET state = 'paused', updated_at = now() WHERE x.name = c.name;
END
$$;
COMMENT ON FUNCTION amebo.pause_consumer(text) IS 'stops a consumer''s polls from handing out events';
GRANT EXECUTE ON FUNCTION amebo.pause_consumer(text) TO amebo_admin;

-- Hands out events again after pause_consumer (and wakes its members' LISTEN).
CREATE FUNCTION amebo.resume_consumer(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.lock_consumer(name);
BEGIN
    UPDATE amebo.consumers x SET state = 'active', updated_at = now() WHERE x.name = c.name;
    PERFORM pg_notify('amebo_consumer', c.name);
END
$$;
COMMENT ON FUNCTION amebo.resume_consumer(text) IS 'lets a paused consumer''s polls hand out events';
GRANT EXECUTE ON FUNCTION amebo.resume_consumer(text) TO amebo_admin;

-- Moves every member's cursor to after_position; drops the events leased, waiting for a
-- retry or held (parked ones stay); wakes the members' LISTEN. Returns the position.
CREATE FUNCTION amebo.reset_consumer(name text, after_position bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.lock_consumer(name);
BEGIN
    IF after_position IS NULL OR after_position < 0 THEN
        RAISE EXCEPTION 'after_position must be a position (0 or more)' USING ERRCODE = '22023';
    END IF;
    -- Waits for running polls of every member.
    UPDATE amebo.consumer_members m SET position = after_position, in_flight_after = after_position
    WHERE m.consumer = c.name;
    DELETE FROM amebo.consumer_events e WHERE e.consumer = c.name AND e.state <> 'parked';
    PERFORM pg_notify('amebo_consumer', c.name);
    RETURN after_position;
END
$$;
COMMENT ON FUNCTION amebo.reset_consumer(text, bigint) IS
    'moves a consumer''s members to a position (events after it are handed out)';
GRANT EXECUTE ON FUNCTION amebo.reset_consumer(text, bigint) TO amebo_admin;

-- Moves every member's cursor to just before the first event recorded at or after since
-- (a scan of the events); returns the position.
CREATE FUNCTION amebo.reset_consumer(name text, since timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be NULL' USING ERRCODE = '22004';
    END IF;
    RETURN amebo.reset_consumer(name,
        coalesce((SELECT min(e.position) - 1 FROM amebo.events e WHERE e.recorded_at >= since),
                 (SELECT max(e.position) FROM amebo.events e), 0));
END
$$;
COMMENT ON FUNCTION amebo.reset_consumer(text, timestamptz) IS
    'moves a consumer''s members to the first event recorded at or after a time';
GRANT EXECUTE ON FUNCTION amebo.reset_consumer(text, timestamptz) TO amebo_admin;

-- Hands out the member's next events, in position order, each leased until lease has passed
-- and with its attempt number: first its in-flight events that are due (expired leases,
-- retries due, events held behind an earlier one of their stream), then new events after its
-- cursor, up to the settled position (read_all's horizon). A stream with an event leased or
-- waiting for a retry gets no later event: those are recorded as held.
CREATE FUNCTION amebo.poll(consumer text, member integer DEFAULT 0, max_count integer DEFAULT 100,
                           lease interval DEFAULT '30 seconds')
RETURNS TABLE ("position" bigint, event_id uuid, stream text, version bigint, action text,
               payload jsonb, metadata jsonb, recorded_at timestamptz, schema_version integer,
               attempt integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    c amebo.consumers := amebo_internal.consumer_of_member(poll.consumer, poll.member);
    now_at timestamptz := clock_timestamp();
    cursor_at bigint;
    flight_after bigint;
    settled bigint;
    blocked text[] := '{}';
    taken integer := 0;
    scanned integer := 0;
    last_scanned bigint;
BEGIN
    IF max_count IS NULL OR max_count NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'max_count must be between 1 and 10000' USING ERRCODE = '22023';
    END IF;
    IF lease IS NULL OR lease <= interval '0' OR lease > interval '1 day' THEN
        RAISE EXCEPTION 'lease must be more than 0 and at most 1 day' USING ERRCODE = '22023';
    END IF;
    -- The settled position is taken before the statement that reads the events, whose
    -- snapshot must be newer: under REPEATABLE READ it would be the transaction's.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'amebo.poll needs a READ COMMITTED transaction' USING ERRCODE = '0A000',
            DETAIL = 'Its commit-order horizon holds only for a snapshot taken after it.',
            HINT = 'Poll in a READ COMMITTED transaction (the default); ack may run in any.';
    END IF;
    IF c.state = 'paused' THEN
        RETURN;
    END IF;
    settled := amebo.settled_position();
    -- A member caught up with nothing in flight: nothing to lock or write.
    SELECT m.position, m.in_flight_after INTO cursor_at, flight_after FROM amebo.consumer_members m
    WHERE m.consumer = c.name AND m.member = poll.member;
    IF cursor_at >= settled AND NOT EXISTS (
        SELECT 1 FROM amebo.consumer_events x
        WHERE x.consumer = c.name AND x.member = poll.member AND x.position > flight_after
          AND x.state <> 'parked') THEN
        RETURN;
    END IF;
    -- Polls of one member take turns.
    SELECT m.position, m.in_flight_after INTO cursor_at, flight_after
    FROM amebo.consumer_members m
    WHERE m.consumer = c.name AND m.member = poll.member FOR UPDATE;
    -- Asked again under the lock: a poll, nack or replay_parked may have committed since.
    -- With none in flight (as after a batch acknowledged whole) none is due or blocks a stream.
    IF EXISTS (SELECT 1 FROM amebo.consumer_events x
               WHERE x.consumer = c.name AND x.member = poll.member
                 AND x.position > flight_after AND x.state <> 'parked') THEN
        -- An expired lease counts as a failed attempt: past max_retries the event is parked.
        UPDATE amebo.consumer_events x SET state = 'parked', due_at = NULL, updated_at = now_at
        WHERE x.consumer = c.name AND x.member = poll.member AND x.position > flight_after
          AND x.state = 'leased' AND x.due_at <= now_at AND x.attempt > c.max_retries;
        SELECT coalesce(array_agg(DISTINCT x.stream), '{}') INTO blocked
        FROM amebo.consumer_events x
        WHERE x.consumer = c.name AND x.member = poll.member AND x.position > flight_after
          AND x.state IN ('leased', 'retry') AND x.due_at > now_at;

        -- In-flight events that are due, of streams that are not blocked, in position order.
        RETURN QUERY
        WITH due AS MATERIALIZED (
            SELECT x.position FROM amebo.consumer_events x
            WHERE x.consumer = c.name AND x.member = poll.member AND x.position > flight_after
              AND x.state <> 'parked' AND x.stream <> ALL (blocked)
            ORDER BY x.position LIMIT max_count
        ), leased AS (
            UPDATE amebo.consumer_events x
            SET state = 'leased', attempt = x.attempt + 1, due_at = now_at + lease,
                updated_at = now_at
            FROM due
            WHERE x.consumer = c.name AND x.member = poll.member AND x.position = due.position
              AND (x.state = 'held' OR x.due_at <= now_at)
            RETURNING x.position, x.attempt
        )
        SELECT ev.position, ev.event_id, ev.stream, ev.version, ev.action, ev.payload, ev.metadata,
               ev.recorded_at, ev.schema_version, leased.attempt
        FROM leased JOIN amebo.events ev ON ev.position = leased.position
        ORDER BY ev.position;
        GET DIAGNOSTICS taken = ROW_COUNT;
    END IF;

    -- New events after the cursor: leased, or held when their stream is blocked. (Every
    -- event in flight lies at or below the cursor, so the rows after it are this scan's.)
    RETURN QUERY
    WITH fresh AS MATERIALIZED (
        SELECT ev.*, ev.stream = ANY (blocked) AS held FROM amebo.events ev
        WHERE taken < max_count AND ev.position > cursor_at AND ev.position <= settled
          AND (c.actions IS NULL OR ev.action = ANY (c.actions))
          AND (c.members = 1 OR amebo.consumer_member(ev.stream, c.members) = poll.member)
        ORDER BY ev.position LIMIT max_count - taken
    ), recorded AS (
        INSERT INTO amebo.consumer_events (consumer, member, event_id, position, stream,
                                           state, attempt, due_at, updated_at)
        SELECT c.name, poll.member, f.event_id, f.position, f.stream,
               CASE WHEN f.held THEN 'held' ELSE 'leased' END,
               CASE WHEN f.held THEN 0 ELSE 1 END,
               CASE WHEN f.held THEN NULL ELSE now_at + lease END, now_at
        FROM fresh f
    )
    SELECT f.position, f.event_id, f.stream, f.version, f.action, f.payload, f.metadata,
           f.recorded_at, f.schema_version, 1
    FROM fresh f WHERE NOT f.held ORDER BY f.position;
    SELECT count(*), max(x.position) INTO scanned, last_scanned FROM amebo.consumer_events x
    WHERE x.consumer = c.name AND x.member = poll.member AND x.position > cursor_at;
    -- A short scan read every event of the share up to the settled position.
    IF taken < max_count THEN
        cursor_at := CASE WHEN scanned < max_count - taken THEN greatest(cursor_at, settled)
                          ELSE last_scanned END;
    END IF;
    -- The next scans start at the member's first event in flight (not parked).
    flight_after := coalesce((SELECT x.position - 1 FROM amebo.consumer_events x
                              WHERE x.consumer = c.name AND x.member = poll.member
                                AND x.position > flight_after AND x.state <> 'parked'
                              ORDER BY x.position LIMIT 1), cursor_at);
    UPDATE amebo.consumer_members m SET position = cursor_at, in_flight_after = flight_after
    WHERE m.consumer = c.name AND m.member = poll.member
      AND (m.position, m.in_flight_after) IS DISTINCT FROM (cursor_at, flight_after);
END
$$;
COMMENT ON FUNCTION amebo.poll(text, integer, integer, interval) IS
    'leases a consumer member''s next events, commit-order safe and in per-stream order';
GRANT EXECUTE ON FUNCTION amebo.poll(text, integer, integer, interval) TO amebo_writer;

-- Acknowledges events the member holds (leased to it, even past the lease's end): they
-- leave the bookkeeping with the caller's transaction. Raises AM009 when one is not held
-- (unknown, acknowledged already, nacked, parked, or another member's). Returns how many.
CREATE FUNCTION amebo.ack(consumer text, member integer, event_ids uuid[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.consumer_of_member(consumer, member);
    wanted integer;
    acked integer;
    done uuid[];
    missing uuid;
BEGIN
    IF event_ids IS NULL OR array_position(event_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'event_ids must not be NULL or contain NULL' USING ERRCODE = '22004';
    END IF;
    -- By the event_id recorded with each row: every event leased to the member lies after
    -- its in_flight_after, so the scan reads its events in flight and not the events table.
    WITH gone AS (
        DELETE FROM amebo.consumer_events x
        WHERE x.consumer = c.name AND x.member = ack.member AND x.event_id = ANY (event_ids)
          AND x.state = 'leased'
          AND x.position > (SELECT m.in_flight_after FROM amebo.consumer_members m
                            WHERE m.consumer = c.name AND m.member = ack.member)
        RETURNING x.event_id
    )
    SELECT count(*), coalesce(array_agg(gone.event_id), '{}') INTO acked, done FROM gone;
    -- The ids are counted once each only when fewer were acknowledged than given.
    wanted := cardinality(event_ids);
    IF acked < wanted THEN
        SELECT count(DISTINCT id) INTO wanted FROM unnest(event_ids) id;
    END IF;
    IF acked < wanted THEN
        -- The first id given that this call did not acknowledge.
        SELECT u.id INTO missing FROM unnest(event_ids) WITH ORDINALITY AS u(id, n)
        WHERE u.id <> ALL (done) ORDER BY u.n LIMIT 1;
        RAISE EXCEPTION 'event % is not leased to member % of consumer "%"', missing, member,
            c.name USING ERRCODE = 'AM009',
            DETAIL = format('%s of the %s events given are not leased to this member.',
                            wanted - acked, wanted),
            HINT = 'It was acknowledged already, nacked, parked, or never handed out to it.';
    END IF;
    RETURN acked;
END
$$;
COMMENT ON FUNCTION amebo.ack(text, integer, uuid[]) IS
    'acknowledges events leased to a consumer member (with the caller''s transaction)';
GRANT EXECUTE ON FUNCTION amebo.ack(text, integer, uuid[]) TO amebo_writer;

-- Gives a leased event back: it goes out again after retry_after (NULL: at the next poll),
-- or is parked when it has had 1 + max_retries attempts. Its stream waits meanwhile.
-- Returns the event's new state, 'retry' or 'parked'; raises AM009 unless it is leased to
-- the member.
CREATE FUNCTION amebo.nack(consumer text, member integer, event_id uuid,
                           retry_after interval DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.consumer_of_member(consumer, member);
    new_state text;
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF retry_after < interval '0' THEN
        RAISE EXCEPTION 'retry_after must not be negative' USING ERRCODE = '22023';
    END IF;
    UPDATE amebo.consumer_events x
    SET state = CASE WHEN x.attempt > c.max_retries THEN 'parked' ELSE 'retry' END,
        due_at = CASE WHEN x.attempt > c.max_retries THEN NULL
                      ELSE clock_timestamp() + coalesce(retry_after, interval '0') END,
        updated_at = clock_timestamp()
    WHERE x.consumer = c.name AND x.member = nack.member
      AND x.position = (SELECT e.position FROM amebo.events e WHERE e.event_id = nack.event_id)
      AND x.state = 'leased'
    RETURNING x.state INTO new_state;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % is not leased to member % of consumer "%"', event_id, member,
            c.name USING ERRCODE = 'AM009',
            HINT = 'It was acknowledged already, nacked, parked, or never handed out to it.';
    END IF;
    RETURN new_state;
END
$$;
COMMENT ON FUNCTION amebo.nack(text, integer, uuid, interval) IS
    'gives a leased event back for a retry (parked after max_retries)';
GRANT EXECUTE ON FUNCTION amebo.nack(text, integer, uuid, interval) TO amebo_writer;

-- Sends a consumer's parked events out again (each with a fresh count of attempts, in
-- position order with the events of its member) and wakes its members' LISTEN; returns how
-- many.
CREATE FUNCTION amebo.replay_parked(consumer text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.lock_consumer(consumer);
    replayed bigint;
BEGIN
    WITH replay AS (
        UPDATE amebo.consumer_events x
        SET state = 'retry', attempt = 0, due_at = clock_timestamp(),
            updated_at = clock_timestamp()
        WHERE x.consumer = c.name AND x.state = 'parked'
        RETURNING x.member, x.position
    ), lowest AS (
        SELECT r.member, min(r.position) AS position, count(*) AS events
        FROM replay r GROUP BY r.member
    ), moved AS (
        -- The poll's scans of in-flight events must start before the replayed ones.
        UPDATE amebo.consumer_members m
        SET in_flight_after = least(m.in_flight_after, l.position - 1)
        FROM lowest l WHERE m.consumer = c.name AND m.member = l.member
    )
    SELECT coalesce(sum(l.events), 0) INTO replayed FROM lowest l;
    PERFORM pg_notify('amebo_consumer', c.name);
    RETURN replayed;
END
$$;
COMMENT ON FUNCTION amebo.replay_parked(text) IS 'sends a consumer''s parked events out again';
GRANT EXECUTE ON FUNCTION amebo.replay_parked(text) TO amebo_admin;

-- Events parked after max_retries failed attempts, until replay_parked.
CREATE VIEW amebo.consumer_parked AS
SELECT x.consumer, x.member, x.position, x.event_id, x.stream, e.action, x.attempt AS attempts,
       x.updated_at AS parked_at
FROM amebo.consumer_events x JOIN amebo.events e ON e.position = x.position
WHERE x.state = 'parked';
COMMENT ON VIEW amebo.consumer_parked IS 'amebo: consumers'' parked events';
GRANT SELECT ON amebo.consumer_parked TO amebo_reader;

-- Per consumer and member: its cursor, its lag (events of its share after the cursor up to
-- the settled position, and the age of the oldest event not yet acknowledged), and its
-- in-flight events by state. Counting the lag reads the events after the cursor.
CREATE VIEW amebo.consumer_status AS
SELECT c.name AS consumer, m.member, c.state, m.position, lag.events AS lag_events,
       coalesce(extract(epoch FROM now() - least(lag.oldest, flight.oldest)), 0)::double precision
           AS lag_seconds,
       flight.leased, flight.waiting, flight.held, flight.parked
FROM amebo.consumers c
JOIN amebo.consumer_members m ON m.consumer = c.name
CROSS JOIN (SELECT amebo.settled_position() AS position) settled
CROSS JOIN LATERAL (
    SELECT count(*) AS events, min(e.recorded_at) AS oldest FROM amebo.events e
    WHERE e.position > m.position AND e.position <= settled.position
      AND (c.actions IS NULL OR e.action = ANY (c.actions))
      AND amebo.consumer_member(e.stream, c.members) = m.member
) lag
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE x.state = 'leased') AS leased,
           count(*) FILTER (WHERE x.state = 'retry') AS waiting,
           count(*) FILTER (WHERE x.state = 'held') AS held,
           count(*) FILTER (WHERE x.state = 'parked') AS parked,
           min(e.recorded_at) FILTER (WHERE x.state <> 'parked') AS oldest
    FROM amebo.consumer_events x JOIN amebo.events e ON e.position = x.position
    WHERE x.consumer = c.name AND x.member = m.member
) flight;
COMMENT ON VIEW amebo.consumer_status IS
    'amebo: each consumer member''s position, lag and in-flight events';
GRANT SELECT ON amebo.consumer_status TO amebo_reader;

-- PUBLIC gets nothing here either (this section follows the general REVOKE above).
REVOKE EXECUTE ON FUNCTION amebo.consumer_member(text, integer),
    amebo_internal.check_consumer(text, text[], integer, integer),
    amebo_internal.lock_consumer(text), amebo_internal.consumer_of_member(text, integer),
    amebo.create_consumer(text, text[], integer, integer),
    amebo.alter_consumer(text, integer, integer), amebo.drop_consumer(text),
    amebo.pause_consumer(text), amebo.resume_consumer(text),
    amebo.reset_consumer(text, bigint), amebo.reset_consumer(text, timestamptz),
    amebo.poll(text, integer, integer, interval), amebo.ack(text, integer, uuid[]),
    amebo.nack(text, integer, uuid, interval), amebo.replay_parked(text) FROM PUBLIC;

-------------------------------------------------------------------------------------------
-- Retention, deletion, erasure
--
-- amebo_admin removes events: truncate_stream (a stream's oldest events), delete_stream (all
-- of a stream's events; hard: for good), set_retention (per category, enforced by the
-- background worker in small batches); and erases personal data with redact. Only two C
-- functions change rows of amebo.events (amebo_internal.remove_events and redact_events, see
-- src/store/removal.cpp); the trigger refuses every other change. A stream's versions never
-- restart: when all its events are gone, amebo.removed_streams keeps its last version, where
-- the append path's head probe finds it. See docs/design.md "Retention, deletion and erasure".
-------------------------------------------------------------------------------------------

-- Streams whose events were all removed at some time: the version their next append continues
-- from, and the tombstone of a hard delete. The append path reads it only when the stream has
-- no stored event.
CREATE TABLE amebo.removed_streams (
    stream     text        NOT NULL,
    version    bigint      NOT NULL,
    tombstone  boolean     NOT NULL DEFAULT false,
    removed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT removed_streams_pkey PRIMARY KEY (stream)
);
COMMENT ON TABLE amebo.removed_streams IS
    'amebo: streams emptied by a removal (their last version) and hard-deleted streams';
SELECT pg_catalog.pg_extension_config_dump('amebo.removed_streams', '');
GRANT SELECT ON amebo.removed_streams TO amebo_reader;

-- Retention policies per stream category (the part of a stream's name before its first '-').
-- The worker's pass resumes from age_checked_through and count_checked_through: every event
-- at or below them has been looked at for this policy.
CREATE TABLE amebo.retention_policies (
    category              text        NOT NULL,
    max_age               interval,
    max_count             bigint,
    age_checked_through   bigint      NOT NULL DEFAULT 0,
    count_checked_through bigint      NOT NULL DEFAULT 0,
    removed               bigint      NOT NULL DEFAULT 0,
    last_pass_at          timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT retention_policies_pkey PRIMARY KEY (category),
    CONSTRAINT retention_policies_max_age_check CHECK (max_age > interval '0'),
    CONSTRAINT retention_policies_max_count_check CHECK (max_count > 0),
    CONSTRAINT retention_policies_limit_check CHECK (max_age IS NOT NULL OR max_count IS NOT NULL)
);
COMMENT ON TABLE amebo.retention_policies IS
    'amebo: retention per stream category, enforced by the background worker';
SELECT pg_catalog.pg_extension_config_dump('amebo.retention_policies', '');
GRANT SELECT ON amebo.retention_policies TO amebo_reader;

-- The audit trail of erasures: who (the session's login role), when, which stream and paths,
-- why, and how many events and snapshots changed.
CREATE TABLE amebo.redactions (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    stream      text        NOT NULL,
    paths       text[]      NOT NULL,
    reason      text        NOT NULL,
    count       bigint      NOT NULL,
    snapshots   bigint      NOT NULL,
    redacted_by name        NOT NULL DEFAULT session_user,
    redacted_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT redactions_pkey PRIMARY KEY (id)
);
COMMENT ON TABLE amebo.redactions IS 'amebo: every redaction (erasure of JSON paths)';
SELECT pg_catalog.pg_extension_config_dump('amebo.redactions', '');
SELECT pg_catalog.pg_extension_config_dump('amebo.redactions_id_seq', '');
GRANT SELECT ON amebo.redactions TO amebo_reader;

-- Holds the stream's append lock until the transaction ends, once no other open transaction
-- has appended to it; returns its head (0: no such stream). Only the owner may call it.
CREATE FUNCTION amebo_internal.lock_stream(stream text) RETURNS bigint
LANGUAGE c AS 'MODULE_PATHNAME', 'amebo_lock_stream';

-- Deletes the events at these positions (the only DELETE the trigger lets through).
CREATE FUNCTION amebo_internal.remove_events(positions bigint[]) RETURNS bigint
LANGUAGE c AS 'MODULE_PATHNAME', 'amebo_remove_events';

-- Removes the paths from the stream's payloads and metadata (the only UPDATE the trigger lets
-- through); returns how many events changed.
CREATE FUNCTION amebo_internal.redact_events(stream text, paths text[]) RETURNS bigint
LANGUAGE c AS 'MODULE_PATHNAME', 'amebo_redact_events';

-- document without the JSON paths (each a text[] literal such as '{address,street}').
CREATE FUNCTION amebo_internal.without_paths(document jsonb, paths text[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    path text;
BEGIN
    FOREACH path IN ARRAY paths LOOP
        document := document #- path::text[];
    END LOOP;
    RETURN document;
END
$$;

-- Raises 22004/22023 unless paths is a non-empty list of object paths (no array indexes).
CREATE FUNCTION amebo_internal.check_paths(paths text[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    path text;
    parsed text[];
BEGIN
    IF paths IS NULL OR cardinality(paths) = 0 THEN
        RAISE EXCEPTION 'paths must name at least one JSON path' USING ERRCODE = '22023',
            HINT = 'For example ARRAY[''{email}'', ''{address,street}''].';
    END IF;
    FOREACH path IN ARRAY paths LOOP
        IF path IS NULL THEN
            RAISE EXCEPTION 'paths must not contain NULL' USING ERRCODE = '22004';
        END IF;
        BEGIN
            parsed := path::text[];
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION 'malformed JSON path "%"', path USING ERRCODE = '22023',
                HINT = 'A path is a text array literal such as {address,street}.';
        END;
        IF cardinality(parsed) = 0 OR array_ndims(parsed) <> 1 OR NULL = ANY (parsed)
           OR '' = ANY (parsed) THEN
            RAISE EXCEPTION 'malformed JSON path "%"', path USING ERRCODE = '22023',
                HINT = 'A path is a text array literal of object keys such as {address,street}.';
        END IF;
        IF EXISTS (SELECT 1 FROM unnest(parsed) k WHERE k ~ '^-?[0-9]+$') THEN
            RAISE EXCEPTION 'JSON path "%" goes into an array', path USING ERRCODE = '22023',
                DETAIL = 'redact removes object keys; array elements keep their places.',
                HINT = 'Name the key that holds the array, or one inside its elements'' object.';
        END IF;
    END LOOP;
END
$$;

-- Removes the events at these positions; keeps the versions of streams left empty in
-- amebo.removed_streams; drops the positions from stored webhook messages (a message left
-- with none is dropped) and from pull consumers' in-flight events. Returns how many went.
CREATE FUNCTION amebo_internal.remove_positions(positions bigint[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    streams text[];
    heads bigint[];
    removed bigint;
BEGIN
    SELECT array_agg(h.stream), array_agg(h.version) INTO streams, heads
    FROM (SELECT e.stream, max(e.version) AS version FROM amebo.events e
          WHERE e.position = ANY (remove_positions.positions) GROUP BY e.stream) h;
    removed := amebo_internal.remove_events(remove_positions.positions);
    INSERT INTO amebo.removed_streams AS r (stream, version)
    SELECT h.stream, h.version FROM unnest(streams, heads) AS h(stream, version)
    WHERE NOT EXISTS (SELECT 1 FROM amebo.events e WHERE e.stream = h.stream)
    ON CONFLICT ON CONSTRAINT removed_streams_pkey
    DO UPDATE SET version = greatest(r.version, excluded.version), removed_at = now();
    UPDATE amebo.deliveries d
    SET positions = ARRAY(SELECT p FROM unnest(d.positions) p
                      WHERE p <> ALL (remove_positions.positions)),
        updated_at = now()
    WHERE d.positions && remove_positions.positions;
    DELETE FROM amebo.deliveries d WHERE d.positions = '{}';
    DELETE FROM amebo.consumer_events x WHERE x.position = ANY (remove_positions.positions);
    RETURN removed;
END
$$;

-- Raises 55000 when cutting the stream before before_version would leave its state
-- unrecoverable: its category has a reducer and no snapshot of it is at version
-- before_version - 1 or later (load_state folds the kept events onto that snapshot).
CREATE FUNCTION amebo_internal.check_state_kept(stream text, before_version bigint)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM amebo.reducers r WHERE r.category = split_part(stream, '-', 1))
       AND NOT EXISTS (SELECT 1 FROM amebo.snapshots s
                       WHERE s.stream = check_state_kept.stream
                         AND s.version >= before_version - 1)
       AND EXISTS (SELECT 1 FROM amebo.events e
                   WHERE e.stream = check_state_kept.stream AND e.version < before_version) THEN
        RAISE EXCEPTION 'truncating stream "%" before version % would lose its state',
                        stream, before_version
            USING ERRCODE = '55000',
                  DETAIL = format('Category "%s" has a reducer, and no snapshot of the stream '
                                  'is at version %s or later.',
                                  split_part(stream, '-', 1), before_version - 1),
                  HINT = format('Save one first: SELECT amebo.save_snapshot(%L, %s, '
                                'amebo.replay_state(%L, %s));', stream, before_version - 1,
                                stream, before_version - 1);
    END IF;
END
$$;

-- Removes the stream's events with a version below before_version (at most its head + 1);
-- returns how many. The stream's version and the next append's version do not change.
CREATE FUNCTION amebo.truncate_stream(stream text, before_version bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head bigint;
BEGIN
    IF stream IS NULL OR before_version IS NULL THEN
        RAISE EXCEPTION 'stream and before_version must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF before_version < 1 THEN
        RAISE EXCEPTION 'before_version must be at least 1' USING ERRCODE = '22023';
    END IF;
    head := amebo_internal.lock_stream(stream);
    IF head = 0 THEN
        RAISE EXCEPTION 'stream "%" does not exist', stream USING ERRCODE = '42704';
    END IF;
    IF before_version > head + 1 THEN
        RAISE EXCEPTION 'cannot truncate stream "%" before version %: it is beyond the head',
                        stream, before_version
            USING ERRCODE = '22023',
                  DETAIL = format('Stream "%s" is at version %s; before_version may be at most %s.',
                                  stream, head, head + 1);
    END IF;
    PERFORM amebo_internal.check_state_kept(stream, before_version);
    RETURN amebo_internal.remove_positions(ARRAY(
        SELECT e.position FROM amebo.events e
        WHERE e.stream = truncate_stream.stream AND e.version < before_version));
END
$$;

-- Removes all of the stream's events and its snapshots; returns how many events went. Soft:
-- the stream may be appended again and its versions go on. Hard: a tombstone, and every later
-- append to the stream raises AM010.
CREATE FUNCTION amebo.delete_stream(stream text, hard boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head bigint;
    removed bigint;
BEGIN
    IF stream IS NULL OR hard IS NULL THEN
        RAISE EXCEPTION 'stream and hard must not be NULL' USING ERRCODE = '22004';
    END IF;
    head := amebo_internal.lock_stream(stream);
    IF head = 0 AND NOT EXISTS (SELECT 1 FROM amebo.removed_streams r
                                WHERE r.stream = delete_stream.stream) THEN
        RAISE EXCEPTION 'stream "%" does not exist', stream USING ERRCODE = '42704';
    END IF;
    removed := amebo_internal.remove_positions(ARRAY(
        SELECT e.position FROM amebo.events e WHERE e.stream = delete_stream.stream));
    INSERT INTO amebo.removed_streams AS r (stream, version, tombstone)
    VALUES (delete_stream.stream, head, hard)
    ON CONFLICT ON CONSTRAINT removed_streams_pkey
    DO UPDATE SET version = greatest(r.version, excluded.version),
                  tombstone = r.tombstone OR excluded.tombstone, removed_at = now();
    DELETE FROM amebo.snapshots s WHERE s.stream = delete_stream.stream;
    RETURN removed;
END
$$;

-- Sets the retention policy of a category: the worker removes its events older than max_age
-- and those more than max_count versions below their stream's head. Both NULL: removes the
-- policy (42704 if there is none).
CREATE FUNCTION amebo.set_retention(category text, max_age interval DEFAULT NULL,
                                    max_count bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF category IS NULL THEN
        RAISE EXCEPTION 'category must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF category !~ '^[^-]{1,255}$' THEN
        RAISE EXCEPTION 'invalid category "%"', category USING ERRCODE = '22023',
            DETAIL = 'A category is the part of a stream name before its first "-".';
    END IF;
    IF max_age <= interval '0' THEN
        RAISE EXCEPTION 'max_age must be positive' USING ERRCODE = '22023';
    END IF;
    IF max_count < 1 THEN
        RAISE EXCEPTION 'max_count must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF max_age IS NULL AND max_count IS NULL THEN
        DELETE FROM amebo.retention_policies p WHERE p.category = set_retention.category;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'category "%" has no retention policy', category
                USING ERRCODE = '42704';
        END IF;
        RETURN;
    END IF;
    INSERT INTO amebo.retention_policies AS p (category, max_age, max_count)
    VALUES (set_retention.category, max_age, max_count)
    ON CONFLICT ON CONSTRAINT retention_policies_pkey
    DO UPDATE SET max_age = excluded.max_age, max_count = excluded.max_count,
                  count_checked_through = 0, updated_at = now();
    PERFORM amebo.wake_worker();
END
$$;

-- Removes the paths from the stream's event payloads and metadata and from its snapshots,
-- records the redaction in amebo.redactions and sends its id on channel amebo_redaction;
-- returns how many events changed. Validation does not run again.
CREATE FUNCTION amebo.redact(stream text, paths text[], reason text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed bigint;
    snapshots bigint;
    redaction bigint;
BEGIN
    IF stream IS NULL OR paths IS NULL OR reason IS NULL THEN
        RAISE EXCEPTION 'stream, paths and reason must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF btrim(reason) = '' THEN
        RAISE EXCEPTION 'reason must not be empty' USING ERRCODE = '22023';
    END IF;
    PERFORM amebo_internal.check_paths(paths);
    IF NOT EXISTS (SELECT 1 FROM amebo.events e WHERE e.stream = redact.stream)
       AND NOT EXISTS (SELECT 1 FROM amebo.removed_streams r WHERE r.stream = redact.stream) THEN
        RAISE EXCEPTION 'stream "%" does not exist', stream USING ERRCODE = '42704';
    END IF;
    changed := amebo_internal.redact_events(stream, paths);
    UPDATE amebo.snapshots s SET state = amebo_internal.without_paths(s.state, paths)
    WHERE s.stream = redact.stream AND s.state <> amebo_internal.without_paths(s.state, paths);
    GET DIAGNOSTICS snapshots = ROW_COUNT;
    INSERT INTO amebo.redactions (stream, paths, reason, count, snapshots)
    VALUES (redact.stream, paths, reason, changed, snapshots)
    RETURNING id INTO redaction;
    PERFORM pg_notify('amebo_redaction', redaction::text);
    RETURN changed;
END
$$;

-- What retention waits on: each subscription, projection and consumer member that has not
-- processed every event, with the last position up to which it has (retention removes no
-- event after it). Stored webhook messages and consumers' in-flight events hold back their
-- first position.
CREATE VIEW amebo.retention_holds AS
SELECT 'subscriptions'::text AS holder, 'delivery checkpoint'::text AS name,
       coalesce((SELECT c.position FROM amebo.delivery_checkpoint c), 0) AS position
WHERE EXISTS (SELECT 1 FROM amebo.subscriptions s WHERE s.state <> 'disabled')
UNION ALL
SELECT 'subscription', s.application || '/' || s.name, min(p.position) - 1
FROM amebo.deliveries d JOIN amebo.subscriptions s ON s.id = d.subscription_id
CROSS JOIN LATERAL unnest(d.positions) AS p(position)
WHERE d.state = 'pending'
GROUP BY s.application, s.name
UNION ALL
SELECT 'projection', p.name, p.position FROM amebo.projections p
WHERE p.mode = 'async' OR p.state = 'paused'
UNION ALL
SELECT 'consumer', m.consumer || '/' || m.member,
       least(m.position, (SELECT min(x.position) - 1 FROM amebo.consumer_events x
                          WHERE x.consumer = m.consumer AND x.member = m.member))
FROM amebo.consumer_members m;
COMMENT ON VIEW amebo.retention_holds IS
    'amebo: subscriptions, projections and consumers whose unprocessed events retention keeps';
GRANT SELECT ON amebo.retention_holds TO amebo_reader;

-- The position at or below which retention may remove events: every holder has processed
-- them, and they are settled (committed, or never to commit).
CREATE FUNCTION amebo_internal.retention_horizon() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT least(amebo.settled_position(), (SELECT min(h.position) FROM amebo.retention_holds h))
$$;

-- Each policy, what its pass has removed and looked at, and what it waits on (the holder with
-- the lowest position, when that is below the settled position).
CREATE VIEW amebo.retention_status AS
SELECT p.category, p.max_age, p.max_count, p.removed, p.last_pass_at,
       least(CASE WHEN p.max_age IS NULL THEN NULL ELSE p.age_checked_through END,
             CASE WHEN p.max_count IS NULL THEN NULL ELSE p.count_checked_through END)
           AS checked_through,
       h.position AS horizon,
       CASE WHEN h.position < amebo.settled_position() THEN w.holder || ' ' || w.name END
           AS waiting_on
FROM amebo.retention_policies p
CROSS JOIN (SELECT amebo_internal.retention_horizon() AS position) h
LEFT JOIN LATERAL (SELECT x.holder, x.name FROM amebo.retention_holds x
                   ORDER BY x.position, x.holder, x.name LIMIT 1) w ON true;
COMMENT ON VIEW amebo.retention_status IS
    'amebo: each retention policy, what it removed and what it waits on';
GRANT SELECT ON amebo.retention_status TO amebo_reader;

-- The max_age part of one policy's pass: looks at up to max_events events after
-- age_checked_through (up to horizon) and removes those of the category older than max_age,
-- stopping at the first one it must keep (too young, or not covered by a snapshot while the
-- category has a reducer). Returns how many it looked at.
CREATE FUNCTION amebo_internal.retain_by_age(policy amebo.retention_policies, horizon bigint,
                                             max_events integer)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    has_reducer boolean;
    looked integer;
    last_looked bigint;
    first_kept bigint;
    old_enough bigint[];
    removed_now bigint;
BEGIN
    IF policy.max_age IS NULL THEN
        RETURN 0;
    END IF;
    has_reducer := EXISTS (SELECT 1 FROM amebo.reducers r WHERE r.category = policy.category);
    SELECT count(*), max(w.position), min(w.position) FILTER (WHERE w.mine AND NOT w.removable),
           array_agg(w.position) FILTER (WHERE w.mine AND w.removable)
    INTO looked, last_looked, first_kept, old_enough
    FROM (SELECT e.position, split_part(e.stream, '-', 1) = policy.category AS mine,
                 e.recorded_at < now() - policy.max_age
                 AND (NOT has_reducer
                      OR e.version <= (SELECT max(s.version) FROM amebo.snapshots s
                                       WHERE s.stream = e.stream)) AS removable
          FROM amebo.events e
          WHERE e.position > policy.age_checked_through AND e.position <= horizon
          ORDER BY e.position LIMIT max_events) w;
    IF looked = 0 THEN
        RETURN 0;
    END IF;
    removed_now := amebo_internal.remove_positions(ARRAY(
        SELECT p FROM unnest(old_enough) p WHERE p < coalesce(first_kept, last_looked + 1)));
    UPDATE amebo.retention_policies p
    SET age_checked_through = coalesce(first_kept - 1, last_looked),
        removed = p.removed + removed_now
    WHERE p.category = policy.category;
    RETURN CASE WHEN first_kept IS NULL THEN looked ELSE 0 END;
END
$$;

-- The max_count part of one policy's pass: for the streams of the category appended at
-- positions after count_checked_through (up to horizon, at most max_events events looked
-- at), removes the events more than max_count versions below the head (and, while the
-- category has a reducer, only those a snapshot covers). Returns how many it looked at.
CREATE FUNCTION amebo_internal.retain_by_count(policy amebo.retention_policies,
                                               horizon bigint, max_events integer)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    has_reducer boolean;
    looked integer;
    last_looked bigint;
    beyond bigint[];
    removed_now bigint;
BEGIN
    IF policy.max_count IS NULL THEN
        RETURN 0;
    END IF;
    has_reducer := EXISTS (SELECT 1 FROM amebo.reducers r WHERE r.category = policy.category);
    SELECT count(*), max(w.position) INTO looked, last_looked
    FROM (SELECT e.position FROM amebo.events e
          WHERE e.position > policy.count_checked_through AND e.position <= horizon
          ORDER BY e.position LIMIT max_events) w;
    IF looked = 0 THEN
        RETURN 0;
    END IF;
    beyond := ARRAY(
        SELECT old.position
        FROM (SELECT DISTINCT e.stream FROM amebo.events e
              WHERE e.position > policy.count_checked_through AND e.position <= last_looked
                AND split_part(e.stream, '-', 1) = policy.category) s
        CROSS JOIN LATERAL (
            SELECT least(max(e.version) - policy.max_count,
                         CASE WHEN has_reducer
                              THEN coalesce((SELECT max(x.version) FROM amebo.snapshots x
                                             WHERE x.stream = s.stream), 0) END) AS version
            FROM amebo.events e WHERE e.stream = s.stream) cut
        JOIN amebo.events old ON old.stream = s.stream AND old.version <= cut.version
                             AND old.position <= horizon
        ORDER BY old.position LIMIT max_events);
    removed_now := amebo_internal.remove_positions(beyond);
    -- A full batch of removals may have left more behind in these streams: look again.
    UPDATE amebo.retention_policies p
    SET count_checked_through = CASE WHEN cardinality(beyond) < max_events THEN last_looked
                                     ELSE p.count_checked_through END,
        removed = p.removed + removed_now
    WHERE p.category = policy.category;
    RETURN greatest(looked, cardinality(beyond));
END
$$;

-- One retention step of the background worker: for each policy, looks at up to max_events
-- events by age and by count and removes what the policy allows and no holder needs, in this
-- one transaction. Returns the events looked at (the worker runs again at once while that
-- fills a batch).
CREATE FUNCTION amebo_internal.run_retention(max_events integer DEFAULT 1000) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    policy amebo.retention_policies;
    horizon bigint;
    looked integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM amebo.retention_policies) THEN
        RETURN 0;
    END IF;
    horizon := amebo_internal.retention_horizon();
    FOR policy IN SELECT * FROM amebo.retention_policies p ORDER BY p.category
                  FOR UPDATE SKIP LOCKED LOOP
        looked := greatest(looked, amebo_internal.retain_by_age(policy, horizon, max_events));
        looked := greatest(looked, amebo_internal.retain_by_count(policy, horizon, max_events));
        UPDATE amebo.retention_policies p SET last_pass_at = now()
        WHERE p.category = policy.category;
    END LOOP;
    RETURN looked;
END
$$;

-- The removal and erasure functions are amebo_admin's; PUBLIC gets nothing.
REVOKE EXECUTE ON FUNCTION amebo_internal.lock_stream(text),
    amebo_internal.remove_events(bigint[]), amebo_internal.redact_events(text, text[]),
    amebo_internal.without_paths(jsonb, text[]), amebo_internal.check_paths(text[]),
    amebo_internal.remove_positions(bigint[]), amebo_internal.check_state_kept(text, bigint),
    amebo.truncate_stream(text, bigint), amebo.delete_stream(text, boolean),
    amebo.set_retention(text, interval, bigint), amebo.redact(text, text[], text),
    amebo_internal.retention_horizon(),
    amebo_internal.retain_by_age(amebo.retention_policies, bigint, integer),
    amebo_internal.retain_by_count(amebo.retention_policies, bigint, integer),
    amebo_internal.run_retention(integer) FROM PUBLIC;
-- amebo.retention_status calls retention_horizon with its reader's privileges.
GRANT EXECUTE ON FUNCTION amebo_internal.retention_horizon() TO amebo_reader;
GRANT EXECUTE ON FUNCTION amebo.truncate_stream(text, bigint), amebo.delete_stream(text, boolean),
    amebo.set_retention(text, interval, bigint), amebo.redact(text, text[], text)
    TO amebo_admin;

-------------------------------------------------------------------------------------------
-- Shards: a database's place among the shards of amebo_router, and the helpers the router
-- calls (see docs/scaling.md)
-------------------------------------------------------------------------------------------

-- Which shard of how many this database is; empty on a database that is not a shard. Set by
-- the router's amebo.setup_shards() through set_shard_identity, dumped with the events.
CREATE TABLE amebo.shard_identity (
    shard      integer     NOT NULL,
    shards     integer     NOT NULL,
    set_at     timestamptz NOT NULL DEFAULT now(),
    -- one row at most
    single_row boolean     NOT NULL DEFAULT true,
    CONSTRAINT shard_identity_pkey PRIMARY KEY (single_row),
    CONSTRAINT shard_identity_single_row_check CHECK (single_row),
    CONSTRAINT shard_identity_shards_check CHECK (shards > 0 AND shards & (shards - 1) = 0),
    CONSTRAINT shard_identity_shard_check CHECK (shard >= 0 AND shard < shards)
);
COMMENT ON TABLE amebo.shard_identity IS
    'amebo: which shard of the router''s cluster this database is (empty: not a shard)';
SELECT pg_catalog.pg_extension_config_dump('amebo.shard_identity', '');
GRANT SELECT ON amebo.shard_identity TO amebo_reader;

-- Records that this database is shard `shard` of `shards` (a power of two). Setting the same
-- identity again is a no-op; a different one is refused (55000): a shard that changed its
-- number would hold streams the router now sends elsewhere.
CREATE FUNCTION amebo.set_shard_identity(shard integer, shards integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    current amebo.shard_identity;
BEGIN
    IF shards IS NULL OR shards < 1 OR shards & (shards - 1) <> 0 THEN
        RAISE EXCEPTION 'a cluster of % shards is not a power of two', shards
            USING ERRCODE = '22023',
                  HINT = 'PL/Proxy places a stream on hashtext(stream) & (shards - 1).';
    END IF;
    IF shard IS NULL OR shard < 0 OR shard >= shards THEN
        RAISE EXCEPTION 'shard % is not one of 0 to %', shard, shards - 1 USING ERRCODE = '22023';
    END IF;
    SELECT * INTO current FROM amebo.shard_identity FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO amebo.shard_identity (shard, shards) VALUES (shard, shards);
        -- The worker reloads it (webhook ids and envelopes carry the shard) at commit.
        PERFORM amebo_internal.note_subscription_change();
    ELSIF (current.shard, current.shards) IS DISTINCT FROM (shard, shards) THEN
        RAISE EXCEPTION 'database "%" is shard % of %, not shard % of %', current_database(),
            current.shard, current.shards, shard, shards
            USING ERRCODE = '55000',
                  HINT = 'Check the order of the connection strings of the server amebo_shards.';
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.set_shard_identity(integer, integer) TO amebo_admin;

-- The shard that holds a stream: hashtext(stream) & (shards - 1), as the router's
-- RUN ON hashtext(stream) places it; 0 on a database that is not a shard.
CREATE FUNCTION amebo.shard_of(stream text) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT hashtext(stream) & (coalesce((SELECT i.shards FROM amebo.shard_identity i), 1) - 1)
$$;
GRANT EXECUTE ON FUNCTION amebo.shard_of(text) TO amebo_reader;

-- The router's helpers below live in amebo_internal: every role may look names up there,
-- and EXECUTE stays with the role each helper names.
GRANT USAGE ON SCHEMA amebo_internal TO amebo_reader;

-- Appends one event as amebo.append_event does, returning an error as data (its SQLSTATE,
-- message, detail and hint) instead of raising it: the router re-raises it unchanged, and
-- PL/Proxy, which reopens its connection after every remote error, keeps it.
CREATE FUNCTION amebo_internal.try_append_event(stream text, action text, payload jsonb,
                                                expected_version bigint, metadata jsonb,
                                                event_id uuid,
                                                OUT version bigint, OUT error_code text,
                                                OUT error_message text, OUT error_detail text,
                                                OUT error_hint text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    version := amebo.append_event(stream, action, payload, expected_version, metadata, event_id);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS error_code = RETURNED_SQLSTATE, error_message = MESSAGE_TEXT,
        error_detail = PG_EXCEPTION_DETAIL, error_hint = PG_EXCEPTION_HINT;
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.try_append_event(text, text, jsonb, bigint, jsonb, uuid)
    TO amebo_writer;

-- Appends events as amebo.append_events does, returning an error as data (see
-- try_append_event).
CREATE FUNCTION amebo_internal.try_append_events(stream text, events jsonb,
                                                 expected_version bigint,
                                                 OUT version bigint, OUT error_code text,
                                                 OUT error_message text, OUT error_detail text,
                                                 OUT error_hint text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    version := amebo.append_events(stream, events, expected_version);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS error_code = RETURNED_SQLSTATE, error_message = MESSAGE_TEXT,
        error_detail = PG_EXCEPTION_DETAIL, error_hint = PG_EXCEPTION_HINT;
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.try_append_events(text, jsonb, bigint) TO amebo_writer;

-- Saves a snapshot as amebo.save_snapshot does, returning an error as data (see
-- try_append_event); saved is true when it did.
CREATE FUNCTION amebo_internal.try_save_snapshot(stream text, version bigint, state jsonb,
                                                 OUT saved boolean, OUT error_code text,
                                                 OUT error_message text, OUT error_detail text,
                                                 OUT error_hint text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM amebo.save_snapshot(stream, version, state);
    saved := true;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS error_code = RETURNED_SQLSTATE, error_message = MESSAGE_TEXT,
        error_detail = PG_EXCEPTION_DETAIL, error_hint = PG_EXCEPTION_HINT;
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.try_save_snapshot(text, bigint, jsonb) TO amebo_writer;

-- Raises 55000 unless this database is shard `shard` (set by the router's setup_shards).
CREATE FUNCTION amebo_internal.check_shard(shard integer) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    identity amebo.shard_identity;
BEGIN
    SELECT * INTO identity FROM amebo.shard_identity;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'database "%" is not a shard yet', current_database()
            USING ERRCODE = '55000', HINT = 'Run SELECT amebo.setup_shards() on the router.';
    END IF;
    IF identity.shard IS DISTINCT FROM shard THEN
        RAISE EXCEPTION 'database "%" is shard %, not shard %', current_database(),
            identity.shard, shard
            USING ERRCODE = '55000',
                  HINT = 'Check the order of the connection strings of the server amebo_shards.';
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.check_shard(integer) TO amebo_reader;

-- This shard's part of the router's read_all: amebo.read_all after the one position given,
-- with the shard's number. The router sends one element of each array to each shard (SPLIT).
CREATE FUNCTION amebo_internal.read_shard_feed(shards integer[], after_positions bigint[],
                                               max_count integer, actions text[],
                                               since timestamptz, payload_filter jsonb)
RETURNS TABLE ("position" bigint, event_id uuid, stream text, version bigint, action text,
               payload jsonb, metadata jsonb, recorded_at timestamptz, schema_version integer,
               shard integer)
LANGUAGE plpgsql VOLATILE ROWS 1000 SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF cardinality(shards) IS DISTINCT FROM 1
       OR cardinality(after_positions) IS DISTINCT FROM 1 THEN
        RAISE EXCEPTION 'a shard reads its feed after one position' USING ERRCODE = '22023';
    END IF;
    PERFORM amebo_internal.check_shard(shards[1]);
    RETURN QUERY
        SELECT e.*, shards[1]
        FROM amebo.read_all(coalesce(after_positions[1], 0), max_count, actions, since,
                            payload_filter) e;
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.read_shard_feed(integer[], bigint[], integer, text[],
                                                         timestamptz, jsonb) TO amebo_reader;

-- Every definition the router keeps the same on all shards, one row per object: its kind,
-- its name and what defines it (a secret as its SHA-256; no timestamps, states or ids).
CREATE FUNCTION amebo_internal.definitions()
RETURNS TABLE (kind text, name text, definition jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT 'application', a.name,
           jsonb_build_object('address', a.address,
                              'secret_sha256', encode(sha256(convert_to(a.secret, 'UTF8')), 'hex'),
                              'previous_secret_sha256',
                              encode(sha256(convert_to(a.previous_secret, 'UTF8')), 'hex'))
    FROM amebo.applications a
    UNION ALL
    SELECT 'action', a.action,
           jsonb_build_object('application', a.application, 'compatibility', a.compatibility,
                              'schemas', (SELECT jsonb_agg(s.schema ORDER BY s.version)
                                          FROM amebo.action_schemas s WHERE s.action = a.action))
    FROM amebo.actions a
    UNION ALL
    SELECT 'reducer', r.category,
           jsonb_build_object('reducer', r.reducer::text, 'initial_state', r.initial_state,
                              'snapshot_every', r.snapshot_every)
    FROM amebo.reducers r
    UNION ALL
    SELECT 'projection', p.name,
           jsonb_build_object('handler', p.handler::text, 'reset', p.reset_handler::text,
                              'actions', p.actions, 'mode', p.mode)
    FROM amebo.projections p
    UNION ALL
    SELECT 'subscription', s.application || '/' || s.name,
           jsonb_build_object('action', s.action, 'handler', s.handler,
                              'max_retries', s.max_retries, 'filter', s.filter,
                              'ordered', s.ordered, 'batch_size', s.batch_size,
                              'rate_limit', s.rate_limit)
    FROM amebo.subscriptions s
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.definitions() TO amebo_admin;

-- The digest of each definition (see definitions), with this shard's number.
CREATE FUNCTION amebo_internal.definition_digests()
RETURNS TABLE (shard integer, kind text, name text, digest text)
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT (SELECT i.shard FROM amebo.shard_identity i), d.kind, d.name, md5(d.definition::text)
    FROM amebo_internal.definitions() d
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.definition_digests() TO amebo_admin;

-- True when the object a create_* call of the router names exists here with another
-- definition than the call's arguments give it.
CREATE FUNCTION amebo_internal.exists_otherwise(fn text, args text[]) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT CASE fn
        WHEN 'create_application' THEN EXISTS (
            SELECT 1 FROM amebo.applications a WHERE a.name = args[1]
              AND (a.address, a.secret) IS DISTINCT FROM (args[2], args[3]))
        WHEN 'create_action' THEN EXISTS (
            SELECT 1 FROM amebo.action_list a WHERE a.action = args[1]
              AND (a.application, a.schema, a.compatibility)
                  IS DISTINCT FROM (args[2], args[3]::jsonb, args[4]))
        WHEN 'create_reducer' THEN EXISTS (
            SELECT 1 FROM amebo.reducers r WHERE r.category = args[1]
              AND (r.reducer, r.initial_state, r.snapshot_every)
                  IS DISTINCT FROM (args[2]::regprocedure, args[3]::jsonb, args[4]::integer))
        WHEN 'create_projection' THEN EXISTS (
            SELECT 1 FROM amebo.projections p WHERE p.name = args[1]
              AND (p.handler, p.actions, p.mode, p.reset_handler)
                  IS DISTINCT FROM (args[2]::regprocedure, args[3]::text[], args[4],
                                    args[5]::regprocedure))
        WHEN 'create_subscription' THEN EXISTS (
            SELECT 1 FROM amebo.subscriptions s WHERE s.application = args[1] AND s.name = args[2]
              AND (s.action, s.handler, s.max_retries, s.filter, s.ordered, s.batch_size,
                   s.rate_limit)
                  IS DISTINCT FROM (args[3], args[4], args[5]::integer, args[6]::jsonb,
                                    args[7]::boolean, args[8]::integer,
                                    nullif(args[9]::double precision, 'Infinity')))
        ELSE false
    END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.exists_otherwise(text, text[]) TO amebo_admin;

-- Runs one of amebo's definition functions for the router (fn, its arguments as text, in
-- order) and reports the outcome as data: 'applied' (with the function's result as text),
-- 'exists' (a create found the object with the same definition), 'absent' (a drop did not
-- find it), or 'error' (with the error: 42710 for an object that exists with another
-- definition); and the digest of the object afterwards (NULL: it does not exist). A re-run
-- of a create or drop after a partial failure so converges. An update_action whose schema is
-- the current one adds no version.
CREATE FUNCTION amebo_internal.apply_definition(fn text, args text[],
                                                OUT shard integer, OUT outcome text,
                                                OUT result text, OUT digest text,
                                                OUT error_code text, OUT error_message text,
                                                OUT error_detail text, OUT error_hint text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    object_kind text := CASE fn WHEN 'rotate_application_secret' THEN 'application'
                                ELSE split_part(fn, '_', 2) END;
    object_name text := CASE object_kind WHEN 'subscription' THEN args[1] || '/' || args[2]
                                  ELSE args[1] END;
    call text;
BEGIN
    IF fn NOT IN ('create_application', 'update_application', 'rotate_application_secret',
                  'drop_application', 'create_action', 'update_action', 'drop_action',
                  'create_reducer', 'drop_reducer', 'create_projection', 'drop_projection',
                  'create_subscription', 'update_subscription', 'drop_subscription') THEN
        RAISE EXCEPTION 'amebo_router does not run amebo.%() on every shard', fn
            USING ERRCODE = '42883';
    END IF;
    IF fn = 'update_action' AND args[3]::jsonb = (SELECT s.schema FROM amebo.action_list s
                                                  WHERE s.action = args[1]) THEN
        args[3] := NULL;
    END IF;
    call := format('SELECT amebo.%I(%s)::text', fn,
                   (SELECT string_agg(coalesce(quote_literal(a.arg), 'NULL'), ', ' ORDER BY a.i)
                    FROM unnest(args) WITH ORDINALITY a(arg, i)));
    shard := (SELECT i.shard FROM amebo.shard_identity i);
    BEGIN
        EXECUTE call INTO result;
        outcome := 'applied';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS error_code = RETURNED_SQLSTATE, error_message = MESSAGE_TEXT,
            error_detail = PG_EXCEPTION_DETAIL, error_hint = PG_EXCEPTION_HINT;
        outcome := CASE WHEN error_code = '42710' AND fn LIKE 'create\_%' THEN 'exists'
                        WHEN error_code = '42704' AND fn LIKE 'drop\_%' THEN 'absent'
                        ELSE 'error' END;
    END;
    IF outcome = 'exists' AND amebo_internal.exists_otherwise(fn, args) THEN
        outcome := 'error';
        error_detail := 'It exists on this shard with another definition.';
        error_hint := 'Change it with the update function, or drop it and create it again, through the router.';
    END IF;
    digest := (SELECT md5(d.definition::text) FROM amebo_internal.definitions() d
               WHERE d.kind = object_kind AND d.name = object_name);
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.apply_definition(text, text[]) TO amebo_admin;

-- An application's secret if it exists here (the router reuses it when create_application
-- is re-run without one).
CREATE FUNCTION amebo_internal.existing_secret(name text) RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT a.secret FROM amebo.applications a WHERE a.name = existing_secret.name
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.existing_secret(text) TO amebo_admin;

-- The functions above are the roles' named here; PUBLIC gets nothing.
REVOKE EXECUTE ON FUNCTION amebo.set_shard_identity(integer, integer), amebo.shard_of(text),
    amebo_internal.try_append_event(text, text, jsonb, bigint, jsonb, uuid),
    amebo_internal.try_append_events(text, jsonb, bigint),
    amebo_internal.try_save_snapshot(text, bigint, jsonb), amebo_internal.check_shard(integer),
    amebo_internal.read_shard_feed(integer[], bigint[], integer, text[], timestamptz, jsonb),
    amebo_internal.definitions(), amebo_internal.definition_digests(),
    amebo_internal.apply_definition(text, text[]), amebo_internal.existing_secret(text),
    amebo_internal.exists_otherwise(text, text[]) FROM PUBLIC;
