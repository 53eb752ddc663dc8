-- amebo 1.5 -> 1.6: scale-out helpers (shards behind amebo_router, a replicated settled
-- horizon for reads on standbys) and webhooks at internet scale (secret rotation, private
-- target allowlist, rate limits, circuit breaker). See sql/amebo.sql for every object as 1.6
-- defines it; each change here repeats it exactly.
\echo Use "ALTER EXTENSION amebo UPDATE TO '1.6'" to load this file. \quit

-- Webhooks: per-subscription rate limit and circuit breaker (issue 16, item 6).
ALTER TABLE amebo.subscriptions ADD COLUMN rate_limit double precision,
    ADD CONSTRAINT subscriptions_rate_limit_check CHECK (rate_limit BETWEEN 0.001 AND 1000000);
ALTER TABLE amebo.subscription_progress ADD COLUMN failing_since timestamptz;
DROP FUNCTION amebo.create_subscription(text, text, text, text, integer, jsonb, boolean, integer);
DROP FUNCTION amebo.update_subscription(text, text, text, text, integer, jsonb, boolean, integer);
DROP FUNCTION amebo_internal.check_subscription(text, integer, integer, jsonb);

-- Actions amebo itself appends (operational events): anyone may subscribe to them, though no
-- application registers them.
CREATE FUNCTION amebo_internal.operational_actions() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog AS $$
    SELECT ARRAY['amebo.subscription_disabled']
$$;

-- Appends an operational event to the stream amebo-operations, whatever amebo.unknown_actions
-- says; an error (a schema someone registered for the action refusing it) is a warning, so
-- that the bookkeeping it is part of goes on.
CREATE FUNCTION amebo_internal.append_operational_event(action text, payload jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    policy text := current_setting('amebo.unknown_actions', true);
BEGIN
    PERFORM set_config('amebo.unknown_actions', 'allow', true);
    PERFORM amebo.append_event('amebo-operations', action, payload);
    PERFORM set_config('amebo.unknown_actions', coalesce(policy, 'allow'), true);
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'amebo could not append its operational event %: %', action, SQLERRM;
END
$$;

-- The circuit breaker, run by the worker with each batch of logged attempts: keeps per
-- subscription when its failed attempts since the last success began, and disables every
-- active subscription with a failed attempt in the batch whose attempts have all failed for
-- amebo.disable_after (0: never), appending an amebo.subscription_disabled event for each.
CREATE FUNCTION amebo_internal.trip_circuit_breakers(attempts jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    period interval;
    tripped record;
BEGIN
    -- The common case, every attempt succeeded: only subscriptions that were failing change.
    IF NOT jsonb_path_exists(attempts, '$[*] ? (exists (@.error))') THEN
        UPDATE amebo.subscription_progress p SET failing_since = NULL
        WHERE p.failing_since IS NOT NULL
          AND p.subscription_id IN (SELECT (a->>'subscription_id')::bigint
                                    FROM jsonb_array_elements(attempts) a);
        RETURN;
    END IF;
    WITH attempt AS (
        SELECT o.subscription_id, o.error, o.attempted_at,
               max(o.attempted_at) FILTER (WHERE o.error IS NULL)
                   OVER (PARTITION BY o.subscription_id) AS succeeded_at
        FROM jsonb_to_recordset(attempts) AS o(subscription_id bigint, error text,
                                               attempted_at timestamptz)
    ), outcome AS (
        SELECT a.subscription_id, bool_or(a.succeeded_at IS NOT NULL) AS succeeded,
               min(a.attempted_at) FILTER (WHERE a.error IS NOT NULL
                   AND a.attempted_at > coalesce(a.succeeded_at, '-infinity')) AS failing_from
        FROM attempt a
        GROUP BY a.subscription_id
    ), recomputed AS (
        SELECT o.subscription_id,
               CASE WHEN o.succeeded THEN o.failing_from
                    ELSE least(x.failing_since, o.failing_from) END AS failing_since
        FROM outcome o JOIN amebo.subscription_progress x ON x.subscription_id = o.subscription_id
    )
    UPDATE amebo.subscription_progress p
    SET failing_since = n.failing_since
    FROM recomputed n
    WHERE p.subscription_id = n.subscription_id
      AND p.failing_since IS DISTINCT FROM n.failing_since; -- healthy ones are not rewritten
    -- The setting's text ('3d', '2s', '90min', '0') reads as an interval.
    period := coalesce(current_setting('amebo.disable_after', true), '3d')::interval;
    IF period <= interval '0' THEN
        RETURN;
    END IF;
    FOR tripped IN
        UPDATE amebo.subscriptions s
        SET state = 'disabled', updated_at = now(),
            disabled_reason = format('every delivery attempt failed for at least %s '
                                     '(amebo.disable_after)',
                                     current_setting('amebo.disable_after', true))
        FROM amebo.subscription_progress p
        WHERE p.subscription_id = s.id AND s.state = 'active'
          AND p.failing_since <= now() - period
          AND s.id IN (SELECT o.subscription_id
                       FROM jsonb_to_recordset(attempts) AS o(subscription_id bigint, error text)
                       WHERE o.error IS NOT NULL)
        RETURNING s.application, s.name, s.disabled_reason, p.failing_since, p.last_error
    LOOP
        PERFORM amebo_internal.append_operational_event('amebo.subscription_disabled',
            jsonb_build_object('subscription', tripped.name, 'application', tripped.application,
                               'reason', tripped.disabled_reason,
                               'since', tripped.failing_since,
                               'last_error', tripped.last_error, 'disabled_at', now()));
    END LOOP;
END
$$;

-- Checks a subscription's settings (other than its handler), raising the matching error.
CREATE FUNCTION amebo_internal.check_subscription(action text, max_retries integer, batch_size integer,
                                                  filter jsonb, rate_limit double precision)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF filter IS NOT NULL AND jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION 'filter must be a JSON object, not %', jsonb_typeof(filter)
            USING ERRCODE = '22023',
                  HINT = 'A filter matches payloads that contain it, as jsonb @> does.';
    END IF;
    IF action !~ '^[a-z0-9_.*]{1,255}$' THEN
        RAISE EXCEPTION 'invalid action pattern "%"', action USING ERRCODE = '22023',
            HINT = 'Use an action name, or a pattern of lowercase letters, digits, "_", "." and "*".';
    END IF;
    IF position('*' IN action) = 0 AND action <> ALL (amebo_internal.operational_actions())
       AND NOT EXISTS (SELECT 1 FROM amebo.actions a WHERE a.action = check_subscription.action) THEN
        RAISE EXCEPTION 'action "%" does not exist', action USING ERRCODE = 'AM005',
            HINT = 'Create it with amebo.create_action(), or subscribe with a pattern.';
    END IF;
    IF max_retries NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'max_retries must be between 0 and 100, not %', max_retries
            USING ERRCODE = '22023';
    END IF;
    IF batch_size NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 1000, not %', batch_size
            USING ERRCODE = '22023';
    END IF;
    IF NOT rate_limit BETWEEN 0.001 AND 1000000 THEN
        RAISE EXCEPTION 'rate_limit must be between 0.001 and 1000000 requests per second, not %',
            rate_limit USING ERRCODE = '22023',
            HINT = 'NULL (or ''Infinity'') means no limit.';
    END IF;
END
$$;

-- Subscribes application's handler to action; returns the subscription's id.
CREATE FUNCTION amebo.create_subscription(application text, subscription text, action text,
                                          handler text, max_retries integer DEFAULT 5,
                                          filter jsonb DEFAULT NULL,
                                          ordered boolean DEFAULT false,
                                          batch_size integer DEFAULT 1,
                                          rate_limit double precision DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    created bigint;
BEGIN
    IF application IS NULL OR subscription IS NULL OR action IS NULL OR handler IS NULL
       OR max_retries IS NULL OR ordered IS NULL OR batch_size IS NULL THEN
        RAISE EXCEPTION 'only filter may be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM amebo.applications a WHERE a.name = application) THEN
        RAISE EXCEPTION 'application "%" does not exist', application USING ERRCODE = '42704';
    END IF;
    IF subscription !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid subscription name "%"', subscription USING ERRCODE = '22023',
            HINT = 'Use 1 to 63 lowercase letters, digits, "_" or "-", starting with a letter.';
    END IF;
    IF rate_limit = 'Infinity' THEN
        rate_limit := NULL;
    END IF;
    PERFORM amebo_internal.check_subscription(action, max_retries, batch_size, filter, rate_limit);
    PERFORM amebo_internal.check_handler(handler);
    INSERT INTO amebo.subscriptions AS s (application, name, action, handler, max_retries,
                                          filter, ordered, batch_size, start_position, rate_limit)
    VALUES (application, subscription, action, handler, max_retries, filter, ordered,
            batch_size, amebo_internal.subscription_start_position(), rate_limit)
    RETURNING s.id INTO created;
    RETURN created;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'subscription "%" of application "%" already exists', subscription,
        application USING ERRCODE = '42710';
END
$$;
GRANT EXECUTE ON FUNCTION amebo.create_subscription(text, text, text, text, integer, jsonb, boolean, integer, double precision) TO amebo_admin;

-- Changes a subscription; NULL leaves a setting as it is ('{}' as filter matches every event).
CREATE FUNCTION amebo.update_subscription(application text, subscription text,
                                          action text DEFAULT NULL, handler text DEFAULT NULL,
                                          max_retries integer DEFAULT NULL,
                                          filter jsonb DEFAULT NULL,
                                          ordered boolean DEFAULT NULL,
                                          batch_size integer DEFAULT NULL,
                                          rate_limit double precision DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s amebo.subscriptions := amebo_internal.lock_subscription(application, subscription);
BEGIN
    s.action := coalesce(action, s.action);
    s.handler := coalesce(handler, s.handler);
    s.max_retries := coalesce(max_retries, s.max_retries);
    s.filter := CASE WHEN filter = '{}'::jsonb THEN NULL ELSE coalesce(filter, s.filter) END;
    s.ordered := coalesce(ordered, s.ordered);
    s.batch_size := coalesce(batch_size, s.batch_size);
    s.rate_limit := CASE WHEN rate_limit = 'Infinity' THEN NULL
                         ELSE coalesce(rate_limit, s.rate_limit) END;
    PERFORM amebo_internal.check_subscription(s.action, s.max_retries, s.batch_size, s.filter,
                                              s.rate_limit);
    IF handler IS NOT NULL THEN
        PERFORM amebo_internal.check_handler(s.handler);
    END IF;
    UPDATE amebo.subscriptions x
    SET action = s.action, handler = s.handler, max_retries = s.max_retries,
        filter = s.filter, ordered = s.ordered, batch_size = s.batch_size,
        rate_limit = s.rate_limit, updated_at = now()
    WHERE x.id = s.id;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.update_subscription(text, text, text, text, integer, jsonb, boolean, integer, double precision) TO amebo_admin;

-- As sql/amebo.sql's general REVOKE does for a fresh install: PUBLIC executes none of them.
REVOKE EXECUTE ON FUNCTION amebo_internal.operational_actions(),
    amebo_internal.append_operational_event(text, jsonb),
    amebo_internal.trip_circuit_breakers(jsonb),
    amebo_internal.check_subscription(text, integer, integer, jsonb, double precision),
    amebo.create_subscription(text, text, text, text, integer, jsonb, boolean, integer, double precision),
    amebo.update_subscription(text, text, text, text, integer, jsonb, boolean, integer, double precision)
FROM PUBLIC;

-- Resumes a paused or disabled subscription; the circuit breaker's period starts over.
CREATE OR REPLACE FUNCTION amebo.resume_subscription(application text, subscription text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target bigint := (amebo_internal.lock_subscription(application, subscription)).id;
BEGIN
    UPDATE amebo.subscriptions s
    SET state = 'active', disabled_reason = NULL, updated_at = now()
    WHERE s.id = target;
    UPDATE amebo.subscription_progress p SET failing_since = NULL WHERE p.subscription_id = target;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.resume_subscription(text, text) TO amebo_admin;

-- Subscriptions with their settings.
CREATE OR REPLACE VIEW amebo.subscription_list AS
SELECT s.application, s.name, s.action, s.handler, s.max_retries, s.filter, s.ordered,
       s.batch_size, s.state, s.disabled_reason, s.created_at, s.updated_at, s.rate_limit
FROM amebo.subscriptions s;

-- Per subscription: state, requests in flight, pending and dead messages, lag, and the last
-- success and error.
CREATE OR REPLACE VIEW amebo.subscription_status AS
SELECT s.application, s.name, s.state,
       coalesce(w.in_flight, 0) AS in_flight,
       coalesce(w.queued, 0) AS queued,
       (SELECT count(*) FROM amebo.deliveries d
        WHERE d.subscription_id = s.id AND d.state = 'pending') AS pending,
       (SELECT count(*) FROM amebo.deliveries d
        WHERE d.subscription_id = s.id AND d.state = 'dead') AS dead,
       coalesce(extract(epoch FROM now() - (
           SELECT min(d.created_at) FROM amebo.deliveries d
           WHERE d.subscription_id = s.id AND d.state = 'pending')), 0) AS lag_seconds,
       coalesce(p.delivered, 0) AS delivered, p.last_success_at, p.last_error, p.last_error_at, s.disabled_reason,
       p.failing_since
FROM amebo.subscriptions s
LEFT JOIN amebo.subscription_progress p ON p.subscription_id = s.id
LEFT JOIN amebo_internal.delivery_worker_stats() w ON w.subscription_id = s.id;

-- The worker's bookkeeping, in one transaction per batch of outcomes: logs attempts (as one
-- delivery_log_entries row), stores, updates or removes messages, disables subscriptions that
-- answered 410, records progress and the checkpoint. outcomes: {"log": [attempt...],
-- "operations": [the last store or delete per message], "disable": [subscription id...],
-- "subscriptions": [every id touched]}.
CREATE OR REPLACE FUNCTION amebo_internal.record_deliveries(outcomes jsonb, checkpoint bigint,
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
        -- Circuit breaker: how long each subscription has failed, and those disabled for it.
        PERFORM amebo_internal.trip_circuit_breakers(outcomes->'log');
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
            next_attempt_at timestamptz, status integer, error text, seq bigint)
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
