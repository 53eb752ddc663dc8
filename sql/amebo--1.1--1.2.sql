-- amebo 1.2: snapshots, server-side state loading with reducers, projections (read models).
\echo Use "ALTER EXTENSION amebo UPDATE TO '1.2'" to load this file. \quit

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

-- Saves the state of a stream at a version (at most the stream's current version), replacing
-- one saved at the same version, and prunes all but the newest amebo.snapshots_to_keep.
CREATE FUNCTION amebo.save_snapshot(stream text, version bigint, state jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
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

-- The newest snapshot of a stream; NULL when it has none.
CREATE FUNCTION amebo.load_snapshot(stream text) RETURNS amebo.snapshots
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT s.* FROM amebo.snapshots s WHERE s.stream = load_snapshot.stream
    ORDER BY s.version DESC LIMIT 1
$$;

-- Raises 42P13 unless fn has exactly the argument types and result type given.
CREATE FUNCTION amebo.check_signature(fn regprocedure, argtypes regtype[], rettype regtype,
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

-- Registers the reducer (state jsonb, event amebo.events) RETURNS jsonb of a category;
-- load_state writes a snapshot when it had to replay more than snapshot_every events.
CREATE FUNCTION amebo.create_reducer(category text, reducer regprocedure,
                                     initial_state jsonb DEFAULT '{}',
                                     snapshot_every integer DEFAULT 10) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF category IS NULL OR category = '' OR position('-' IN category) > 0 THEN
        RAISE EXCEPTION 'invalid category "%"', category USING ERRCODE = '22023',
            HINT = 'A category is the part of a stream name before its first "-".';
    END IF;
    PERFORM amebo.check_signature(reducer, ARRAY['jsonb', 'amebo.events']::regtype[],
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

-- Removes a category's reducer (its snapshots stay).
CREATE FUNCTION amebo.drop_reducer(category text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    DELETE FROM amebo.reducers r WHERE r.category = drop_reducer.category;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'category "%" has no reducer', category USING ERRCODE = '42704';
    END IF;
END
$$;

-- The current state and version of a stream: the newest snapshot folded with the events
-- after it through the category's reducer; writes a snapshot when more than snapshot_every
-- events had to be replayed (not on a standby or in a read-only transaction).
CREATE FUNCTION amebo.load_state(stream text, OUT state jsonb, OUT version bigint)
AS 'MODULE_PATHNAME', 'amebo_load_state' LANGUAGE C VOLATILE;

-- The state of a stream at a version (NULL: its current one) from a full replay of its
-- events, without snapshots: what load_state must equal.
CREATE FUNCTION amebo.replay_state(stream text, up_to_version bigint DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'amebo_replay_state' LANGUAGE C STABLE;

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
-- Backends cache the inline projections: tell them when a definition changes (not when the
-- worker moves a checkpoint, which would make every appender reload after every batch).
CREATE TRIGGER projections_changed
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF name, handler, actions, mode, state
    ON amebo.projections
    FOR EACH STATEMENT EXECUTE FUNCTION amebo.registry_changed();

-- Registers a projection. inline: the handler runs in every appending transaction;
-- async: the background worker applies committed events in order from position 0.
-- reset (no arguments, returns void) empties the read model for rebuild_projection.
-- Existing events are not replayed for inline projections: call rebuild_projection.
CREATE FUNCTION amebo.create_projection(name text, handler regprocedure,
                                        actions text[] DEFAULT NULL,
                                        mode text DEFAULT 'inline',
                                        reset regprocedure DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
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
    INSERT INTO amebo.projections (name, handler, reset_handler, actions, mode)
    VALUES (name, handler, reset, actions, mode);
    IF mode = 'async' THEN
        PERFORM amebo.wake_worker();
    END IF;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'projection "%" already exists', name USING ERRCODE = '42710';
END
$$;

-- Locks and returns a projection, or raises 42704.
CREATE FUNCTION amebo.lock_projection(name text) RETURNS amebo.projections
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
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

-- Removes a projection (its read model stays).
CREATE FUNCTION amebo.drop_projection(name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    PERFORM amebo.lock_projection(name);
    DELETE FROM amebo.projections x WHERE x.name = drop_projection.name;
END
$$;

-- Pauses a projection. async: the worker stops applying it. inline: appends stop calling it;
-- the pause waits for open appends to finish (SHARE lock on amebo.events) and records the
-- last position applied, so that resume_projection can replay exactly what it missed.
CREATE FUNCTION amebo.pause_projection(name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    p amebo.projections := amebo.lock_projection(name);
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

-- Resumes a projection from the event after its checkpoint (the failed one, after an error).
-- async: the worker applies it again. inline: the events appended while it was paused are
-- replayed first, with appends blocked until the resume commits.
-- (No SET search_path: an inline replay runs the handler, which sees the caller's.)
CREATE FUNCTION amebo.resume_projection(name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p amebo.projections := amebo.lock_projection(name);
BEGIN
    IF p.mode = 'inline' AND p.state = 'paused' THEN
        PERFORM amebo.replay_projection(name, p.position);
    END IF;
    UPDATE amebo.projections x
    SET state = 'running', error = NULL, error_position = NULL, error_at = NULL
    WHERE x.name = resume_projection.name;
    PERFORM amebo.wake_worker();
END
$$;

-- Replays the matching events after a position into a projection without resetting it, then
-- sets its checkpoint and state running (used by resume_projection for inline projections).
CREATE FUNCTION amebo.replay_projection(name text, after_position bigint) RETURNS bigint
AS 'MODULE_PATHNAME', 'amebo_replay_projection' LANGUAGE C VOLATILE;

-- Every position at or below this is settled: committed and visible, or never to commit.
CREATE FUNCTION amebo.settled_position() RETURNS bigint
AS 'MODULE_PATHNAME', 'amebo_settled_position' LANGUAGE C VOLATILE;

-- Wakes the background worker (after resume_projection, say).
CREATE FUNCTION amebo.wake_worker() RETURNS void
AS 'MODULE_PATHNAME', 'amebo_wake_worker' LANGUAGE C VOLATILE;

-- Calls a projection handler with one event as the projection's owner, in a
-- security-restricted operation (the handler cannot SET ROLE back to the caller).
-- Superuser-only: it is how the worker drops its privileges.
CREATE FUNCTION amebo.call_as_owner(handler regprocedure, owner regrole, event amebo.events)
RETURNS void
AS 'MODULE_PATHNAME', 'amebo_call_as_owner' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION amebo.call_as_owner(regprocedure, regrole, amebo.events) FROM PUBLIC;

-- A projection's owner is the role that created it; only a superuser may change it.
CREATE FUNCTION amebo.set_projection_owner() RETURNS trigger
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
CREATE TRIGGER projections_owner BEFORE INSERT OR UPDATE OF owner ON amebo.projections
    FOR EACH ROW EXECUTE FUNCTION amebo.set_projection_owner();

-- Applies up to max_events committed events to an async projection, in position order, each
-- in its own subtransaction and as the role that created the projection; on a handler error
-- records it with the event's position and pauses the projection. Returns the number
-- applied. Called by the background worker (with the session's search_path, which the
-- handler sees).
CREATE FUNCTION amebo.run_projection(name text, max_events integer DEFAULT 1000)
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
            PERFORM amebo.call_as_owner(p.handler, p.owner, e);
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

-- Empties a projection's read model (through its reset function) and replays the matching
-- events (recorded at or after since) in position order; returns how many. Progress shows in
-- amebo.projection_status; cancel it like any query. Rebuilding an inline projection blocks
-- appends until it commits, so the read model matches the events.
CREATE FUNCTION amebo.rebuild_projection(name text, since timestamptz DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'amebo_rebuild_projection' LANGUAGE C VOLATILE;

-- Rebuilds in progress: backend, projection, events replayed and to replay.
CREATE FUNCTION amebo.rebuild_progress(OUT pid integer, OUT projection text,
                                       OUT replayed bigint, OUT total bigint,
                                       OUT started_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'amebo_rebuild_progress' LANGUAGE C VOLATILE;

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

-- Projections with their definitions.
CREATE VIEW amebo.projection_list AS
SELECT name, mode, state, handler, reset_handler, actions, owner, created_at
FROM amebo.projections;

-- The background worker's state: its process, database, and when it last ran.
CREATE FUNCTION amebo.worker_status(OUT pid integer, OUT database text,
                                    OUT started_at timestamptz, OUT last_run_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'amebo_worker_status' LANGUAGE C VOLATILE;

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

-- Waits until an async projection has applied every settled event (or timeout seconds
-- passed, or it paused); true when it caught up.
CREATE FUNCTION amebo.wait_for_projection(name text, timeout double precision DEFAULT 10)
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
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
