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
-- Shards (amebo_router): identity, shard_of, the helpers the router calls
-------------------------------------------------------------------------------------------
-- Shards: a database's place among the shards of amebo_router, and the helpers the router
-- calls (see docs/scaling.md)
-------------------------------------------------------------------------------------------

-- Which shard of how many this database is; empty on a database that is not a shard. Set by
-- the router's amebo.setup_shards() through set_shard_identity, dumped with the events.
CREATE TABLE amebo.shard_identity (
    shard      integer     NOT NULL,
    shards     integer     NOT NULL,
    set_at     timestamptz NOT NULL DEFAULT now(),
    -- one row at most
    single_row boolean     NOT NULL DEFAULT true,
    CONSTRAINT shard_identity_pkey PRIMARY KEY (single_row),
    CONSTRAINT shard_identity_single_row_check CHECK (single_row),
    CONSTRAINT shard_identity_shards_check CHECK (shards > 0 AND shards & (shards - 1) = 0),
    CONSTRAINT shard_identity_shard_check CHECK (shard >= 0 AND shard < shards)
);
COMMENT ON TABLE amebo.shard_identity IS
    'amebo: which shard of the router''s cluster this database is (empty: not a shard)';
SELECT pg_catalog.pg_extension_config_dump('amebo.shard_identity', '');
GRANT SELECT ON amebo.shard_identity TO amebo_reader;

-- Records that this database is shard `shard` of `shards` (a power of two). Setting the same
-- identity again is a no-op; a different one is refused (55000): a shard that changed its
-- number would hold streams the router now sends elsewhere.
CREATE FUNCTION amebo.set_shard_identity(shard integer, shards integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    current amebo.shard_identity;
BEGIN
    IF shards IS NULL OR shards < 1 OR shards & (shards - 1) <> 0 THEN
        RAISE EXCEPTION 'a cluster of % shards is not a power of two', shards
            USING ERRCODE = '22023',
                  HINT = 'PL/Proxy places a stream on hashtext(stream) & (shards - 1).';
    END IF;
    IF shard IS NULL OR shard < 0 OR shard >= shards THEN
        RAISE EXCEPTION 'shard % is not one of 0 to %', shard, shards - 1 USING ERRCODE = '22023';
    END IF;
    SELECT * INTO current FROM amebo.shard_identity FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO amebo.shard_identity (shard, shards) VALUES (shard, shards);
        -- The worker reloads it (webhook ids and envelopes carry the shard) at commit.
        PERFORM amebo_internal.note_subscription_change();
    ELSIF (current.shard, current.shards) IS DISTINCT FROM (shard, shards) THEN
        RAISE EXCEPTION 'database "%" is shard % of %, not shard % of %', current_database(),
            current.shard, current.shards, shard, shards
            USING ERRCODE = '55000',
                  HINT = 'Check the order of the connection strings of the server amebo_shards.';
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION amebo.set_shard_identity(integer, integer) TO amebo_admin;

-- The shard that holds a stream: hashtext(stream) & (shards - 1), as the router's
-- RUN ON hashtext(stream) places it; 0 on a database that is not a shard.
CREATE FUNCTION amebo.shard_of(stream text) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT hashtext(stream) & (coalesce((SELECT i.shards FROM amebo.shard_identity i), 1) - 1)
$$;
GRANT EXECUTE ON FUNCTION amebo.shard_of(text) TO amebo_reader;

-- The router's helpers below live in amebo_internal: every role may look names up there,
-- and EXECUTE stays with the role each helper names.
GRANT USAGE ON SCHEMA amebo_internal TO amebo_reader;

-- Appends one event as amebo.append_event does, returning an error as data (its SQLSTATE,
-- message, detail and hint) instead of raising it: the router re-raises it unchanged, and
-- PL/Proxy, which reopens its connection after every remote error, keeps it.
CREATE FUNCTION amebo_internal.try_append_event(stream text, action text, payload jsonb,
                                                expected_version bigint, metadata jsonb,
                                                event_id uuid,
                                                OUT version bigint, OUT error_code text,
                                                OUT error_message text, OUT error_detail text,
                                                OUT error_hint text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    version := amebo.append_event(stream, action, payload, expected_version, metadata, event_id);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS error_code = RETURNED_SQLSTATE, error_message = MESSAGE_TEXT,
        error_detail = PG_EXCEPTION_DETAIL, error_hint = PG_EXCEPTION_HINT;
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.try_append_event(text, text, jsonb, bigint, jsonb, uuid)
    TO amebo_writer;

-- Appends events as amebo.append_events does, returning an error as data (see
-- try_append_event).
CREATE FUNCTION amebo_internal.try_append_events(stream text, events jsonb,
                                                 expected_version bigint,
                                                 OUT version bigint, OUT error_code text,
                                                 OUT error_message text, OUT error_detail text,
                                                 OUT error_hint text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    version := amebo.append_events(stream, events, expected_version);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS error_code = RETURNED_SQLSTATE, error_message = MESSAGE_TEXT,
        error_detail = PG_EXCEPTION_DETAIL, error_hint = PG_EXCEPTION_HINT;
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.try_append_events(text, jsonb, bigint) TO amebo_writer;

-- Saves a snapshot as amebo.save_snapshot does, returning an error as data (see
-- try_append_event); saved is true when it did.
CREATE FUNCTION amebo_internal.try_save_snapshot(stream text, version bigint, state jsonb,
                                                 OUT saved boolean, OUT error_code text,
                                                 OUT error_message text, OUT error_detail text,
                                                 OUT error_hint text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM amebo.save_snapshot(stream, version, state);
    saved := true;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS error_code = RETURNED_SQLSTATE, error_message = MESSAGE_TEXT,
        error_detail = PG_EXCEPTION_DETAIL, error_hint = PG_EXCEPTION_HINT;
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.try_save_snapshot(text, bigint, jsonb) TO amebo_writer;

-- Raises 55000 unless this database is shard `shard` (set by the router's setup_shards).
CREATE FUNCTION amebo_internal.check_shard(shard integer) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    identity amebo.shard_identity;
BEGIN
    SELECT * INTO identity FROM amebo.shard_identity;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'database "%" is not a shard yet', current_database()
            USING ERRCODE = '55000', HINT = 'Run SELECT amebo.setup_shards() on the router.';
    END IF;
    IF identity.shard IS DISTINCT FROM shard THEN
        RAISE EXCEPTION 'database "%" is shard %, not shard %', current_database(),
            identity.shard, shard
            USING ERRCODE = '55000',
                  HINT = 'Check the order of the connection strings of the server amebo_shards.';
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.check_shard(integer) TO amebo_reader;

-- This shard's part of the router's read_all: amebo.read_all after the one position given,
-- with the shard's number. The router sends one element of each array to each shard (SPLIT).
CREATE FUNCTION amebo_internal.read_shard_feed(shards integer[], after_positions bigint[],
                                               max_count integer, actions text[],
                                               since timestamptz, payload_filter jsonb)
RETURNS TABLE ("position" bigint, event_id uuid, stream text, version bigint, action text,
               payload jsonb, metadata jsonb, recorded_at timestamptz, schema_version integer,
               shard integer)
LANGUAGE plpgsql VOLATILE ROWS 1000 SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF cardinality(shards) IS DISTINCT FROM 1
       OR cardinality(after_positions) IS DISTINCT FROM 1 THEN
        RAISE EXCEPTION 'a shard reads its feed after one position' USING ERRCODE = '22023';
    END IF;
    PERFORM amebo_internal.check_shard(shards[1]);
    RETURN QUERY
        SELECT e.*, shards[1]
        FROM amebo.read_all(coalesce(after_positions[1], 0), max_count, actions, since,
                            payload_filter) e;
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.read_shard_feed(integer[], bigint[], integer, text[],
                                                         timestamptz, jsonb) TO amebo_reader;

-- Every definition the router keeps the same on all shards, one row per object: its kind,
-- its name and what defines it (a secret as its SHA-256; no timestamps, states or ids).
CREATE FUNCTION amebo_internal.definitions()
RETURNS TABLE (kind text, name text, definition jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT 'application', a.name,
           jsonb_build_object('address', a.address,
                              'secret_sha256', encode(sha256(convert_to(a.secret, 'UTF8')), 'hex'),
                              'previous_secret_sha256',
                              encode(sha256(convert_to(a.previous_secret, 'UTF8')), 'hex'))
    FROM amebo.applications a
    UNION ALL
    SELECT 'action', a.action,
           jsonb_build_object('application', a.application, 'compatibility', a.compatibility,
                              'schemas', (SELECT jsonb_agg(s.schema ORDER BY s.version)
                                          FROM amebo.action_schemas s WHERE s.action = a.action))
    FROM amebo.actions a
    UNION ALL
    SELECT 'reducer', r.category,
           jsonb_build_object('reducer', r.reducer::text, 'initial_state', r.initial_state,
                              'snapshot_every', r.snapshot_every)
    FROM amebo.reducers r
    UNION ALL
    SELECT 'projection', p.name,
           jsonb_build_object('handler', p.handler::text, 'reset', p.reset_handler::text,
                              'actions', p.actions, 'mode', p.mode)
    FROM amebo.projections p
    UNION ALL
    SELECT 'subscription', s.application || '/' || s.name,
           jsonb_build_object('action', s.action, 'handler', s.handler,
                              'max_retries', s.max_retries, 'filter', s.filter,
                              'ordered', s.ordered, 'batch_size', s.batch_size,
                              'rate_limit', s.rate_limit)
    FROM amebo.subscriptions s
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.definitions() TO amebo_admin;

-- The digest of each definition (see definitions), with this shard's number.
CREATE FUNCTION amebo_internal.definition_digests()
RETURNS TABLE (shard integer, kind text, name text, digest text)
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT (SELECT i.shard FROM amebo.shard_identity i), d.kind, d.name, md5(d.definition::text)
    FROM amebo_internal.definitions() d
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.definition_digests() TO amebo_admin;

-- True when the object a create_* call of the router names exists here with another
-- definition than the call's arguments give it.
CREATE FUNCTION amebo_internal.exists_otherwise(fn text, args text[]) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT CASE fn
        WHEN 'create_application' THEN EXISTS (
            SELECT 1 FROM amebo.applications a WHERE a.name = args[1]
              AND (a.address, a.secret) IS DISTINCT FROM (args[2], args[3]))
        WHEN 'create_action' THEN EXISTS (
            SELECT 1 FROM amebo.action_list a WHERE a.action = args[1]
              AND (a.application, a.schema, a.compatibility)
                  IS DISTINCT FROM (args[2], args[3]::jsonb, args[4]))
        WHEN 'create_reducer' THEN EXISTS (
            SELECT 1 FROM amebo.reducers r WHERE r.category = args[1]
              AND (r.reducer, r.initial_state, r.snapshot_every)
                  IS DISTINCT FROM (args[2]::regprocedure, args[3]::jsonb, args[4]::integer))
        WHEN 'create_projection' THEN EXISTS (
            SELECT 1 FROM amebo.projections p WHERE p.name = args[1]
              AND (p.handler, p.actions, p.mode, p.reset_handler)
                  IS DISTINCT FROM (args[2]::regprocedure, args[3]::text[], args[4],
                                    args[5]::regprocedure))
        WHEN 'create_subscription' THEN EXISTS (
            SELECT 1 FROM amebo.subscriptions s WHERE s.application = args[1] AND s.name = args[2]
              AND (s.action, s.handler, s.max_retries, s.filter, s.ordered, s.batch_size,
                   s.rate_limit)
                  IS DISTINCT FROM (args[3], args[4], args[5]::integer, args[6]::jsonb,
                                    args[7]::boolean, args[8]::integer,
                                    nullif(args[9]::double precision, 'Infinity')))
        ELSE false
    END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.exists_otherwise(text, text[]) TO amebo_admin;

-- Runs one of amebo's definition functions for the router (fn, its arguments as text, in
-- order) and reports the outcome as data: 'applied' (with the function's result as text),
-- 'exists' (a create found the object with the same definition), 'absent' (a drop did not
-- find it), or 'error' (with the error: 42710 for an object that exists with another
-- definition); and the digest of the object afterwards (NULL: it does not exist). A re-run
-- of a create or drop after a partial failure so converges. An update_action whose schema is
-- the current one adds no version.
CREATE FUNCTION amebo_internal.apply_definition(fn text, args text[],
                                                OUT shard integer, OUT outcome text,
                                                OUT result text, OUT digest text,
                                                OUT error_code text, OUT error_message text,
                                                OUT error_detail text, OUT error_hint text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    object_kind text := CASE fn WHEN 'rotate_application_secret' THEN 'application'
                                ELSE split_part(fn, '_', 2) END;
    object_name text := CASE object_kind WHEN 'subscription' THEN args[1] || '/' || args[2]
                                  ELSE args[1] END;
    call text;
BEGIN
    IF fn NOT IN ('create_application', 'update_application', 'rotate_application_secret',
                  'drop_application', 'create_action', 'update_action', 'drop_action',
                  'create_reducer', 'drop_reducer', 'create_projection', 'drop_projection',
                  'create_subscription', 'update_subscription', 'drop_subscription') THEN
        RAISE EXCEPTION 'amebo_router does not run amebo.%() on every shard', fn
            USING ERRCODE = '42883';
    END IF;
    IF fn = 'update_action' AND args[3]::jsonb = (SELECT s.schema FROM amebo.action_list s
                                                  WHERE s.action = args[1]) THEN
        args[3] := NULL;
    END IF;
    call := format('SELECT amebo.%I(%s)::text', fn,
                   (SELECT string_agg(coalesce(quote_literal(a.arg), 'NULL'), ', ' ORDER BY a.i)
                    FROM unnest(args) WITH ORDINALITY a(arg, i)));
    shard := (SELECT i.shard FROM amebo.shard_identity i);
    BEGIN
        EXECUTE call INTO result;
        outcome := 'applied';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS error_code = RETURNED_SQLSTATE, error_message = MESSAGE_TEXT,
            error_detail = PG_EXCEPTION_DETAIL, error_hint = PG_EXCEPTION_HINT;
        outcome := CASE WHEN error_code = '42710' AND fn LIKE 'create\_%' THEN 'exists'
                        WHEN error_code = '42704' AND fn LIKE 'drop\_%' THEN 'absent'
                        ELSE 'error' END;
    END;
    IF outcome = 'exists' AND amebo_internal.exists_otherwise(fn, args) THEN
        outcome := 'error';
        error_detail := 'It exists on this shard with another definition.';
        error_hint := 'Change it with the update function, or drop it and create it again, through the router.';
    END IF;
    digest := (SELECT md5(d.definition::text) FROM amebo_internal.definitions() d
               WHERE d.kind = object_kind AND d.name = object_name);
END
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.apply_definition(text, text[]) TO amebo_admin;

-- An application's secret if it exists here (the router reuses it when create_application
-- is re-run without one).
CREATE FUNCTION amebo_internal.existing_secret(name text) RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT a.secret FROM amebo.applications a WHERE a.name = existing_secret.name
$$;
GRANT EXECUTE ON FUNCTION amebo_internal.existing_secret(text) TO amebo_admin;

-- The functions above are the roles' named here; PUBLIC gets nothing.
REVOKE EXECUTE ON FUNCTION amebo.set_shard_identity(integer, integer), amebo.shard_of(text),
    amebo_internal.try_append_event(text, text, jsonb, bigint, jsonb, uuid),
    amebo_internal.try_append_events(text, jsonb, bigint),
    amebo_internal.try_save_snapshot(text, bigint, jsonb), amebo_internal.check_shard(integer),
    amebo_internal.read_shard_feed(integer[], bigint[], integer, text[], timestamptz, jsonb),
    amebo_internal.definitions(), amebo_internal.definition_digests(),
    amebo_internal.apply_definition(text, text[]), amebo_internal.existing_secret(text),
    amebo_internal.exists_otherwise(text, text[]) FROM PUBLIC;
-- Webhook secret rotation with an overlap (issue 16, item 4): the replaced secret keeps
-- signing beside the new one until previous_secret_expires_at.
ALTER TABLE amebo.applications ADD COLUMN previous_secret text,
    ADD COLUMN previous_secret_expires_at timestamptz;

DROP FUNCTION amebo.rotate_application_secret(text, text);

-- Raises 22023 unless overlap (how long a replaced secret keeps signing) is 0 to 30 days.
CREATE FUNCTION amebo_internal.check_secret_overlap(overlap interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
BEGIN
    IF overlap IS NULL THEN
        RAISE EXCEPTION 'overlap must not be NULL' USING ERRCODE = '22004',
            HINT = 'Pass interval ''0'' to stop signing with the replaced secret at once.';
    END IF;
    IF overlap < interval '0' OR overlap > interval '30 days' THEN
        RAISE EXCEPTION 'overlap % is out of range', overlap USING ERRCODE = '22023',
            DETAIL = 'The replaced secret may keep signing for 0 to 30 days.';
    END IF;
END
$$;

-- Replaces an application's secret (a new random one when none is given); returns it.
-- During overlap the worker signs with both the new and the replaced secret (two signatures
-- in webhook-signature), so that receivers can switch at their pace; after it, with the new
-- one only. A rotation during an overlap ends it: only the secret just replaced stays valid.
-- Rotating to the secret already in use changes nothing (a retried rotation keeps its overlap).
CREATE FUNCTION amebo.rotate_application_secret(name text, secret text DEFAULT NULL,
                                                overlap interval DEFAULT '24 hours')
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic AS $$
DECLARE
    stored text := coalesce(secret, amebo_internal.generate_secret());
BEGIN
    PERFORM amebo_internal.check_secret(stored);
    PERFORM amebo_internal.check_secret_overlap(overlap);
    UPDATE amebo.applications a
    SET previous_secret = CASE WHEN overlap > interval '0' THEN a.secret END,
        previous_secret_expires_at = CASE WHEN overlap > interval '0' THEN now() + overlap END,
        secret = stored, updated_at = now()
    WHERE a.name = rotate_application_secret.name AND a.secret <> stored;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM amebo.applications a
                                 WHERE a.name = rotate_application_secret.name) THEN
        RAISE EXCEPTION 'application "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    RETURN stored;
END
$$;
-- PUBLIC gets nothing, as the fresh install's general REVOKE gives it nothing.
REVOKE EXECUTE ON FUNCTION amebo_internal.check_secret_overlap(interval),
    amebo.rotate_application_secret(text, text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION amebo.rotate_application_secret(text, text, interval) TO amebo_admin;

-- Scale-out: the standby horizon (shardops)
-- The settled position for hot standbys (see src/store/settled_horizon.hpp): the primary's
-- worker writes amebo.settled_position() here when it advanced, at most every
-- amebo.standby_horizon_interval (its first publication inserts the row). A standby that
-- replayed this row's commit has replayed the commit of every event at or below position, so
-- its read_all stops there.
CREATE TABLE amebo.settled_horizon (
    singleton    boolean     NOT NULL DEFAULT true,
    position     bigint      NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT settled_horizon_pkey PRIMARY KEY (singleton),
    CONSTRAINT settled_horizon_singleton_check CHECK (singleton)
);
SELECT pg_catalog.pg_extension_config_dump('amebo.settled_horizon', '');
GRANT SELECT ON amebo.settled_horizon TO amebo_reader;

-- Replays name the shard in webhook ids, as the worker does on a shard of amebo_router.
-- Delivers again, one request per event, every matching event after position
-- after_position; returns how many messages it queued. Webhook ids are the worker's (with
-- the shard on a shard of amebo_router), so a message it already stored is queued again.
CREATE OR REPLACE FUNCTION amebo.replay_subscription(application text, subscription text,
                                          after_position bigint)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s amebo.subscriptions := amebo_internal.lock_subscription(application, subscription);
    queued bigint;
BEGIN
    IF after_position IS NULL THEN
        RAISE EXCEPTION 'after_position must not be NULL' USING ERRCODE = '22004';
    END IF;
    INSERT INTO amebo.deliveries AS d (subscription_id, webhook_id, positions)
    SELECT s.id, 'msg_' || coalesce((SELECT 's' || i.shard || '_' FROM amebo.shard_identity i), '')
                 || replace(e.event_id::text, '-', '')
                 || CASE WHEN s.batch_size > 1 THEN '_1' ELSE '' END, ARRAY[e.position]
    FROM amebo.events e
    WHERE e.position > after_position AND amebo.action_matches(s.action, e.action)
      AND (s.filter IS NULL OR e.payload @> s.filter)
    ORDER BY e.position
    ON CONFLICT (subscription_id, webhook_id) DO UPDATE
    SET state = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now();
    GET DIAGNOSTICS queued = ROW_COUNT;
    RETURN queued;
END
$$;
