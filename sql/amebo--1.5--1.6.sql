-- amebo 1.5 -> 1.6: scale-out helpers (shards behind amebo_router, a replicated settled
-- horizon for reads on standbys) and webhooks at internet scale (secret rotation, private
-- target allowlist, rate limits, circuit breaker). See sql/amebo.sql for every object as 1.6
-- defines it; each change here repeats it exactly.
\echo Use "ALTER EXTENSION amebo UPDATE TO '1.6'" to load this file. \quit

-- Scale-out: the standby horizon (shardops)
-- The settled position for hot standbys (see src/store/settled_horizon.hpp): the primary's
-- worker writes amebo.settled_position() here when it advanced, at most every
-- amebo.standby_horizon_interval. A standby that replayed this row's commit has replayed the
-- commit of every event at or below position, so its read_all stops there.
CREATE TABLE amebo.settled_horizon (
    singleton    boolean     NOT NULL DEFAULT true,
    position     bigint      NOT NULL DEFAULT 0,
    published_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT settled_horizon_pkey PRIMARY KEY (singleton),
    CONSTRAINT settled_horizon_singleton_check CHECK (singleton)
);
INSERT INTO amebo.settled_horizon DEFAULT VALUES;
GRANT SELECT ON amebo.settled_horizon TO amebo_reader;
