-- A database that uses everything amebo stores except subscriptions (whose handlers each test
-- points at its own receiver): applications (a given and a generated secret), actions with
-- JSON Schemas in several versions, two reducers, inline and async projections with their
-- read models, events in many streams (several versions each, metadata, explicit event_ids),
-- automatic and explicit snapshots. Used by test/scripts/dump_restore.sh and
-- test/tap/standby_reads.pl. Needs amebo 1.3 and examples/users/users.sql loaded first (the
-- user aggregate and its inline projection); the async projection needs the worker.
\set ON_ERROR_STOP 1

CREATE SCHEMA shop;

-- The registry: a given secret and a generated one; schema versions 1 to 3 and 1 to 2.
SELECT amebo.create_application('shop', 'https://shop.example.com/',
                                'whsec_' || encode(sha256('amebo fixture'), 'base64')) IS NOT NULL;
SELECT amebo.create_application('mailer') IS NOT NULL;
SELECT amebo.create_action('order.placed', 'shop', '{
    "type": "object", "required": ["order_id", "total"],
    "properties": {"order_id": {"type": "string"}, "total": {"type": "number", "minimum": 0}}
}', 'backward');
SELECT amebo.update_action('order.placed', schema => '{
    "type": "object", "required": ["order_id", "total"],
    "properties": {"order_id": {"type": "string"}, "total": {"type": "number", "minimum": 0},
                   "currency": {}}
}');
SELECT amebo.update_action('order.placed', schema => '{
    "type": "object", "required": ["order_id"],
    "properties": {"order_id": {"type": "string"}, "total": {"type": "number", "minimum": 0},
                   "currency": {}}
}');
SELECT amebo.create_action('order.paid', 'shop', '{"type": "object", "required": ["amount"]}');
SELECT amebo.update_action('order.paid', schema => '{
    "type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer"}}
}');
SELECT amebo.create_action('mail.sent', 'mailer');

-- The order aggregate: the sum of what was placed and paid; a snapshot after 3 replayed events.
CREATE FUNCTION shop.order_reducer(state jsonb, event amebo.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT state || jsonb_build_object(
        'placed', (state->>'placed')::numeric
                  + CASE WHEN event.action = 'order.placed'
                         THEN coalesce((event.payload->>'total')::numeric, 0) ELSE 0 END,
        'paid', (state->>'paid')::numeric
                + CASE WHEN event.action = 'order.paid'
                       THEN (event.payload->>'amount')::numeric ELSE 0 END,
        'version', event.version)
$$;
SELECT amebo.create_reducer('order', 'shop.order_reducer(jsonb, amebo.events)',
                            '{"placed": 0, "paid": 0}', 3);

-- Inline read model: per order, what was placed and paid.
CREATE TABLE shop.order_totals (
    stream  text PRIMARY KEY,
    placed  numeric NOT NULL DEFAULT 0,
    paid    numeric NOT NULL DEFAULT 0,
    version bigint NOT NULL
);
-- Applies one order event to shop.order_totals.
CREATE FUNCTION shop.order_totals_apply(event amebo.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO shop.order_totals AS t (stream, placed, paid, version)
    VALUES (event.stream,
            CASE WHEN event.action = 'order.placed'
                 THEN coalesce((event.payload->>'total')::numeric, 0) ELSE 0 END,
            CASE WHEN event.action = 'order.paid' THEN (event.payload->>'amount')::numeric ELSE 0 END,
            event.version)
    ON CONFLICT (stream) DO UPDATE
    SET placed = t.placed + excluded.placed, paid = t.paid + excluded.paid, version = excluded.version
$$;
-- Empties shop.order_totals before a rebuild.
CREATE FUNCTION shop.order_totals_reset() RETURNS void LANGUAGE sql AS $$ TRUNCATE shop.order_totals $$;
SELECT amebo.create_projection('order_totals', 'shop.order_totals_apply(amebo.events)',
                               ARRAY['order.placed', 'order.paid'], 'inline',
                               'shop.order_totals_reset()');

-- Async read model, applied by the worker: events per action.
CREATE TABLE shop.action_counts (
    action text PRIMARY KEY,
    events bigint NOT NULL,
    last_position bigint NOT NULL
);
-- Counts one event in shop.action_counts.
CREATE FUNCTION shop.action_counts_apply(event amebo.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO shop.action_counts AS c VALUES (event.action, 1, event.position)
    ON CONFLICT (action) DO UPDATE SET events = c.events + 1, last_position = excluded.last_position
$$;
-- Empties shop.action_counts before a rebuild.
CREATE FUNCTION shop.action_counts_reset() RETURNS void LANGUAGE sql AS $$ TRUNCATE shop.action_counts $$;
SELECT amebo.create_projection('action_counts', 'shop.action_counts_apply(amebo.events)',
                               NULL, 'async', 'shop.action_counts_reset()');

-- 40 orders: placed with expected version 0, metadata and a given event_id, then 1 to 4 more
-- events in one batch (payments, unregistered notes, some with ids and metadata).
SELECT amebo.append_event('order-' || i, 'order.placed',
                          jsonb_build_object('order_id', 'o' || i, 'total', i * 10, 'currency', 'EUR'),
                          expected_version => 0,
                          metadata => jsonb_build_object('correlation_id', 'c-' || i),
                          event_id => md5('placed-' || i)::uuid)
FROM generate_series(1, 40) i;
SELECT amebo.append_events('order-' || i, (
    SELECT jsonb_agg(CASE WHEN n % 2 = 1
        THEN jsonb_build_object('action', 'order.paid', 'payload', jsonb_build_object('amount', i + n),
                                'metadata', jsonb_build_object('attempt', n),
                                'event_id', md5('paid-' || i || '-' || n)::uuid)
        ELSE jsonb_build_object('action', 'order.note', 'payload', jsonb_build_object('text', 'n' || n))
        END ORDER BY n)
    FROM generate_series(1, 1 + i % 4) n), expected_version => 1)
FROM generate_series(1, 40) i;

-- 12 users (examples/users/users.sql): created, half of them verified.
SELECT amebo.append_event('user-' || i, 'user.created',
                          jsonb_build_object('user_id', 'u' || i, 'email', 'u' || i || '@example.com',
                                             'name', 'User ' || i),
                          metadata => '{"source": "fixture"}')
FROM generate_series(1, 12) i;
SELECT amebo.append_event('user-' || i, 'user.email_verified',
                          jsonb_build_object('user_id', 'u' || i, 'verified_at', '2026-11-27T10:00:00Z'),
                          expected_version => 1, event_id => md5('verified-' || i)::uuid)
FROM generate_series(2, 12, 2) i;
SELECT amebo.append_event('mail-' || i, 'mail.sent', jsonb_build_object('to', 'u' || i))
FROM generate_series(1, 5) i;

-- Snapshots: automatic ones from load_state (orders with more than 3 events), explicit ones.
SELECT count(*) FROM generate_series(1, 40) i, amebo.load_state('order-' || i) s;
SELECT amebo.save_snapshot('user-' || i, 1, jsonb_build_object('saved', i)) FROM generate_series(1, 4) i;
SELECT amebo.save_snapshot('order-1', 1, '{"placed": 10, "paid": 0, "version": 1}');
