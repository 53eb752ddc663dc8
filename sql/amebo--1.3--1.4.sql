-- amebo 1.3 -> 1.4.
\echo Use "ALTER EXTENSION amebo UPDATE TO '1.4'" to load this file. \quit

-- Privileges
--
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
-- runs as the calling role, never as the owner.
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

-- Nothing for PUBLIC; the schema for the three roles.
REVOKE ALL ON SCHEMA amebo FROM PUBLIC;
GRANT USAGE ON SCHEMA amebo TO amebo_reader;
REVOKE ALL ON ALL TABLES IN SCHEMA amebo FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA amebo FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA amebo FROM PUBLIC;

-- Readers read every table but amebo.applications, of which they see all but the secret.
GRANT SELECT ON amebo.events, amebo.actions, amebo.action_schemas, amebo.snapshots,
    amebo.reducers, amebo.projections, amebo.subscriptions, amebo.deliveries,
    amebo.delivery_log, amebo.subscription_progress, amebo.delivery_checkpoint
    TO amebo_reader;
GRANT SELECT (name, address, created_at, updated_at) ON amebo.applications TO amebo_reader;
GRANT SELECT ON amebo.applications TO amebo_admin;
GRANT SELECT ON amebo.application_list, amebo.action_list, amebo.projection_status,
    amebo.projection_list, amebo.subscription_list, amebo.subscription_status,
    amebo.delivery_queue
    TO amebo_reader;

-- Functions that only read (or compute), as the caller.
GRANT EXECUTE ON FUNCTION
    amebo.read_stream(text, bigint, integer),
    amebo.read_all(bigint, integer, text[], timestamptz, jsonb),
    amebo.stream_version(text),
    amebo.inflight_appends(),
    amebo.settled_position(),
    amebo.new_event_id(),
    amebo.check_schema(jsonb),
    amebo.schema_violations(jsonb, jsonb),
    amebo.schema_incompatibilities(jsonb, jsonb),
    amebo.action_matches(text, text),
    amebo.application_events(text, bigint, integer),
    amebo.load_snapshot(text),
    amebo.load_state(text),
    amebo.replay_state(text, bigint),
    amebo.rebuild_progress(),
    amebo.worker_status(),
    amebo.delivery_worker_stats(),
    amebo.wait_for_worker(double precision),
    amebo.wait_for_projection(text, double precision),
    amebo.wait_for_deliveries(double precision)
    TO amebo_reader;

-- The waits wake the worker, which readers may not do otherwise.
ALTER FUNCTION amebo.wait_for_projection(text, double precision)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.wait_for_deliveries(double precision)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Appending writes amebo.events through the heap directly (no table privilege is checked):
-- EXECUTE is the gate.
GRANT EXECUTE ON FUNCTION
    amebo.append_event(text, text, jsonb, bigint, jsonb, uuid),
    amebo.append_events(text, jsonb, bigint),
    amebo.save_snapshot(text, bigint, jsonb)
    TO amebo_writer;
ALTER FUNCTION amebo.save_snapshot(text, bigint, jsonb)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- The registry, subscriptions, reducers and projections. None of these functions calls
-- users' code, so they run as the owner.
-- The two that take a secret also keep an error they raise from logging the statement (with
-- the secret in it) as the server's STATEMENT line: the error is reported while the function's
-- settings still hold.
ALTER FUNCTION amebo.create_application(text, text, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET log_min_error_statement = panic;
ALTER FUNCTION amebo.update_application(text, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.rotate_application_secret(text, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET log_min_error_statement = panic;
ALTER FUNCTION amebo.drop_application(text, boolean)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.application_secret(text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.add_action_schema(text, jsonb)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.create_action(text, text, jsonb, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.update_action(text, text, jsonb, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.drop_action(text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.create_reducer(text, regprocedure, jsonb, integer)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.drop_reducer(text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.lock_projection(text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.drop_projection(text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.pause_projection(text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.create_subscription(text, text, text, text, integer, jsonb, boolean, integer)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.update_subscription(text, text, text, text, integer, jsonb, boolean, integer)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.drop_subscription(text, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.pause_subscription(text, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.resume_subscription(text, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.redeliver(text, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.replay_subscription(text, text, bigint)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION amebo.replay_subscription(text, text, timestamptz)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- A projection's owner (the role its async handler runs as) is the role that creates it,
-- which a SECURITY DEFINER function cannot know: create_projection is C, takes the calling
-- role and runs register_projection (owner only) as the owner.
CREATE FUNCTION amebo.register_projection(name text, handler regprocedure, actions text[],
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
    PERFORM amebo.check_signature(handler, ARRAY['amebo.events']::regtype[], 'void',
                                  'projection handler');
    IF reset IS NOT NULL THEN
        PERFORM amebo.check_signature(reset, ARRAY[]::regtype[], 'void', 'reset function');
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
REVOKE ALL ON FUNCTION amebo.register_projection(text, regprocedure, text[], text, regprocedure,
                                                 regrole) FROM PUBLIC;

-- Registers a projection (see amebo--1.1--1.2.sql); the calling role, which must be allowed to
-- execute the handler and the reset function, becomes its owner.
CREATE OR REPLACE FUNCTION amebo.create_projection(name text, handler regprocedure,
                                                   actions text[] DEFAULT NULL,
                                                   mode text DEFAULT 'inline',
                                                   reset regprocedure DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'amebo_create_projection' LANGUAGE C VOLATILE;

-- Marks a projection running again, without its error (for resume_projection).
CREATE FUNCTION amebo.mark_projection_running(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE amebo.projections x
    SET state = 'running', error = NULL, error_position = NULL, error_at = NULL
    WHERE x.name = mark_projection_running.name;
    PERFORM amebo.wake_worker();
END
$$;
REVOKE ALL ON FUNCTION amebo.mark_projection_running(text) FROM PUBLIC;

-- Resumes a projection (see amebo--1.1--1.2.sql). Not SECURITY DEFINER: an inline replay runs
-- the handler, which must run as the caller, with the caller's search_path.
CREATE OR REPLACE FUNCTION amebo.resume_projection(name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p amebo.projections := amebo.lock_projection(name);
BEGIN
    IF p.mode = 'inline' AND p.state = 'paused' THEN
        PERFORM amebo.replay_projection(name, p.position);
    END IF;
    PERFORM amebo.mark_projection_running(name);
END
$$;
REVOKE ALL ON FUNCTION amebo.resume_projection(text) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    amebo.generate_secret(),
    amebo.check_handler(text),
    amebo.create_application(text, text, text),
    amebo.update_application(text, text),
    amebo.rotate_application_secret(text, text),
    amebo.drop_application(text, boolean),
    amebo.application_secret(text),
    amebo.add_action_schema(text, jsonb),
    amebo.create_action(text, text, jsonb, text),
    amebo.update_action(text, text, jsonb, text),
    amebo.drop_action(text),
    amebo.create_reducer(text, regprocedure, jsonb, integer),
    amebo.drop_reducer(text),
    amebo.create_projection(text, regprocedure, text[], text, regprocedure),
    amebo.lock_projection(text),
    amebo.drop_projection(text),
    amebo.pause_projection(text),
    amebo.resume_projection(text),
    amebo.mark_projection_running(text),
    amebo.replay_projection(text, bigint),
    amebo.rebuild_projection(text, timestamptz),
    amebo.create_subscription(text, text, text, text, integer, jsonb, boolean, integer),
    amebo.update_subscription(text, text, text, text, integer, jsonb, boolean, integer),
    amebo.drop_subscription(text, text),
    amebo.pause_subscription(text, text),
    amebo.resume_subscription(text, text),
    amebo.redeliver(text, text),
    amebo.replay_subscription(text, text, bigint),
    amebo.replay_subscription(text, text, timestamptz)
    TO amebo_admin;

COMMENT ON FUNCTION amebo.application_secret(text) IS
    'an application''s webhook secret (amebo_admin only)';
