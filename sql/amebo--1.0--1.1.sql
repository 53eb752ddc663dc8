-- amebo 1.1: the registry: applications, actions with versioned JSON Schemas, validation
-- of every appended payload.
\echo Use "ALTER EXTENSION amebo UPDATE TO '1.1'" to load this file. \quit

-- Services that publish or consume events. The secret signs webhooks (Standard Webhooks).
CREATE TABLE amebo.applications (
    name       text        NOT NULL,
    address    text,
    secret     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT applications_pkey PRIMARY KEY (name),
    CONSTRAINT applications_name_check CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$')
);

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

-- The schema version each event's payload was validated against (NULL: none).
ALTER TABLE amebo.events ADD COLUMN schema_version integer;

SELECT pg_catalog.pg_extension_config_dump('amebo.applications', '');
SELECT pg_catalog.pg_extension_config_dump('amebo.actions', '');
SELECT pg_catalog.pg_extension_config_dump('amebo.action_schemas', '');

-- Compiles a JSON Schema (draft 7); raises AM007 with the parser's reason if it is broken.
CREATE FUNCTION amebo.check_schema(schema jsonb) RETURNS void
AS 'MODULE_PATHNAME', 'amebo_check_schema' LANGUAGE C STABLE PARALLEL SAFE;

-- The ways a document fails a schema: a JSON Pointer and the rule, most specific first.
CREATE FUNCTION amebo.schema_violations(schema jsonb, document jsonb,
                                        OUT path text, OUT rule text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'amebo_schema_violations' LANGUAGE C STABLE PARALLEL SAFE;

-- Why new_schema may reject a payload old_schema accepted (empty: backward compatible).
CREATE FUNCTION amebo.schema_incompatibilities(old_schema jsonb, new_schema jsonb)
RETURNS text[]
AS 'MODULE_PATHNAME', 'amebo_schema_incompatibilities' LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- A new webhook secret: "whsec_" and the base64 of 32 random bytes.
CREATE FUNCTION amebo.generate_secret() RETURNS text
AS 'MODULE_PATHNAME', 'amebo_generate_secret' LANGUAGE C VOLATILE PARALLEL SAFE;

-- Tells every backend, at commit, to drop its cached action rules.
CREATE FUNCTION amebo.registry_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'amebo_registry_changed' LANGUAGE C;
CREATE TRIGGER actions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON amebo.actions
    FOR EACH STATEMENT EXECUTE FUNCTION amebo.registry_changed();
CREATE TRIGGER action_schemas_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON amebo.action_schemas
    FOR EACH STATEMENT EXECUTE FUNCTION amebo.registry_changed();

-- Raises 22023 unless name is a valid application name.
CREATE FUNCTION amebo.check_application_name(name text) RETURNS void
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
CREATE FUNCTION amebo.check_application_address(address text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
BEGIN
    IF address IS NOT NULL AND address !~ '^https?://[^\s/?#@]+(/[^\s]*)?$' THEN
        RAISE EXCEPTION 'invalid application address "%"', address USING ERRCODE = '22023',
            HINT = 'An address is an http:// or https:// URL without user information.';
    END IF;
END
$$;

-- Raises 22023 unless secret is whsec_ and the base64 of 24 to 64 bytes.
CREATE FUNCTION amebo.check_secret(secret text) RETURNS void
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

-- Registers an application; returns its secret (generated when none is given).
CREATE FUNCTION amebo.create_application(name text, address text DEFAULT NULL,
                                         secret text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    stored text := coalesce(secret, amebo.generate_secret());
BEGIN
    PERFORM amebo.check_application_name(name);
    PERFORM amebo.check_application_address(address);
    PERFORM amebo.check_secret(stored);
    INSERT INTO amebo.applications (name, address, secret) VALUES (name, address, stored);
    RETURN stored;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'application "%" already exists', name USING ERRCODE = '42710';
END
$$;

-- Changes an application's address; NULL clears it.
CREATE FUNCTION amebo.update_application(name text, address text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    PERFORM amebo.check_application_address(address);
    UPDATE amebo.applications a SET address = update_application.address, updated_at = now()
    WHERE a.name = update_application.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'application "%" does not exist', name USING ERRCODE = '42704';
    END IF;
END
$$;

-- Replaces an application's secret (a new random one when none is given); returns it.
CREATE FUNCTION amebo.rotate_application_secret(name text, secret text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    stored text := coalesce(secret, amebo.generate_secret());
BEGIN
    PERFORM amebo.check_secret(stored);
    UPDATE amebo.applications a SET secret = stored, updated_at = now()
    WHERE a.name = rotate_application_secret.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'application "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    RETURN stored;
END
$$;

-- Removes an application; with cascade also its actions, otherwise they must be gone.
CREATE FUNCTION amebo.drop_application(name text, cascade boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    owned integer;
BEGIN
    PERFORM 1 FROM amebo.applications a WHERE a.name = drop_application.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'application "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    SELECT count(*) INTO owned FROM amebo.actions WHERE application = drop_application.name;
    IF owned > 0 AND NOT cascade THEN
        RAISE EXCEPTION 'application "%" still owns % action(s)', name, owned
            USING ERRCODE = '2BP01', HINT = 'Drop its actions first, or pass cascade => true.';
    END IF;
    DELETE FROM amebo.actions WHERE application = drop_application.name;
    DELETE FROM amebo.applications a WHERE a.name = drop_application.name;
END
$$;

-- Applications without their secrets.
CREATE VIEW amebo.application_list AS
SELECT a.name, a.address, a.created_at, a.updated_at,
       (SELECT count(*) FROM amebo.actions x WHERE x.application = a.name) AS actions
FROM amebo.applications a;

-- An application's secret; needs SELECT on amebo.applications (secret), like the table.
CREATE FUNCTION amebo.application_secret(name text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT a.secret FROM amebo.applications a WHERE a.name = application_secret.name
$$;

-- Raises 22023 unless action is a valid registered action name.
CREATE FUNCTION amebo.check_action_name(action text) RETURNS void
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
CREATE FUNCTION amebo.add_action_schema(action text, schema jsonb) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
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
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    PERFORM amebo.check_action_name(action);
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
    RETURN amebo.add_action_schema(action, schema);
END
$$;

-- Changes an action: its owner, its compatibility mode, and (as a new version) its schema.
-- Arguments left NULL keep their value; returns the current schema version.
CREATE FUNCTION amebo.update_action(action text, application text DEFAULT NULL,
                                    schema jsonb DEFAULT NULL, compatibility text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
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
        version := amebo.add_action_schema(action, schema);
    END IF;
    RETURN version;
END
$$;

-- Removes an action's registration and schemas; its events stay.
CREATE FUNCTION amebo.drop_action(action text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    DELETE FROM amebo.actions a WHERE a.action = drop_action.action;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'action "%" does not exist', action USING ERRCODE = '42704';
    END IF;
END
$$;

-- Actions with their owner, mode and current schema.
CREATE VIEW amebo.action_list AS
SELECT a.action, a.application, a.compatibility, a.schema_version, s.schema,
       a.created_at, a.updated_at
FROM amebo.actions a
LEFT JOIN amebo.action_schemas s ON s.action = a.action AND s.version = a.schema_version;

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
