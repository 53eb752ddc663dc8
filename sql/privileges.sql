-- Privileges: amebo_reader, amebo_writer and amebo_admin (each a member of the one before), and
-- a role with none of them. Every forbidden operation fails with 42501 (insufficient_privilege)
-- and every allowed one works; users' code runs as the calling role, never as the extension's
-- owner; a hostile search_path reaches none of amebo's own queries; secrets stay with admins.

-- The roles exist, cannot log in, and include each other.
SELECT r.rolname, r.rolcanlogin,
       ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
             WHERE m.member = r.oid ORDER BY g.rolname) AS member_of
FROM pg_roles r WHERE r.rolname IN ('amebo_reader', 'amebo_writer', 'amebo_admin')
ORDER BY r.rolname;
-- Nothing of amebo is granted to PUBLIC.
SELECT count(*) AS granted_to_public
FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
WHERE p.pronamespace = 'amebo'::regnamespace AND a.grantee = 0;
SELECT count(*) AS granted_to_public
FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
WHERE c.relnamespace = 'amebo'::regnamespace AND a.grantee = 0;

CREATE ROLE amebo_regress_nobody LOGIN;
CREATE ROLE amebo_regress_reader LOGIN IN ROLE amebo_reader;
CREATE ROLE amebo_regress_writer LOGIN IN ROLE amebo_writer;
CREATE ROLE amebo_regress_admin LOGIN IN ROLE amebo_admin;
GRANT USAGE ON SCHEMA regress TO PUBLIC;

-- An application, an action, events; a reducer and an inline projection that record which
-- role runs them.
SELECT amebo.create_application('privy', NULL, 'whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=')
    IS NOT NULL AS registered;
SELECT amebo.create_action('privy.done', 'privy');
SELECT amebo.append_event('privy-1', 'privy.done', '{"n": 1}');
CREATE FUNCTION privy_reducer(state jsonb, event amebo.events) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT state || jsonb_build_object('n', event.payload->'n', 'ran_as', current_user::text)
$$;
SELECT amebo.create_reducer('privy', 'privy_reducer(jsonb, amebo.events)', '{}', 1);
CREATE TABLE privy_seen (position bigint, ran_as text);
GRANT SELECT, INSERT, DELETE ON privy_seen TO PUBLIC;
CREATE FUNCTION privy_handler(event amebo.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO public.privy_seen VALUES (event.position, current_user)
$$;
CREATE FUNCTION privy_reset() RETURNS void
LANGUAGE sql AS $$
    DELETE FROM public.privy_seen
$$;

-- No amebo role: not even the schema.
SET ROLE amebo_regress_nobody;
SELECT q AS statement, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.read_stream('privy-1')$$),
    ($$SELECT amebo.append_event('privy-1', 'privy.done', '{}')$$),
    ($$SELECT * FROM amebo.events$$),
    ($$SELECT * FROM amebo.application_list$$)
) AS cases(q);
RESET ROLE;

-- amebo_reader: reads, never writes.
SET ROLE amebo_regress_reader;
SELECT q AS statement, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.read_stream('privy-1')$$),
    ($$SELECT amebo.read_all()$$),
    ($$SELECT amebo.stream_version('privy-1')$$),
    ($$SELECT amebo.load_snapshot('privy-1')$$),
    ($$SELECT amebo.load_state('privy-1')$$),
    ($$SELECT amebo.replay_state('privy-1')$$),
    ($$SELECT amebo.application_events('privy')$$),
    ($$SELECT amebo.settled_position()$$),
    ($$SELECT * FROM amebo.events$$),
    ($$SELECT * FROM amebo.snapshots$$),
    ($$SELECT * FROM amebo.action_list$$),
    ($$SELECT * FROM amebo.application_list$$),
    ($$SELECT name, address FROM amebo.applications$$),
    ($$SELECT * FROM amebo.projection_status$$),
    ($$SELECT * FROM amebo.subscription_status$$),
    ($$SELECT * FROM amebo.subscription_list$$),
    ($$SELECT * FROM amebo.delivery_queue$$),
    ($$SELECT amebo.wait_for_deliveries(0)$$),
    ($$SELECT amebo.wait_for_projection('nothing', 0)$$),
    ($$SELECT amebo.append_event('privy-1', 'privy.done', '{}')$$),
    ($$SELECT amebo.append_events('privy-1', '[{"action": "privy.done", "payload": {}}]')$$),
    ($$SELECT amebo.save_snapshot('privy-1', 1, '{}')$$),
    ($$INSERT INTO amebo.events SELECT * FROM amebo.events LIMIT 1$$),
    ($$DELETE FROM amebo.snapshots$$),
    ($$UPDATE amebo.actions SET compatibility = 'none'$$),
    ($$SELECT * FROM amebo.applications$$),
    ($$SELECT secret FROM amebo.applications$$),
    ($$SELECT amebo.application_secret('privy')$$),
    ($$SELECT amebo_internal.generate_secret()$$),
    ($$SELECT amebo.create_action('privy.other', 'privy')$$),
    ($$SELECT amebo_internal.check_handler('https://hooks.example.invalid/')$$),
    ($$SELECT amebo.wake_worker()$$)
) AS cases(q);
RESET ROLE;

-- amebo_writer: appends and saves snapshots; no registry, no direct writes.
SET ROLE amebo_regress_writer;
SELECT q AS statement, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.append_event('privy-1', 'privy.done', '{"n": 2}')$$),
    ($$SELECT amebo.append_events('privy-1', '[{"action": "privy.done", "payload": {"n": 3}}]')$$),
    ($$SELECT amebo.save_snapshot('privy-1', 1, '{"saved": true}')$$),
    ($$SELECT amebo.load_snapshot('privy-1')$$),
    ($$INSERT INTO amebo.events SELECT * FROM amebo.events LIMIT 1$$),
    ($$INSERT INTO amebo.snapshots VALUES ('privy-1', 2, '{}')$$),
    ($$DELETE FROM amebo.snapshots$$),
    ($$UPDATE amebo.subscriptions SET state = 'paused'$$),
    ($$SELECT secret FROM amebo.applications$$),
    ($$SELECT amebo.application_secret('privy')$$),
    ($$SELECT amebo.create_application('sneaky')$$),
    ($$SELECT amebo.rotate_application_secret('privy')$$),
    ($$SELECT amebo.create_action('privy.other', 'privy')$$),
    ($$SELECT amebo.create_subscription('privy', 'hook', 'privy.done', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.create_reducer('other', 'privy_reducer(jsonb, amebo.events)')$$),
    ($$SELECT amebo.create_projection('seen', 'privy_handler(amebo.events)')$$),
    ($$SELECT amebo.rebuild_projection('seen')$$),
    ($$SELECT amebo_internal.call_as_owner('privy_handler(amebo.events)', 'amebo_regress_writer', NULL)$$),
    ($$SELECT amebo_internal.run_projection('seen')$$),
    ($$SELECT amebo_internal.record_deliveries('{}', NULL, NULL)$$)
) AS cases(q);
RESET ROLE;

-- amebo_admin: the registry, subscriptions, reducers, projections; still no direct writes,
-- and none of the worker's functions.
SET ROLE amebo_regress_admin;
SELECT q AS statement, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.create_application('privy-two')$$),
    ($$SELECT amebo.update_application('privy-two', 'https://privy.example.invalid')$$),
    ($$SELECT amebo.rotate_application_secret('privy-two')$$),
    ($$SELECT amebo.create_action('privy.other', 'privy')$$),
    ($$SELECT amebo.update_action('privy.other', compatibility => 'backward')$$),
    ($$SELECT amebo.create_subscription('privy', 'hook', 'privy.done', 'https://hooks.example.invalid/')$$),
    ($$SELECT amebo.update_subscription('privy', 'hook', max_retries => 2)$$),
    ($$SELECT amebo.pause_subscription('privy', 'hook')$$),
    ($$SELECT amebo.resume_subscription('privy', 'hook')$$),
    ($$SELECT amebo.redeliver('privy', 'hook')$$),
    ($$SELECT amebo.replay_subscription('privy', 'hook', 0::bigint)$$),
    ($$SELECT amebo.replay_subscription('privy', 'hook', now())$$),
    ($$SELECT amebo.drop_subscription('privy', 'hook')$$),
    ($$SELECT amebo.create_projection('seen', 'privy_handler(amebo.events)', ARRAY['privy.done'], 'inline', 'privy_reset()')$$),
    ($$SELECT amebo.create_projection('later', 'privy_handler(amebo.events)', ARRAY['privy.other'], 'async')$$),
    ($$SELECT amebo.pause_projection('later')$$),
    ($$SELECT amebo.resume_projection('later')$$),
    ($$SELECT amebo.drop_projection('later')$$),
    ($$SELECT amebo.drop_action('privy.other')$$),
    ($$SELECT amebo.drop_application('privy-two')$$),
    ($$INSERT INTO amebo.applications (name, secret) VALUES ('direct', 'whsec_x')$$),
    ($$UPDATE amebo.subscriptions SET state = 'paused'$$),
    ($$DELETE FROM amebo.deliveries$$),
    ($$UPDATE amebo.projections SET owner = 'amebo_regress_admin'$$),
    ($$SELECT amebo_internal.register_projection('direct', 'privy_handler(amebo.events)', NULL, 'inline', NULL, 'amebo_admin')$$),
    ($$SELECT amebo_internal.call_as_owner('privy_handler(amebo.events)', 'amebo_regress_admin', NULL)$$),
    ($$SELECT amebo_internal.run_projection('seen')$$),
    ($$SELECT amebo_internal.record_deliveries('{}', NULL, NULL)$$),
    ($$SELECT amebo_internal.plan_catch_up('x', 0, 0, 0)$$),
    ($$SELECT amebo_internal.prune_delivery_log('1 day')$$),
    ($$SELECT amebo_internal.generate_secret()$$),
    ($$SELECT amebo_internal.check_handler('https://hooks.example.invalid/')$$),
    ($$SELECT amebo_internal.add_action_schema('privy.done', '{}')$$),
    ($$SELECT amebo_internal.lock_subscription('privy', 'hook')$$)
) AS cases(q);
SELECT amebo.application_secret('privy') = 'whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8='
    AS admin_reads_secret;
SELECT secret LIKE 'whsec_%' AS admin_reads_the_table FROM amebo.applications WHERE name = 'privy';
RESET ROLE;
-- amebo_internal: each role may execute only what the functions that call it as that role
-- need (resume_projection runs as its caller; subscription_status calls
-- delivery_worker_stats with its reader's privileges; amebo_router calls the shard helpers
-- as the role of its user mapping); every role may look names up (since 1.6).
SELECT r.rolname AS role, p.oid::regprocedure AS executes_internal
FROM pg_proc p, pg_roles r
WHERE p.pronamespace = 'amebo_internal'::regnamespace
  AND r.rolname IN ('amebo_reader', 'amebo_writer', 'amebo_admin')
  AND has_function_privilege(r.oid, p.oid, 'EXECUTE')
ORDER BY 1, p.oid::regprocedure::text;
SELECT r.rolname AS role, has_schema_privilege(r.oid, 'amebo_internal', 'USAGE') AS uses_internal
FROM pg_roles r WHERE r.rolname IN ('amebo_reader', 'amebo_writer', 'amebo_admin') ORDER BY 1;
-- The projection belongs to the admin that created it, not to the function's owner.
SELECT name, owner FROM amebo.projection_list WHERE name = 'seen';

-- Users' code runs as the calling role: the inline handler as the appender, the reset and the
-- handler of a rebuild as the admin, the reducer as the loader.
SET ROLE amebo_regress_writer;
SELECT amebo.append_event('privy-1', 'privy.done', '{"n": 4}') AS version;
RESET ROLE;
SELECT ran_as, count(*) FROM privy_seen GROUP BY ran_as ORDER BY ran_as;
SET ROLE amebo_regress_admin;
SELECT amebo.rebuild_projection('seen') AS replayed;
SELECT amebo.pause_projection('seen');
RESET ROLE;
SELECT amebo.append_event('privy-1', 'privy.done', '{"n": 5}') AS version;
SET ROLE amebo_regress_admin;
SELECT amebo.resume_projection('seen');
RESET ROLE;
SELECT ran_as, count(*) FROM privy_seen GROUP BY ran_as ORDER BY ran_as;
SELECT name, state FROM amebo.projection_status WHERE name = 'seen';
-- A reader loads a state (the reducer runs as the reader) but saves no snapshot; a writer's
-- load saves one.
DELETE FROM amebo.snapshots WHERE stream = 'privy-1';
SET ROLE amebo_regress_reader;
SELECT state->>'ran_as' AS reducer_ran_as, version FROM amebo.load_state('privy-1');
RESET ROLE;
SELECT count(*) AS snapshots_after_reader FROM amebo.snapshots WHERE stream = 'privy-1';
SET ROLE amebo_regress_writer;
SELECT state->>'ran_as' AS reducer_ran_as, version FROM amebo.load_state('privy-1');
RESET ROLE;
SELECT version AS snapshot_after_writer FROM amebo.snapshots WHERE stream = 'privy-1';
-- fmgr checks no privilege: amebo does. A handler or reducer the caller may not execute is
-- refused, at registration and when it would run.
REVOKE EXECUTE ON FUNCTION privy_handler(amebo.events), privy_reducer(jsonb, amebo.events) FROM PUBLIC;
SET ROLE amebo_regress_writer;
SELECT regress.outcome($$SELECT amebo.append_event('privy-1', 'privy.done', '{"n": 6}')$$);
SELECT regress.outcome($$SELECT amebo.load_state('privy-1')$$);
RESET ROLE;
SET ROLE amebo_regress_admin;
SELECT regress.outcome($$SELECT amebo.create_projection('seen-too', 'privy_handler(amebo.events)')$$);
SELECT regress.outcome($$SELECT amebo.rebuild_projection('seen')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION privy_handler(amebo.events), privy_reducer(jsonb, amebo.events) TO PUBLIC;
-- An append remembers the handler's EXECUTE verdict for the role that appends, until
-- privileges change: another role is checked again (here the writer after the superuser), and
-- so is the same role once a grant or a membership it held is revoked.
REVOKE EXECUTE ON FUNCTION privy_handler(amebo.events) FROM PUBLIC;
CREATE ROLE amebo_regress_runners;
GRANT EXECUTE ON FUNCTION privy_handler(amebo.events) TO amebo_regress_runners;
SELECT regress.outcome($$SELECT amebo.append_event('privy-2', 'privy.done', '{"n": 7}')$$);
SET ROLE amebo_regress_writer;
SELECT regress.outcome($$SELECT amebo.append_event('privy-2', 'privy.done', '{"n": 8}')$$);
RESET ROLE;
GRANT amebo_regress_runners TO amebo_regress_writer;
SET ROLE amebo_regress_writer;
SELECT regress.outcome($$SELECT amebo.append_event('privy-2', 'privy.done', '{"n": 9}')$$);
RESET ROLE;
REVOKE amebo_regress_runners FROM amebo_regress_writer;
SET ROLE amebo_regress_writer;
SELECT regress.outcome($$SELECT amebo.append_event('privy-2', 'privy.done', '{"n": 10}')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION privy_handler(amebo.events) TO amebo_regress_writer;
SET ROLE amebo_regress_writer;
SELECT regress.outcome($$SELECT amebo.append_event('privy-2', 'privy.done', '{"n": 11}')$$);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION privy_handler(amebo.events) FROM amebo_regress_writer;
SET ROLE amebo_regress_writer;
SELECT regress.outcome($$SELECT amebo.append_event('privy-2', 'privy.done', '{"n": 12}')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION privy_handler(amebo.events) TO PUBLIC;
REVOKE EXECUTE ON FUNCTION privy_handler(amebo.events) FROM amebo_regress_runners;
DROP ROLE amebo_regress_runners;

-- A hostile search_path: an admin's own "=" for text, first on the path, records who runs it.
-- It runs for the admin's own query, never inside amebo's functions (which would run it as
-- their owner) nor in the C code's queries as the tables' owner.
CREATE SCHEMA privy_evil AUTHORIZATION amebo_regress_admin;
CREATE TABLE privy_evil.calls (ran_as text);
GRANT INSERT ON privy_evil.calls TO PUBLIC;
SET ROLE amebo_regress_admin;
CREATE FUNCTION privy_evil.text_eq(a text, b text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO privy_evil.calls VALUES (current_user);
    RETURN pg_catalog.texteq(a, b);
END
$$;
CREATE OPERATOR privy_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = privy_evil.text_eq);
SET search_path = privy_evil, pg_catalog, public;
SELECT count(*) AS own_query FROM amebo.events WHERE stream = 'privy-1';
SELECT q AS statement, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.create_application('privy-three')$$),
    ($$SELECT amebo.create_action('privy.third', 'privy-three')$$),
    ($$SELECT amebo.append_event('privy-3', 'privy.third', '{}')$$),
    ($$SELECT amebo.rebuild_projection('seen')$$),
    ($$SELECT amebo.pause_projection('seen')$$),
    ($$SELECT amebo.resume_projection('seen')$$),
    ($$SELECT amebo.create_projection('seen-three', 'public.privy_handler(amebo.events)', ARRAY['privy.third'])$$),
    ($$SELECT amebo.drop_projection('seen-three')$$),
    ($$SELECT amebo.drop_application('privy-three', true)$$)
) AS cases(q);
RESET search_path;
RESET ROLE;
SELECT ran_as, count(*) > 0 AS ran FROM privy_evil.calls GROUP BY ran_as ORDER BY ran_as;

-- Secrets appear in no error message.
SET ROLE amebo_regress_admin;
SELECT q AS statement, outcome, outcome LIKE '%whsec%' OR outcome LIKE '%c2VjcmV0%' AS leaks
FROM (VALUES
    ($$SELECT amebo.create_application('Bad Name', NULL, 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2Vj')$$),
    ($$SELECT amebo.create_application('privy', NULL, 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2Vj')$$),
    ($$SELECT amebo.create_application('privy-four', 'ftp://x', 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2Vj')$$),
    ($$SELECT amebo.create_application('privy-four', NULL, 'whsec_c2VjcmV0')$$),
    ($$SELECT amebo.create_application('privy-four', NULL, 'whsec_c2Vjc!!!mV0c2VjcmV0c2VjcmV0c2VjcmV0c2Vj')$$),
    ($$SELECT amebo.rotate_application_secret('privy', 'whsec_c2VjcmV0')$$),
    ($$SELECT amebo.rotate_application_secret('nobody', 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2Vj')$$)
) AS cases(q), LATERAL (SELECT regress.outcome(q) AS outcome) o;
RESET ROLE;
-- Nor in the server log: an error raised inside create_application or
-- rotate_application_secret does not log the statement, which holds the secret, as the
-- STATEMENT line other errors get (the control).
SELECT amebo.create_application('Bad Name', NULL, 'whsec_bG9nZ2VkbG9nZ2VkbG9nZ2VkbG9nZ2VkbG9nZ2VkbG9n');
SELECT amebo.rotate_application_secret('nobody', 'whsec_bG9nZ2VkbG9nZ2VkbG9nZ2VkbG9nZ2VkbG9nZ2VkbG9n');
SELECT amebo.rotate_application_secret('privy', 'whsec_bG9nZ2Vk');
SELECT 'statement_logged_control'::integer;
-- (pg_regress logs the temporary instance to log/postmaster.log beside tmp_check/data.)
SELECT pg_read_file('../../log/postmaster.log') AS server_log \gset
SELECT position('bG9nZ2Vk' IN :'server_log') = 0 AS secrets_not_logged,
       position('application "nobody" does not exist' IN :'server_log') > 0 AS errors_logged,
       position('STATEMENT:  SELECT ''statement_logged_control''' IN :'server_log') > 0
           AS other_statements_logged;

SELECT amebo.drop_projection('seen');
SELECT amebo.drop_reducer('privy');
DROP TABLE privy_seen;
DROP FUNCTION privy_handler(amebo.events), privy_reset(), privy_reducer(jsonb, amebo.events);
DROP SCHEMA privy_evil CASCADE;
REVOKE USAGE ON SCHEMA regress FROM PUBLIC;
DROP ROLE amebo_regress_nobody, amebo_regress_reader, amebo_regress_writer, amebo_regress_admin;

-- A second database of the cluster: CREATE EXTENSION finds the roles and grants to them;
-- DROP EXTENSION leaves them (they belong to the cluster).
SELECT current_database() AS home_database \gset
CREATE DATABASE amebo_regress_second;
\c amebo_regress_second
CREATE EXTENSION amebo;
SELECT has_schema_privilege('amebo_reader', 'amebo', 'USAGE') AS reader_uses_schema,
       has_function_privilege('amebo_writer', 'amebo.append_event(text, text, jsonb, bigint, jsonb, uuid)', 'EXECUTE') AS writer_appends,
       has_function_privilege('amebo_writer', 'amebo.create_action(text, text, jsonb, text)', 'EXECUTE') AS writer_registers;
DROP EXTENSION amebo;
SELECT count(*) AS roles_left FROM pg_roles
WHERE rolname IN ('amebo_reader', 'amebo_writer', 'amebo_admin');
\c :home_database
DROP DATABASE amebo_regress_second;
