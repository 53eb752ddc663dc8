-- amebo 1.3 -> 1.4.
\echo Use "ALTER EXTENSION amebo UPDATE TO '1.4'" to load this file. \quit

-- Compact delivery log. In 1.3 every attempt was a row with an index entry: about 300 bytes
-- of WAL per delivery, more than the event itself (about 550), and written again for each
-- subscription. Now each recording of the worker (one every 20 ms or so while it delivers)
-- writes one row holding that recording's attempts as a JSON array, which PostgreSQL
-- compresses once it passes 2 kB; amebo.delivery_log shows one row per attempt as before.
CREATE TABLE amebo.delivery_log_entries (
    recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- [{subscription_id, webhook_id, positions, attempt, status, error, duration_ms,
    --   attempted_at}, ...]
    attempts    jsonb       NOT NULL
);
CREATE INDEX delivery_log_entries_recorded_at
    ON amebo.delivery_log_entries USING brin (recorded_at);

INSERT INTO amebo.delivery_log_entries (recorded_at, attempts)
SELECT max(l.attempted_at),
       pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
           'subscription_id', l.subscription_id, 'webhook_id', l.webhook_id,
           'positions', l.positions, 'attempt', l.attempt, 'status', l.status,
           'error', l.error, 'duration_ms', l.duration_ms, 'attempted_at', l.attempted_at)
           ORDER BY l.attempted_at)
FROM amebo.delivery_log l
GROUP BY pg_catalog.date_trunc('second', l.attempted_at)
ORDER BY 1;
DROP TABLE amebo.delivery_log;

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

-- Writes the outcomes of the worker's deliveries (see amebo--1.2--1.3.sql); 1.4 logs the
-- attempts as one delivery_log_entries row.
CREATE OR REPLACE FUNCTION amebo.record_deliveries(outcomes jsonb, checkpoint bigint,
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

-- Removes delivery log entries recorded before keep ago; returns how many attempts they held.
CREATE OR REPLACE FUNCTION amebo.prune_delivery_log(keep interval) RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog AS $$
    WITH removed AS (
        DELETE FROM amebo.delivery_log_entries e WHERE e.recorded_at < now() - keep
        RETURNING jsonb_array_length(e.attempts) AS attempts
    )
    SELECT coalesce(sum(attempts), 0)::bigint FROM removed
$$;

-- Dump and restore
--
-- pg_dump keeps the rows of an extension's tables and the state of its sequences only when
-- they are marked with pg_extension_config_dump. 1.3 left out the identity sequences of
-- subscriptions and deliveries: a restored database started them at 1 again, so the next
-- create_subscription failed on a taken id (reported as "already exists") and the worker
-- could not store a failed delivery. No amebo script inserts rows into these tables, so
-- every row is the user's (or the worker's) and none needs a WHERE filter.
SELECT pg_catalog.pg_extension_config_dump('amebo.subscriptions_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('amebo.deliveries_id_seq', '');
-- The attempt log is the history of what was sent; a backup keeps it (pg_dump
-- --exclude-table-data=amebo.delivery_log_entries leaves it out).
SELECT pg_catalog.pg_extension_config_dump('amebo.delivery_log_entries', '');

-- The delivery queue: in 1.3 the view failed on a hot standby (pg_current_wal_lsn() raises
-- "recovery is in progress"; a standby measures against the WAL it replayed), and a copy
-- restored into the same cluster showed the original database's slot, because the delivery
-- checkpoint names the slot of the database that wrote it: show only a slot of this database.
CREATE OR REPLACE VIEW amebo.delivery_queue AS
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
    amebo.delivery_log_entries, amebo.delivery_log, amebo.subscription_progress,
    amebo.delivery_checkpoint
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
