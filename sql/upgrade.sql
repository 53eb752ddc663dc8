-- The upgrade path: install 1.0, append, ALTER EXTENSION amebo UPDATE, go on.
DROP EXTENSION amebo CASCADE;
CREATE EXTENSION amebo VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'amebo';
SELECT amebo.append_event('legacy-1', 'legacy.created', '{"a": 1}', 0);
SELECT count(*) AS registry_functions FROM pg_proc WHERE proname = 'create_action';

ALTER EXTENSION amebo UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'amebo';
SELECT stream, version, action, schema_version FROM amebo.events;
SELECT amebo.append_event('legacy-1', 'legacy.updated', '{"a": 2}', 1);
SELECT amebo.create_application('legacy') IS NOT NULL AS registered;
SELECT amebo.create_action('legacy.updated', 'legacy', '{"type": "object", "required": ["a"]}');
SELECT amebo.append_event('legacy-1', 'legacy.updated', '{"a": 3}', 2);
SELECT amebo.append_event('legacy-1', 'legacy.updated', '{"b": 3}', 3);
SELECT stream, version, action, schema_version FROM amebo.events ORDER BY position;

-- A session that appended under 1.0 sees the registry and projections an upgrade brings at
-- its very next append (its caches must not remember "no registry").
DROP EXTENSION amebo CASCADE;
CREATE EXTENSION amebo VERSION '1.0';
SELECT amebo.append_event('old-1', 'old.happened', '{"a": 1}');
ALTER EXTENSION amebo UPDATE;
SELECT amebo.create_application('old') IS NOT NULL AS registered;
SELECT amebo.create_action('old.happened', 'old', '{"type": "object", "required": ["a"]}');
SELECT amebo.append_event('old-1', 'old.happened', '{"b": 1}');
CREATE TABLE old_seen (position bigint);
CREATE FUNCTION old_projection(event amebo.events) RETURNS void LANGUAGE sql AS $$
    INSERT INTO old_seen VALUES (event.position)
$$;
SELECT amebo.create_projection('old', 'old_projection(amebo.events)');
SELECT amebo.append_event('old-1', 'old.happened', '{"a": 2}');
SELECT count(*) AS projected FROM old_seen;

-- 1.2 -> 1.3: subscriptions arrive. The registry and the events of 1.2 carry over: a new
-- subscription starts after the events stored before the update, and can replay them.
DROP EXTENSION amebo CASCADE;
CREATE EXTENSION amebo VERSION '1.2';
SELECT amebo.create_application('shop', NULL, 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw') IS NOT NULL AS registered;
SELECT amebo.create_action('order.placed', 'shop');
SELECT amebo.append_event('order-1', 'order.placed', '{"total": 10}');
SELECT count(*) AS subscription_functions FROM pg_proc WHERE proname = 'create_subscription';
ALTER EXTENSION amebo UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'amebo';
SELECT amebo.create_subscription('shop', 'placed', 'order.placed', 'https://hooks.example.invalid/placed') > 0 AS subscribed;
SELECT start_position = (SELECT max(position) FROM amebo.events) AS starts_after_old_events
FROM amebo.subscriptions WHERE name = 'placed';
SELECT amebo.replay_subscription('shop', 'placed', 0::bigint) AS replayed;
SELECT application, name, action, state FROM amebo.subscription_list;
SELECT amebo.append_event('order-1', 'order.placed', '{"total": 20}');
-- 1.3 -> 1.4: the delivery log moves into compact entries (the attempts logged under 1.3
-- read the same through the amebo.delivery_log view); pg_dump keeps the subscriptions' and
-- stored messages' identity sequences and the attempt log; the delivery queue shows only
-- this database's slot.
INSERT INTO amebo.delivery_log
SELECT s.id, 'msg_' || n, ARRAY[n::bigint], 1, CASE WHEN n = 2 THEN 500 ELSE 200 END,
       CASE WHEN n = 2 THEN 'HTTP 500' END, 1.5, '2026-01-01 00:00:00+00'::timestamptz + n * interval '1 s'
FROM amebo.subscriptions s, generate_series(1, 3) n;
CREATE TEMP TABLE log_before AS SELECT * FROM amebo.delivery_log;
SELECT c::regclass::text AS newly_dumped FROM pg_extension e, unnest(e.extconfig) c
WHERE e.extname = 'amebo' AND c::regclass::text IN
      ('amebo.subscriptions_id_seq', 'amebo.deliveries_id_seq', 'amebo.delivery_log_entries');
ALTER EXTENSION amebo UPDATE TO '1.4';
SELECT extversion FROM pg_extension WHERE extname = 'amebo';
SELECT c::regclass::text AS newly_dumped FROM pg_extension e, unnest(e.extconfig) c
WHERE e.extname = 'amebo' AND c::regclass::text IN
      ('amebo.subscriptions_id_seq', 'amebo.deliveries_id_seq', 'amebo.delivery_log_entries')
ORDER BY 1;
SELECT subscription_id = (SELECT id FROM amebo.subscriptions) AS same_subscription, webhook_id,
       positions, attempt, status, error, duration_ms, attempted_at
FROM amebo.delivery_log ORDER BY attempted_at;
SELECT count(*) AS differing FROM (
    (SELECT subscription_id, webhook_id, positions, attempt, status, error, duration_ms,
            attempted_at FROM amebo.delivery_log EXCEPT SELECT * FROM log_before)
    UNION ALL
    (SELECT * FROM log_before EXCEPT SELECT subscription_id, webhook_id, positions, attempt,
            status, error, duration_ms, attempted_at FROM amebo.delivery_log)) d;
SELECT amebo.prune_delivery_log('1 second') AS pruned_attempts;
SELECT count(*) AS left_after_prune FROM amebo.delivery_log;
-- Privileges: the roles exist, and nothing is left to PUBLIC.
SELECT count(*) AS amebo_roles FROM pg_roles
WHERE rolname IN ('amebo_reader', 'amebo_writer', 'amebo_admin');
SELECT count(*) AS public_functions FROM pg_proc p
WHERE p.pronamespace = 'amebo'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE');
SELECT amebo.create_subscription('shop', 'placed-again', 'order.placed', 'https://hooks.example.invalid/placed') > 0 AS subscribed;
SELECT amebo.append_event('order-1', 'order.placed', '{"total": 30}');
-- 1.4 -> 1.5: the functions only amebo calls move to amebo_internal (triggers, views and
-- privileges follow them); what was stored carries on. test/scripts/upgrade_compare.sh
-- compares the updated catalogs with a fresh install's, attribute by attribute.
ALTER EXTENSION amebo UPDATE TO '1.5';
SELECT extversion FROM pg_extension WHERE extname = 'amebo';
SELECT p.pronamespace::regnamespace AS schema, count(*) AS functions
FROM pg_proc p WHERE p.pronamespace IN ('amebo'::regnamespace, 'amebo_internal'::regnamespace)
GROUP BY 1 ORDER BY 1;
SELECT amebo.append_event('order-1', 'order.placed', '{"total": 40}');
SELECT amebo.update_subscription('shop', 'placed-again', max_retries => 2);
SELECT application, name, action, max_retries FROM amebo.subscription_list ORDER BY name;
SELECT count(*) AS events_kept FROM amebo.events;
SELECT amebo.create_application('after-update') IS NOT NULL AS registered;
-- 1.5 -> 1.6: scale-out and webhook operations; what was stored carries on.
ALTER EXTENSION amebo UPDATE TO '1.6';
SELECT extversion FROM pg_extension WHERE extname = 'amebo';
-- pg_dump keeps every row of a dumped table (no WHERE filters): a fresh install must put none
-- there itself, or a restore would insert them twice.
DROP EXTENSION amebo CASCADE;
CREATE EXTENSION amebo;
SELECT extversion FROM pg_extension WHERE extname = 'amebo';
SELECT c::regclass::text AS dumped_table_with_rows
FROM pg_extension e, unnest(e.extconfig) c
WHERE e.extname = 'amebo' AND (SELECT relkind FROM pg_class WHERE oid = c) = 'r'
  AND (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %s', c::regclass),
                                           false, true, '')))[1]::text::bigint > 0;
