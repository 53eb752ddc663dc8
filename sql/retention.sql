-- Retention, stream deletion and erasure: truncate_stream, delete_stream, set_retention and
-- the worker's pass (run here by hand, step by step), redact; versions that never restart,
-- idempotency after removal, what retention waits on, immutability otherwise, bad input and
-- privileges.

-- truncate_stream: the events below the cut go; the versions stay.
SELECT count(amebo.append_event('cut-1', 'cut.made', jsonb_build_object('n', g)))
FROM generate_series(1, 5) g;
SELECT amebo.truncate_stream('cut-1', 3) AS removed;
SELECT version, payload FROM amebo.read_stream('cut-1');
SELECT amebo.stream_version('cut-1');
-- An expected version written against the old head still conflicts; the next append is 6.
SELECT regress.outcome($$SELECT amebo.append_event('cut-1', 'cut.made', '{}', 4)$$);
SELECT amebo.append_event('cut-1', 'cut.made', '{"n": 6}', 5);
-- A cut at or below the first kept version removes nothing; head + 1 removes every event.
SELECT amebo.truncate_stream('cut-1', 2) AS removed;
SELECT amebo.truncate_stream('cut-1', 7) AS removed;
SELECT count(*) AS left_over FROM amebo.events WHERE stream = 'cut-1';
SELECT amebo.stream_version('cut-1');
SELECT stream, version, tombstone FROM amebo.removed_streams WHERE stream = 'cut-1';
SELECT amebo.append_event('cut-1', 'cut.made', '{"n": 7}', 6);
SELECT version FROM amebo.read_stream('cut-1');

-- Idempotency after removal: a retry of a stored event id returns its version; once the
-- event is removed, the same id is a new event (amebo keeps no list of removed ids).
SELECT amebo.append_event('idem-1', 'idem.done', '{}', NULL, NULL,
                          '0190d1c6-0000-7000-8000-000000000001');
SELECT amebo.append_event('idem-1', 'idem.done', '{}', NULL, NULL,
                          '0190d1c6-0000-7000-8000-000000000001');
SELECT amebo.append_event('idem-1', 'idem.done', '{}');
SELECT amebo.truncate_stream('idem-1', 2);
SELECT amebo.append_event('idem-1', 'idem.done', '{}', NULL, NULL,
                          '0190d1c6-0000-7000-8000-000000000001');
-- With its expected version the retry is refused instead (AM001).
SELECT regress.outcome($$SELECT amebo.append_event('idem-1', 'idem.done', '{}', 0, NULL,
                          '0190d1c6-0000-7000-8000-000000000002')$$);

-- Reducers: a cut that would lose the state is refused until a snapshot covers it.
CREATE FUNCTION count_reducer(state jsonb, event amebo.events) RETURNS jsonb
LANGUAGE sql AS $$ SELECT jsonb_build_object('count', (state->>'count')::int + 1) $$;
SELECT amebo.create_reducer('tally', 'count_reducer(jsonb, amebo.events)', '{"count": 0}', 1000);
SELECT count(amebo.append_event('tally-1', 'tally.added', '{}')) FROM generate_series(1, 4);
SELECT regress.outcome($$SELECT amebo.truncate_stream('tally-1', 4)$$);
SELECT amebo.save_snapshot('tally-1', 3, amebo.replay_state('tally-1', 3));
SELECT amebo.truncate_stream('tally-1', 4);
SELECT state, version FROM amebo.load_state('tally-1');
SELECT amebo.append_event('tally-1', 'tally.added', '{}');
SELECT state, version FROM amebo.load_state('tally-1');
-- replay_state folds what is kept onto the oldest snapshot at or after the cut.
SELECT amebo.replay_state('tally-1') AS replayed,
       amebo.replay_state('tally-1') = (amebo.load_state('tally-1')).state AS equals_load_state;
SELECT amebo.replay_state('tally-1', 4) AS replayed_to_4;
SELECT regress.outcome($$SELECT amebo.replay_state('tally-1', 2)$$);

-- delete_stream, soft: the events and snapshots go; the stream goes on from its version.
SELECT count(amebo.append_event('soft-1', 'soft.made', '{}')) FROM generate_series(1, 3);
SELECT amebo.delete_stream('soft-1') AS removed;
SELECT amebo.stream_version('soft-1');
SELECT regress.outcome($$SELECT amebo.append_event('soft-1', 'soft.made', '{}', 0)$$);
SELECT amebo.append_event('soft-1', 'soft.made', '{}', 3);
SELECT amebo.delete_stream('tally-1') AS removed;
SELECT count(*) AS snapshots_left FROM amebo.snapshots WHERE stream = 'tally-1';

-- delete_stream, hard: a tombstone; every later append raises AM010, retries included.
SELECT amebo.append_event('gone-1', 'gone.made', '{}', NULL, NULL,
                          '0190d1c6-0000-7000-8000-000000000003');
SELECT amebo.delete_stream('gone-1', true) AS removed;
SELECT regress.outcome($$SELECT amebo.append_event('gone-1', 'gone.made', '{}')$$);
SELECT regress.outcome($$SELECT amebo.append_events('gone-1', '[{"action": "gone.made", "payload": {}}]')$$);
SELECT regress.outcome($$SELECT amebo.append_event('gone-1', 'gone.made', '{}', NULL, NULL,
                          '0190d1c6-0000-7000-8000-000000000003')$$);
SELECT amebo.stream_version('gone-1');
SELECT amebo.delete_stream('gone-1', true) AS removed_again;
SELECT amebo.delete_stream('gone-1') AS soft_after_hard;
SELECT stream, version, tombstone FROM amebo.removed_streams WHERE stream = 'gone-1';
SELECT amebo.truncate_stream('gone-1', 1) AS removed;

-- Immutability otherwise: the owner (this superuser) still gets AM003, for every change.
SELECT regress.outcome($$DELETE FROM amebo.events WHERE stream = 'soft-1'$$);
SELECT regress.outcome($$UPDATE amebo.events SET payload = '{}' WHERE stream = 'soft-1'$$);
SELECT regress.outcome($$TRUNCATE amebo.events$$);
-- The removal helpers let nothing else through: the flag is not a setting.
SELECT regress.outcome($$SET amebo.removing_events = on$$);
SELECT regress.outcome($$SELECT amebo_internal.remove_events(NULL)$$);

-- redact: the paths go from payloads, metadata and snapshots; an audit row; no validation.
SELECT amebo.create_application('crm') IS NOT NULL AS registered;
SELECT amebo.create_action('person.registered', 'crm',
    '{"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}}');
SELECT amebo.append_event('person-1', 'person.registered',
    '{"email": "ann@example.com", "address": {"street": "1 Main St", "city": "Oslo"}, "tags": ["a"]}',
    NULL, '{"ip": "192.0.2.1", "email": "ann@example.com"}');
SELECT amebo.append_event('person-1', 'person.registered', '{"email": "ann@example.org"}');
SELECT amebo.create_reducer('person', 'count_reducer(jsonb, amebo.events)', '{"count": 0}', 1000);
SELECT amebo.save_snapshot('person-1', 1, '{"count": 1, "email": "ann@example.com"}');
SELECT amebo.redact('person-1', ARRAY['{email}', '{address,street}'], 'erasure request 17');
SELECT version, payload, metadata, schema_version FROM amebo.read_stream('person-1');
SELECT state FROM amebo.snapshots WHERE stream = 'person-1';
SELECT stream, paths, reason, count, snapshots, redacted_by = session_user AS by_session_user
FROM amebo.redactions;
-- Redacting again changes nothing, and says so.
SELECT amebo.redact('person-1', ARRAY['{email}'], 'erasure request 17, again');

-- Bad input: a clear error and nothing changed.
SELECT q AS statement, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.truncate_stream('nobody-1', 1)$$),
    ($$SELECT amebo.truncate_stream('cut-1', 9)$$),
    ($$SELECT amebo.truncate_stream('cut-1', 0)$$),
    ($$SELECT amebo.truncate_stream('cut-1', NULL)$$),
    ($$SELECT amebo.truncate_stream(NULL, 1)$$),
    ($$SELECT amebo.truncate_stream('', 1)$$),
    ($$SELECT amebo.delete_stream('nobody-1')$$),
    ($$SELECT amebo.delete_stream('cut-1', NULL)$$),
    ($$SELECT amebo.redact('nobody-1', ARRAY['{email}'], 'r')$$),
    ($$SELECT amebo.redact('person-1', ARRAY[]::text[], 'r')$$),
    ($$SELECT amebo.redact('person-1', ARRAY['{}'], 'r')$$),
    ($$SELECT amebo.redact('person-1', ARRAY['{email'], 'r')$$),
    ($$SELECT amebo.redact('person-1', ARRAY['{tags,0}'], 'r')$$),
    ($$SELECT amebo.redact('person-1', ARRAY['{{a,b},{c,d}}'], 'r')$$),
    ($$SELECT amebo.redact('person-1', ARRAY[NULL], 'r')$$),
    ($$SELECT amebo.redact('person-1', ARRAY['{email}'], NULL)$$),
    ($$SELECT amebo.redact('person-1', ARRAY['{email}'], '  ')$$),
    ($$SELECT amebo.set_retention('log', '0 seconds')$$),
    ($$SELECT amebo.set_retention('log', '-1 day')$$),
    ($$SELECT amebo.set_retention('log', NULL, 0)$$),
    ($$SELECT amebo.set_retention('log', NULL, -5)$$),
    ($$SELECT amebo.set_retention('log')$$),
    ($$SELECT amebo.set_retention(NULL, '1 day')$$),
    ($$SELECT amebo.set_retention('log-1', '1 day')$$),
    ($$SELECT amebo.set_retention('', '1 day')$$)
) AS cases(q);
SELECT count(*) AS policies FROM amebo.retention_policies;
SELECT payload FROM amebo.read_stream('person-1');

-- Retention by count: the pass keeps the newest max_count versions of each stream.
SELECT count(amebo.append_event('log-' || (g % 3), 'log.line', jsonb_build_object('n', g)))
FROM generate_series(1, 30) g;
SELECT amebo.set_retention('log', max_count => 4);
SELECT amebo_internal.run_retention() > 0 AS looked;
SELECT stream, array_agg(version ORDER BY version) FROM amebo.events
WHERE stream LIKE 'log-%' GROUP BY stream ORDER BY stream;
SELECT category, max_age, max_count, removed, waiting_on FROM amebo.retention_status;
-- Other categories are untouched.
SELECT count(*) AS cut_events FROM amebo.events WHERE stream = 'cut-1';

-- Retention by age, in small batches that resume where the last one stopped.
SELECT amebo.set_retention('log', '1 microsecond');
SELECT pg_sleep(0.01);
SELECT amebo_internal.run_retention(5) AS looked;
SELECT count(*) AS log_events_left FROM amebo.events WHERE stream LIKE 'log-%';
SELECT amebo_internal.run_retention(1000) > 0 AS looked;
SELECT count(*) AS log_events_left FROM amebo.events WHERE stream LIKE 'log-%';
SELECT stream, version FROM amebo.removed_streams WHERE stream LIKE 'log-%' ORDER BY stream;
SELECT amebo.append_event('log-1', 'log.line', '{}');
SELECT category, removed, checked_through > 0 AS resumes, waiting_on FROM amebo.retention_status;

-- Retention waits for what has not been processed: a subscription's delivery checkpoint, an
-- async projection (paused or lagging), a pull consumer member's cursor and in-flight events.
CREATE TABLE seen_lines (position bigint);
CREATE FUNCTION see_line(event amebo.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO seen_lines VALUES (event.position) $$;
SELECT amebo.create_projection('lines', 'see_line(amebo.events)', ARRAY['log.line'], 'async');
SELECT amebo.pause_projection('lines');
SELECT amebo.create_consumer('line-reader', ARRAY['log.line']);
SELECT amebo.create_subscription('crm', 'lines', 'log.*', 'https://hooks.example.invalid/')
    IS NOT NULL AS subscribed;
SELECT count(amebo.append_event('log-9', 'log.line', '{}')) FROM generate_series(1, 3);
SELECT pg_sleep(0.01);
SELECT amebo_internal.run_retention() AS looked;
SELECT count(*) AS log_9_kept FROM amebo.events WHERE stream = 'log-9';
SELECT holder, name FROM amebo.retention_holds ORDER BY holder, name;
SELECT waiting_on FROM amebo.retention_status;
-- The subscription goes (its checkpoint no longer counts); the projection catches up.
SELECT amebo.drop_subscription('crm', 'lines');
SELECT amebo.resume_projection('lines');
SELECT amebo_internal.run_projection('lines') AS applied;
SELECT amebo_internal.run_retention() AS looked;
SELECT count(*) AS log_9_kept FROM amebo.events WHERE stream = 'log-9';
SELECT waiting_on FROM amebo.retention_status;
-- The consumer leases them, so they stay until acknowledged.
SELECT count(*) AS leased FROM amebo.poll('line-reader', 0, 100);
SELECT amebo_internal.run_retention() AS looked;
SELECT count(*) AS log_9_kept FROM amebo.events WHERE stream = 'log-9';
SELECT waiting_on FROM amebo.retention_status;
SELECT amebo.ack('line-reader', 0, ARRAY(SELECT event_id FROM amebo.events WHERE stream LIKE 'log-%'));
SELECT amebo_internal.run_retention() >= 0 AS ran;
SELECT count(*) AS log_9_kept FROM amebo.events WHERE stream = 'log-9';
SELECT waiting_on FROM amebo.retention_status;
SELECT amebo.drop_consumer('line-reader');
SELECT amebo.drop_projection('lines');
SELECT amebo.set_retention('log');

-- Privileges: only amebo_admin removes and redacts (42501 for writers and readers).
GRANT USAGE ON SCHEMA regress TO PUBLIC;
CREATE ROLE amebo_regress_ret_reader IN ROLE amebo_reader;
CREATE ROLE amebo_regress_ret_writer IN ROLE amebo_writer;
CREATE ROLE amebo_regress_ret_admin IN ROLE amebo_admin;
SET ROLE amebo_regress_ret_reader;
SELECT q AS statement, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.truncate_stream('soft-1', 1)$$),
    ($$SELECT amebo.delete_stream('soft-1')$$),
    ($$SELECT amebo.set_retention('soft', '1 day')$$),
    ($$SELECT amebo.redact('soft-1', ARRAY['{a}'], 'r')$$),
    ($$SELECT count(*) FROM amebo.retention_status$$),
    ($$SELECT count(*) FROM amebo.redactions$$)
) AS cases(q);
RESET ROLE;
SET ROLE amebo_regress_ret_writer;
SELECT q AS statement, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo.truncate_stream('soft-1', 1)$$),
    ($$SELECT amebo.delete_stream('soft-1')$$),
    ($$SELECT amebo.set_retention('soft', '1 day')$$),
    ($$SELECT amebo.redact('soft-1', ARRAY['{a}'], 'r')$$),
    ($$SELECT amebo_internal.remove_events(ARRAY[1::bigint])$$),
    ($$SELECT amebo_internal.redact_events('soft-1', ARRAY['{a}'])$$),
    ($$SELECT amebo_internal.lock_stream('soft-1')$$),
    ($$DELETE FROM amebo.events$$)
) AS cases(q);
RESET ROLE;
SET ROLE amebo_regress_ret_admin;
SELECT q AS statement, regress.outcome(q) FROM (VALUES
    ($$SELECT amebo_internal.remove_events(ARRAY[1::bigint])$$),
    ($$SELECT amebo_internal.redact_events('soft-1', ARRAY['{a}'])$$),
    ($$SELECT amebo_internal.lock_stream('soft-1')$$),
    ($$SELECT amebo_internal.run_retention()$$),
    ($$DELETE FROM amebo.events$$),
    ($$DELETE FROM amebo.removed_streams$$),
    ($$SELECT amebo.truncate_stream('soft-1', 4)$$),
    ($$SELECT amebo.set_retention('soft', '1 day')$$),
    ($$SELECT amebo.set_retention('soft')$$),
    ($$SELECT amebo.redact('soft-1', ARRAY['{a}'], 'r')$$),
    ($$SELECT amebo.delete_stream('soft-1', true)$$)
) AS cases(q);
RESET ROLE;
-- A SECURITY DEFINER function of the owner's that deletes: still AM003 (only the C removal
-- path raises the flag).
CREATE FUNCTION sneaky_delete() RETURNS void LANGUAGE sql SECURITY DEFINER
AS $$ DELETE FROM amebo.events WHERE stream = 'cut-1' $$;
SELECT regress.outcome('SELECT sneaky_delete()');
DROP FUNCTION sneaky_delete();
DROP ROLE amebo_regress_ret_reader, amebo_regress_ret_writer, amebo_regress_ret_admin;

-- Leave nothing behind for the scripts that follow.
SELECT amebo.drop_reducer('tally'), amebo.drop_reducer('person');
SELECT amebo.drop_application('crm', true);
DROP FUNCTION count_reducer(jsonb, amebo.events), see_line(amebo.events);
DROP TABLE seen_lines;
