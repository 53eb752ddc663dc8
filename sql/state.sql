-- Snapshots and server-side state loading, with the design guide's user aggregate.
\i examples/users/users.sql

-- Snapshots: save, load the newest, replace at the same version, keep the newest k.
SELECT amebo.append_events('ledger-1', '[
    {"action": "acct.opened", "payload": {"n": 1}}, {"action": "acct.step", "payload": {"n": 2}},
    {"action": "acct.step", "payload": {"n": 3}}, {"action": "acct.step", "payload": {"n": 4}},
    {"action": "acct.step", "payload": {"n": 5}}]');
SELECT amebo.load_snapshot('ledger-1') IS NULL AS no_snapshot_yet;
SELECT amebo.save_snapshot('ledger-1', 1, '{"sum": 1}');
SELECT amebo.save_snapshot('ledger-1', 2, '{"sum": 3}');
SELECT stream, version, state FROM amebo.load_snapshot('ledger-1');
SELECT amebo.save_snapshot('ledger-1', 2, '{"sum": 3, "fixed": true}');
SELECT version, state FROM amebo.load_snapshot('ledger-1');
SHOW amebo.snapshots_to_keep;
SELECT amebo.save_snapshot('ledger-1', 3, '{"sum": 6}');
SELECT amebo.save_snapshot('ledger-1', 4, '{"sum": 10}');
SELECT array_agg(version ORDER BY version) AS kept FROM amebo.snapshots WHERE stream = 'ledger-1';
SET amebo.snapshots_to_keep = 1;
SELECT amebo.save_snapshot('ledger-1', 5, '{"sum": 15}');
SELECT array_agg(version ORDER BY version) AS kept FROM amebo.snapshots WHERE stream = 'ledger-1';
RESET amebo.snapshots_to_keep;

-- A snapshot beyond the stream's version, and other bad input.
SELECT amebo.save_snapshot('ledger-1', 6, '{}');
SELECT amebo.save_snapshot('ledger-none', 1, '{}');
SELECT q, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.save_snapshot(NULL, 1, '{}')$$),
    ($$SELECT amebo.save_snapshot('ledger-1', 0, '{}')$$),
    ($$SELECT amebo.save_snapshot('ledger-1', 1, NULL)$$),
    ($$SELECT amebo.load_state('ledger-1')$$),
    ($$SELECT amebo.load_state(NULL)$$),
    ($$SELECT amebo.create_reducer('user', 'user_reducer(jsonb, amebo.events)')$$),
    ($$SELECT amebo.create_reducer('bad-name', 'user_reducer(jsonb, amebo.events)')$$),
    ($$SELECT amebo.create_reducer('order', 'users_projection(amebo.events)')$$),
    ($$SELECT amebo.create_reducer('order', 'jsonb_typeof(jsonb)')$$),
    ($$SELECT amebo.create_reducer('order', 'user_reducer(jsonb, amebo.events)', NULL)$$),
    ($$SELECT amebo.create_reducer('order', 'user_reducer(jsonb, amebo.events)', '{}', 0)$$),
    ($$SELECT amebo.drop_reducer('order')$$)
) AS cases(q);

-- The user aggregate: at every version, load_state (snapshots + events) equals a full
-- replay, and snapshots appear once more than snapshot_every (here 3) events were replayed.
SELECT amebo.drop_reducer('user');
SELECT amebo.create_reducer('user', 'user_reducer(jsonb, amebo.events)',
                            '{"status": "pending", "version": 0}', snapshot_every => 3);
CREATE TEMP TABLE comparisons (version bigint, loaded jsonb, replayed jsonb, snapshots bigint);
DO $$
DECLARE
    v bigint;
    loaded record;
BEGIN
    FOR v IN 1..12 LOOP
        PERFORM amebo.append_event('user-7',
            CASE v WHEN 1 THEN 'user.created' WHEN 6 THEN 'user.email_verified'
                   ELSE 'user.touched' END,
            jsonb_build_object('user_id', '7', 'email', 'grace@example.com', 'name', 'Grace',
                               'verified_at', '2026-11-27T12:00:00Z', 'n', v), v - 1);
        -- A command handler loads the aggregate after every event ...
        SELECT * INTO loaded FROM amebo.load_state('user-7');
        -- ... and every version is compared with a full replay.
        INSERT INTO comparisons VALUES (loaded.version, loaded.state,
            amebo.replay_state('user-7', loaded.version),
            (SELECT count(*) FROM amebo.snapshots WHERE stream = 'user-7'));
    END LOOP;
END
$$;
SELECT version, loaded = replayed AS equal, loaded->>'status' AS status, snapshots
FROM comparisons ORDER BY version;
SELECT version FROM amebo.load_snapshot('user-7');
-- Every earlier version replays to what the aggregate was then.
SELECT v, amebo.replay_state('user-7', v)->>'status' AS status,
       (amebo.replay_state('user-7', v)->>'version')::int = v AS versioned
FROM generate_series(1, 12, 5) v;
-- load_state on a standby or in a read-only transaction reads but writes no snapshot.
SELECT amebo.append_events('user-8', '[
    {"action": "user.created", "payload": {"user_id": "8", "email": "h@example.com", "name": "H"}},
    {"action": "user.touched", "payload": {}}, {"action": "user.touched", "payload": {}},
    {"action": "user.touched", "payload": {}}, {"action": "user.touched", "payload": {}}]');
BEGIN TRANSACTION READ ONLY;
SELECT version, state->>'status' AS status FROM amebo.load_state('user-8');
COMMIT;
SELECT count(*) AS snapshots_of_user_8 FROM amebo.snapshots WHERE stream = 'user-8';
SELECT version FROM amebo.load_state('user-8');
SELECT count(*) AS snapshots_of_user_8 FROM amebo.snapshots WHERE stream = 'user-8';
