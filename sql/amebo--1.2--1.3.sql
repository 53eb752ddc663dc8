-- amebo 1.2 -> 1.3: subscriptions and webhook delivery.
--
-- The worker learns of committed events from a logical replication slot with amebo's own
-- output plugin (the append path writes nothing for delivery), POSTs them to subscribed
-- handlers, and stores here only what it could not deliver at once: messages waiting for a
-- retry or a later time, and dead ones. Every attempt is logged.
\echo Use "ALTER EXTENSION amebo UPDATE TO '1.3'" to load this file. \quit

-- A webhook subscription of an application to an action (or an action pattern).
CREATE TABLE amebo.subscriptions (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    application     text        NOT NULL,
    name            text        NOT NULL,
    -- an action name, or a pattern in which '*' matches any run of characters
    action          text        NOT NULL,
    handler         text        NOT NULL,
    max_retries     integer     NOT NULL DEFAULT 5,
    -- deliver only events whose payload contains this (jsonb @>); NULL: every event
    filter          jsonb,
    -- one request at a time, so that each stream's events arrive in order, retries included
    ordered         boolean     NOT NULL DEFAULT false,
    -- events per request; above 1 the body is {"events": [...]}
    batch_size      integer     NOT NULL DEFAULT 1,
    state           text        NOT NULL DEFAULT 'active',
    disabled_reason text,
    -- events at or below this position predate the subscription and are not delivered
    start_position  bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_pkey PRIMARY KEY (id),
    CONSTRAINT subscriptions_application_name_key UNIQUE (application, name),
    CONSTRAINT subscriptions_application_fkey FOREIGN KEY (application)
        REFERENCES amebo.applications (name) ON UPDATE CASCADE ON DELETE CASCADE,
    CONSTRAINT subscriptions_name_check CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    CONSTRAINT subscriptions_action_check CHECK (action ~ '^[a-z0-9_.*]{1,255}$'),
    CONSTRAINT subscriptions_max_retries_check CHECK (max_retries BETWEEN 0 AND 100),
    CONSTRAINT subscriptions_batch_size_check CHECK (batch_size BETWEEN 1 AND 1000),
    CONSTRAINT subscriptions_state_check CHECK (state IN ('active', 'paused', 'disabled'))
);

-- Messages the worker could not deliver at once: waiting for a retry or a later time
-- (pending), or out of retries (dead). A message is one request: one event, or a batch.
CREATE TABLE amebo.deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    subscription_id bigint      NOT NULL,
    webhook_id      text        NOT NULL,
    positions       bigint[]    NOT NULL,
    state           text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deliveries_pkey PRIMARY KEY (id),
    CONSTRAINT deliveries_subscription_webhook_key UNIQUE (subscription_id, webhook_id),
    CONSTRAINT deliveries_subscription_fkey FOREIGN KEY (subscription_id)
        REFERENCES amebo.subscriptions (id) ON DELETE CASCADE,
    CONSTRAINT deliveries_state_check CHECK (state IN ('pending', 'dead'))
);
CREATE INDEX deliveries_due ON amebo.deliveries (next_attempt_at) WHERE state = 'pending';

-- Every delivery attempt; rows older than amebo.delivery_log_retention are removed.
CREATE TABLE amebo.delivery_log (
    subscription_id bigint           NOT NULL,
    webhook_id      text             NOT NULL,
    positions       bigint[]         NOT NULL,
    attempt         integer          NOT NULL,
    status          integer,
    error           text,
    duration_ms     double precision NOT NULL,
    attempted_at    timestamptz      NOT NULL -- when the attempt began
);
CREATE INDEX delivery_log_subscription ON amebo.delivery_log (subscription_id, attempted_at);
CREATE INDEX delivery_log_attempted_at ON amebo.delivery_log USING brin (attempted_at);

-- Per subscription: the last success and the last failure.
CREATE TABLE amebo.subscription_progress (
    subscription_id bigint      NOT NULL,
    delivered       bigint      NOT NULL DEFAULT 0,
    last_success_at timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    CONSTRAINT subscription_progress_pkey PRIMARY KEY (subscription_id),
    CONSTRAINT subscription_progress_subscription_fkey FOREIGN KEY (subscription_id)
        REFERENCES amebo.subscriptions (id) ON DELETE CASCADE
);

-- The delivery checkpoint, in a replicated table: every event at or below position has been
-- delivered or stored in amebo.deliveries. A promoted standby, which has no slot, catches up
-- from here through the events table.
CREATE TABLE amebo.delivery_checkpoint (
    singleton  boolean     NOT NULL DEFAULT true,
    position   bigint      NOT NULL,
    slot_name  text        NOT NULL,
    -- A catch-up after a new slot: up to which position the events table is read, and at or
    -- below which position the slot's events are skipped (they are caught up).
    catch_up_through  bigint NOT NULL DEFAULT 0,
    slot_skip_through bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT delivery_checkpoint_pkey PRIMARY KEY (singleton),
    CONSTRAINT delivery_checkpoint_singleton_check CHECK (singleton)
);

-- Users fill these tables: pg_dump keeps their rows.
SELECT pg_catalog.pg_extension_config_dump('amebo.subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('amebo.deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('amebo.delivery_checkpoint', '');
SELECT pg_catalog.pg_extension_config_dump('amebo.subscription_progress', '');

-- Raises 22023 unless url is an http(s) handler amebo may call (see
-- amebo.allow_private_targets); resolves the host name.
CREATE FUNCTION amebo.check_handler(url text) RETURNS void
AS 'MODULE_PATHNAME', 'amebo_check_handler' LANGUAGE C STRICT VOLATILE;

-- True when action matches a subscription's pattern ('*' matches any run of characters).
CREATE FUNCTION amebo.action_matches(pattern text, action text) RETURNS boolean
AS 'MODULE_PATHNAME', 'amebo_action_matches' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

-- The position after which a new subscription's events are delivered: below every append
-- still in flight, so that nothing committing after the subscription is missed.
CREATE FUNCTION amebo.subscription_start_position() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    RETURN amebo.settled_position();
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    RAISE WARNING 'subscriptions are delivered by amebo''s background worker, which is not running'
        USING HINT = 'Add amebo to shared_preload_libraries, set wal_level = logical, and restart.';
    RETURN coalesce((SELECT max(position) FROM amebo.events), 0);
END
$$;

-- Checks a subscription's settings (other than its handler), raising the matching error.
CREATE FUNCTION amebo.check_subscription(action text, max_retries integer, batch_size integer,
                                         filter jsonb)
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
    IF position('*' IN action) = 0
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
END
$$;

-- Subscribes application's handler to action; returns the subscription's id.
CREATE FUNCTION amebo.create_subscription(application text, subscription text, action text,
                                          handler text, max_retries integer DEFAULT 5,
                                          filter jsonb DEFAULT NULL,
                                          ordered boolean DEFAULT false,
                                          batch_size integer DEFAULT 1)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
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
    PERFORM amebo.check_subscription(action, max_retries, batch_size, filter);
    PERFORM amebo.check_handler(handler);
    INSERT INTO amebo.subscriptions AS s (application, name, action, handler, max_retries,
                                          filter, ordered, batch_size, start_position)
    VALUES (application, subscription, action, handler, max_retries, filter, ordered,
            batch_size, amebo.subscription_start_position())
    RETURNING s.id INTO created;
    RETURN created;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'subscription "%" of application "%" already exists', subscription,
        application USING ERRCODE = '42710';
END
$$;

-- Locks and returns a subscription, or raises 42704.
CREATE FUNCTION amebo.lock_subscription(application text, subscription text)
RETURNS amebo.subscriptions
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    locked amebo.subscriptions;
BEGIN
    IF application IS NULL OR subscription IS NULL THEN
        RAISE EXCEPTION 'application and subscription must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO locked FROM amebo.subscriptions s
    WHERE s.application = lock_subscription.application AND s.name = subscription FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" of application "%" does not exist', subscription,
            application USING ERRCODE = '42704';
    END IF;
    RETURN locked;
END
$$;

-- Changes a subscription; NULL leaves a setting as it is ('{}' as filter matches every event).
CREATE FUNCTION amebo.update_subscription(application text, subscription text,
                                          action text DEFAULT NULL, handler text DEFAULT NULL,
                                          max_retries integer DEFAULT NULL,
                                          filter jsonb DEFAULT NULL,
                                          ordered boolean DEFAULT NULL,
                                          batch_size integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    s amebo.subscriptions := amebo.lock_subscription(application, subscription);
BEGIN
    s.action := coalesce(action, s.action);
    s.handler := coalesce(handler, s.handler);
    s.max_retries := coalesce(max_retries, s.max_retries);
    s.filter := CASE WHEN filter = '{}'::jsonb THEN NULL ELSE coalesce(filter, s.filter) END;
    s.ordered := coalesce(ordered, s.ordered);
    s.batch_size := coalesce(batch_size, s.batch_size);
    PERFORM amebo.check_subscription(s.action, s.max_retries, s.batch_size, s.filter);
    IF handler IS NOT NULL THEN
        PERFORM amebo.check_handler(s.handler);
    END IF;
    UPDATE amebo.subscriptions x
    SET action = s.action, handler = s.handler, max_retries = s.max_retries,
        filter = s.filter, ordered = s.ordered, batch_size = s.batch_size, updated_at = now()
    WHERE x.id = s.id;
END
$$;

-- Removes a subscription with its stored messages.
CREATE FUNCTION amebo.drop_subscription(application text, subscription text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    target bigint := (amebo.lock_subscription(application, subscription)).id;
BEGIN
    DELETE FROM amebo.subscriptions s WHERE s.id = target;
END
$$;

-- Stops deliveries to a subscription; events keep being queued for it.
CREATE FUNCTION amebo.pause_subscription(application text, subscription text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    target bigint := (amebo.lock_subscription(application, subscription)).id;
BEGIN
    UPDATE amebo.subscriptions s SET state = 'paused', updated_at = now() WHERE s.id = target;
END
$$;

-- Resumes a paused or disabled subscription.
CREATE FUNCTION amebo.resume_subscription(application text, subscription text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    target bigint := (amebo.lock_subscription(application, subscription)).id;
BEGIN
    UPDATE amebo.subscriptions s
    SET state = 'active', disabled_reason = NULL, updated_at = now()
    WHERE s.id = target;
END
$$;

-- Makes a subscription's dead messages pending again, with fresh retries; returns how many.
CREATE FUNCTION amebo.redeliver(application text, subscription text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    target bigint := (amebo.lock_subscription(application, subscription)).id;
    revived bigint;
BEGIN
    UPDATE amebo.deliveries d
    SET state = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()
    WHERE d.subscription_id = target AND d.state = 'dead';
    GET DIAGNOSTICS revived = ROW_COUNT;
    RETURN revived;
END
$$;

-- Delivers again, one request per event, every matching event after position
-- after_position; returns how many messages it queued.
CREATE FUNCTION amebo.replay_subscription(application text, subscription text,
                                          after_position bigint)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    s amebo.subscriptions := amebo.lock_subscription(application, subscription);
    queued bigint;
BEGIN
    IF after_position IS NULL THEN
        RAISE EXCEPTION 'after_position must not be NULL' USING ERRCODE = '22004';
    END IF;
    INSERT INTO amebo.deliveries AS d (subscription_id, webhook_id, positions)
    SELECT s.id, 'msg_' || replace(e.event_id::text, '-', '')
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

-- Delivers again every matching event recorded at or after since.
CREATE FUNCTION amebo.replay_subscription(application text, subscription text,
                                          since timestamptz)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be NULL' USING ERRCODE = '22004';
    END IF;
    RETURN amebo.replay_subscription(application, subscription,
        coalesce((SELECT min(e.position) - 1 FROM amebo.events e WHERE e.recorded_at >= since),
                 (SELECT max(e.position) FROM amebo.events e), 0));
END
$$;

-- Removes an application; with cascade also its actions and subscriptions (1.3: it also
-- refuses, without cascade, while the application has subscriptions).
CREATE OR REPLACE FUNCTION amebo.drop_application(name text, cascade boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    owned integer;
    subscribed integer;
BEGIN
    PERFORM 1 FROM amebo.applications a WHERE a.name = drop_application.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'application "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    SELECT count(*) INTO owned FROM amebo.actions WHERE application = drop_application.name;
    SELECT count(*) INTO subscribed FROM amebo.subscriptions s
    WHERE s.application = drop_application.name;
    IF (owned > 0 OR subscribed > 0) AND NOT cascade THEN
        RAISE EXCEPTION 'application "%" still owns % action(s) and % subscription(s)', name,
            owned, subscribed
            USING ERRCODE = '2BP01', HINT = 'Drop them first, or pass cascade => true.';
    END IF;
    DELETE FROM amebo.actions WHERE application = drop_application.name;
    DELETE FROM amebo.applications a WHERE a.name = drop_application.name;
END
$$;

-- Subscriptions with their settings.
CREATE VIEW amebo.subscription_list AS
SELECT s.application, s.name, s.action, s.handler, s.max_retries, s.filter, s.ordered,
       s.batch_size, s.state, s.disabled_reason, s.created_at, s.updated_at
FROM amebo.subscriptions s;

-- The worker's live figures per subscription (requests in flight, messages in memory).
CREATE FUNCTION amebo.delivery_worker_stats(OUT subscription_id bigint, OUT in_flight integer,
                                            OUT queued integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'amebo_delivery_worker_stats' LANGUAGE C VOLATILE;

-- Per subscription: state, requests in flight, pending and dead messages, lag, and the last
-- success and error.
CREATE VIEW amebo.subscription_status AS
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
       coalesce(p.delivered, 0) AS delivered, p.last_success_at, p.last_error, p.last_error_at, s.disabled_reason
FROM amebo.subscriptions s
LEFT JOIN amebo.subscription_progress p ON p.subscription_id = s.id
LEFT JOIN amebo.delivery_worker_stats() w ON w.subscription_id = s.id;

-- The logical queue: its slot, the WAL it retains, how far decoding is behind, and the
-- delivery checkpoint.
CREATE VIEW amebo.delivery_queue AS
SELECT c.slot_name, r.active, r.active_pid, r.restart_lsn, r.confirmed_flush_lsn,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.restart_lsn)
           AS retained_wal_bytes,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.confirmed_flush_lsn)
           AS unconfirmed_wal_bytes,
       r.wal_status, c.position AS checkpoint_position,
       (SELECT count(*) FROM amebo.events e WHERE e.position > c.position) AS events_behind,
       c.updated_at AS checkpoint_at
FROM amebo.delivery_checkpoint c
LEFT JOIN pg_catalog.pg_replication_slots r ON r.slot_name = c.slot_name;

-- The worker's bookkeeping, in one transaction per batch of outcomes: logs attempts, stores,
-- updates or removes messages, disables subscriptions that answered 410, records progress and
-- the checkpoint. outcomes: {"log": [attempt...], "operations": [the last store or delete per
-- message], "disable": [subscription id...], "subscriptions": [every id touched]}. Called by
-- the worker.
CREATE FUNCTION amebo.record_deliveries(outcomes jsonb, checkpoint bigint, slot_name text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    -- Subscriptions dropped meanwhile are skipped; those touched stay until commit.
    PERFORM 1 FROM amebo.subscriptions s
    WHERE s.id IN (SELECT x::text::bigint FROM jsonb_array_elements(outcomes->'subscriptions') x)
    FOR KEY SHARE;
    IF jsonb_array_length(outcomes->'log') > 0 THEN
        INSERT INTO amebo.delivery_log
        SELECT o.subscription_id, o.webhook_id, o.positions, o.attempt, o.status, o.error,
               o.duration_ms, o.attempted_at
        FROM jsonb_to_recordset(outcomes->'log') AS o(subscription_id bigint, webhook_id text,
            positions bigint[], attempt integer, status integer, error text,
            duration_ms double precision, attempted_at timestamptz);
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
            next_attempt_at timestamptz, status integer, error text, seq integer)
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

-- Records the plan of the catch-up the worker starts after creating its slot (through 0:
-- none), so that a worker restarted before the catch-up ended finishes it.
CREATE FUNCTION amebo.plan_catch_up(slot_name text, after_position bigint,
                                     through_position bigint, skip_through bigint)
RETURNS void
LANGUAGE sql SET search_path = pg_catalog AS $$
    INSERT INTO amebo.delivery_checkpoint AS c (position, slot_name, catch_up_through,
                                                slot_skip_through)
    VALUES (after_position, slot_name, through_position, skip_through)
    ON CONFLICT (singleton) DO UPDATE
    SET position = excluded.position, slot_name = excluded.slot_name,
        catch_up_through = excluded.catch_up_through,
        slot_skip_through = excluded.slot_skip_through, updated_at = now()
$$;

-- Stored messages due now, at most max_messages, with their events, for the worker; an
-- ordered subscription offers only its oldest pending message, and only when it is due.
-- Messages in skip (in flight in the worker) are left out.
CREATE FUNCTION amebo.due_deliveries(max_messages integer, skip text[])
RETURNS TABLE (subscription_id bigint, webhook_id text, attempts integer, message_id bigint,
               event_position bigint, event_id uuid, stream text, version bigint,
               action text, payload text, metadata text, recorded_at bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    WITH due AS (
        SELECT d.* FROM amebo.deliveries d JOIN amebo.subscriptions s ON s.id = d.subscription_id
        WHERE d.state = 'pending' AND s.state = 'active' AND NOT s.ordered
          AND d.next_attempt_at <= now()
          AND d.subscription_id::text || ' ' || d.webhook_id NOT IN (SELECT unnest(skip))
        UNION ALL
        SELECT first.* FROM amebo.subscriptions s
        CROSS JOIN LATERAL (SELECT * FROM amebo.deliveries d
                            WHERE d.subscription_id = s.id AND d.state = 'pending'
                            ORDER BY d.id LIMIT 1) first
        WHERE s.ordered AND s.state = 'active' AND first.next_attempt_at <= now()
          AND first.subscription_id::text || ' ' || first.webhook_id NOT IN (SELECT unnest(skip))
        ORDER BY next_attempt_at
        LIMIT max_messages
    )
    SELECT d.subscription_id, d.webhook_id, d.attempts, d.id, e.position, e.event_id, e.stream,
           e.version, e.action, e.payload::text, e.metadata::text,
           ((extract(epoch FROM e.recorded_at) - 946684800) * 1000000)::bigint
    FROM due d CROSS JOIN LATERAL unnest(d.positions) WITH ORDINALITY AS p(position, n)
    JOIN amebo.events e ON e.position = p.position
    ORDER BY d.id, p.n
$$;

-- When the next pending message of an active subscription is due, leaving out those in
-- skip (in the worker's memory), in microseconds since 2000-01-01 UTC; NULL when none.
CREATE FUNCTION amebo.next_due_at(skip text[]) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT ((extract(epoch FROM min(d.next_attempt_at)) - 946684800) * 1000000)::bigint
    FROM amebo.deliveries d JOIN amebo.subscriptions s ON s.id = d.subscription_id
    WHERE d.state = 'pending' AND s.state = 'active'
      AND d.subscription_id::text || ' ' || d.webhook_id NOT IN (SELECT unnest(skip))
$$;

-- Ordered subscriptions with pending messages: their new events queue behind them.
CREATE FUNCTION amebo.blocked_subscriptions() RETURNS SETOF bigint
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT DISTINCT d.subscription_id FROM amebo.deliveries d
    JOIN amebo.subscriptions s ON s.id = d.subscription_id
    WHERE s.ordered AND d.state = 'pending'
$$;

-- Removes delivery log rows older than keep; returns how many.
CREATE FUNCTION amebo.prune_delivery_log(keep interval) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    removed bigint;
BEGIN
    DELETE FROM amebo.delivery_log l WHERE l.attempted_at < now() - keep;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;

-- Wakes the worker at commit and tells it that subscriptions (or stored messages) changed.
CREATE FUNCTION amebo.note_subscription_change() RETURNS void
AS 'MODULE_PATHNAME', 'amebo_note_subscription_change' LANGUAGE C VOLATILE;

-- Tells the worker that subscriptions, applications or stored messages changed.
CREATE FUNCTION amebo.subscriptions_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    PERFORM amebo.note_subscription_change();
    RETURN NULL;
END
$$;

CREATE TRIGGER subscriptions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
ON amebo.subscriptions FOR EACH STATEMENT EXECUTE FUNCTION amebo.subscriptions_changed();
CREATE TRIGGER applications_changed AFTER UPDATE OR DELETE OR TRUNCATE
ON amebo.applications FOR EACH STATEMENT EXECUTE FUNCTION amebo.subscriptions_changed();
CREATE TRIGGER deliveries_changed AFTER INSERT OR UPDATE
ON amebo.deliveries FOR EACH STATEMENT
WHEN (pg_catalog.current_setting('application_name') <> 'amebo worker')
EXECUTE FUNCTION amebo.subscriptions_changed();

-- Waits until the worker has handled every event committed before the call and no message is
-- pending or in flight (or timeout seconds passed); true when it has.
CREATE FUNCTION amebo.wait_for_deliveries(timeout double precision DEFAULT 10) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => timeout);
    target bigint := amebo.settled_position();
BEGIN
    PERFORM amebo.wake_worker();
    LOOP
        IF coalesce((SELECT c.position >= target FROM amebo.delivery_checkpoint c), false)
           AND NOT EXISTS (SELECT 1 FROM amebo.deliveries d
                           JOIN amebo.subscriptions s ON s.id = d.subscription_id
                           WHERE d.state = 'pending' AND s.state = 'active')
           AND NOT EXISTS (SELECT 1 FROM amebo.delivery_worker_stats() w
                           WHERE w.in_flight > 0 OR w.queued > 0) THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
