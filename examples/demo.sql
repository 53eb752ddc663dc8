-- The design guide's user aggregate, told through amebo's SQL functions.
\set QUIET on
\pset footer off
\set ON_ERROR_STOP off
CREATE EXTENSION amebo;

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

\echo '7. Fold the events into the aggregate state, as UserAggregate.apply_event does.'
SELECT stream AS user_stream,
       max(payload->>'email') FILTER (WHERE action = 'user.created') AS email,
       CASE WHEN bool_or(action = 'user.email_verified') THEN 'active' ELSE 'pending' END AS status,
       max(version) AS version
FROM amebo.read_all() GROUP BY stream ORDER BY stream;

\echo '8. Everything, in global order (read_all), as a projection or a subscriber pages through it.'
SELECT position, stream, version, action FROM amebo.read_all(after_position => 0, max_count => 10);

\echo '9. Bad input is refused with a clear error:'
SELECT amebo.append_event('user-45', 'user.created', '["not", "an", "object"]');
\echo '   SQLSTATE' :LAST_ERROR_SQLSTATE
