-- amebo 1.4 -> 1.5: the public API apart from the internals. The functions only amebo calls
-- (trigger functions, the background worker's steps, helpers of other functions) move from
-- schema amebo to amebo_internal; amebo keeps what users call. See sql/amebo.sql for every
-- object as 1.5 defines it.
\echo Use "ALTER EXTENSION amebo UPDATE TO '1.5'" to load this file. \quit

-- The functions only amebo calls. amebo_admin looks up lock_projection and
-- mark_projection_running, which resume_projection (running as its caller) calls; no role
-- may execute any other.
CREATE SCHEMA amebo_internal;
COMMENT ON SCHEMA amebo_internal IS
    'amebo: functions only amebo itself calls (not a stable interface)';
GRANT USAGE ON SCHEMA amebo_internal TO amebo_admin;

-- Triggers, views and the privileges of the moved functions follow them (they refer to a
-- function by its oid); bodies that name them are replaced below.
ALTER FUNCTION amebo.add_action_schema(text,jsonb) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.blocked_subscriptions() SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.call_as_owner(regprocedure,regrole,amebo.events) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.check_action_name(text) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.check_application_address(text) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.check_application_name(text) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.check_handler(text) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.check_secret(text) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.check_signature(regprocedure,regtype[],regtype,text) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.check_subscription(text,integer,integer,jsonb) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.delivery_worker_stats() SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.due_deliveries(integer,text[]) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.generate_secret() SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.lock_projection(text) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.lock_subscription(text,text) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.mark_projection_running(text) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.next_due_at(text[]) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.note_subscription_change() SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.plan_catch_up(text,bigint,bigint,bigint) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.prune_delivery_log(interval) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.record_deliveries(jsonb,bigint,text) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.refuse_event_change() SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.register_projection(text,regprocedure,text[],text,regprocedure,regrole) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.registry_changed() SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.run_projection(text,integer) SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.set_projection_owner() SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.subscription_start_position() SET SCHEMA amebo_internal;
ALTER FUNCTION amebo.subscriptions_changed() SET SCHEMA amebo_internal;

-- amebo_admin needed these only to call them directly; the functions that call them run as
-- the owner (SECURITY DEFINER).
REVOKE EXECUTE ON FUNCTION amebo_internal.generate_secret(), amebo_internal.check_handler(text),
    amebo_internal.add_action_schema(text, jsonb) FROM amebo_admin;

-- The functions whose bodies name a moved function, as sql/amebo.sql defines them (their
-- owner, privileges and comments stay).

CREATE OR REPLACE FUNCTION amebo.create_application(name text, address text DEFAULT NULL,
                                                    secret text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic AS $$
DECLARE
    stored text := coalesce(secret, amebo_internal.generate_secret());
BEGIN
    PERFORM amebo_internal.check_application_name(name);
    PERFORM amebo_internal.check_application_address(address);
    PERFORM amebo_internal.check_secret(stored);
    INSERT INTO amebo.applications (name, address, secret) VALUES (name, address, stored);
    RETURN stored;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'application "%" already exists', name USING ERRCODE = '42710';
END
$$;

CREATE OR REPLACE FUNCTION amebo.update_application(name text, address text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM amebo_internal.check_application_address(address);
    UPDATE amebo.applications a SET address = update_application.address, updated_at = now()
    WHERE a.name = update_application.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'application "%" does not exist', name USING ERRCODE = '42704';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION amebo.rotate_application_secret(name text, secret text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic AS $$
DECLARE
    stored text := coalesce(secret, amebo_internal.generate_secret());
BEGIN
    PERFORM amebo_internal.check_secret(stored);
    UPDATE amebo.applications a SET secret = stored, updated_at = now()
    WHERE a.name = rotate_application_secret.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'application "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    RETURN stored;
END
$$;

CREATE OR REPLACE FUNCTION amebo.create_action(action text, application text, schema jsonb DEFAULT NULL,
                                               compatibility text DEFAULT 'none')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM amebo_internal.check_action_name(action);
    IF compatibility IS NULL OR compatibility NOT IN ('none', 'backward') THEN
        RAISE EXCEPTION 'invalid compatibility "%"', compatibility USING ERRCODE = '22023',
            HINT = 'Use ''none'' or ''backward''.';
    END IF;
    PERFORM 1 FROM amebo.applications a WHERE a.name = create_action.application FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'application "%" does not exist', application USING ERRCODE = '42704',
            HINT = 'Create it with amebo.create_application().';
    END IF;
    IF schema IS NOT NULL THEN
        PERFORM amebo.check_schema(schema);
    END IF;
    BEGIN
        INSERT INTO amebo.actions (action, application, compatibility)
        VALUES (action, application, compatibility);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'action "%" already exists', action USING ERRCODE = '42710';
    END;
    IF schema IS NULL THEN
        RETURN 0;
    END IF;
    RETURN amebo_internal.add_action_schema(action, schema);
END
$$;

CREATE OR REPLACE FUNCTION amebo.update_action(action text, application text DEFAULT NULL,
                                               schema jsonb DEFAULT NULL, compatibility text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    version integer;
BEGIN
    IF compatibility IS NOT NULL AND compatibility NOT IN ('none', 'backward') THEN
        RAISE EXCEPTION 'invalid compatibility "%"', compatibility USING ERRCODE = '22023',
            HINT = 'Use ''none'' or ''backward''.';
    END IF;
    IF application IS NOT NULL THEN
        PERFORM 1 FROM amebo.applications a WHERE a.name = update_action.application;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'application "%" does not exist', application USING ERRCODE = '42704';
        END IF;
    END IF;
    UPDATE amebo.actions a
    SET application = coalesce(update_action.application, a.application),
        compatibility = coalesce(update_action.compatibility, a.compatibility),
        updated_at = now()
    WHERE a.action = update_action.action
    RETURNING a.schema_version INTO version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'action "%" does not exist', action USING ERRCODE = '42704';
    END IF;
    IF schema IS NOT NULL THEN
        version := amebo_internal.add_action_schema(action, schema);
    END IF;
    RETURN version;
END
$$;

CREATE OR REPLACE FUNCTION amebo.create_reducer(category text, reducer regprocedure,
                                                initial_state jsonb DEFAULT '{}',
                                                snapshot_every integer DEFAULT 10) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF category IS NULL OR category = '' OR position('-' IN category) > 0 THEN
        RAISE EXCEPTION 'invalid category "%"', category USING ERRCODE = '22023',
            HINT = 'A category is the part of a stream name before its first "-".';
    END IF;
    PERFORM amebo_internal.check_signature(reducer, ARRAY['jsonb', 'amebo.events']::regtype[],
                                  'jsonb', 'reducer');
    IF initial_state IS NULL THEN
        RAISE EXCEPTION 'initial_state must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF snapshot_every IS NULL OR snapshot_every < 1 THEN
        RAISE EXCEPTION 'snapshot_every must be positive' USING ERRCODE = '22023';
    END IF;
    INSERT INTO amebo.reducers (category, reducer, initial_state, snapshot_every)
    VALUES (category, reducer, initial_state, snapshot_every);
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'category "%" already has a reducer', category USING ERRCODE = '42710';
END
$$;

CREATE OR REPLACE FUNCTION amebo_internal.register_projection(name text, handler regprocedure, actions text[],
                                                              mode text, reset regprocedure, owner regrole)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid projection name "%"', name USING ERRCODE = '22023',
            HINT = 'A projection name is 1 to 63 lower-case letters, digits, "_" or "-", starting with a letter.';
    END IF;
    IF mode IS NULL OR mode NOT IN ('inline', 'async') THEN
        RAISE EXCEPTION 'invalid projection mode "%"', mode USING ERRCODE = '22023',
            HINT = 'Use ''inline'' or ''async''.';
    END IF;
    IF actions IS NOT NULL AND (cardinality(actions) = 0 OR array_position(actions, NULL) IS NOT NULL) THEN
        RAISE EXCEPTION 'actions must be NULL (every action) or a non-empty list without NULLs'
            USING ERRCODE = '22023';
    END IF;
    PERFORM amebo_internal.check_signature(handler, ARRAY['amebo.events']::regtype[], 'void',
                                  'projection handler');
    IF reset IS NOT NULL THEN
        PERFORM amebo_internal.check_signature(reset, ARRAY[]::regtype[], 'void', 'reset function');
    END IF;
    INSERT INTO amebo.projections (name, handler, reset_handler, actions, mode, owner)
    VALUES (name, handler, reset, actions, mode, owner);
    IF mode = 'async' THEN
        PERFORM amebo.wake_worker();
    END IF;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'projection "%" already exists', name USING ERRCODE = '42710';
END
$$;

CREATE OR REPLACE FUNCTION amebo.drop_projection(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM amebo_internal.lock_projection(name);
    DELETE FROM amebo.projections x WHERE x.name = drop_projection.name;
END
$$;

CREATE OR REPLACE FUNCTION amebo.pause_projection(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p amebo.projections := amebo_internal.lock_projection(name);
BEGIN
    IF p.state = 'paused' THEN
        RETURN;
    END IF;
    IF p.mode = 'inline' THEN
        LOCK TABLE amebo.events IN SHARE MODE;
        UPDATE amebo.projections x SET state = 'paused', position = amebo.settled_position()
        WHERE x.name = pause_projection.name;
    ELSE
        UPDATE amebo.projections x SET state = 'paused' WHERE x.name = pause_projection.name;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION amebo.resume_projection(name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p amebo.projections := amebo_internal.lock_projection(name);
BEGIN
    IF p.mode = 'inline' AND p.state = 'paused' THEN
        PERFORM amebo.replay_projection(name, p.position);
    END IF;
    PERFORM amebo_internal.mark_projection_running(name);
END
$$;

CREATE OR REPLACE FUNCTION amebo.create_subscription(application text, subscription text, action text,
                                                     handler text, max_retries integer DEFAULT 5,
                                                     filter jsonb DEFAULT NULL,
                                                     ordered boolean DEFAULT false,
                                                     batch_size integer DEFAULT 1)
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
    PERFORM amebo_internal.check_subscription(action, max_retries, batch_size, filter);
    PERFORM amebo_internal.check_handler(handler);
    INSERT INTO amebo.subscriptions AS s (application, name, action, handler, max_retries,
                                          filter, ordered, batch_size, start_position)
    VALUES (application, subscription, action, handler, max_retries, filter, ordered,
            batch_size, amebo_internal.subscription_start_position())
    RETURNING s.id INTO created;
    RETURN created;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'subscription "%" of application "%" already exists', subscription,
        application USING ERRCODE = '42710';
END
$$;

CREATE OR REPLACE FUNCTION amebo.update_subscription(application text, subscription text,
                                                     action text DEFAULT NULL, handler text DEFAULT NULL,
                                                     max_retries integer DEFAULT NULL,
                                                     filter jsonb DEFAULT NULL,
                                                     ordered boolean DEFAULT NULL,
                                                     batch_size integer DEFAULT NULL)
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
    PERFORM amebo_internal.check_subscription(s.action, s.max_retries, s.batch_size, s.filter);
    IF handler IS NOT NULL THEN
        PERFORM amebo_internal.check_handler(s.handler);
    END IF;
    UPDATE amebo.subscriptions x
    SET action = s.action, handler = s.handler, max_retries = s.max_retries,
        filter = s.filter, ordered = s.ordered, batch_size = s.batch_size, updated_at = now()
    WHERE x.id = s.id;
END
$$;

CREATE OR REPLACE FUNCTION amebo.drop_subscription(application text, subscription text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target bigint := (amebo_internal.lock_subscription(application, subscription)).id;
BEGIN
    DELETE FROM amebo.subscriptions s WHERE s.id = target;
END
$$;

CREATE OR REPLACE FUNCTION amebo.pause_subscription(application text, subscription text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target bigint := (amebo_internal.lock_subscription(application, subscription)).id;
BEGIN
    UPDATE amebo.subscriptions s SET state = 'paused', updated_at = now() WHERE s.id = target;
END
$$;

CREATE OR REPLACE FUNCTION amebo.resume_subscription(application text, subscription text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target bigint := (amebo_internal.lock_subscription(application, subscription)).id;
BEGIN
    UPDATE amebo.subscriptions s
    SET state = 'active', disabled_reason = NULL, updated_at = now()
    WHERE s.id = target;
END
$$;

CREATE OR REPLACE FUNCTION amebo.redeliver(application text, subscription text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target bigint := (amebo_internal.lock_subscription(application, subscription)).id;
    revived bigint;
BEGIN
    UPDATE amebo.deliveries d
    SET state = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()
    WHERE d.subscription_id = target AND d.state = 'dead';
    GET DIAGNOSTICS revived = ROW_COUNT;
    RETURN revived;
END
$$;

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

CREATE OR REPLACE FUNCTION amebo_internal.subscriptions_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    PERFORM amebo_internal.note_subscription_change();
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION amebo_internal.run_projection(name text, max_events integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    p amebo.projections;
    e amebo.events;
    settled bigint;
    last bigint;
    applied integer := 0;
BEGIN
    SELECT * INTO p FROM amebo.projections x
    WHERE x.name = run_projection.name FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR p.mode <> 'async' OR p.state <> 'running' THEN
        RETURN 0;
    END IF;
    -- Taken before read_all's own horizon, so every event at or below it is read.
    settled := amebo.settled_position();
    last := p.position;
    FOR e IN SELECT * FROM amebo.read_all(p.position, max_events, p.actions) LOOP
        BEGIN
            PERFORM amebo_internal.call_as_owner(p.handler, p.owner, e);
        EXCEPTION WHEN OTHERS THEN
            UPDATE amebo.projections x
            SET state = 'paused', position = last, applied_at = now(), error = SQLERRM,
                error_position = e.position, error_at = now()
            WHERE x.name = p.name;
            RETURN applied;
        END;
        last := e.position;
        applied := applied + 1;
    END LOOP;
    IF applied < max_events THEN
        last := greatest(last, settled);
    END IF;
    IF last <> p.position THEN
        UPDATE amebo.projections x SET position = last, applied_at = now()
        WHERE x.name = p.name;
    END IF;
    RETURN applied;
END
$$;

CREATE OR REPLACE FUNCTION amebo.wait_for_deliveries(timeout double precision DEFAULT 10) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
           AND NOT EXISTS (SELECT 1 FROM amebo_internal.delivery_worker_stats() w
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
