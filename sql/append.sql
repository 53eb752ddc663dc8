-- Appending: expected versions, idempotent retries, batches.

-- The design guide's user: created, then verified.
SELECT amebo.append_event('user-42', 'user.created',
    '{"user_id": "42", "email": "ada@example.com", "name": "Ada"}', 0);
SELECT amebo.append_event('user-42', 'user.email_verified',
    '{"user_id": "42", "verified_at": "2026-11-27T10:00:00Z"}', 1);
-- NULL expected version: append at whatever version.
SELECT amebo.append_event('user-42', 'user.renamed', '{"name": "Ada L."}');
SELECT amebo.append_event('user-42', 'user.renamed', '{"name": "Ada Lovelace"}', NULL,
    '{"correlation_id": "c-1"}');
SELECT version, action, payload, metadata FROM amebo.events WHERE stream = 'user-42' ORDER BY version;

-- Expected version mismatches: 0 on a stream that exists, n behind, n ahead, n on an empty stream.
SELECT amebo.append_event('user-42', 'user.created', '{}', 0);
SELECT amebo.append_event('user-42', 'user.renamed', '{}', 3);
SELECT amebo.append_event('user-42', 'user.renamed', '{}', 9);
SELECT amebo.append_event('user-43', 'user.renamed', '{}', 1);
SELECT regress.outcome($$SELECT amebo.append_event('user-42', 'user.renamed', '{}', 2)$$);
SELECT amebo.stream_version('user-42'), amebo.stream_version('user-43');

-- Idempotent retry: the same event_id with the same content returns the stored version and
-- writes nothing, even when the expected version no longer matches.
SELECT amebo.append_event('order-7', 'order.placed', '{"total": 10}', 0, NULL,
    '0b7e2a4e-4f3c-4a8e-9a49-6b1d2f3c4d01');
SELECT amebo.append_event('order-7', 'order.paid', '{"amount": 10}', 1);
SELECT amebo.append_event('order-7', 'order.placed', '{"total": 10}', 0, NULL,
    '0b7e2a4e-4f3c-4a8e-9a49-6b1d2f3c4d01') AS retried_version;
SELECT amebo.append_event('order-7', 'order.placed', '{"total": 10}', NULL, '{"retry": 2}',
    '0b7e2a4e-4f3c-4a8e-9a49-6b1d2f3c4d01') AS retried_with_new_metadata;
SELECT count(*) AS order_events FROM amebo.events WHERE stream = 'order-7';
-- The same id with other content is its own error: other payload, action or stream.
SELECT amebo.append_event('order-7', 'order.placed', '{"total": 11}', NULL, NULL,
    '0b7e2a4e-4f3c-4a8e-9a49-6b1d2f3c4d01');
SELECT regress.outcome($$SELECT amebo.append_event('order-7', 'order.cancelled', '{"total": 10}', NULL, NULL,
    '0b7e2a4e-4f3c-4a8e-9a49-6b1d2f3c4d01')$$);
SELECT regress.outcome($$SELECT amebo.append_event('order-8', 'order.placed', '{"total": 10}', NULL, NULL,
    '0b7e2a4e-4f3c-4a8e-9a49-6b1d2f3c4d01')$$);

-- Batches: consecutive versions, one transaction time, increasing positions.
SELECT amebo.append_events('cart-1', '[
    {"action": "cart.opened", "payload": {"cart": 1}},
    {"action": "cart.item_added", "payload": {"sku": "A"}, "metadata": {"by": "test"}},
    {"action": "cart.item_added", "payload": {"sku": "B"}, "event_id": "6a1f0c2e-0000-4000-8000-000000000001"}
]', 0);
SELECT version, action, payload, metadata FROM amebo.events WHERE stream = 'cart-1' ORDER BY version;
SELECT count(DISTINCT recorded_at) AS times, bool_and(position > 0) AS positioned,
       array_agg(version ORDER BY position) AS versions_by_position
FROM amebo.events WHERE stream = 'cart-1';
SELECT amebo.append_events('cart-1', '[{"action": "cart.checked_out", "payload": {}}]', 3);
-- A batch is atomic: a conflict or a bad element stores none of it.
SELECT amebo.append_events('cart-1', '[{"action": "cart.item_added", "payload": {}}]', 3);
SELECT regress.outcome($$SELECT amebo.append_events('cart-1', '[
    {"action": "cart.item_added", "payload": {"sku": "C"}},
    {"action": "cart.item_added", "payload": [1, 2]}]')$$);
SELECT amebo.stream_version('cart-1');

-- Retrying a whole batch by its ids returns the version of its last event and writes nothing.
SELECT amebo.append_events('cart-2', '[
    {"action": "cart.opened", "payload": {}, "event_id": "6a1f0c2e-0000-4000-8000-000000000010"},
    {"action": "cart.item_added", "payload": {"sku": "A"}, "event_id": "6a1f0c2e-0000-4000-8000-000000000011"}
]', 0);
SELECT amebo.append_events('cart-2', '[
    {"action": "cart.opened", "payload": {}, "event_id": "6a1f0c2e-0000-4000-8000-000000000010"},
    {"action": "cart.item_added", "payload": {"sku": "A"}, "event_id": "6a1f0c2e-0000-4000-8000-000000000011"}
]', 0) AS retried_batch;
-- A batch that is only partly stored is not a retry.
SELECT amebo.append_events('cart-2', '[
    {"action": "cart.opened", "payload": {}, "event_id": "6a1f0c2e-0000-4000-8000-000000000010"},
    {"action": "cart.item_added", "payload": {"sku": "Z"}, "event_id": "6a1f0c2e-0000-4000-8000-000000000012"}
]');
SELECT amebo.stream_version('cart-2');

-- Within one transaction: several streams, a rolled-back savepoint, versions stay exact.
BEGIN;
SELECT amebo.append_event('tx-1', 'tx.step', '{"n": 1}', 0);
SELECT amebo.append_event('tx-2', 'tx.step', '{"n": 1}', 0);
SAVEPOINT s;
SELECT amebo.append_event('tx-1', 'tx.step', '{"n": 2}', 1);
ROLLBACK TO SAVEPOINT s;
SELECT amebo.append_event('tx-1', 'tx.step', '{"n": 2, "again": true}', 1);
COMMIT;
SELECT stream, version, payload FROM amebo.events WHERE stream LIKE 'tx-%' ORDER BY stream, version;

-- A rolled-back append leaves nothing, and the stream starts again at version 1.
BEGIN;
SELECT amebo.append_event('gone-1', 'gone.created', '{}', 0);
ROLLBACK;
SELECT amebo.append_event('gone-1', 'gone.created', '{}', 0);

-- Generated ids are UUID version 7, time-ordered.
SELECT substr(event_id::text, 15, 1) AS uuid_version, count(*) > 0 AS some
FROM amebo.events GROUP BY 1;
SELECT substr(amebo.new_event_id()::text, 15, 1) AS new_event_id_version;

-- A batch in which only some events carry an id is not taken for a retry: it could differ
-- from the stored one in exactly the events without ids (give every event an id to retry).
SELECT amebo.append_events('cart-3', '[
    {"action": "cart.opened", "payload": {}},
    {"action": "cart.item_added", "payload": {"sku": "Q"}, "event_id": "6a1f0c2e-0000-4000-8000-000000000030"},
    {"action": "cart.item_added", "payload": {"sku": "R"}}
]', 0);
SELECT amebo.append_events('cart-3', '[
    {"action": "cart.opened", "payload": {}},
    {"action": "cart.item_added", "payload": {"sku": "Q"}, "event_id": "6a1f0c2e-0000-4000-8000-000000000030"},
    {"action": "cart.item_added", "payload": {"sku": "R"}}
]', 0);
SELECT count(*) AS cart_3_events FROM amebo.events WHERE stream = 'cart-3';
