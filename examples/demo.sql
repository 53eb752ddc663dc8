-- The design guide's user aggregate, told through amebo's SQL functions.
\set QUIET on
\pset footer off
\set ON_ERROR_STOP off
CREATE EXTENSION amebo;

\echo
\echo '0. Register the users service, its actions with JSON Schemas, and the users read model.'
SELECT amebo.create_application('users-service', 'https://users.example.com/hooks')
       LIKE 'whsec_%' AS secret_generated;
SELECT amebo.create_action('user.created', 'users-service', '{
    "type": "object", "required": ["user_id", "email", "name"],
    "properties": {"user_id": {"type": "string"}, "email": {"type": "string", "format": "email"},
                   "name": {"type": "string", "minLength": 1}}}') AS user_created_schema_version;
SELECT amebo.create_action('user.email_verified', 'users-service', '{
    "type": "object", "required": ["user_id", "verified_at"],
    "properties": {"verified_at": {"type": "string", "format": "date-time"}}}')
       AS user_email_verified_schema_version;
\o /dev/null
\i examples/users/users.sql
\o

\echo
\echo '1. Create user 42: the stream user-42 must be new (expected version 0).'
SELECT amebo.append_event('user-42', 'user.created',
    '{"user_id": "42", "email": "ada@example.com", "name": "Ada Lovelace"}',
    expected_version => 0) AS new_version;

\echo '2. Verify the email: the command handler loaded version 1, so it expects 1.'
SELECT amebo.append_event('user-42', 'user.email_verified',
    '{"user_id": "42", "verified_at": "2026-11-27T10:00:00Z"}',
    expected_version => 1, metadata => '{"correlation_id": "req-7"}') AS new_version;

\echo '3. A second handler, also loaded at version 1, verifies concurrently: version conflict.'
SELECT amebo.append_event('user-42', 'user.email_verified',
    '{"user_id": "42", "verified_at": "2026-11-27T10:00:01Z"}', expected_version => 1);
\echo '   SQLSTATE' :LAST_ERROR_SQLSTATE '(amebo''s dedicated version-conflict code)'

\echo
\echo '4. A client retries an append after losing the reply: same event_id, same version back.'
SELECT amebo.append_event('user-43', 'user.created',
    '{"user_id": "43", "email": "alan@example.com", "name": "Alan Turing"}', 0,
    event_id => '5f0c6a52-2f7e-4c55-9d8c-1b0a9e1f4a43') AS first_try;
SELECT amebo.append_event('user-43', 'user.created',
    '{"user_id": "43", "email": "alan@example.com", "name": "Alan Turing"}', 0,
    event_id => '5f0c6a52-2f7e-4c55-9d8c-1b0a9e1f4a43') AS retry;
SELECT count(*) AS events_in_user_43 FROM amebo.read_stream('user-43');

\echo '5. A batch: user 44 is created and verified atomically.'
SELECT amebo.append_events('user-44', '[
    {"action": "user.created", "payload": {"user_id": "44", "email": "grace@example.com", "name": "Grace Hopper"}},
    {"action": "user.email_verified", "payload": {"user_id": "44", "verified_at": "2026-11-27T10:05:00Z"}}
]', expected_version => 0) AS new_version;

\echo
\echo '6. Load user 42 (read_stream): its events in version order.'
SELECT version, action, payload, metadata FROM amebo.read_stream('user-42');

\echo '7. Which schema version each event was validated against:'
SELECT stream, version, action, schema_version FROM amebo.read_all() ORDER BY position;

\echo '8. Everything, in global order (read_all), as a projection or a subscriber pages through it.'
SELECT position, stream, version, action FROM amebo.read_all(after_position => 0, max_count => 10);

\echo '9. Bad input is refused with a clear error:'
SELECT amebo.append_event('user-45', 'user.created', '["not", "an", "object"]');
\echo '   SQLSTATE' :LAST_ERROR_SQLSTATE
\echo '   ... and so is a payload that fails its action''s schema (the error names path, rule, version):'
SELECT amebo.append_event('user-45', 'user.created',
    '{"user_id": "45", "email": "not-an-address", "name": "Eve"}');
\echo '   SQLSTATE' :LAST_ERROR_SQLSTATE

\echo
\echo '10. The users read model, kept inline by the users projection (consistent at commit):'
SELECT user_id, email, name, status, version FROM users ORDER BY user_id;

\echo '11. Server-side state loading: the reducer folds snapshot + events (load_state).'
SELECT version, state FROM amebo.load_state('user-42');

\echo '12. Rebuild the read model from the events (rebuild_projection returns the count):'
SELECT amebo.rebuild_projection('users') AS events_replayed;
SELECT count(*) AS users_after_rebuild FROM users;
