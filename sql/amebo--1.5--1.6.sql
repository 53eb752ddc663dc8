-- amebo 1.5 -> 1.6: scale-out helpers (shards behind amebo_router, a replicated settled
-- horizon for reads on standbys) and webhooks at internet scale (secret rotation, private
-- target allowlist, rate limits, circuit breaker). See sql/amebo.sql for every object as 1.6
-- defines it; each change here repeats it exactly.
\echo Use "ALTER EXTENSION amebo UPDATE TO '1.6'" to load this file. \quit
