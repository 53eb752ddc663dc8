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

-------------------------------------------------------------------------------------------
-- Pull consumers: consumer groups with leases, acknowledgements, retries and parking
-------------------------------------------------------------------------------------------

-- Privileges: amebo_admin manages consumers (create, alter, pause, resume, reset, drop,
-- replay_parked); amebo_writer consumes (poll, ack, nack: they write the consumer's
-- bookkeeping, so readers may not); amebo_reader sees the tables, the views and the member
-- of a stream. Every function here is SECURITY DEFINER: the bookkeeping tables are written
-- only through them. See docs/design.md "Pull consumers" for how leases and order work.

-- Consumer groups: which actions they take, how many members share the streams, and how
-- many retries an event gets before it is parked.
CREATE TABLE amebo.consumers (
    name        text        NOT NULL,
    actions     text[],
    members     integer     NOT NULL,
    max_retries integer     NOT NULL,
    state       text        NOT NULL DEFAULT 'active',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT consumers_pkey PRIMARY KEY (name),
    CONSTRAINT consumers_name_check CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    CONSTRAINT consumers_members_check CHECK (members BETWEEN 1 AND 1024),
    CONSTRAINT consumers_max_retries_check CHECK (max_retries >= 0),
    CONSTRAINT consumers_state_check CHECK (state IN ('active', 'paused'))
);
COMMENT ON TABLE amebo.consumers IS 'amebo: pull consumers (consumer groups)';
SELECT pg_catalog.pg_extension_config_dump('amebo.consumers', '');
GRANT SELECT ON amebo.consumers TO amebo_reader;

-- Backends cache the consumers for the NOTIFY of the append path: tell them of changes.
CREATE TRIGGER consumers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON amebo.consumers
    FOR EACH STATEMENT EXECUTE FUNCTION amebo_internal.registry_changed();

-- Each member's cursor: every event of its share at or below position has been handed out
-- (or recorded as held behind an earlier event of its stream). Every event of the member in
-- flight and not parked lies after in_flight_after, where the scans of its in-flight events
-- (poll's and ack's) start: acknowledged events leave dead index entries behind until VACUUM, and the
-- scans step over them only once.
CREATE TABLE amebo.consumer_members (
    consumer        text    NOT NULL,
    member          integer NOT NULL,
    position        bigint  NOT NULL DEFAULT 0,
    in_flight_after bigint  NOT NULL DEFAULT 0,
    CONSTRAINT consumer_members_pkey PRIMARY KEY (consumer, member),
    CONSTRAINT consumer_members_consumer_fkey FOREIGN KEY (consumer)
        REFERENCES amebo.consumers (name) ON DELETE CASCADE
);
COMMENT ON TABLE amebo.consumer_members IS 'amebo: the cursor of each member of a consumer';
SELECT pg_catalog.pg_extension_config_dump('amebo.consumer_members', '');
GRANT SELECT ON amebo.consumer_members TO amebo_reader;

-- The events in flight for a member, and only those: leased (due_at: the lease's end),
-- waiting for a retry (due_at: when it may go out again), parked, or held behind an
-- earlier event of its stream. An acknowledged event leaves no row. No foreign key: a
-- poll inserts up to max_count rows, and drop_consumer removes them itself.
CREATE TABLE amebo.consumer_events (
    consumer   text        NOT NULL,
    member     integer     NOT NULL,
    event_id   uuid        NOT NULL,
    position   bigint      NOT NULL,
    stream     text        NOT NULL,
    state      text        NOT NULL,
    attempt    integer     NOT NULL,
    due_at     timestamptz,
    updated_at timestamptz NOT NULL,
    CONSTRAINT consumer_events_pkey PRIMARY KEY (consumer, member, position),
    CONSTRAINT consumer_events_state_check CHECK (state IN ('leased', 'retry', 'parked', 'held'))
);
COMMENT ON TABLE amebo.consumer_events IS
    'amebo: events leased, waiting for a retry, parked or held, per consumer member';
SELECT pg_catalog.pg_extension_config_dump('amebo.consumer_events', '');
GRANT SELECT ON amebo.consumer_events TO amebo_reader;

-- The member of a consumer with members members that receives a stream's events:
-- PostgreSQL's hashtext(stream) made non-negative, modulo members. Clients may call it.
CREATE FUNCTION amebo.consumer_member(stream text, members integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ((pg_catalog.hashtext(stream)::bigint OPERATOR(pg_catalog.+) 2147483648)
        OPERATOR(pg_catalog.%) members)::integer;
COMMENT ON FUNCTION amebo.consumer_member(text, integer) IS
    'the member (0 .. members - 1) that receives a stream''s events';
GRANT EXECUTE ON FUNCTION amebo.consumer_member(text, integer) TO amebo_reader;

-- Raises 22023 unless the consumer settings are valid.
CREATE FUNCTION amebo_internal.check_consumer(name text, actions text[], members integer,
                                               max_retries integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL OR members IS NULL OR max_retries IS NULL THEN
        RAISE EXCEPTION 'name, members and max_retries must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF name !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid consumer name "%"', name USING ERRCODE = '22023',
            HINT = 'A name is 1 to 63 characters: a lowercase letter, then a-z, 0-9, _ or -.';
    END IF;
    IF cardinality(actions) = 0 THEN
        RAISE EXCEPTION 'actions must not be empty' USING ERRCODE = '22023',
            HINT = 'Use NULL for every action.';
    END IF;
    IF array_position(actions, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'actions must not contain NULL' USING ERRCODE = '22004';
    END IF;
    IF members NOT BETWEEN 1 AND 1024 THEN
        RAISE EXCEPTION 'members must be between 1 and 1024, not %', members
            USING ERRCODE = '22023';
    END IF;
    IF max_retries < 0 THEN
        RAISE EXCEPTION 'max_retries must not be negative' USING ERRCODE = '22023';
    END IF;
END
$$;

-- The consumer's row, locked FOR UPDATE; raises 42704 when there is none.
CREATE FUNCTION amebo_internal.lock_consumer(name text) RETURNS amebo.consumers
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers;
BEGIN
    SELECT * INTO c FROM amebo.consumers x WHERE x.name = lock_consumer.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'consumer "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    RETURN c;
END
$$;

-- The consumer's row (not locked) after checking that member is one of its members; raises
-- 42704 for an unknown consumer and 22023 for a member outside 0 .. members - 1.
CREATE FUNCTION amebo_internal.consumer_of_member(name text, member integer)
RETURNS amebo.consumers
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers;
BEGIN
    SELECT * INTO c FROM amebo.consumers x WHERE x.name = consumer_of_member.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'consumer "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    IF member IS NULL OR member < 0 OR member >= c.members THEN
        RAISE EXCEPTION 'member % is not a member of consumer "%"', member, name
            USING ERRCODE = '22023',
                  DETAIL = format('Consumer "%s" has members 0 to %s.', name, c.members - 1);
    END IF;
    RETURN c;
END
$$;

-- Creates a consumer whose members start at position 0 (every event of their share);
-- reset_consumer moves them.
CREATE FUNCTION amebo.create_consumer(name text, actions text[] DEFAULT NULL,
                                      members integer DEFAULT 1, max_retries integer DEFAULT 5)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM amebo_internal.check_consumer(name, actions, members, max_retries);
    INSERT INTO amebo.consumers (name, actions, members, max_retries)
    VALUES (name, actions, members, max_retries);
    INSERT INTO amebo.consumer_members (consumer, member)
    SELECT create_consumer.name, m FROM generate_series(0, members - 1) m;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'consumer "%" already exists', name USING ERRCODE = '42710';
END
$$;
COMMENT ON FUNCTION amebo.create_consumer(text, text[], integer, integer) IS
    'creates a pull consumer (a consumer group) of some actions (NULL: all)';
GRANT EXECUTE ON FUNCTION amebo.create_consumer(text, text[], integer, integer) TO amebo_admin;

-- Changes a consumer's members count or max_retries (NULL keeps the value). A new members
-- count is refused while events are leased, waiting for a retry or held (55000); it starts
-- every member at the lowest position of the old ones (events between are handed out
-- again) and moves parked events to the member of their stream.
CREATE FUNCTION amebo.alter_consumer(name text, members integer DEFAULT NULL,
                                     max_retries integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.lock_consumer(name);
    start bigint;
BEGIN
    PERFORM amebo_internal.check_consumer(c.name, c.actions, coalesce(members, c.members),
                                          coalesce(max_retries, c.max_retries));
    IF members IS NOT NULL AND members <> c.members THEN
        PERFORM 1 FROM amebo.consumer_members m WHERE m.consumer = c.name FOR UPDATE;
        IF EXISTS (SELECT 1 FROM amebo.consumer_events e
                   WHERE e.consumer = c.name AND e.state <> 'parked') THEN
            RAISE EXCEPTION 'consumer "%" has events in flight', c.name USING ERRCODE = '55000',
                DETAIL = 'Its members count cannot change while events are leased, waiting for a retry or held.',
                HINT = 'Pause the consumer, let its members acknowledge their events, then retry.';
        END IF;
        SELECT min(m.position) INTO start FROM amebo.consumer_members m WHERE m.consumer = c.name;
        DELETE FROM amebo.consumer_members m WHERE m.consumer = c.name;
        INSERT INTO amebo.consumer_members (consumer, member, position, in_flight_after)
        SELECT c.name, m, start, start FROM generate_series(0, alter_consumer.members - 1) m;
        UPDATE amebo.consumer_events e
        SET member = amebo.consumer_member(e.stream, alter_consumer.members)
        WHERE e.consumer = c.name;
    END IF;
    UPDATE amebo.consumers x
    SET members = coalesce(alter_consumer.members, x.members),
        max_retries = coalesce(alter_consumer.max_retries, x.max_retries), updated_at = now()
    WHERE x.name = c.name;
END
$$;
COMMENT ON FUNCTION amebo.alter_consumer(text, integer, integer) IS
    'changes a consumer''s members count or max_retries';
GRANT EXECUTE ON FUNCTION amebo.alter_consumer(text, integer, integer) TO amebo_admin;

-- Removes a consumer with its cursors and in-flight events.
CREATE FUNCTION amebo.drop_consumer(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.lock_consumer(name);
BEGIN
    DELETE FROM amebo.consumer_events e WHERE e.consumer = c.name;
    DELETE FROM amebo.consumers x WHERE x.name = c.name;
END
$$;
COMMENT ON FUNCTION amebo.drop_consumer(text) IS 'removes a consumer and its bookkeeping';
GRANT EXECUTE ON FUNCTION amebo.drop_consumer(text) TO amebo_admin;

-- Stops handing out events (poll returns none) until resume_consumer.
CREATE FUNCTION amebo.pause_consumer(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.lock_consumer(name);
BEGIN
    UPDATE amebo.consumers x SET state = 'paused', updated_at = now() WHERE x.name = c.name;
END
$$;
COMMENT ON FUNCTION amebo.pause_consumer(text) IS 'stops a consumer''s polls from handing out events';
GRANT EXECUTE ON FUNCTION amebo.pause_consumer(text) TO amebo_admin;

-- Hands out events again after pause_consumer (and wakes its members' LISTEN).
CREATE FUNCTION amebo.resume_consumer(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.lock_consumer(name);
BEGIN
    UPDATE amebo.consumers x SET state = 'active', updated_at = now() WHERE x.name = c.name;
    PERFORM pg_notify('amebo_consumer', c.name);
END
$$;
COMMENT ON FUNCTION amebo.resume_consumer(text) IS 'lets a paused consumer''s polls hand out events';
GRANT EXECUTE ON FUNCTION amebo.resume_consumer(text) TO amebo_admin;

-- Moves every member's cursor to after_position; drops the events leased, waiting for a
-- retry or held (parked ones stay); wakes the members' LISTEN. Returns the position.
CREATE FUNCTION amebo.reset_consumer(name text, after_position bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.lock_consumer(name);
BEGIN
    IF after_position IS NULL OR after_position < 0 THEN
        RAISE EXCEPTION 'after_position must be a position (0 or more)' USING ERRCODE = '22023';
    END IF;
    -- Waits for running polls of every member.
    UPDATE amebo.consumer_members m SET position = after_position, in_flight_after = after_position
    WHERE m.consumer = c.name;
    DELETE FROM amebo.consumer_events e WHERE e.consumer = c.name AND e.state <> 'parked';
    PERFORM pg_notify('amebo_consumer', c.name);
    RETURN after_position;
END
$$;
COMMENT ON FUNCTION amebo.reset_consumer(text, bigint) IS
    'moves a consumer''s members to a position (events after it are handed out)';
GRANT EXECUTE ON FUNCTION amebo.reset_consumer(text, bigint) TO amebo_admin;

-- Moves every member's cursor to just before the first event recorded at or after since
-- (a scan of the events); returns the position.
CREATE FUNCTION amebo.reset_consumer(name text, since timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be NULL' USING ERRCODE = '22004';
    END IF;
    RETURN amebo.reset_consumer(name,
        coalesce((SELECT min(e.position) - 1 FROM amebo.events e WHERE e.recorded_at >= since),
                 (SELECT max(e.position) FROM amebo.events e), 0));
END
$$;
COMMENT ON FUNCTION amebo.reset_consumer(text, timestamptz) IS
    'moves a consumer''s members to the first event recorded at or after a time';
GRANT EXECUTE ON FUNCTION amebo.reset_consumer(text, timestamptz) TO amebo_admin;

-- Hands out the member's next events, in position order, each leased until lease has passed
-- and with its attempt number: first its in-flight events that are due (expired leases,
-- retries due, events held behind an earlier one of their stream), then new events after its
-- cursor, up to the settled position (read_all's horizon). A stream with an event leased or
-- waiting for a retry gets no later event: those are recorded as held.
CREATE FUNCTION amebo.poll(consumer text, member integer DEFAULT 0, max_count integer DEFAULT 100,
                           lease interval DEFAULT '30 seconds')
RETURNS TABLE ("position" bigint, event_id uuid, stream text, version bigint, action text,
               payload jsonb, metadata jsonb, recorded_at timestamptz, schema_version integer,
               attempt integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    c amebo.consumers := amebo_internal.consumer_of_member(poll.consumer, poll.member);
    now_at timestamptz := clock_timestamp();
    cursor_at bigint;
    flight_after bigint;
    settled bigint;
    blocked text[] := '{}';
    taken integer := 0;
    scanned integer := 0;
    last_scanned bigint;
BEGIN
    IF max_count IS NULL OR max_count NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'max_count must be between 1 and 10000' USING ERRCODE = '22023';
    END IF;
    IF lease IS NULL OR lease <= interval '0' OR lease > interval '1 day' THEN
        RAISE EXCEPTION 'lease must be more than 0 and at most 1 day' USING ERRCODE = '22023';
    END IF;
    -- The settled position is taken before the statement that reads the events, whose
    -- snapshot must be newer: under REPEATABLE READ it would be the transaction's.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'amebo.poll needs a READ COMMITTED transaction' USING ERRCODE = '0A000',
            DETAIL = 'Its commit-order horizon holds only for a snapshot taken after it.',
            HINT = 'Poll in a READ COMMITTED transaction (the default); ack may run in any.';
    END IF;
    IF c.state = 'paused' THEN
        RETURN;
    END IF;
    settled := amebo.settled_position();
    -- A member caught up with nothing in flight: nothing to lock or write.
    SELECT m.position, m.in_flight_after INTO cursor_at, flight_after FROM amebo.consumer_members m
    WHERE m.consumer = c.name AND m.member = poll.member;
    IF cursor_at >= settled AND NOT EXISTS (
        SELECT 1 FROM amebo.consumer_events x
        WHERE x.consumer = c.name AND x.member = poll.member AND x.position > flight_after
          AND x.state <> 'parked') THEN
        RETURN;
    END IF;
    -- Polls of one member take turns.
    SELECT m.position, m.in_flight_after INTO cursor_at, flight_after
    FROM amebo.consumer_members m
    WHERE m.consumer = c.name AND m.member = poll.member FOR UPDATE;
    -- Asked again under the lock: a poll, nack or replay_parked may have committed since.
    -- With none in flight (as after a batch acknowledged whole) none is due or blocks a stream.
    IF EXISTS (SELECT 1 FROM amebo.consumer_events x
               WHERE x.consumer = c.name AND x.member = poll.member
                 AND x.position > flight_after AND x.state <> 'parked') THEN
        -- An expired lease counts as a failed attempt: past max_retries the event is parked.
        UPDATE amebo.consumer_events x SET state = 'parked', due_at = NULL, updated_at = now_at
        WHERE x.consumer = c.name AND x.member = poll.member AND x.position > flight_after
          AND x.state = 'leased' AND x.due_at <= now_at AND x.attempt > c.max_retries;
        SELECT coalesce(array_agg(DISTINCT x.stream), '{}') INTO blocked
        FROM amebo.consumer_events x
        WHERE x.consumer = c.name AND x.member = poll.member AND x.position > flight_after
          AND x.state IN ('leased', 'retry') AND x.due_at > now_at;

        -- In-flight events that are due, of streams that are not blocked, in position order.
        RETURN QUERY
        WITH due AS MATERIALIZED (
            SELECT x.position FROM amebo.consumer_events x
            WHERE x.consumer = c.name AND x.member = poll.member AND x.position > flight_after
              AND x.state <> 'parked' AND x.stream <> ALL (blocked)
            ORDER BY x.position LIMIT max_count
        ), leased AS (
            UPDATE amebo.consumer_events x
            SET state = 'leased', attempt = x.attempt + 1, due_at = now_at + lease,
                updated_at = now_at
            FROM due
            WHERE x.consumer = c.name AND x.member = poll.member AND x.position = due.position
              AND (x.state = 'held' OR x.due_at <= now_at)
            RETURNING x.position, x.attempt
        )
        SELECT ev.position, ev.event_id, ev.stream, ev.version, ev.action, ev.payload, ev.metadata,
               ev.recorded_at, ev.schema_version, leased.attempt
        FROM leased JOIN amebo.events ev ON ev.position = leased.position
        ORDER BY ev.position;
        GET DIAGNOSTICS taken = ROW_COUNT;
    END IF;

    -- New events after the cursor: leased, or held when their stream is blocked. (Every
    -- event in flight lies at or below the cursor, so the rows after it are this scan's.)
    RETURN QUERY
    WITH fresh AS MATERIALIZED (
        SELECT ev.*, ev.stream = ANY (blocked) AS held FROM amebo.events ev
        WHERE taken < max_count AND ev.position > cursor_at AND ev.position <= settled
          AND (c.actions IS NULL OR ev.action = ANY (c.actions))
          AND (c.members = 1 OR amebo.consumer_member(ev.stream, c.members) = poll.member)
        ORDER BY ev.position LIMIT max_count - taken
    ), recorded AS (
        INSERT INTO amebo.consumer_events (consumer, member, event_id, position, stream,
                                           state, attempt, due_at, updated_at)
        SELECT c.name, poll.member, f.event_id, f.position, f.stream,
               CASE WHEN f.held THEN 'held' ELSE 'leased' END,
               CASE WHEN f.held THEN 0 ELSE 1 END,
               CASE WHEN f.held THEN NULL ELSE now_at + lease END, now_at
        FROM fresh f
    )
    SELECT f.position, f.event_id, f.stream, f.version, f.action, f.payload, f.metadata,
           f.recorded_at, f.schema_version, 1
    FROM fresh f WHERE NOT f.held ORDER BY f.position;
    SELECT count(*), max(x.position) INTO scanned, last_scanned FROM amebo.consumer_events x
    WHERE x.consumer = c.name AND x.member = poll.member AND x.position > cursor_at;
    -- A short scan read every event of the share up to the settled position.
    IF taken < max_count THEN
        cursor_at := CASE WHEN scanned < max_count - taken THEN greatest(cursor_at, settled)
                          ELSE last_scanned END;
    END IF;
    -- The next scans start at the member's first event in flight (not parked).
    flight_after := coalesce((SELECT x.position - 1 FROM amebo.consumer_events x
                              WHERE x.consumer = c.name AND x.member = poll.member
                                AND x.position > flight_after AND x.state <> 'parked'
                              ORDER BY x.position LIMIT 1), cursor_at);
    UPDATE amebo.consumer_members m SET position = cursor_at, in_flight_after = flight_after
    WHERE m.consumer = c.name AND m.member = poll.member
      AND (m.position, m.in_flight_after) IS DISTINCT FROM (cursor_at, flight_after);
END
$$;
COMMENT ON FUNCTION amebo.poll(text, integer, integer, interval) IS
    'leases a consumer member''s next events, commit-order safe and in per-stream order';
GRANT EXECUTE ON FUNCTION amebo.poll(text, integer, integer, interval) TO amebo_writer;

-- Acknowledges events the member holds (leased to it, even past the lease's end): they
-- leave the bookkeeping with the caller's transaction. Raises AM009 when one is not held
-- (unknown, acknowledged already, nacked, parked, or another member's). Returns how many.
CREATE FUNCTION amebo.ack(consumer text, member integer, event_ids uuid[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.consumer_of_member(consumer, member);
    wanted integer;
    acked integer;
    done uuid[];
    missing uuid;
BEGIN
    IF event_ids IS NULL OR array_position(event_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'event_ids must not be NULL or contain NULL' USING ERRCODE = '22004';
    END IF;
    -- By the event_id recorded with each row: every event leased to the member lies after
    -- its in_flight_after, so the scan reads its events in flight and not the events table.
    WITH gone AS (
        DELETE FROM amebo.consumer_events x
        WHERE x.consumer = c.name AND x.member = ack.member AND x.event_id = ANY (event_ids)
          AND x.state = 'leased'
          AND x.position > (SELECT m.in_flight_after FROM amebo.consumer_members m
                            WHERE m.consumer = c.name AND m.member = ack.member)
        RETURNING x.event_id
    )
    SELECT count(*), coalesce(array_agg(gone.event_id), '{}') INTO acked, done FROM gone;
    -- The ids are counted once each only when fewer were acknowledged than given.
    wanted := cardinality(event_ids);
    IF acked < wanted THEN
        SELECT count(DISTINCT id) INTO wanted FROM unnest(event_ids) id;
    END IF;
    IF acked < wanted THEN
        -- The first id given that this call did not acknowledge.
        SELECT u.id INTO missing FROM unnest(event_ids) WITH ORDINALITY AS u(id, n)
        WHERE u.id <> ALL (done) ORDER BY u.n LIMIT 1;
        RAISE EXCEPTION 'event % is not leased to member % of consumer "%"', missing, member,
            c.name USING ERRCODE = 'AM009',
            DETAIL = format('%s of the %s events given are not leased to this member.',
                            wanted - acked, wanted),
            HINT = 'It was acknowledged already, nacked, parked, or never handed out to it.';
    END IF;
    RETURN acked;
END
$$;
COMMENT ON FUNCTION amebo.ack(text, integer, uuid[]) IS
    'acknowledges events leased to a consumer member (with the caller''s transaction)';
GRANT EXECUTE ON FUNCTION amebo.ack(text, integer, uuid[]) TO amebo_writer;

-- Gives a leased event back: it goes out again after retry_after (NULL: at the next poll),
-- or is parked when it has had 1 + max_retries attempts. Its stream waits meanwhile.
-- Returns the event's new state, 'retry' or 'parked'; raises AM009 unless it is leased to
-- the member.
CREATE FUNCTION amebo.nack(consumer text, member integer, event_id uuid,
                           retry_after interval DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.consumer_of_member(consumer, member);
    new_state text;
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF retry_after < interval '0' THEN
        RAISE EXCEPTION 'retry_after must not be negative' USING ERRCODE = '22023';
    END IF;
    UPDATE amebo.consumer_events x
    SET state = CASE WHEN x.attempt > c.max_retries THEN 'parked' ELSE 'retry' END,
        due_at = CASE WHEN x.attempt > c.max_retries THEN NULL
                      ELSE clock_timestamp() + coalesce(retry_after, interval '0') END,
        updated_at = clock_timestamp()
    WHERE x.consumer = c.name AND x.member = nack.member
      AND x.position = (SELECT e.position FROM amebo.events e WHERE e.event_id = nack.event_id)
      AND x.state = 'leased'
    RETURNING x.state INTO new_state;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % is not leased to member % of consumer "%"', event_id, member,
            c.name USING ERRCODE = 'AM009',
            HINT = 'It was acknowledged already, nacked, parked, or never handed out to it.';
    END IF;
    RETURN new_state;
END
$$;
COMMENT ON FUNCTION amebo.nack(text, integer, uuid, interval) IS
    'gives a leased event back for a retry (parked after max_retries)';
GRANT EXECUTE ON FUNCTION amebo.nack(text, integer, uuid, interval) TO amebo_writer;

-- Sends a consumer's parked events out again (each with a fresh count of attempts, in
-- position order with the events of its member) and wakes its members' LISTEN; returns how
-- many.
CREATE FUNCTION amebo.replay_parked(consumer text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c amebo.consumers := amebo_internal.lock_consumer(consumer);
    replayed bigint;
BEGIN
    WITH replay AS (
        UPDATE amebo.consumer_events x
        SET state = 'retry', attempt = 0, due_at = clock_timestamp(),
            updated_at = clock_timestamp()
        WHERE x.consumer = c.name AND x.state = 'parked'
        RETURNING x.member, x.position
    ), lowest AS (
        SELECT r.member, min(r.position) AS position, count(*) AS events
        FROM replay r GROUP BY r.member
    ), moved AS (
        -- The poll's scans of in-flight events must start before the replayed ones.
        UPDATE amebo.consumer_members m
        SET in_flight_after = least(m.in_flight_after, l.position - 1)
        FROM lowest l WHERE m.consumer = c.name AND m.member = l.member
    )
    SELECT coalesce(sum(l.events), 0) INTO replayed FROM lowest l;
    PERFORM pg_notify('amebo_consumer', c.name);
    RETURN replayed;
END
$$;
COMMENT ON FUNCTION amebo.replay_parked(text) IS 'sends a consumer''s parked events out again';
GRANT EXECUTE ON FUNCTION amebo.replay_parked(text) TO amebo_admin;

-- Events parked after max_retries failed attempts, until replay_parked.
CREATE VIEW amebo.consumer_parked AS
SELECT x.consumer, x.member, x.position, x.event_id, x.stream, e.action, x.attempt AS attempts,
       x.updated_at AS parked_at
FROM amebo.consumer_events x JOIN amebo.events e ON e.position = x.position
WHERE x.state = 'parked';
COMMENT ON VIEW amebo.consumer_parked IS 'amebo: consumers'' parked events';
GRANT SELECT ON amebo.consumer_parked TO amebo_reader;

-- Per consumer and member: its cursor, its lag (events of its share after the cursor up to
-- the settled position, and the age of the oldest event not yet acknowledged), and its
-- in-flight events by state. Counting the lag reads the events after the cursor.
CREATE VIEW amebo.consumer_status AS
SELECT c.name AS consumer, m.member, c.state, m.position, lag.events AS lag_events,
       coalesce(extract(epoch FROM now() - least(lag.oldest, flight.oldest)), 0)::double precision
           AS lag_seconds,
       flight.leased, flight.waiting, flight.held, flight.parked
FROM amebo.consumers c
JOIN amebo.consumer_members m ON m.consumer = c.name
CROSS JOIN (SELECT amebo.settled_position() AS position) settled
CROSS JOIN LATERAL (
    SELECT count(*) AS events, min(e.recorded_at) AS oldest FROM amebo.events e
    WHERE e.position > m.position AND e.position <= settled.position
      AND (c.actions IS NULL OR e.action = ANY (c.actions))
      AND amebo.consumer_member(e.stream, c.members) = m.member
) lag
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE x.state = 'leased') AS leased,
           count(*) FILTER (WHERE x.state = 'retry') AS waiting,
           count(*) FILTER (WHERE x.state = 'held') AS held,
           count(*) FILTER (WHERE x.state = 'parked') AS parked,
           min(e.recorded_at) FILTER (WHERE x.state <> 'parked') AS oldest
    FROM amebo.consumer_events x JOIN amebo.events e ON e.position = x.position
    WHERE x.consumer = c.name AND x.member = m.member
) flight;
COMMENT ON VIEW amebo.consumer_status IS
    'amebo: each consumer member''s position, lag and in-flight events';
GRANT SELECT ON amebo.consumer_status TO amebo_reader;

-- PUBLIC gets nothing here either (this section follows the general REVOKE above).
REVOKE EXECUTE ON FUNCTION amebo.consumer_member(text, integer),
    amebo_internal.check_consumer(text, text[], integer, integer),
    amebo_internal.lock_consumer(text), amebo_internal.consumer_of_member(text, integer),
    amebo.create_consumer(text, text[], integer, integer),
    amebo.alter_consumer(text, integer, integer), amebo.drop_consumer(text),
    amebo.pause_consumer(text), amebo.resume_consumer(text),
    amebo.reset_consumer(text, bigint), amebo.reset_consumer(text, timestamptz),
    amebo.poll(text, integer, integer, interval), amebo.ack(text, integer, uuid[]),
    amebo.nack(text, integer, uuid, interval), amebo.replay_parked(text) FROM PUBLIC;

-------------------------------------------------------------------------------------------
-- Retention, deletion, erasure
--
-- amebo_admin removes events: truncate_stream (a stream's oldest events), delete_stream (all
-- of a stream's events; hard: for good), set_retention (per category, enforced by the
-- background worker in small batches); and erases personal data with redact. Only two C
-- functions change rows of amebo.events (amebo_internal.remove_events and redact_events, see
-- src/store/removal.cpp); the trigger refuses every other change. A stream's versions never
-- restart: when all its events are gone, amebo.removed_streams keeps its last version, where
-- the append path's head probe finds it. See docs/design.md "Retention, deletion and erasure".
-------------------------------------------------------------------------------------------

-- Streams whose events were all removed at some time: the version their next append continues
-- from, and the tombstone of a hard delete. The append path reads it only when the stream has
-- no stored event.
CREATE TABLE amebo.removed_streams (
    stream     text        NOT NULL,
    version    bigint      NOT NULL,
    tombstone  boolean     NOT NULL DEFAULT false,
    removed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT removed_streams_pkey PRIMARY KEY (stream)
);
COMMENT ON TABLE amebo.removed_streams IS
    'amebo: streams emptied by a removal (their last version) and hard-deleted streams';
SELECT pg_catalog.pg_extension_config_dump('amebo.removed_streams', '');
GRANT SELECT ON amebo.removed_streams TO amebo_reader;

-- The trigger of amebo.events moves to C, which alone can let the removals through.
CREATE OR REPLACE FUNCTION amebo_internal.refuse_event_change() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'amebo_refuse_event_change';

-- Retention policies per stream category (the part of a stream's name before its first '-').
-- The worker's pass resumes from age_checked_through and count_checked_through: every event
-- at or below them has been looked at for this policy.
CREATE TABLE amebo.retention_policies (
    category              text        NOT NULL,
    max_age               interval,
    max_count             bigint,
    age_checked_through   bigint      NOT NULL DEFAULT 0,
    count_checked_through bigint      NOT NULL DEFAULT 0,
    removed               bigint      NOT NULL DEFAULT 0,
    last_pass_at          timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT retention_policies_pkey PRIMARY KEY (category),
    CONSTRAINT retention_policies_max_age_check CHECK (max_age > interval '0'),
    CONSTRAINT retention_policies_max_count_check CHECK (max_count > 0),
    CONSTRAINT retention_policies_limit_check CHECK (max_age IS NOT NULL OR max_count IS NOT NULL)
);
COMMENT ON TABLE amebo.retention_policies IS
    'amebo: retention per stream category, enforced by the background worker';
SELECT pg_catalog.pg_extension_config_dump('amebo.retention_policies', '');
GRANT SELECT ON amebo.retention_policies TO amebo_reader;

-- The audit trail of erasures: who (the session's login role), when, which stream and paths,
-- why, and how many events and snapshots changed.
CREATE TABLE amebo.redactions (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    stream      text        NOT NULL,
    paths       text[]      NOT NULL,
    reason      text        NOT NULL,
    count       bigint      NOT NULL,
    snapshots   bigint      NOT NULL,
    redacted_by name        NOT NULL DEFAULT session_user,
    redacted_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT redactions_pkey PRIMARY KEY (id)
);
COMMENT ON TABLE amebo.redactions IS 'amebo: every redaction (erasure of JSON paths)';
SELECT pg_catalog.pg_extension_config_dump('amebo.redactions', '');
SELECT pg_catalog.pg_extension_config_dump('amebo.redactions_id_seq', '');
GRANT SELECT ON amebo.redactions TO amebo_reader;

-- Holds the stream's append lock until the transaction ends, once no other open transaction
-- has appended to it; returns its head (0: no such stream). Only the owner may call it.
CREATE FUNCTION amebo_internal.lock_stream(stream text) RETURNS bigint
LANGUAGE c AS 'MODULE_PATHNAME', 'amebo_lock_stream';

-- Deletes the events at these positions (the only DELETE the trigger lets through).
CREATE FUNCTION amebo_internal.remove_events(positions bigint[]) RETURNS bigint
LANGUAGE c AS 'MODULE_PATHNAME', 'amebo_remove_events';

-- Removes the paths from the stream's payloads and metadata (the only UPDATE the trigger lets
-- through); returns how many events changed.
CREATE FUNCTION amebo_internal.redact_events(stream text, paths text[]) RETURNS bigint
LANGUAGE c AS 'MODULE_PATHNAME', 'amebo_redact_events';

-- document without the JSON paths (each a text[] literal such as '{address,street}').
CREATE FUNCTION amebo_internal.without_paths(document jsonb, paths text[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    path text;
BEGIN
    FOREACH path IN ARRAY paths LOOP
        document := document #- path::text[];
    END LOOP;
    RETURN document;
END
$$;

-- Raises 22004/22023 unless paths is a non-empty list of object paths (no array indexes).
CREATE FUNCTION amebo_internal.check_paths(paths text[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    path text;
    parsed text[];
BEGIN
    IF paths IS NULL OR cardinality(paths) = 0 THEN
        RAISE EXCEPTION 'paths must name at least one JSON path' USING ERRCODE = '22023',
            HINT = 'For example ARRAY[''{email}'', ''{address,street}''].';
    END IF;
    FOREACH path IN ARRAY paths LOOP
        IF path IS NULL THEN
            RAISE EXCEPTION 'paths must not contain NULL' USING ERRCODE = '22004';
        END IF;
        BEGIN
            parsed := path::text[];
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION 'malformed JSON path "%"', path USING ERRCODE = '22023',
                HINT = 'A path is a text array literal such as {address,street}.';
        END;
        IF cardinality(parsed) = 0 OR array_ndims(parsed) <> 1 OR NULL = ANY (parsed)
           OR '' = ANY (parsed) THEN
            RAISE EXCEPTION 'malformed JSON path "%"', path USING ERRCODE = '22023',
                HINT = 'A path is a text array literal of object keys such as {address,street}.';
        END IF;
        IF EXISTS (SELECT 1 FROM unnest(parsed) k WHERE k ~ '^-?[0-9]+$') THEN
            RAISE EXCEPTION 'JSON path "%" goes into an array', path USING ERRCODE = '22023',
                DETAIL = 'redact removes object keys; array elements keep their places.',
                HINT = 'Name the key that holds the array, or one inside its elements'' object.';
        END IF;
    END LOOP;
END
$$;

-- Removes the events at these positions; keeps the versions of streams left empty in
-- amebo.removed_streams; drops the positions from stored webhook messages (a message left
-- with none is dropped) and from pull consumers' in-flight events. Returns how many went.
CREATE FUNCTION amebo_internal.remove_positions(positions bigint[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    streams text[];
    heads bigint[];
    removed bigint;
BEGIN
    SELECT array_agg(h.stream), array_agg(h.version) INTO streams, heads
    FROM (SELECT e.stream, max(e.version) AS version FROM amebo.events e
          WHERE e.position = ANY (remove_positions.positions) GROUP BY e.stream) h;
    removed := amebo_internal.remove_events(remove_positions.positions);
    INSERT INTO amebo.removed_streams AS r (stream, version)
    SELECT h.stream, h.version FROM unnest(streams, heads) AS h(stream, version)
    WHERE NOT EXISTS (SELECT 1 FROM amebo.events e WHERE e.stream = h.stream)
    ON CONFLICT ON CONSTRAINT removed_streams_pkey
    DO UPDATE SET version = greatest(r.version, excluded.version), removed_at = now();
    UPDATE amebo.deliveries d
    SET positions = ARRAY(SELECT p FROM unnest(d.positions) p
                      WHERE p <> ALL (remove_positions.positions)),
        updated_at = now()
    WHERE d.positions && remove_positions.positions;
    DELETE FROM amebo.deliveries d WHERE d.positions = '{}';
    DELETE FROM amebo.consumer_events x WHERE x.position = ANY (remove_positions.positions);
    RETURN removed;
END
$$;

-- Raises 55000 when cutting the stream before before_version would leave its state
-- unrecoverable: its category has a reducer and no snapshot of it is at version
-- before_version - 1 or later (load_state folds the kept events onto that snapshot).
CREATE FUNCTION amebo_internal.check_state_kept(stream text, before_version bigint)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM amebo.reducers r WHERE r.category = split_part(stream, '-', 1))
       AND NOT EXISTS (SELECT 1 FROM amebo.snapshots s
                       WHERE s.stream = check_state_kept.stream
                         AND s.version >= before_version - 1)
       AND EXISTS (SELECT 1 FROM amebo.events e
                   WHERE e.stream = check_state_kept.stream AND e.version < before_version) THEN
        RAISE EXCEPTION 'truncating stream "%" before version % would lose its state',
                        stream, before_version
            USING ERRCODE = '55000',
                  DETAIL = format('Category "%s" has a reducer, and no snapshot of the stream '
                                  'is at version %s or later.',
                                  split_part(stream, '-', 1), before_version - 1),
                  HINT = format('Save one first: SELECT amebo.save_snapshot(%L, %s, '
                                'amebo.replay_state(%L, %s));', stream, before_version - 1,
                                stream, before_version - 1);
    END IF;
END
$$;

-- Removes the stream's events with a version below before_version (at most its head + 1);
-- returns how many. The stream's version and the next append's version do not change.
CREATE FUNCTION amebo.truncate_stream(stream text, before_version bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head bigint;
BEGIN
    IF stream IS NULL OR before_version IS NULL THEN
        RAISE EXCEPTION 'stream and before_version must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF before_version < 1 THEN
        RAISE EXCEPTION 'before_version must be at least 1' USING ERRCODE = '22023';
    END IF;
    head := amebo_internal.lock_stream(stream);
    IF head = 0 THEN
        RAISE EXCEPTION 'stream "%" does not exist', stream USING ERRCODE = '42704';
    END IF;
    IF before_version > head + 1 THEN
        RAISE EXCEPTION 'cannot truncate stream "%" before version %: it is beyond the head',
                        stream, before_version
            USING ERRCODE = '22023',
                  DETAIL = format('Stream "%s" is at version %s; before_version may be at most %s.',
                                  stream, head, head + 1);
    END IF;
    PERFORM amebo_internal.check_state_kept(stream, before_version);
    RETURN amebo_internal.remove_positions(ARRAY(
        SELECT e.position FROM amebo.events e
        WHERE e.stream = truncate_stream.stream AND e.version < before_version));
END
$$;

-- Removes all of the stream's events and its snapshots; returns how many events went. Soft:
-- the stream may be appended again and its versions go on. Hard: a tombstone, and every later
-- append to the stream raises AM010.
CREATE FUNCTION amebo.delete_stream(stream text, hard boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head bigint;
    removed bigint;
BEGIN
    IF stream IS NULL OR hard IS NULL THEN
        RAISE EXCEPTION 'stream and hard must not be NULL' USING ERRCODE = '22004';
    END IF;
    head := amebo_internal.lock_stream(stream);
    IF head = 0 AND NOT EXISTS (SELECT 1 FROM amebo.removed_streams r
                                WHERE r.stream = delete_stream.stream) THEN
        RAISE EXCEPTION 'stream "%" does not exist', stream USING ERRCODE = '42704';
    END IF;
    removed := amebo_internal.remove_positions(ARRAY(
        SELECT e.position FROM amebo.events e WHERE e.stream = delete_stream.stream));
    INSERT INTO amebo.removed_streams AS r (stream, version, tombstone)
    VALUES (delete_stream.stream, head, hard)
    ON CONFLICT ON CONSTRAINT removed_streams_pkey
    DO UPDATE SET version = greatest(r.version, excluded.version),
                  tombstone = r.tombstone OR excluded.tombstone, removed_at = now();
    DELETE FROM amebo.snapshots s WHERE s.stream = delete_stream.stream;
    RETURN removed;
END
$$;

-- Sets the retention policy of a category: the worker removes its events older than max_age
-- and those more than max_count versions below their stream's head. Both NULL: removes the
-- policy (42704 if there is none).
CREATE FUNCTION amebo.set_retention(category text, max_age interval DEFAULT NULL,
                                    max_count bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF category IS NULL THEN
        RAISE EXCEPTION 'category must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF category !~ '^[^-]{1,255}$' THEN
        RAISE EXCEPTION 'invalid category "%"', category USING ERRCODE = '22023',
            DETAIL = 'A category is the part of a stream name before its first "-".';
    END IF;
    IF max_age <= interval '0' THEN
        RAISE EXCEPTION 'max_age must be positive' USING ERRCODE = '22023';
    END IF;
    IF max_count < 1 THEN
        RAISE EXCEPTION 'max_count must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF max_age IS NULL AND max_count IS NULL THEN
        DELETE FROM amebo.retention_policies p WHERE p.category = set_retention.category;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'category "%" has no retention policy', category
                USING ERRCODE = '42704';
        END IF;
        RETURN;
    END IF;
    INSERT INTO amebo.retention_policies AS p (category, max_age, max_count)
    VALUES (set_retention.category, max_age, max_count)
    ON CONFLICT ON CONSTRAINT retention_policies_pkey
    DO UPDATE SET max_age = excluded.max_age, max_count = excluded.max_count,
                  count_checked_through = 0, updated_at = now();
    PERFORM amebo.wake_worker();
END
$$;

-- Removes the paths from the stream's event payloads and metadata and from its snapshots,
-- records the redaction in amebo.redactions and sends its id on channel amebo_redaction;
-- returns how many events changed. Validation does not run again.
CREATE FUNCTION amebo.redact(stream text, paths text[], reason text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed bigint;
    snapshots bigint;
    redaction bigint;
BEGIN
    IF stream IS NULL OR paths IS NULL OR reason IS NULL THEN
        RAISE EXCEPTION 'stream, paths and reason must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF btrim(reason) = '' THEN
        RAISE EXCEPTION 'reason must not be empty' USING ERRCODE = '22023';
    END IF;
    PERFORM amebo_internal.check_paths(paths);
    IF NOT EXISTS (SELECT 1 FROM amebo.events e WHERE e.stream = redact.stream)
       AND NOT EXISTS (SELECT 1 FROM amebo.removed_streams r WHERE r.stream = redact.stream) THEN
        RAISE EXCEPTION 'stream "%" does not exist', stream USING ERRCODE = '42704';
    END IF;
    changed := amebo_internal.redact_events(stream, paths);
    UPDATE amebo.snapshots s SET state = amebo_internal.without_paths(s.state, paths)
    WHERE s.stream = redact.stream AND s.state <> amebo_internal.without_paths(s.state, paths);
    GET DIAGNOSTICS snapshots = ROW_COUNT;
    INSERT INTO amebo.redactions (stream, paths, reason, count, snapshots)
    VALUES (redact.stream, paths, reason, changed, snapshots)
    RETURNING id INTO redaction;
    PERFORM pg_notify('amebo_redaction', redaction::text);
    RETURN changed;
END
$$;

-- What retention waits on: each subscription, projection and consumer member that has not
-- processed every event, with the last position up to which it has (retention removes no
-- event after it). Stored webhook messages and consumers' in-flight events hold back their
-- first position.
CREATE VIEW amebo.retention_holds AS
SELECT 'subscriptions'::text AS holder, 'delivery checkpoint'::text AS name,
       coalesce((SELECT c.position FROM amebo.delivery_checkpoint c), 0) AS position
WHERE EXISTS (SELECT 1 FROM amebo.subscriptions s WHERE s.state <> 'disabled')
UNION ALL
SELECT 'subscription', s.application || '/' || s.name, min(p.position) - 1
FROM amebo.deliveries d JOIN amebo.subscriptions s ON s.id = d.subscription_id
CROSS JOIN LATERAL unnest(d.positions) AS p(position)
WHERE d.state = 'pending'
GROUP BY s.application, s.name
UNION ALL
SELECT 'projection', p.name, p.position FROM amebo.projections p
WHERE p.mode = 'async' OR p.state = 'paused'
UNION ALL
SELECT 'consumer', m.consumer || '/' || m.member,
       least(m.position, (SELECT min(x.position) - 1 FROM amebo.consumer_events x
                          WHERE x.consumer = m.consumer AND x.member = m.member))
FROM amebo.consumer_members m;
COMMENT ON VIEW amebo.retention_holds IS
    'amebo: subscriptions, projections and consumers whose unprocessed events retention keeps';
GRANT SELECT ON amebo.retention_holds TO amebo_reader;

-- The position at or below which retention may remove events: every holder has processed
-- them, and they are settled (committed, or never to commit).
CREATE FUNCTION amebo_internal.retention_horizon() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT least(amebo.settled_position(), (SELECT min(h.position) FROM amebo.retention_holds h))
$$;

-- Each policy, what its pass has removed and looked at, and what it waits on (the holder with
-- the lowest position, when that is below the settled position).
CREATE VIEW amebo.retention_status AS
SELECT p.category, p.max_age, p.max_count, p.removed, p.last_pass_at,
       least(CASE WHEN p.max_age IS NULL THEN NULL ELSE p.age_checked_through END,
             CASE WHEN p.max_count IS NULL THEN NULL ELSE p.count_checked_through END)
           AS checked_through,
       h.position AS horizon,
       CASE WHEN h.position < amebo.settled_position() THEN w.holder || ' ' || w.name END
           AS waiting_on
FROM amebo.retention_policies p
CROSS JOIN (SELECT amebo_internal.retention_horizon() AS position) h
LEFT JOIN LATERAL (SELECT x.holder, x.name FROM amebo.retention_holds x
                   ORDER BY x.position, x.holder, x.name LIMIT 1) w ON true;
COMMENT ON VIEW amebo.retention_status IS
    'amebo: each retention policy, what it removed and what it waits on';
GRANT SELECT ON amebo.retention_status TO amebo_reader;

-- The max_age part of one policy's pass: looks at up to max_events events after
-- age_checked_through (up to horizon) and removes those of the category older than max_age,
-- stopping at the first one it must keep (too young, or not covered by a snapshot while the
-- category has a reducer). Returns how many it looked at.
CREATE FUNCTION amebo_internal.retain_by_age(policy amebo.retention_policies, horizon bigint,
                                             max_events integer)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    has_reducer boolean;
    looked integer;
    last_looked bigint;
    first_kept bigint;
    old_enough bigint[];
    removed_now bigint;
BEGIN
    IF policy.max_age IS NULL THEN
        RETURN 0;
    END IF;
    has_reducer := EXISTS (SELECT 1 FROM amebo.reducers r WHERE r.category = policy.category);
    SELECT count(*), max(w.position), min(w.position) FILTER (WHERE w.mine AND NOT w.removable),
           array_agg(w.position) FILTER (WHERE w.mine AND w.removable)
    INTO looked, last_looked, first_kept, old_enough
    FROM (SELECT e.position, split_part(e.stream, '-', 1) = policy.category AS mine,
                 e.recorded_at < now() - policy.max_age
                 AND (NOT has_reducer
                      OR e.version <= (SELECT max(s.version) FROM amebo.snapshots s
                                       WHERE s.stream = e.stream)) AS removable
          FROM amebo.events e
          WHERE e.position > policy.age_checked_through AND e.position <= horizon
          ORDER BY e.position LIMIT max_events) w;
    IF looked = 0 THEN
        RETURN 0;
    END IF;
    removed_now := amebo_internal.remove_positions(ARRAY(
        SELECT p FROM unnest(old_enough) p WHERE p < coalesce(first_kept, last_looked + 1)));
    UPDATE amebo.retention_policies p
    SET age_checked_through = coalesce(first_kept - 1, last_looked),
        removed = p.removed + removed_now
    WHERE p.category = policy.category;
    RETURN CASE WHEN first_kept IS NULL THEN looked ELSE 0 END;
END
$$;

-- The max_count part of one policy's pass: for the streams of the category appended at
-- positions after count_checked_through (up to horizon, at most max_events events looked
-- at), removes the events more than max_count versions below the head (and, while the
-- category has a reducer, only those a snapshot covers). Returns how many it looked at.
CREATE FUNCTION amebo_internal.retain_by_count(policy amebo.retention_policies,
                                               horizon bigint, max_events integer)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    has_reducer boolean;
    looked integer;
    last_looked bigint;
    beyond bigint[];
    removed_now bigint;
BEGIN
    IF policy.max_count IS NULL THEN
        RETURN 0;
    END IF;
    has_reducer := EXISTS (SELECT 1 FROM amebo.reducers r WHERE r.category = policy.category);
    SELECT count(*), max(w.position) INTO looked, last_looked
    FROM (SELECT e.position FROM amebo.events e
          WHERE e.position > policy.count_checked_through AND e.position <= horizon
          ORDER BY e.position LIMIT max_events) w;
    IF looked = 0 THEN
        RETURN 0;
    END IF;
    beyond := ARRAY(
        SELECT old.position
        FROM (SELECT DISTINCT e.stream FROM amebo.events e
              WHERE e.position > policy.count_checked_through AND e.position <= last_looked
                AND split_part(e.stream, '-', 1) = policy.category) s
        CROSS JOIN LATERAL (
            SELECT least(max(e.version) - policy.max_count,
                         CASE WHEN has_reducer
                              THEN coalesce((SELECT max(x.version) FROM amebo.snapshots x
                                             WHERE x.stream = s.stream), 0) END) AS version
            FROM amebo.events e WHERE e.stream = s.stream) cut
        JOIN amebo.events old ON old.stream = s.stream AND old.version <= cut.version
                             AND old.position <= horizon
        ORDER BY old.position LIMIT max_events);
    removed_now := amebo_internal.remove_positions(beyond);
    -- A full batch of removals may have left more behind in these streams: look again.
    UPDATE amebo.retention_policies p
    SET count_checked_through = CASE WHEN cardinality(beyond) < max_events THEN last_looked
                                     ELSE p.count_checked_through END,
        removed = p.removed + removed_now
    WHERE p.category = policy.category;
    RETURN greatest(looked, cardinality(beyond));
END
$$;

-- One retention step of the background worker: for each policy, looks at up to max_events
-- events by age and by count and removes what the policy allows and no holder needs, in this
-- one transaction. Returns the events looked at (the worker runs again at once while that
-- fills a batch).
CREATE FUNCTION amebo_internal.run_retention(max_events integer DEFAULT 1000) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    policy amebo.retention_policies;
    horizon bigint;
    looked integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM amebo.retention_policies) THEN
        RETURN 0;
    END IF;
    horizon := amebo_internal.retention_horizon();
    FOR policy IN SELECT * FROM amebo.retention_policies p ORDER BY p.category
                  FOR UPDATE SKIP LOCKED LOOP
        looked := greatest(looked, amebo_internal.retain_by_age(policy, horizon, max_events));
        looked := greatest(looked, amebo_internal.retain_by_count(policy, horizon, max_events));
        UPDATE amebo.retention_policies p SET last_pass_at = now()
        WHERE p.category = policy.category;
    END LOOP;
    RETURN looked;
END
$$;

-- The removal and erasure functions are amebo_admin's; PUBLIC gets nothing.
REVOKE EXECUTE ON FUNCTION amebo_internal.lock_stream(text),
    amebo_internal.remove_events(bigint[]), amebo_internal.redact_events(text, text[]),
    amebo_internal.without_paths(jsonb, text[]), amebo_internal.check_paths(text[]),
    amebo_internal.remove_positions(bigint[]), amebo_internal.check_state_kept(text, bigint),
    amebo.truncate_stream(text, bigint), amebo.delete_stream(text, boolean),
    amebo.set_retention(text, interval, bigint), amebo.redact(text, text[], text),
    amebo_internal.retention_horizon(),
    amebo_internal.retain_by_age(amebo.retention_policies, bigint, integer),
    amebo_internal.retain_by_count(amebo.retention_policies, bigint, integer),
    amebo_internal.run_retention(integer) FROM PUBLIC;
-- amebo.retention_status calls retention_horizon with its reader's privileges.
GRANT EXECUTE ON FUNCTION amebo_internal.retention_horizon() TO amebo_reader;
GRANT EXECUTE ON FUNCTION amebo.truncate_stream(text, bigint), amebo.delete_stream(text, boolean),
    amebo.set_retention(text, interval, bigint), amebo.redact(text, text[], text)
    TO amebo_admin;
