-- Bad input gets a clear error with a fitting SQLSTATE.

SELECT q, regress.outcome(q) FROM (VALUES
    -- NULLs: 22004
    ($$SELECT amebo.append_event(NULL, 'a.b', '{}')$$),
    ($$SELECT amebo.append_event('s-1', NULL, '{}')$$),
    ($$SELECT amebo.append_event('s-1', 'a.b', NULL)$$),
    ($$SELECT amebo.append_events(NULL, '[]')$$),
    ($$SELECT amebo.append_events('s-1', NULL)$$),
    ($$SELECT amebo.stream_version(NULL)$$),
    ($$SELECT amebo.read_stream(NULL)$$),
    ($$SELECT amebo.read_all(actions => ARRAY['a.b', NULL])$$),
    -- names: 22023
    ($$SELECT amebo.append_event('', 'a.b', '{}')$$),
    ($$SELECT amebo.append_event('s-1', '', '{}')$$),
    ($$SELECT amebo.append_event('two words', 'a.b', '{}')$$),
    ($$SELECT amebo.append_event(E's-\n1', 'a.b', '{}')$$),
    ($$SELECT amebo.append_event(repeat('s', 256), 'a.b', '{}')$$),
    ($$SELECT amebo.append_event('s-1', repeat('a', 256), '{}')$$),
    ($$SELECT amebo.stream_version('')$$),
    -- payloads and metadata must be JSON objects: 22023
    ($$SELECT amebo.append_event('s-1', 'a.b', '[1, 2]')$$),
    ($$SELECT amebo.append_event('s-1', 'a.b', '"text"')$$),
    ($$SELECT amebo.append_event('s-1', 'a.b', '42')$$),
    ($$SELECT amebo.append_event('s-1', 'a.b', 'null')$$),
    ($$SELECT amebo.append_event('s-1', 'a.b', '{}', NULL, '[]')$$),
    -- versions and counts: 22023
    ($$SELECT amebo.append_event('s-1', 'a.b', '{}', -1)$$),
    ($$SELECT amebo.append_events('s-1', '[{"action": "a.b", "payload": {}}]', -5)$$),
    ($$SELECT amebo.read_stream('s-1', -1)$$),
    ($$SELECT amebo.read_stream('s-1', 0, 0)$$),
    ($$SELECT amebo.read_all(-1)$$),
    ($$SELECT amebo.read_all(0, 0)$$),
    ($$SELECT amebo.read_all(0, -3)$$),
    ($$SELECT amebo.read_all(actions => '{}')$$),
    ($$SELECT amebo.read_all(payload_filter => '[1]')$$),
    -- malformed events arrays: 22023 (22P02 for an id that is not a UUID)
    ($$SELECT amebo.append_events('s-1', '{}')$$),
    ($$SELECT amebo.append_events('s-1', '"x"')$$),
    ($$SELECT amebo.append_events('s-1', '[]')$$),
    ($$SELECT amebo.append_events('s-1', '[1]')$$),
    ($$SELECT amebo.append_events('s-1', '[{"payload": {}}]')$$),
    ($$SELECT amebo.append_events('s-1', '[{"action": 7, "payload": {}}]')$$),
    ($$SELECT amebo.append_events('s-1', '[{"action": "a.b"}]')$$),
    ($$SELECT amebo.append_events('s-1', '[{"action": "a.b", "payload": "x"}]')$$),
    ($$SELECT amebo.append_events('s-1', '[{"action": "a.b", "payload": {}, "metadata": 3}]')$$),
    ($$SELECT amebo.append_events('s-1', '[{"action": "a.b", "payload": {}, "paylod": {}}]')$$),
    ($$SELECT amebo.append_events('s-1', '[{"action": "a.b", "payload": {}, "event_id": 5}]')$$),
    ($$SELECT amebo.append_events('s-1', '[{"action": "a.b", "payload": {}, "event_id": "nope"}]')$$),
    ($$SELECT amebo.append_events('s-1', '[{"action": "", "payload": {}}]')$$),
    ($$SELECT amebo.append_events('s-1', '[{"action": "a.b", "payload": {}},
        {"action": "a.c", "payload": {}, "event_id": "6a1f0c2e-0000-4000-8000-0000000000aa"},
        {"action": "a.d", "payload": {}, "event_id": "6a1f0c2e-0000-4000-8000-0000000000aa"}]')$$)
) AS cases(q);
SELECT count(*) AS nothing_stored FROM amebo.events WHERE stream IN ('s-1', '', 'two words');

-- The payload size limit (amebo.max_payload_size, bytes of jsonb): 54000 beyond it.
SHOW amebo.max_payload_size;
SET amebo.max_payload_size = '1kB';
SELECT amebo.append_event('s-1', 'a.b', jsonb_build_object('blob', repeat('x', 2000)));
SELECT amebo.append_event('s-1', 'a.b', '{}', NULL, jsonb_build_object('blob', repeat('x', 2000)));
SELECT amebo.append_events('s-1', jsonb_build_array(jsonb_build_object('action', 'a.b',
    'payload', jsonb_build_object('blob', repeat('x', 2000)))));
SELECT amebo.append_event('s-1', 'a.b', jsonb_build_object('blob', repeat('x', 900)));
RESET amebo.max_payload_size;
SELECT amebo.append_event('s-1', 'a.b', jsonb_build_object('blob', repeat('x', 2000)));
-- Ordinary roles cannot raise it, and the amebo. prefix is reserved.
CREATE ROLE amebo_regress_user;
SET ROLE amebo_regress_user;
SET amebo.max_payload_size = '100MB';
RESET ROLE;
DROP ROLE amebo_regress_user;
SET amebo.no_such_setting = 1;
