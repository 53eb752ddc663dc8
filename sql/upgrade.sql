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
-- A fresh install of 1.1 and an upgraded 1.0 have the same objects.
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
