-- Validation on append against the registry (uses the applications and actions of registry.sql).

-- A valid payload is stored with the schema version it satisfied (user.created is at 2).
SELECT amebo.append_event('user-100', 'user.created',
    '{"user_id": "100", "email": "ada@example.com", "name": "Ada", "locale": "en"}', 0);
SELECT stream, version, action, schema_version FROM amebo.events WHERE stream = 'user-100';

-- Failing payloads: the error names the JSON path, the rule and the schema version (AM004).
SELECT amebo.append_event('user-101', 'user.created', '{"user_id": "101", "name": "Bob"}');
SELECT amebo.append_event('user-101', 'user.created',
    '{"user_id": 101, "email": "bob@example.com", "name": "Bob"}');
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.append_event('user-101', 'user.created', '{"user_id": "101", "email": "not an address", "name": "Bob"}')$$),
    ($$SELECT amebo.append_event('user-101', 'user.created', '{"user_id": "101", "email": "bob@example.com", "name": ""}')$$),
    ($$SELECT amebo.append_event('user-101', 'user.created', '{"user_id": "101", "email": "bob@example.com", "name": "Bob", "locale": "xx"}')$$),
    ($$SELECT amebo.append_events('user-101', '[{"action": "user.created", "payload": {"user_id": "101", "email": "bob@example.com", "name": "Bob"}}, {"action": "user.created", "payload": {"user_id": 7}}]')$$)
) AS cases(q);
SELECT count(*) AS nothing_stored FROM amebo.events WHERE stream = 'user-101';

-- A registered action without a schema takes any object; its events carry no schema version.
SELECT amebo.append_event('user-100', 'user.email_verified', '{"anything": ["goes"]}', 1);
-- Unregistered actions: allowed by default, refused under amebo.unknown_actions = reject.
SHOW amebo.unknown_actions;
SELECT amebo.append_event('misc-1', 'misc.happened', '{}');
SET amebo.unknown_actions = reject;
SELECT amebo.append_event('misc-1', 'misc.happened', '{}');
SELECT amebo.append_events('misc-1', '[{"action": "user.email_verified", "payload": {}}, {"action": "misc.happened", "payload": {}}]');
SELECT amebo.append_event('user-100', 'user.email_verified', '{}');
RESET amebo.unknown_actions;
SELECT stream, version, action, schema_version FROM amebo.events
WHERE stream IN ('user-100', 'misc-1') ORDER BY position;

-- A new schema applies to the next append in the same session, and is recorded.
SELECT amebo.update_action('user.created', schema => '{"type": "object", "required": ["user_id", "email", "name"], "properties": {"email": {"type": "string", "format": "email"}, "name": {"type": "string"}}}');
SELECT amebo.append_event('user-102', 'user.created', '{"user_id": 102, "email": "cy@example.com", "name": ""}', 0);
SELECT schema_version FROM amebo.events WHERE stream = 'user-102';

-- Events by application: those of the actions it owns.
SELECT stream, action FROM amebo.application_events('users') ORDER BY position;
SELECT regress.outcome($$SELECT amebo.application_events('nobody')$$);

-- The schema functions on their own.
SELECT * FROM amebo.schema_violations('{"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}', '{"tags": ["a", 2]}');
SELECT count(*) AS integer_ok FROM amebo.schema_violations('{"type": "integer"}', '3.0');
SELECT * FROM amebo.schema_violations('{"properties": {"at": {"format": "date-time"}, "on": {"format": "date"}, "id": {"format": "uuid"}}}',
                                      '{"at": "2026-02-30T10:00:00Z", "on": "2024-02-29", "id": "not-a-uuid"}');
SELECT regress.outcome($$SELECT amebo.check_schema(NULL)$$);
SELECT amebo.check_schema('true'), amebo.check_schema('{}');

-- Patterns run on PostgreSQL's regex engine, not std::regex (which recursed per character
-- and crashed the backend on long strings, and backtracked without checking for interrupts):
-- a 100 kB string and an exponential pattern are both fine.
SELECT amebo.create_action('note.written', 'users', '{"type": "object", "properties": {"text": {"type": "string", "pattern": "^((a)|(b))*$"}}}');
SELECT amebo.append_event('note-1', 'note.written', jsonb_build_object('text', repeat('ab', 50000)));
SELECT amebo.append_event('note-1', 'note.written', jsonb_build_object('text', repeat('ab', 50000) || 'c'));
-- The same through valijson (a schema outside the fast subset) and schema_violations.
SELECT amebo.update_action('note.written', schema => '{"type": "object", "properties": {"text": {"anyOf": [{"pattern": "^((a)|(b))*$"}]}}}');
SELECT amebo.append_event('note-1', 'note.written', jsonb_build_object('text', repeat('ab', 50000)));
SET statement_timeout = '5s';
SELECT count(*) AS violations FROM amebo.schema_violations('{"pattern": "^(a+)+$"}', to_jsonb(repeat('a', 40) || 'b'));
SELECT path, rule FROM amebo.schema_violations('{"patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": false}', '{"x-a": 1, "x-b": "no", "y": 2}');
RESET statement_timeout;

-- Hostile schemas (found by test/scripts/hostile_input.sh). A pattern nesting 20,000 groups
-- and $ref chains thousands of definitions long overflowed the backend's stack (a crash that
-- restarted the cluster): they are refused with 54001.
SELECT left(q, 60) AS q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.check_schema(jsonb_build_object('pattern', repeat('(', 20000) || 'a' || repeat(')', 20000)))$$),
    ($$SELECT amebo.check_schema(jsonb_build_object('$ref', '#/definitions/d1', 'definitions',
        (SELECT jsonb_object_agg('d' || g, jsonb_build_object('$ref', '#/definitions/d' || (g + 1)))
         FROM generate_series(1, 20000) g) || '{"d20001": {}}'))$$),
    ($$SELECT amebo.check_schema(jsonb_build_object('$ref', '#/definitions/d1', 'definitions',
        (SELECT jsonb_object_agg('d' || g, jsonb_build_object('properties', jsonb_build_object('a',
             jsonb_build_object('$ref', '#/definitions/d' || (g + 1))))) FROM generate_series(1, 5000) g)
        || '{"d5001": {}}'))$$),
    -- The same chains entered from "properties" (visited after "definitions"), written
    -- backwards, or through references that are local without starting with "#".
    ($$SELECT amebo.check_schema(jsonb_build_object('properties', jsonb_build_object('x',
        jsonb_build_object('$ref', '#/definitions/d20000')), 'definitions',
        (SELECT jsonb_object_agg('d' || g, CASE WHEN g = 1 THEN '{"type": "string"}'::jsonb
             ELSE jsonb_build_object('$ref', '#/definitions/d' || (g - 1)) END)
         FROM generate_series(1, 20000) g)))$$),
    ($$SELECT amebo.check_schema(jsonb_build_object('properties', jsonb_build_object('x',
        jsonb_build_object('$ref', 'x#/definitions/d1')), 'definitions',
        (SELECT jsonb_object_agg('d' || g, jsonb_build_object('properties', jsonb_build_object('p',
             jsonb_build_object('$ref', 'x#/definitions/d' || (g + 1))))) FROM generate_series(1, 20000) g)
        || '{"d20001": {}}'))$$),
    -- A recursive schema and a chain of 300 stay fine.
    ($$SELECT amebo.check_schema('{"properties": {"a": {"$ref": "#"}}, "items": {"$ref": "#"}}')$$),
    ($$SELECT amebo.check_schema(jsonb_build_object('$ref', '#/definitions/d1', 'definitions',
        (SELECT jsonb_object_agg('d' || g, jsonb_build_object('$ref', '#/definitions/d' || (g + 1)))
         FROM generate_series(1, 300) g) || '{"d301": {}}'))$$)
) AS cases(q);
-- A schema whose anyOfs double at every level (2^60 paths for a document that fails them)
-- validated without ever checking for interrupts: now statement_timeout cancels it.
SET statement_timeout = '1s';
SELECT count(*) FROM amebo.schema_violations(jsonb_build_object('$ref', '#/definitions/d1',
    'definitions', (SELECT jsonb_object_agg('d' || g, jsonb_build_object('anyOf', jsonb_build_array(
        jsonb_build_object('$ref', '#/definitions/d' || (g + 1)),
        jsonb_build_object('$ref', '#/definitions/d' || (g + 1))))) FROM generate_series(1, 59) g)
    || '{"d60": {"type": "string"}}'), '1');
RESET statement_timeout;
-- uniqueItems reports each repeated element once: 2,000 equal items made 1,999,000 errors (and
-- 20,000 would exhaust memory); its quadratic loop now checks for interrupts too.
SELECT count(*) AS violations, min(rule) AS first_rule
FROM amebo.schema_violations('{"uniqueItems": true}', to_jsonb(array_fill(7, ARRAY[2000])));
SELECT count(*) AS violations FROM amebo.schema_violations('{"uniqueItems": true}', '[1, 2, 1, 3, 2]');
