-- amebo 1.5 -> 1.6: scale-out helpers (shards behind amebo_router, a replicated settled
-- horizon for reads on standbys) and webhooks at internet scale (secret rotation, private
-- target allowlist, rate limits, circuit breaker). See sql/amebo.sql for every object as 1.6
-- defines it; each change here repeats it exactly.
\echo Use "ALTER EXTENSION amebo UPDATE TO '1.6'" to load this file. \quit

-- Shards (amebo_router): identity, shard_of, the helpers the router calls
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
