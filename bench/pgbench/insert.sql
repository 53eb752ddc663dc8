-- pgbench: the physical limit for append_event.sql: one plain INSERT per transaction into
-- plain.events (amebo.events' columns and indexes; see bench/baselines.sql), with the same
-- stream names, payload, kind of event id and a position from a sequence; version 1 since
-- every stream is new. No version check, no idempotency check, no locking.
\set r random(1, 1000000000000000)
INSERT INTO plain.events (position, event_id, stream, version, action, payload, metadata,
                          recorded_at)
VALUES (nextval('plain.events_position_seq'), amebo.new_event_id(),
    'order-' || :client_id || '-' || :r, 1, 'OrderPlaced',
    jsonb_build_object('order_id', (:r)::bigint, 'customer', 'customer-' || (:r)::bigint % 997,
                       'amount_cents', (:r)::bigint % 100000, 'currency', 'EUR',
                       'lines', jsonb_build_array(jsonb_build_object(
                           'sku', 'sku-' || (:r)::bigint % 101, 'qty', (:r)::bigint % 5 + 1))),
    '{}', now());
