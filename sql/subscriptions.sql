-- Subscriptions: the SQL API (create, check, update, pause, drop, redeliver, replay, status).
-- Nothing here is delivered (the regression cluster has no wal_level = logical, and the
-- worker serves another database): these are the checks and the bookkeeping only.

SELECT amebo.create_application('shop', NULL, 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw') IS NOT NULL AS shop;
SELECT amebo.create_action('order.placed', 'shop');
SELECT amebo.create_action('order.shipped', 'shop');
SELECT amebo.create_action('customer.created', 'shop');

-- Defaults: 5 retries, no filter, unordered, one event per request, active. The id returned
-- is the subscription's, and it starts after the events already stored.
SELECT amebo.create_subscription('shop', 'placed', 'order.placed', 'https://hooks.example.invalid/placed') AS placed_id \gset
SELECT id = :placed_id AS id_returned,
       start_position = (SELECT coalesce(max(position), 0) FROM amebo.events) AS starts_after_existing
FROM amebo.subscriptions WHERE application = 'shop' AND name = 'placed';
-- Every option given; an action pattern needs no registered action.
SELECT amebo.create_subscription('shop', 'eu-orders', 'order.*', 'http://93.184.216.34/hook',
    max_retries => 10, filter => '{"region": "eu"}', ordered => true, batch_size => 50) > :placed_id AS later_id;
SELECT amebo.create_subscription('shop', 'everything', '*', 'HTTPS://Hooks.Example.Invalid:8443/all?token=abc') > 0 AS created;
SELECT amebo.create_subscription('shop', 'cancellations', 'order.cancel*', 'https://hooks.example.invalid/c') > 0 AS created;
SELECT application, name, action, handler, max_retries, filter, ordered, batch_size, state, disabled_reason
FROM amebo.subscription_list ORDER BY application, name;

-- Bad subscriptions: unknown application 42704, bad name or pattern or range 22023, duplicate
-- 42710, an exact action that does not exist AM005, NULL arguments 22004.
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.create_subscription('nobody', 'placed', 'order.placed', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', 'Placed', 'order.placed', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', '9lives', 'order.placed', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', 'has space', 'order.placed', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', '', 'order.placed', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', repeat('a', 64), 'order.placed', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', 'placed', 'order.placed', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', 'cancelled', 'order.cancelled', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', 'upper', 'Order.*', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', 'spaced', 'order placed', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', 'question', 'order.?', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', 'empty', '', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', 'long', repeat('a', 255) || '*', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', 'retries', 'order.*', 'https://hooks.example.invalid/', max_retries => -1)$$),
    ($$SELECT amebo.create_subscription('shop', 'retries', 'order.*', 'https://hooks.example.invalid/', max_retries => 101)$$),
    ($$SELECT amebo.create_subscription('shop', 'batch', 'order.*', 'https://hooks.example.invalid/', batch_size => 0)$$),
    ($$SELECT amebo.create_subscription('shop', 'batch', 'order.*', 'https://hooks.example.invalid/', batch_size => 1001)$$),
    ($$SELECT amebo.create_subscription(NULL, 'n', 'order.*', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', NULL, 'order.*', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', 'n', NULL, 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_subscription('shop', 'n', 'order.*', NULL)$$),
    ($$SELECT amebo.create_subscription('shop', 'n', 'order.*', 'https://hooks.example.invalid/', max_retries => NULL)$$),
    ($$SELECT amebo.create_subscription('shop', 'n', 'order.*', 'https://hooks.example.invalid/', ordered => NULL)$$),
    ($$SELECT amebo.create_subscription('shop', 'n', 'order.*', 'https://hooks.example.invalid/', batch_size => NULL)$$)
) AS cases(q);
-- The limits themselves are accepted.
SELECT amebo.create_subscription('shop', 'limits-low', 'order.*', 'https://hooks.example.invalid/', max_retries => 0, batch_size => 1) > 0 AS created;
SELECT amebo.create_subscription('shop', 'limits-high', 'order.*', 'https://hooks.example.invalid/', max_retries => 100, batch_size => 1000) > 0 AS created;
SELECT amebo.create_subscription('shop', repeat('a', 63), 'order.*', 'https://hooks.example.invalid/') > 0 AS created;
SELECT name, max_retries, batch_size FROM amebo.subscription_list
WHERE name IN ('limits-low', 'limits-high') OR length(name) = 63 ORDER BY name;
SELECT count(*) AS refused_left_nothing FROM amebo.subscriptions
WHERE name IN ('cancelled', 'upper', 'spaced', 'question', 'empty', 'long', 'retries', 'batch', 'n');

-- Handler URLs: http or https, a host, no user info, no fragment, visible ASCII only (IDN
-- hosts in punycode), at most 2048 bytes, a port in 1..65535; all 22023.
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo_internal.check_handler('ftp://hooks.example.invalid/x')$$),
    ($$SELECT amebo_internal.check_handler('hooks.example.invalid/x')$$),
    ($$SELECT amebo_internal.check_handler('')$$),
    ($$SELECT amebo_internal.check_handler('http:///x')$$),
    ($$SELECT amebo_internal.check_handler('http://:8080/x')$$),
    ($$SELECT amebo_internal.check_handler('https://user:secret@hooks.example.invalid/x')$$),
    ($$SELECT amebo_internal.check_handler('https://hooks.example.invalid/x#part')$$),
    ($$SELECT amebo_internal.check_handler('https://hooks.example.invalid/a b')$$),
    ($$SELECT amebo_internal.check_handler(E'https://hooks.example.invalid/a\tb')$$),
    ($$SELECT amebo_internal.check_handler(E'https://hooks.example.invalid/x\n')$$),
    ($$SELECT amebo_internal.check_handler('https://hooks.example.invalid/' || repeat('a', 2019))$$),
    ($$SELECT amebo_internal.check_handler('https://bücher.invalid/x')$$),
    ($$SELECT amebo_internal.check_handler('https://hooks.example.invalid/bücher')$$),
    ($$SELECT amebo_internal.check_handler('https://hooks.example.invalid:0/x')$$),
    ($$SELECT amebo_internal.check_handler('https://hooks.example.invalid:65536/x')$$),
    ($$SELECT amebo_internal.check_handler('https://hooks.example.invalid:http/x')$$),
    ($$SELECT amebo_internal.check_handler('https://hooks.example.invalid:/x')$$),
    ($$SELECT amebo_internal.check_handler('https://hooks_example$.invalid/x')$$),
    ($$SELECT amebo_internal.check_handler('https://' || repeat('a', 64) || '.invalid/x')$$),
    ($$SELECT amebo_internal.check_handler('http://2130706433/x')$$),
    ($$SELECT amebo_internal.check_handler('http://0x7f.1/x')$$),
    ($$SELECT amebo_internal.check_handler('http://[::1/x')$$),
    ($$SELECT amebo_internal.check_handler('http://[zz::1]/x')$$),
    ($$SELECT amebo_internal.check_handler('http://[2606:4700::1]x/')$$)
) AS cases(q);
-- Accepted: any case of the scheme, ports at the limits, punycode, 2048 bytes exactly, and a
-- host name that does not resolve now (it is checked again at every connection).
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo_internal.check_handler('HTTP://hooks.example.invalid')$$),
    ($$SELECT amebo_internal.check_handler('https://hooks.example.invalid:1/x?a=1&b=%20')$$),
    ($$SELECT amebo_internal.check_handler('https://hooks.example.invalid:65535/x')$$),
    ($$SELECT amebo_internal.check_handler('https://xn--bcher-kva.invalid/x')$$),
    ($$SELECT amebo_internal.check_handler('https://hooks.example.invalid/' || repeat('a', 2018))$$),
    ($$SELECT amebo_internal.check_handler('http://93.184.216.34/hook')$$),
    ($$SELECT amebo_internal.check_handler('http://[2606:4700::1]:8080/hook')$$)
) AS cases(q);
-- A handler URL is checked by create_subscription too, and nothing is stored.
SELECT amebo.create_subscription('shop', 'fragment', 'order.*', 'https://hooks.example.invalid/x#part');
SELECT count(*) AS stored FROM amebo.subscriptions WHERE name = 'fragment';

-- Private targets are refused while amebo.allow_private_targets is off (the default):
-- loopback, private, link-local and cloud metadata addresses, also inside IPv6, and host
-- names that resolve to one.
SHOW amebo.allow_private_targets;
SELECT amebo.create_subscription('shop', 'local', 'order.*', 'http://127.0.0.1:8080/hook');
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo_internal.check_handler('http://127.0.0.1/')$$),
    ($$SELECT amebo_internal.check_handler('http://[::1]/')$$),
    ($$SELECT amebo_internal.check_handler('http://10.0.0.1/')$$),
    ($$SELECT amebo_internal.check_handler('http://192.168.1.20:8080/')$$),
    ($$SELECT amebo_internal.check_handler('http://169.254.169.254/latest/meta-data/')$$),
    ($$SELECT amebo_internal.check_handler('http://[fe80::1]/')$$),
    ($$SELECT amebo_internal.check_handler('http://[::ffff:127.0.0.1]/')$$),
    ($$SELECT amebo_internal.check_handler('https://192.0.2.10/')$$)
) AS cases(q);
-- (SQLSTATEs only: which address localhost resolves to first depends on the machine.)
SELECT left(regress.outcome($$SELECT amebo_internal.check_handler('http://localhost:8080/hook')$$), 5) AS localhost,
       left(regress.outcome($$SELECT amebo_internal.check_handler('http://0.0.0.0/')$$), 5) AS unspecified;

-- Only a superuser may allow them.
SET amebo.allow_private_targets = on;
SELECT amebo_internal.check_handler('http://127.0.0.1:8080/hook');
SELECT amebo.create_subscription('shop', 'local', 'order.*', 'http://127.0.0.1:8080/hook') > 0 AS created;
RESET amebo.allow_private_targets;
CREATE ROLE amebo_regress_subscriber;
GRANT USAGE ON SCHEMA regress TO amebo_regress_subscriber;
SET ROLE amebo_regress_subscriber;
SELECT regress.outcome('SET amebo.allow_private_targets = on');
SHOW amebo.allow_private_targets;
RESET ROLE;
REVOKE USAGE ON SCHEMA regress FROM amebo_regress_subscriber;
DROP ROLE amebo_regress_subscriber;

-- update_subscription: NULL keeps a setting, '{}' clears the filter, a new handler is checked
-- again (an unchanged one is not).
SELECT amebo.update_subscription('shop', 'eu-orders', max_retries => 3);
SELECT name, action, handler, max_retries, filter, ordered, batch_size FROM amebo.subscription_list WHERE name = 'eu-orders';
SELECT amebo.update_subscription('shop', 'eu-orders', action => 'order.placed', filter => '{}', ordered => false, batch_size => 10,
                                 handler => 'https://hooks.example.invalid/eu');
SELECT name, action, handler, max_retries, filter, ordered, batch_size FROM amebo.subscription_list WHERE name = 'eu-orders';
SELECT amebo.update_subscription('shop', 'eu-orders', filter => '{"region": "us"}');
SELECT name, filter FROM amebo.subscription_list WHERE name = 'eu-orders';
SELECT amebo.update_subscription('shop', 'local', max_retries => 7);
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.update_subscription('shop', 'local', handler => 'http://127.0.0.1:9090/hook')$$),
    ($$SELECT amebo.update_subscription('shop', 'eu-orders', handler => 'ftp://hooks.example.invalid/')$$),
    ($$SELECT amebo.update_subscription('shop', 'eu-orders', action => 'order.cancelled')$$),
    ($$SELECT amebo.update_subscription('shop', 'eu-orders', action => 'Order.*')$$),
    ($$SELECT amebo.update_subscription('shop', 'eu-orders', max_retries => 101)$$),
    ($$SELECT amebo.update_subscription('shop', 'eu-orders', batch_size => 0)$$),
    ($$SELECT amebo.update_subscription('shop', 'nobody')$$),
    ($$SELECT amebo.update_subscription('nobody', 'eu-orders')$$)
) AS cases(q);
SELECT name, action, handler, max_retries, filter, ordered, batch_size FROM amebo.subscription_list
WHERE name IN ('eu-orders', 'local') ORDER BY name;

-- Pause and resume; resume also re-enables a subscription a 410 disabled.
SELECT amebo.pause_subscription('shop', 'placed');
SELECT name, state FROM amebo.subscription_list WHERE name = 'placed';
SELECT amebo.resume_subscription('shop', 'placed');
SELECT name, state FROM amebo.subscription_list WHERE name = 'placed';
UPDATE amebo.subscriptions SET state = 'disabled', disabled_reason = 'HTTP 410 Gone' WHERE name = 'placed';
SELECT name, state, disabled_reason FROM amebo.subscription_status WHERE name = 'placed';
SELECT amebo.resume_subscription('shop', 'placed');
SELECT name, state, disabled_reason FROM amebo.subscription_list WHERE name = 'placed';
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.pause_subscription('shop', 'nobody')$$),
    ($$SELECT amebo.resume_subscription('shop', 'nobody')$$),
    ($$SELECT amebo.drop_subscription('shop', 'nobody')$$),
    ($$SELECT amebo.redeliver('shop', 'nobody')$$),
    ($$SELECT amebo.replay_subscription('shop', 'nobody', 0::bigint)$$)
) AS cases(q);

-- Action patterns: '*' matches any run of characters, anywhere.
SELECT pattern, action, amebo.action_matches(pattern, action) AS matches FROM (VALUES
    ('*', 'order.placed'),
    ('order.*', 'order.placed'),
    ('order.*', 'order.'),
    ('order.*', 'order'),
    ('order.*', 'orders.placed'),
    ('order.*', 'shop.order.placed'),
    ('order.placed', 'order.placed'),
    ('order.placed', 'order.place'),
    ('order.placed', 'order.placed.v2'),
    ('order.place', 'order.placed'),
    ('*.placed', 'order.placed'),
    ('*.placed', 'order.placed.v2'),
    ('order.*.done', 'order.payment.done'),
    ('order.*.done', 'order.done'),
    ('o*r.*d', 'order.placed'),
    ('a**b', 'ab'),
    ('*a*a*a*a*b', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa')
) AS cases(pattern, action);
SELECT amebo.action_matches(NULL, 'order.placed') IS NULL AS null_pattern;

-- Redeliver: dead messages become pending with fresh retries; pending ones are left alone.
SELECT coalesce(max(position), 0) AS before_position FROM amebo.events \gset
SELECT amebo.append_event('order-1', 'order.placed', '{"region": "eu", "total": 10}');
SELECT amebo.append_event('order-1', 'order.shipped', '{"region": "eu"}');
SELECT amebo.append_event('order-2', 'order.placed', '{"region": "us", "total": 20}');
SELECT amebo.append_event('customer-1', 'customer.created', '{"region": "eu"}');
SELECT amebo.append_event('order-3', 'order.placed', '{"region": "eu", "total": 30}');
SELECT position AS order_2_position, recorded_at AS order_2_recorded_at
FROM amebo.events WHERE stream = 'order-2' \gset
SELECT id AS everything_id FROM amebo.subscriptions WHERE name = 'everything' \gset
INSERT INTO amebo.deliveries (subscription_id, webhook_id, positions, state, attempts, last_status, last_error)
SELECT :everything_id, 'msg_' || replace(event_id::text, '-', ''), ARRAY[position],
       CASE WHEN version = 1 THEN 'dead' ELSE 'pending' END, 6, 500, 'HTTP 500'
FROM amebo.events WHERE position > :before_position;
SELECT name, state, in_flight, queued, pending, dead, lag_seconds > 0 AS lagging, last_error
FROM amebo.subscription_status WHERE name IN ('everything', 'placed') ORDER BY name;
SELECT amebo.redeliver('shop', 'everything') AS revived;
SELECT state, attempts, count(*) FROM amebo.deliveries WHERE subscription_id = :everything_id
GROUP BY state, attempts ORDER BY state, attempts;
SELECT amebo.redeliver('shop', 'everything') AS revived_again;
SELECT name, pending, dead FROM amebo.subscription_status WHERE name = 'everything';

-- Replay: one message per matching event after a position, or recorded since a time, with the
-- event's webhook id; a message stored already is made pending again rather than doubled.
SELECT amebo.update_subscription('shop', 'eu-orders', action => 'order.*', filter => '{"region": "eu"}');
SELECT amebo.replay_subscription('shop', 'eu-orders', :before_position::bigint) AS queued;
SELECT e.stream, e.action, d.state, d.attempts, d.webhook_id = 'msg_' || replace(e.event_id::text, '-', '')
       || CASE WHEN s.batch_size > 1 THEN '_1' ELSE '' END AS event_webhook_id
FROM amebo.deliveries d JOIN amebo.subscriptions s ON s.id = d.subscription_id
JOIN amebo.events e ON e.position = ALL (d.positions)
WHERE s.name = 'eu-orders' ORDER BY e.position;
UPDATE amebo.deliveries d SET state = 'dead', attempts = 4 FROM amebo.subscriptions s
WHERE s.id = d.subscription_id AND s.name = 'eu-orders';
SELECT amebo.replay_subscription('shop', 'eu-orders', :order_2_position::bigint) AS queued_after_order_2;
SELECT e.stream, d.state, d.attempts
FROM amebo.deliveries d JOIN amebo.subscriptions s ON s.id = d.subscription_id
JOIN amebo.events e ON e.position = ALL (d.positions)
WHERE s.name = 'eu-orders' ORDER BY e.position;
SELECT amebo.replay_subscription('shop', 'cancellations', :before_position::bigint) AS nothing_matches;
SELECT amebo.replay_subscription('shop', 'placed', since => :'order_2_recorded_at'::timestamptz) AS placed_since_order_2;
SELECT e.stream, e.action
FROM amebo.deliveries d JOIN amebo.subscriptions s ON s.id = d.subscription_id
JOIN amebo.events e ON e.position = ALL (d.positions)
WHERE s.name = 'placed' ORDER BY e.position;
SELECT amebo.replay_subscription('shop', 'placed', since => now() + interval '1 day') AS nothing_since_tomorrow;
SELECT regress.outcome($$SELECT amebo.replay_subscription('shop', 'placed', NULL::bigint)$$) AS null_position;
SELECT name, pending, dead FROM amebo.subscription_status
WHERE name IN ('eu-orders', 'placed', 'everything', 'cancellations') ORDER BY name;

-- With messages pending and no worker delivering in this database, waiting times out.
SELECT amebo.wait_for_deliveries(0.1) AS all_delivered;

-- Dropping a subscription drops its stored messages; dropping its application drops it.
SELECT amebo.drop_subscription('shop', 'everything');
SELECT count(*) AS everything_left FROM amebo.subscriptions WHERE name = 'everything';
SELECT count(*) AS messages_left FROM amebo.deliveries WHERE subscription_id = :everything_id;
SELECT regress.outcome($$SELECT amebo.drop_subscription('shop', 'everything')$$) AS dropped_again;
SELECT amebo.create_application('crm') IS NOT NULL AS crm;
SELECT amebo.create_action('lead.won', 'crm');
SELECT amebo.create_subscription('crm', 'won', 'lead.won', 'https://crm.example.invalid/won') > 0 AS created;
SELECT amebo.create_subscription('crm', 'leads', 'lead.*', 'https://crm.example.invalid/leads') > 0 AS created;
SELECT amebo.drop_application('crm');
SELECT count(*) AS crm_subscriptions FROM amebo.subscriptions WHERE application = 'crm';
SELECT amebo.drop_application('crm', cascade => true);
SELECT count(*) AS crm_subscriptions FROM amebo.subscriptions WHERE application = 'crm';

-- Rate limits, in requests per second: NULL or 'Infinity' is none; zero, negative, NaN and
-- values out of range are refused (22023); NULL in update_subscription keeps the limit.
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.create_subscription('shop', 'limited', 'order.*', 'https://hooks.example.invalid/', rate_limit => 0)$$),
    ($$SELECT amebo.create_subscription('shop', 'limited', 'order.*', 'https://hooks.example.invalid/', rate_limit => -1)$$),
    ($$SELECT amebo.create_subscription('shop', 'limited', 'order.*', 'https://hooks.example.invalid/', rate_limit => 'NaN')$$),
    ($$SELECT amebo.create_subscription('shop', 'limited', 'order.*', 'https://hooks.example.invalid/', rate_limit => '-Infinity')$$),
    ($$SELECT amebo.create_subscription('shop', 'limited', 'order.*', 'https://hooks.example.invalid/', rate_limit => 0.0001)$$),
    ($$SELECT amebo.create_subscription('shop', 'limited', 'order.*', 'https://hooks.example.invalid/', rate_limit => 1e7)$$),
    ($$SELECT amebo.update_subscription('shop', 'eu-orders', rate_limit => 0)$$),
    ($$SELECT amebo.update_subscription('shop', 'eu-orders', rate_limit => -5)$$)
) AS cases(q);
SELECT amebo.create_subscription('shop', 'limited', 'order.*', 'https://hooks.example.invalid/', rate_limit => 2.5) > 0 AS created;
SELECT amebo.create_subscription('shop', 'unlimited', 'order.*', 'https://hooks.example.invalid/', rate_limit => 'Infinity') > 0 AS created;
SELECT amebo.create_subscription('shop', 'slowest', 'order.*', 'https://hooks.example.invalid/', rate_limit => 0.001) > 0 AS created;
SELECT name, rate_limit FROM amebo.subscription_list WHERE name IN ('limited', 'unlimited', 'slowest') ORDER BY name;
SELECT amebo.update_subscription('shop', 'limited', max_retries => 3);
SELECT amebo.update_subscription('shop', 'unlimited', rate_limit => 1000000);
SELECT amebo.update_subscription('shop', 'slowest', rate_limit => 'Infinity');
SELECT name, max_retries, rate_limit FROM amebo.subscription_list WHERE name IN ('limited', 'unlimited', 'slowest') ORDER BY name;
SELECT count(*) AS refused_updates_left_nothing FROM amebo.subscriptions WHERE name = 'eu-orders' AND rate_limit IS NOT NULL;

-- The circuit breaker (amebo.disable_after, 3 days here), fed as the worker feeds it: a
-- subscription whose attempts have all failed for 4 days is disabled with a reason and an
-- amebo.subscription_disabled event is appended to amebo-operations; one with a success in
-- between, or whose failures began only a day ago, stays active. The operational action can
-- be subscribed to without registering it.
SELECT current_setting('amebo.disable_after') AS disable_after;
SELECT amebo.create_subscription('shop', 'operations', 'amebo.subscription_disabled', 'https://hooks.example.invalid/ops') > 0 AS created;
SELECT amebo.create_subscription('shop', 'broken', 'order.*', 'https://hooks.example.invalid/broken') > 0 AS created;
SELECT amebo.create_subscription('shop', 'flaky', 'order.*', 'https://hooks.example.invalid/flaky') > 0 AS created;
SELECT amebo.create_subscription('shop', 'new-failure', 'order.*', 'https://hooks.example.invalid/new') > 0 AS created;
CREATE FUNCTION pg_temp.attempt(subscription text, ok boolean, days_ago double precision)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('subscription_id', (SELECT id FROM amebo.subscriptions WHERE name = subscription),
                              'webhook_id', 'msg_' || md5(random()::text), 'positions', '[]'::jsonb,
                              'attempt', 1, 'status', CASE WHEN ok THEN 200 ELSE 500 END,
                              'error', CASE WHEN ok THEN NULL ELSE 'HTTP 500' END, 'duration_ms', 1,
                              'attempted_at', now() - days_ago * interval '1 day')
$$;
CREATE FUNCTION pg_temp.record(attempts jsonb[]) RETURNS void LANGUAGE sql AS $$
    SELECT amebo_internal.record_deliveries(
        jsonb_build_object('log', to_jsonb(attempts), 'operations', '[]'::jsonb,
                           'disable', '[]'::jsonb, 'subscriptions', '[]'::jsonb), NULL, 'regress')
$$;
SELECT pg_temp.record(ARRAY[pg_temp.attempt('broken', false, 4), pg_temp.attempt('flaky', false, 4),
                            pg_temp.attempt('flaky', true, 2), pg_temp.attempt('flaky', false, 1.5),
                            pg_temp.attempt('new-failure', false, 1)]);
SELECT s.name, s.state, now() - p.failing_since BETWEEN interval '4 days' AND interval '4 days 1 min' AS since_4_days,
       now() - p.failing_since BETWEEN interval '36 hours' AND interval '36 hours 1 min' AS since_36_hours
FROM amebo.subscriptions s JOIN amebo.subscription_progress p ON p.subscription_id = s.id
WHERE s.name IN ('broken', 'flaky', 'new-failure') ORDER BY s.name;
-- 'broken' was disabled at once: it has failed for 4 days. The next failures keep the others
-- active: 'flaky' has failed for 36 hours, 'new-failure' for a day.
SELECT pg_temp.record(ARRAY[pg_temp.attempt('broken', false, 0), pg_temp.attempt('flaky', false, 0),
                            pg_temp.attempt('new-failure', false, 0)]);
SELECT name, state, disabled_reason FROM amebo.subscription_list
WHERE name IN ('broken', 'flaky', 'new-failure') ORDER BY name;
SELECT name, state, disabled_reason,
       now() - failing_since BETWEEN interval '4 days' AND interval '4 days 1 min' AS since_4_days
FROM amebo.subscription_status WHERE name = 'broken';
SELECT stream, version, action, payload - 'disabled_at' - 'since' AS payload,
       now() - (payload->>'since')::timestamptz BETWEEN interval '4 days' AND interval '4 days 1 min' AS since_4_days,
       now() - (payload->>'disabled_at')::timestamptz < interval '1 min' AS disabled_recently
FROM amebo.events WHERE stream = 'amebo-operations';
-- A disabled subscription is not disabled again; resuming it starts the period over.
SELECT pg_temp.record(ARRAY[pg_temp.attempt('broken', false, 0)]);
SELECT count(*) AS operational_events FROM amebo.events WHERE stream = 'amebo-operations';
SELECT amebo.resume_subscription('shop', 'broken');
SELECT pg_temp.record(ARRAY[pg_temp.attempt('broken', false, 0)]);
SELECT name, state, disabled_reason FROM amebo.subscription_list WHERE name = 'broken';
SELECT now() - failing_since < interval '1 min' AS failing_since_now FROM amebo.subscription_status WHERE name = 'broken';
-- A success clears the failing time.
SELECT pg_temp.record(ARRAY[pg_temp.attempt('broken', true, 0)]);
SELECT failing_since FROM amebo.subscription_status WHERE name = 'broken';
-- A schema registered for the operational action that refuses its payload costs only the
-- event (a warning): the subscription is still disabled.
SELECT amebo.create_action('amebo.subscription_disabled', 'shop', '{"type": "object", "required": ["nothing"]}');
SELECT pg_temp.record(ARRAY[pg_temp.attempt('new-failure', false, 4), pg_temp.attempt('new-failure', false, 0)]);
SELECT name, state FROM amebo.subscription_list WHERE name = 'new-failure';
SELECT count(*) AS operational_events FROM amebo.events WHERE stream = 'amebo-operations';
SELECT amebo.drop_action('amebo.subscription_disabled');
SELECT amebo.drop_subscription('shop', name)
FROM unnest(ARRAY['limited', 'unlimited', 'slowest', 'operations', 'broken', 'flaky', 'new-failure']) name;

-- Clean up, so that later scripts start from the registry they expect.
SELECT amebo.drop_application('shop', cascade => true);
SELECT count(*) AS subscriptions_left FROM amebo.subscriptions;
SELECT count(*) AS messages_left FROM amebo.deliveries;
