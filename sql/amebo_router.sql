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
