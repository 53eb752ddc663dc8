-- pgbench: the PL/pgSQL baseline's append_event (bench/baselines.sql), as append_event.sql.
\set r random(1, 1000000000000000)
SELECT plstore.append_event('order-' || :client_id || '-' || :r, 'OrderPlaced',
    jsonb_build_object('order_id', (:r)::bigint, 'customer', 'customer-' || (:r)::bigint % 997,
                       'amount_cents', (:r)::bigint % 100000, 'currency', 'EUR',
                       'lines', jsonb_build_array(jsonb_build_object(
                           'sku', 'sku-' || (:r)::bigint % 101, 'qty', (:r)::bigint % 5 + 1))));
