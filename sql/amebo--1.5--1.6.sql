-- amebo 1.5 -> 1.6: scale-out helpers (shards behind amebo_router, a replicated settled
-- horizon for reads on standbys) and webhooks at internet scale (secret rotation, private
-- target allowlist, rate limits, circuit breaker). See sql/amebo.sql for every object as 1.6
-- defines it; each change here repeats it exactly.
\echo Use "ALTER EXTENSION amebo UPDATE TO '1.6'" to load this file. \quit

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
                              'secret_sha256', encode(sha256(convert_to(a.secret, 'UTF8')), 'hex'))
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
                              'ordered', s.ordered, 'batch_size', s.batch_size)
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
              AND (s.action, s.handler, s.max_retries, s.filter, s.ordered, s.batch_size)
                  IS DISTINCT FROM (args[3], args[4], args[5]::integer, args[6]::jsonb,
                                    args[7]::boolean, args[8]::integer))
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
