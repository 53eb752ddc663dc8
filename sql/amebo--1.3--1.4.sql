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
GROUP BY pg_catalog.date_trunc('second', l.attempted_at);
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
            next_attempt_at timestamptz, status integer, error text, seq integer)
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
