-- amebo 1.3 -> 1.4.
\echo Use "ALTER EXTENSION amebo UPDATE TO '1.4'" to load this file. \quit

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
-- --exclude-table-data=amebo.delivery_log leaves it out).
SELECT pg_catalog.pg_extension_config_dump('amebo.delivery_log', '');

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
