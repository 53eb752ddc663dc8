-- amebo_router 1.0, whole: a PL/Proxy router in front of amebo shards. CREATE EXTENSION
-- amebo_router in a database of its own (not one with amebo); the shards are the PL/Proxy
-- cluster amebo_shards, a SQL/MED server with one connection string per shard (p0, p1, ...)
-- and a user mapping. The Makefile copies this file to amebo_router--1.0.sql.
-- Stream-scoped functions keep amebo's names and signatures and run on the stream's shard;
-- definitions run on every shard; read_all merges every shard's feed. See docs/scaling.md.
\echo Use "CREATE EXTENSION amebo_router" to load this file. \quit

-------------------------------------------------------------------------------------------
-- Schemas, the shapes of amebo's rows, the cluster
-------------------------------------------------------------------------------------------

-- What applications call: the same names as in amebo.
CREATE SCHEMA amebo;
-- The PL/Proxy functions the functions of amebo call.
CREATE SCHEMA amebo_router_internal;
COMMENT ON SCHEMA amebo_router_internal IS
    'amebo_router: functions only amebo_router calls (not a stable interface)';
-- The shards check privileges, as the role of the user mapping each router role connects
-- with: on the router every role may call every function.
GRANT USAGE ON SCHEMA amebo, amebo_router_internal TO PUBLIC;

-- An event as amebo.read_stream returns it (the columns of amebo's table amebo.events).
CREATE TYPE amebo.events AS (
    position       bigint,
    event_id       uuid,
    stream         text,
    version        bigint,
    action         text,
    payload        jsonb,
    metadata       jsonb,
    recorded_at    timestamptz,
    schema_version integer
);

-- A snapshot as amebo.load_snapshot returns it (the columns of amebo.snapshots).
CREATE TYPE amebo.snapshots AS (
    stream      text,
    version     bigint,
    state       jsonb,
    recorded_at timestamptz
);

-- The number of shards: the connection strings (p0, p1, ...) of the server amebo_shards.
CREATE FUNCTION amebo.shard_count() RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT count(*)::integer
    FROM pg_foreign_server s CROSS JOIN LATERAL unnest(s.srvoptions) o(option)
    WHERE s.srvname = 'amebo_shards' AND o.option ~ '^p[0-9]+='
$$;

-- The shard that holds a stream, as RUN ON hashtext(stream) places it.
CREATE FUNCTION amebo.shard_of(stream text) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT hashtext(stream) & (amebo.shard_count() - 1)
$$;

-- Raises 22023 unless the cluster amebo_shards has a power-of-two count of shards.
CREATE FUNCTION amebo_router_internal.check_shard_count() RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    shards integer := amebo.shard_count();
BEGIN
    IF shards = 0 THEN
        RAISE EXCEPTION 'the server amebo_shards is missing or lists no shards'
            USING ERRCODE = '22023',
                  HINT = 'CREATE SERVER amebo_shards FOREIGN DATA WRAPPER plproxy OPTIONS (p0 ''dbname=... host=...'', ...) and a user mapping.';
    END IF;
    IF shards & (shards - 1) <> 0 THEN
        RAISE EXCEPTION 'amebo_shards lists % shards, not a power of two', shards
            USING ERRCODE = '22023',
                  HINT = 'Use 1, 2, 4, 8 ... shards; start with more shards than servers and move whole shards to grow.';
    END IF;
    RETURN shards;
END
$$;

-- Records on shard `shard` its identity (RUN ON an integer routes to shard & (count - 1)).
CREATE FUNCTION amebo_router_internal.set_shard_identity(shard integer, shards integer)
RETURNS void
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    RUN ON shard;
    TARGET amebo.set_shard_identity;
$$;

-- Checks the cluster (a power of two of shards) and tells each shard its number; refuses a
-- shard that already holds another number. Returns the number of shards.
CREATE FUNCTION amebo.setup_shards() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    shards integer := amebo_router_internal.check_shard_count();
BEGIN
    FOR shard IN 0 .. shards - 1 LOOP
        PERFORM amebo_router_internal.set_shard_identity(shard, shards);
    END LOOP;
    RETURN shards;
END
$$;

-------------------------------------------------------------------------------------------
-- Errors: a shard's error as amebo raised it, an unreachable shard named
-------------------------------------------------------------------------------------------

-- Raises an error with this SQLSTATE, message, and detail and hint when given.
CREATE FUNCTION amebo_router_internal.raise_error(code text, message text, detail text, hint text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF detail IS NULL AND hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
    ELSIF hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message, DETAIL = detail;
    ELSIF detail IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message, HINT = hint;
    ELSE
        RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message, DETAIL = detail, HINT = hint;
    END IF;
END
$$;

-- Raises the error a shard returned as data (error_code NULL: there was none).
CREATE FUNCTION amebo_router_internal.raise_returned_error(error_code text, error_message text,
                                                           error_detail text, error_hint text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF error_code IS NOT NULL THEN
        PERFORM amebo_router_internal.raise_error(error_code, error_message,
                                                  nullif(error_detail, ''), nullif(error_hint, ''));
    END IF;
END
$$;

-- 1 when shard `shard` answers (RUN ON an integer routes to shard & (count - 1)).
CREATE FUNCTION amebo_router_internal.ping(shard integer) RETURNS integer
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    RUN ON shard;
    SELECT 1 AS ping;
$$;

-- The shards that do not answer now.
CREATE FUNCTION amebo_router_internal.unreachable_shards() RETURNS integer[]
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    unreachable integer[] := '{}';
BEGIN
    FOR shard IN 0 .. amebo.shard_count() - 1 LOOP
        BEGIN
            PERFORM amebo_router_internal.ping(shard);
        EXCEPTION WHEN OTHERS THEN
            unreachable := unreachable || shard;
        END;
    END LOOP;
    RETURN unreachable;
END
$$;

-- Raises again an error a PL/Proxy call raised: a shard's own error with its SQLSTATE,
-- message, detail and hint as amebo raised them (without PL/Proxy's prefixes); PL/Proxy's
-- failure to reach a shard (or a shard ending the connection) as 08006 naming the shard
-- (`shard`, or those that do not answer now when the call went to several).
CREATE FUNCTION amebo_router_internal.raise_shard_error(shard integer, code text, message text,
                                                        detail text, hint text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    remote text[] := regexp_match(message,
        '^amebo_router_internal\.[a-z_]+\(\d+\): \[[^]]*\] REMOTE [A-Z]+: (.*)$');
    shards integer[];
BEGIN
    -- A shard that shuts down ends PL/Proxy's connection with 57P01, 57P02 or 57P03.
    IF remote IS NOT NULL AND code NOT LIKE '57P0_' AND code NOT LIKE '08%' THEN
        PERFORM amebo_router_internal.raise_error(code, remote[1],
            nullif(regexp_replace(detail, '^Remote detail: ', ''), ''),
            nullif(regexp_replace(hint, '^Remote hint: ', ''), ''));
    ELSIF remote IS NOT NULL OR message LIKE 'PL/Proxy function %' THEN
        shards := CASE WHEN shard IS NULL THEN amebo_router_internal.unreachable_shards()
                       ELSE ARRAY[shard] END;
        RAISE EXCEPTION 'shard % of amebo_shards is unreachable',
            coalesce(nullif(array_to_string(shards, ', '), ''), '(unknown)')
            USING ERRCODE = '08006',
                  DETAIL = regexp_replace(message, '^PL/Proxy function [^:]*: ', ''),
                  HINT = 'Streams on the other shards keep working; the router reconnects on the next call once the shard is back.';
    ELSE
        PERFORM amebo_router_internal.raise_error(code, message, nullif(detail, ''),
                                                  nullif(hint, ''));
    END IF;
END
$$;

-------------------------------------------------------------------------------------------
-- Streams: amebo's stream-scoped functions, run on the stream's shard
-------------------------------------------------------------------------------------------

-- amebo_internal.try_append_event on the stream's shard: the error comes back as data.
CREATE FUNCTION amebo_router_internal.append_event(stream text, action text, payload jsonb,
                                                   expected_version bigint, metadata jsonb,
                                                   event_id uuid,
                                                   OUT version bigint, OUT error_code text,
                                                   OUT error_message text, OUT error_detail text,
                                                   OUT error_hint text)
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    RUN ON hashtext(stream);
    TARGET amebo_internal.try_append_event;
$$;

-- Appends one event to a stream on its shard; returns the stream's new version.
CREATE FUNCTION amebo.append_event(stream text, action text, payload jsonb,
                                   expected_version bigint DEFAULT NULL,
                                   metadata jsonb DEFAULT NULL,
                                   event_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog AS $$
DECLARE
    code text;
    message text;
    detail text;
    hint text;
    outcome record;
BEGIN
    BEGIN
        outcome := amebo_router_internal.append_event(stream, action, payload, expected_version,
                                                      metadata, event_id);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
        PERFORM amebo_router_internal.raise_shard_error(amebo.shard_of(stream), code, message, detail, hint);
    END;
    IF outcome.error_code IS NOT NULL THEN
        PERFORM amebo_router_internal.raise_returned_error(outcome.error_code,
            outcome.error_message, outcome.error_detail, outcome.error_hint);
    END IF;
    RETURN outcome.version;
END
$$;

-- amebo_internal.try_append_events on the stream's shard.
CREATE FUNCTION amebo_router_internal.append_events(stream text, events jsonb,
                                                    expected_version bigint,
                                                    OUT version bigint, OUT error_code text,
                                                    OUT error_message text, OUT error_detail text,
                                                    OUT error_hint text)
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    RUN ON hashtext(stream);
    TARGET amebo_internal.try_append_events;
$$;

-- Appends a JSON array of events to a stream atomically, on its shard.
CREATE FUNCTION amebo.append_events(stream text, events jsonb,
                                    expected_version bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog AS $$
DECLARE
    code text;
    message text;
    detail text;
    hint text;
    outcome record;
BEGIN
    BEGIN
        outcome := amebo_router_internal.append_events(stream, events, expected_version);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
        PERFORM amebo_router_internal.raise_shard_error(amebo.shard_of(stream), code, message, detail, hint);
    END;
    IF outcome.error_code IS NOT NULL THEN
        PERFORM amebo_router_internal.raise_returned_error(outcome.error_code,
            outcome.error_message, outcome.error_detail, outcome.error_hint);
    END IF;
    RETURN outcome.version;
END
$$;

-- amebo_internal.try_save_snapshot on the stream's shard.
CREATE FUNCTION amebo_router_internal.save_snapshot(stream text, version bigint, state jsonb,
                                                    OUT saved boolean, OUT error_code text,
                                                    OUT error_message text, OUT error_detail text,
                                                    OUT error_hint text)
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    RUN ON hashtext(stream);
    TARGET amebo_internal.try_save_snapshot;
$$;

-- Saves the state of a stream at a version, on its shard.
CREATE FUNCTION amebo.save_snapshot(stream text, version bigint, state jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog AS $$
DECLARE
    code text;
    message text;
    detail text;
    hint text;
    outcome record;
BEGIN
    BEGIN
        outcome := amebo_router_internal.save_snapshot(stream, version, state);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
        PERFORM amebo_router_internal.raise_shard_error(amebo.shard_of(stream), code, message, detail, hint);
    END;
    IF outcome.error_code IS NOT NULL THEN
        PERFORM amebo_router_internal.raise_returned_error(outcome.error_code,
            outcome.error_message, outcome.error_detail, outcome.error_hint);
    END IF;
END
$$;

-- amebo.stream_version on the stream's shard.
CREATE FUNCTION amebo_router_internal.stream_version(stream text) RETURNS bigint
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    RUN ON hashtext(stream);
    TARGET amebo.stream_version;
$$;

-- The number of events in a stream, from its shard.
CREATE FUNCTION amebo.stream_version(stream text) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    code text;
    message text;
    detail text;
    hint text;
BEGIN
    BEGIN
        RETURN amebo_router_internal.stream_version(stream);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
        PERFORM amebo_router_internal.raise_shard_error(amebo.shard_of(stream), code, message, detail, hint);
    END;
END
$$;

-- amebo.read_stream on the stream's shard.
CREATE FUNCTION amebo_router_internal.read_stream(stream text, after_version bigint,
                                                  max_count integer)
RETURNS SETOF amebo.events
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    RUN ON hashtext(stream);
    TARGET amebo.read_stream;
$$;

-- A stream's events after a version, from its shard.
CREATE FUNCTION amebo.read_stream(stream text, after_version bigint DEFAULT 0,
                                  max_count integer DEFAULT NULL)
RETURNS SETOF amebo.events
LANGUAGE plpgsql STABLE ROWS 100 SET search_path = pg_catalog AS $$
DECLARE
    code text;
    message text;
    detail text;
    hint text;
BEGIN
    BEGIN
        RETURN QUERY SELECT * FROM amebo_router_internal.read_stream(stream, after_version,
                                                                     max_count);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
        PERFORM amebo_router_internal.raise_shard_error(amebo.shard_of(stream), code, message, detail, hint);
    END;
END
$$;

-- amebo.load_snapshot on the stream's shard.
CREATE FUNCTION amebo_router_internal.load_snapshot(stream text) RETURNS amebo.snapshots
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    RUN ON hashtext(stream);
    TARGET amebo.load_snapshot;
$$;

-- The newest snapshot of a stream, from its shard; NULL when it has none.
CREATE FUNCTION amebo.load_snapshot(stream text) RETURNS amebo.snapshots
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    code text;
    message text;
    detail text;
    hint text;
    loaded amebo.snapshots;
BEGIN
    BEGIN
        loaded := amebo_router_internal.load_snapshot(stream);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
        PERFORM amebo_router_internal.raise_shard_error(amebo.shard_of(stream), code, message, detail, hint);
    END;
    RETURN CASE WHEN loaded.stream IS NULL THEN NULL ELSE loaded END;
END
$$;

-- amebo.load_state on the stream's shard.
CREATE FUNCTION amebo_router_internal.load_state(stream text, OUT state jsonb, OUT version bigint)
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    RUN ON hashtext(stream);
    TARGET amebo.load_state;
$$;

-- The current state and version of a stream, from its shard (which may save a snapshot).
CREATE FUNCTION amebo.load_state(stream text, OUT state jsonb, OUT version bigint)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog AS $$
DECLARE
    code text;
    message text;
    detail text;
    hint text;
    loaded record;
BEGIN
    BEGIN
        loaded := amebo_router_internal.load_state(stream);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
        PERFORM amebo_router_internal.raise_shard_error(amebo.shard_of(stream), code, message, detail, hint);
    END;
    state := loaded.state;
    version := loaded.version;
END
$$;

-- amebo.replay_state on the stream's shard.
CREATE FUNCTION amebo_router_internal.replay_state(stream text, up_to_version bigint)
RETURNS jsonb
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    RUN ON hashtext(stream);
    TARGET amebo.replay_state;
$$;

-- The state of a stream at a version from a full replay of its events, on its shard.
CREATE FUNCTION amebo.replay_state(stream text, up_to_version bigint DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    code text;
    message text;
    detail text;
    hint text;
BEGIN
    BEGIN
        RETURN amebo_router_internal.replay_state(stream, up_to_version);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
        PERFORM amebo_router_internal.raise_shard_error(amebo.shard_of(stream), code, message, detail, hint);
    END;
END
$$;

-------------------------------------------------------------------------------------------
-- The global feed: every shard's committed events, paged with one position per shard
-------------------------------------------------------------------------------------------

-- amebo_internal.read_shard_feed on the shards named: element i of both arrays goes to
-- shard shards[i], all shards at once.
CREATE FUNCTION amebo_router_internal.read_shards(shards integer[], after_positions bigint[],
                                                  max_count integer, actions text[],
                                                  since timestamptz, payload_filter jsonb)
RETURNS TABLE ("position" bigint, event_id uuid, stream text, version bigint, action text,
               payload jsonb, metadata jsonb, recorded_at timestamptz, schema_version integer,
               shard integer)
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    SPLIT shards, after_positions;
    RUN ON shards;
    TARGET amebo_internal.read_shard_feed;
$$;

-- Reads the shards named after their positions and keeps at most max_count events: for each
-- shard a prefix of its events in position order (the first of every shard, then the
-- second ...), so that the positions a consumer keeps per shard never skip an event.
CREATE FUNCTION amebo_router_internal.read_feed(shards integer[], after_positions bigint[],
                                                max_count integer, actions text[],
                                                since timestamptz, payload_filter jsonb)
RETURNS TABLE ("position" bigint, event_id uuid, stream text, version bigint, action text,
               payload jsonb, metadata jsonb, recorded_at timestamptz, schema_version integer,
               shard integer)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog AS $$
DECLARE
    code text;
    message text;
    detail text;
    hint text;
BEGIN
    IF max_count IS NULL OR max_count < 1 THEN
        RAISE EXCEPTION 'max_count must be positive' USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(after_positions) p WHERE p < 0) THEN
        RAISE EXCEPTION 'positions must not be negative' USING ERRCODE = '22023',
            HINT = 'Element i is the last position seen on shard i - 1; NULL or 0 reads from the start.';
    END IF;
    BEGIN
        RETURN QUERY
            SELECT r.position, r.event_id, r.stream, r.version, r.action, r.payload, r.metadata,
                   r.recorded_at, r.schema_version, r.shard
            FROM (SELECT e.*, row_number() OVER (PARTITION BY e.shard ORDER BY e.position) AS nth
                  FROM amebo_router_internal.read_shards(shards, after_positions, max_count,
                                                         actions, since, payload_filter) e) r
            ORDER BY r.nth, r.shard
            LIMIT max_count;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
        PERFORM amebo_router_internal.raise_shard_error(
            CASE WHEN cardinality(shards) = 1 THEN shards[1] END, code, message, detail, hint);
    END;
END
$$;

-- Committed events of every shard after the positions of after_positions (element i: the
-- last position seen on shard i - 1; NULL or 0: from the start; a NULL array: every shard
-- from the start), at most max_count, with their shard. No order across shards; each
-- shard's events in position order, never skipping a late commit on that shard.
CREATE FUNCTION amebo.read_all(after_positions bigint[], max_count integer DEFAULT 100,
                               actions text[] DEFAULT NULL, since timestamptz DEFAULT NULL,
                               payload_filter jsonb DEFAULT NULL)
RETURNS TABLE ("position" bigint, event_id uuid, stream text, version bigint, action text,
               payload jsonb, metadata jsonb, recorded_at timestamptz, schema_version integer,
               shard integer)
LANGUAGE plpgsql VOLATILE ROWS 100 SET search_path = pg_catalog AS $$
DECLARE
    shards integer := amebo_router_internal.check_shard_count();
BEGIN
    IF after_positions IS NULL THEN
        after_positions := array_fill(0::bigint, ARRAY[shards]);
    END IF;
    IF array_ndims(after_positions) IS DISTINCT FROM 1 OR array_lower(after_positions, 1) <> 1
       OR cardinality(after_positions) <> shards THEN
        RAISE EXCEPTION 'after_positions has % elements, not one per shard (%)',
            cardinality(after_positions), shards
            USING ERRCODE = '22023',
                  HINT = 'Element i is the last position seen on shard i - 1; NULL or 0 reads from the start.';
    END IF;
    RETURN QUERY
        SELECT * FROM amebo_router_internal.read_feed(
            ARRAY(SELECT generate_series(0, shards - 1)), after_positions, max_count, actions,
            since, payload_filter);
END
$$;

-- Committed events of one shard after a position (0: from the start), as read_all reads
-- each shard.
CREATE FUNCTION amebo.read_all(shard_number integer, after_position bigint,
                               max_count integer DEFAULT 100, actions text[] DEFAULT NULL,
                               since timestamptz DEFAULT NULL, payload_filter jsonb DEFAULT NULL)
RETURNS TABLE ("position" bigint, event_id uuid, stream text, version bigint, action text,
               payload jsonb, metadata jsonb, recorded_at timestamptz, schema_version integer,
               shard integer)
LANGUAGE plpgsql VOLATILE ROWS 100 SET search_path = pg_catalog AS $$
DECLARE
    shards integer := amebo_router_internal.check_shard_count();
BEGIN
    IF shard_number IS NULL OR shard_number < 0 OR shard_number >= shards THEN
        RAISE EXCEPTION 'unknown shard %', shard_number USING ERRCODE = '22023',
            HINT = format('amebo_shards has shards 0 to %s.', shards - 1);
    END IF;
    RETURN QUERY
        SELECT * FROM amebo_router_internal.read_feed(ARRAY[shard_number],
            ARRAY[coalesce(after_position, 0)], max_count, actions, since, payload_filter);
END
$$;

-------------------------------------------------------------------------------------------
-- Definitions: applications, actions, reducers, projections and subscriptions on every shard
-------------------------------------------------------------------------------------------

-- What amebo_internal.apply_definition reports from one shard.
CREATE TYPE amebo_router_internal.definition_outcome AS (
    shard         integer,
    outcome       text,
    result        text,
    digest        text,
    error_code    text,
    error_message text,
    error_detail  text,
    error_hint    text
);

-- amebo_internal.apply_definition on every shard.
CREATE FUNCTION amebo_router_internal.apply_definition(fn text, args text[])
RETURNS SETOF amebo_router_internal.definition_outcome
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    RUN ON ALL;
    TARGET amebo_internal.apply_definition;
$$;

-- The digest of every definition on every shard.
CREATE FUNCTION amebo_router_internal.definition_digests()
RETURNS TABLE (shard integer, kind text, name text, digest text)
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    RUN ON ALL;
    TARGET amebo_internal.definition_digests;
$$;

-- An application's secret on every shard that has the application.
CREATE FUNCTION amebo_router_internal.existing_secret(name text) RETURNS SETOF text
LANGUAGE plproxy AS $$
    CLUSTER 'amebo_shards';
    RUN ON ALL;
    TARGET amebo_internal.existing_secret;
$$;

-- The secret the shards that have the application keep (NULL: none has it).
CREATE FUNCTION amebo_router_internal.shards_secret(name text) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog AS $$
DECLARE
    code text;
    message text;
    detail text;
    hint text;
BEGIN
    RETURN (SELECT min(s) FROM amebo_router_internal.existing_secret(name) s);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
        detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    PERFORM amebo_router_internal.raise_shard_error(NULL, code, message, detail, hint);
END
$$;

-- Runs amebo.<fn>(args) on every shard; returns its result on the lowest shard that has one.
-- A create that finds the object with the same definition, or a drop that does not find
-- it, counts as done there, so a re-run after a partial failure converges. Raises a shard's error (naming the shards that failed
-- when others succeeded), and 55000 when the object's definition then differs across shards.
CREATE FUNCTION amebo_router_internal.define(fn text, args text[]) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog AS $$
DECLARE
    outcomes amebo_router_internal.definition_outcome[];
    failed amebo_router_internal.definition_outcome;
    failed_shards text;
    code text;
    message text;
    detail text;
    hint text;
BEGIN
    BEGIN
        outcomes := ARRAY(SELECT o FROM amebo_router_internal.apply_definition(fn, args) o
                          ORDER BY o.shard);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
        PERFORM amebo_router_internal.raise_shard_error(NULL, code, message, detail, hint);
    END;
    SELECT * INTO failed FROM unnest(outcomes) o WHERE o.outcome = 'error' ORDER BY o.shard LIMIT 1;
    IF FOUND THEN
        failed_shards := (SELECT string_agg(o.shard::text, ', ' ORDER BY o.shard)
                          FROM unnest(outcomes) o WHERE o.outcome = 'error');
        IF EXISTS (SELECT 1 FROM unnest(outcomes) o WHERE o.outcome <> 'error') THEN
            failed.error_detail := concat_ws(' ', nullif(failed.error_detail, ''),
                format('It failed on shards %s; the other shards applied it.', failed_shards));
        END IF;
        PERFORM amebo_router_internal.raise_returned_error(failed.error_code, failed.error_message,
                                                           failed.error_detail, failed.error_hint);
    END IF;
    IF (SELECT count(DISTINCT coalesce(o.digest, '')) FROM unnest(outcomes) o) > 1 THEN
        RAISE EXCEPTION 'the definition of % differs across shards', args[1]
            USING ERRCODE = '55000',
                  DETAIL = (SELECT string_agg(format('shard %s: %s', o.shard,
                                                     coalesce(o.digest, 'missing')), '; '
                                              ORDER BY o.shard)
                            FROM unnest(outcomes) o),
                  HINT = 'See amebo.definition_differences(); update or drop and create it again through the router.';
    END IF;
    RETURN (SELECT o.result FROM unnest(outcomes) o WHERE o.result IS NOT NULL
            ORDER BY o.shard LIMIT 1);
END
$$;

-- A new webhook secret: "whsec_" and the base64 of 32 bytes from two random UUIDs (244
-- random bits; the router has no pgcrypto).
CREATE FUNCTION amebo_router_internal.generate_secret() RETURNS text
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT 'whsec_' || encode(decode(replace(gen_random_uuid()::text || gen_random_uuid()::text,
                                             '-', ''), 'hex'), 'base64')
$$;

-- Registers an application on every shard with one secret (the one given, else the one a
-- shard already has from an earlier try, else a new one); returns it.
CREATE FUNCTION amebo.create_application(name text, address text DEFAULT NULL,
                                         secret text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog AS $$
DECLARE
    stored text := coalesce(secret, amebo_router_internal.shards_secret(name),
                            amebo_router_internal.generate_secret());
BEGIN
    PERFORM amebo_router_internal.define('create_application', ARRAY[name, address, stored]);
    RETURN stored;
END
$$;

-- Changes an application's address on every shard; NULL clears it.
CREATE FUNCTION amebo.update_application(name text, address text) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT amebo_router_internal.define('update_application', ARRAY[name, address])
$$;

-- Replaces an application's secret on every shard (a new random one when none is given).
CREATE FUNCTION amebo.rotate_application_secret(name text, secret text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog AS $$
DECLARE
    stored text := coalesce(secret, amebo_router_internal.generate_secret());
BEGIN
    PERFORM amebo_router_internal.define('rotate_application_secret', ARRAY[name, stored]);
    RETURN stored;
END
$$;

-- Removes an application from every shard (with cascade also its actions and subscriptions).
CREATE FUNCTION amebo.drop_application(name text, cascade boolean DEFAULT false) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT amebo_router_internal.define('drop_application', ARRAY[name, cascade::text])
$$;

-- Registers an action on every shard; returns its schema version.
CREATE FUNCTION amebo.create_action(action text, application text, schema jsonb DEFAULT NULL,
                                    compatibility text DEFAULT 'none')
RETURNS integer
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT amebo_router_internal.define('create_action',
                                        ARRAY[action, application, schema::text, compatibility])::integer
$$;

-- Changes an action on every shard (a schema equal to the current one adds no version);
-- returns its schema version.
CREATE FUNCTION amebo.update_action(action text, application text DEFAULT NULL,
                                    schema jsonb DEFAULT NULL, compatibility text DEFAULT NULL)
RETURNS integer
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT amebo_router_internal.define('update_action',
                                        ARRAY[action, application, schema::text, compatibility])::integer
$$;

-- Removes an action from every shard.
CREATE FUNCTION amebo.drop_action(action text) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT amebo_router_internal.define('drop_action', ARRAY[action])
$$;

-- Registers a category's reducer on every shard; reducer names the function as amebo's
-- regprocedure argument reads it on each shard, e.g. 'public.fold(jsonb, amebo.events)'.
CREATE FUNCTION amebo.create_reducer(category text, reducer text, initial_state jsonb DEFAULT '{}',
                                     snapshot_every integer DEFAULT 10) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT amebo_router_internal.define('create_reducer',
        ARRAY[category, reducer, initial_state::text, snapshot_every::text])
$$;

-- Removes a category's reducer from every shard.
CREATE FUNCTION amebo.drop_reducer(category text) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT amebo_router_internal.define('drop_reducer', ARRAY[category])
$$;

-- Registers a projection on every shard; handler and reset name functions as on each shard.
CREATE FUNCTION amebo.create_projection(name text, handler text, actions text[] DEFAULT NULL,
                                        mode text DEFAULT 'inline', reset text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT amebo_router_internal.define('create_projection',
                                        ARRAY[name, handler, actions::text, mode, reset])
$$;

-- Removes a projection from every shard.
CREATE FUNCTION amebo.drop_projection(name text) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT amebo_router_internal.define('drop_projection', ARRAY[name])
$$;

-- Subscribes an application's handler on every shard; returns the subscription's id on the
-- lowest shard (each shard numbers its own).
CREATE FUNCTION amebo.create_subscription(application text, subscription text, action text,
                                          handler text, max_retries integer DEFAULT 5,
                                          filter jsonb DEFAULT NULL,
                                          ordered boolean DEFAULT false,
                                          batch_size integer DEFAULT 1)
RETURNS bigint
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT amebo_router_internal.define('create_subscription',
        ARRAY[application, subscription, action, handler, max_retries::text, filter::text,
              ordered::text, batch_size::text])::bigint
$$;

-- Changes a subscription on every shard; NULL leaves a setting as it is.
CREATE FUNCTION amebo.update_subscription(application text, subscription text,
                                          action text DEFAULT NULL, handler text DEFAULT NULL,
                                          max_retries integer DEFAULT NULL,
                                          filter jsonb DEFAULT NULL,
                                          ordered boolean DEFAULT NULL,
                                          batch_size integer DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT amebo_router_internal.define('update_subscription',
        ARRAY[application, subscription, action, handler, max_retries::text, filter::text,
              ordered::text, batch_size::text])
$$;

-- Removes a subscription from every shard.
CREATE FUNCTION amebo.drop_subscription(application text, subscription text) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT amebo_router_internal.define('drop_subscription', ARRAY[application, subscription])
$$;

-- The definitions that are not the same on every shard: one row per shard for each such
-- object, with the digest of its definition there (NULL: missing on that shard).
CREATE FUNCTION amebo.definition_differences()
RETURNS TABLE (kind text, name text, shard integer, digest text)
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    WITH found AS (SELECT * FROM amebo_router_internal.definition_digests()),
    every_shard AS (
        SELECT o.kind, o.name, s.shard, f.digest
        FROM (SELECT DISTINCT f.kind, f.name FROM found f) o
        CROSS JOIN generate_series(0, amebo.shard_count() - 1) s(shard)
        LEFT JOIN found f ON f.kind = o.kind AND f.name = o.name AND f.shard = s.shard)
    SELECT e.kind, e.name, e.shard, e.digest FROM every_shard e
    WHERE (e.kind, e.name) IN (SELECT x.kind, x.name FROM every_shard x GROUP BY x.kind, x.name
                               HAVING count(DISTINCT coalesce(x.digest, '')) > 1)
    ORDER BY e.kind, e.name, e.shard
$$;
