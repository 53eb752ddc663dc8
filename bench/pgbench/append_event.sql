-- pgbench: one amebo.append_event per transaction, to a stream no other transaction uses
-- (client id plus a random number in 1..10^15). The payload is built exactly as in insert.sql.
\set r random(1, 1000000000000000)
SELECT amebo.append_event('order-' || :client_id || '-' || :r, 'OrderPlaced',
    jsonb_build_object('order_id', (:r)::bigint, 'customer', 'customer-' || (:r)::bigint % 997,
                       'amount_cents', (:r)::bigint % 100000, 'currency', 'EUR',
                       'lines', jsonb_build_array(jsonb_build_object(
                           'sku', 'sku-' || (:r)::bigint % 101, 'qty', (:r)::bigint % 5 + 1))));
