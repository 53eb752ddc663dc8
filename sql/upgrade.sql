-- The upgrade path: install 1.0, append, ALTER EXTENSION amebo UPDATE, go on.
DROP EXTENSION amebo CASCADE;
CREATE EXTENSION amebo VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'amebo';
SELECT amebo.append_event('legacy-1', 'legacy.created', '{"a": 1}', 0);
SELECT count(*) AS registry_functions FROM pg_proc WHERE proname = 'create_action';

ALTER EXTENSION amebo UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'amebo';
SELECT stream, version, action, schema_version FROM amebo.events;
SELECT amebo.append_event('legacy-1', 'legacy.updated', '{"a": 2}', 1);
SELECT amebo.create_application('legacy') IS NOT NULL AS registered;
SELECT amebo.create_action('legacy.updated', 'legacy', '{"type": "object", "required": ["a"]}');
SELECT amebo.append_event('legacy-1', 'legacy.updated', '{"a": 3}', 2);
SELECT amebo.append_event('legacy-1', 'legacy.updated', '{"b": 3}', 3);
SELECT stream, version, action, schema_version FROM amebo.events ORDER BY position;
-- A fresh install and an upgraded 1.0 have the same objects.
SELECT count(*) AS objects FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
WHERE e.extname = 'amebo' AND d.deptype = 'e';
DROP EXTENSION amebo CASCADE;
CREATE EXTENSION amebo;
SELECT count(*) AS objects FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
WHERE e.extname = 'amebo' AND d.deptype = 'e';

-- A session that appended under 1.0 sees the registry and projections an upgrade brings at
-- its very next append (its caches must not remember "no registry").
DROP EXTENSION amebo CASCADE;
CREATE EXTENSION amebo VERSION '1.0';
SELECT amebo.append_event('old-1', 'old.happened', '{"a": 1}');
ALTER EXTENSION amebo UPDATE;
SELECT amebo.create_application('old') IS NOT NULL AS registered;
SELECT amebo.create_action('old.happened', 'old', '{"type": "object", "required": ["a"]}');
SELECT amebo.append_event('old-1', 'old.happened', '{"b": 1}');
CREATE TABLE old_seen (position bigint);
CREATE FUNCTION old_projection(event amebo.events) RETURNS void LANGUAGE sql AS $$
    INSERT INTO old_seen VALUES (event.position)
$$;
SELECT amebo.create_projection('old', 'old_projection(amebo.events)');
SELECT amebo.append_event('old-1', 'old.happened', '{"a": 2}');
SELECT count(*) AS projected FROM old_seen;

-- 1.2 -> 1.3: subscriptions arrive. The registry and the events of 1.2 carry over: a new
-- subscription starts after the events stored before the update, and can replay them.
DROP EXTENSION amebo CASCADE;
CREATE EXTENSION amebo VERSION '1.2';
SELECT amebo.create_application('shop', NULL, 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw') IS NOT NULL AS registered;
SELECT amebo.create_action('order.placed', 'shop');
SELECT amebo.append_event('order-1', 'order.placed', '{"total": 10}');
SELECT count(*) AS subscription_functions FROM pg_proc WHERE proname = 'create_subscription';
ALTER EXTENSION amebo UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'amebo';
SELECT amebo.create_subscription('shop', 'placed', 'order.placed', 'https://hooks.example.invalid/placed') > 0 AS subscribed;
SELECT start_position = (SELECT max(position) FROM amebo.events) AS starts_after_old_events
FROM amebo.subscriptions WHERE name = 'placed';
SELECT amebo.replay_subscription('shop', 'placed', 0::bigint) AS replayed;
SELECT application, name, action, state FROM amebo.subscription_list;
SELECT amebo.append_event('order-1', 'order.placed', '{"total": 20}');
-- 1.3 -> 1.4: privileges. The roles exist, and nothing is left to PUBLIC.
ALTER EXTENSION amebo UPDATE TO '1.4';
SELECT extversion FROM pg_extension WHERE extname = 'amebo';
SELECT count(*) AS amebo_roles FROM pg_roles
WHERE rolname IN ('amebo_reader', 'amebo_writer', 'amebo_admin');
SELECT count(*) AS public_functions FROM pg_proc p
WHERE p.pronamespace = 'amebo'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE');
SELECT amebo.create_subscription('shop', 'placed-again', 'order.placed', 'https://hooks.example.invalid/placed') > 0 AS subscribed;
-- A fresh install of 1.4 has exactly the objects, privileges, and tables pg_dump keeps, of
-- the updated 1.2.
CREATE TEMP TABLE updated_acls AS
SELECT c.oid::regclass::text AS object, c.relacl::text AS acl FROM pg_class c
WHERE c.relnamespace = 'amebo'::regnamespace
UNION ALL
SELECT p.oid::regprocedure::text, p.proacl::text || p.prosecdef::text || coalesce(p.proconfig::text, '')
FROM pg_proc p WHERE p.pronamespace = 'amebo'::regnamespace
UNION ALL
SELECT 'schema amebo', n.nspacl::text FROM pg_namespace n WHERE n.nspname = 'amebo';
CREATE TEMP TABLE updated_objects AS
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS object
FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
WHERE e.extname = 'amebo' AND d.deptype = 'e';
CREATE TEMP TABLE updated_dumped AS
SELECT c::regclass::text AS dumped FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'amebo';
DROP EXTENSION amebo CASCADE;
CREATE EXTENSION amebo;
SELECT extversion FROM pg_extension WHERE extname = 'amebo';
CREATE TEMP TABLE fresh_objects AS
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS object
FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
WHERE e.extname = 'amebo' AND d.deptype = 'e';
CREATE TEMP TABLE fresh_acls AS
SELECT c.oid::regclass::text AS object, c.relacl::text AS acl FROM pg_class c
WHERE c.relnamespace = 'amebo'::regnamespace
UNION ALL
SELECT p.oid::regprocedure::text, p.proacl::text || p.prosecdef::text || coalesce(p.proconfig::text, '')
FROM pg_proc p WHERE p.pronamespace = 'amebo'::regnamespace
UNION ALL
SELECT 'schema amebo', n.nspacl::text FROM pg_namespace n WHERE n.nspname = 'amebo';
SELECT (SELECT count(*) FROM updated_objects) AS updated, (SELECT count(*) FROM fresh_objects) AS fresh;
SELECT count(*) AS acl_differences FROM (
    (SELECT * FROM updated_acls EXCEPT SELECT * FROM fresh_acls)
    UNION ALL
    (SELECT * FROM fresh_acls EXCEPT SELECT * FROM updated_acls)) d;
(SELECT 'only updated' AS side, object FROM updated_objects EXCEPT SELECT 'only updated', object FROM fresh_objects)
UNION ALL
(SELECT 'only fresh', object FROM fresh_objects EXCEPT SELECT 'only fresh', object FROM updated_objects);
SELECT dumped FROM updated_dumped ORDER BY dumped;
(SELECT c::regclass::text FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'amebo'
 EXCEPT SELECT dumped FROM updated_dumped)
UNION ALL
(SELECT dumped FROM updated_dumped
 EXCEPT SELECT c::regclass::text FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'amebo');
