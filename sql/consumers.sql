-- Pull consumers: create, poll, ack, nack, parking and replay, per-stream order, members,
-- pause, reset, status, privileges and bad input. The concurrent cases (two sessions of one
-- member, a lease ending meanwhile) are isolation specs; NOTIFY and killed workers are in
-- test/scripts/consumers.sh.

-- Outcomes with event ids masked (they are random).
CREATE FUNCTION regress.masked_outcome(query text) RETURNS text
LANGUAGE sql AS $$ SELECT regexp_replace(regress.outcome(query), '[0-9a-f-]{36}', '<uuid>', 'g') $$;

-- Consumers take the actions cons.a and cons.b; cons.other goes to nobody.
SELECT amebo.create_consumer('billing', ARRAY['cons.a', 'cons.b'], max_retries => 1);
SELECT name, actions, members, max_retries, state FROM amebo.consumers;
SELECT consumer, member, position FROM amebo.consumer_members;
SELECT amebo.append_events('cons-1', '[{"action": "cons.a", "payload": {"n": 1}},
                                        {"action": "cons.b", "payload": {"n": 2}},
                                        {"action": "cons.a", "payload": {"n": 3}}]');
SELECT amebo.append_event('cons-2', 'cons.a', '{"n": 1}');
SELECT amebo.append_event('cons-3', 'cons.other', '{"n": 1}');
SELECT amebo.append_event('cons-3', 'cons.b', '{"n": 2}');

-- A poll hands out events in position order, several of one stream together, attempt 1.
SELECT stream, version, action, attempt FROM amebo.poll('billing', 0, 2);
-- The next poll goes on after them; a leased event is not handed out again.
SELECT stream, version, action, attempt FROM amebo.poll('billing');
SELECT stream, version, action, attempt FROM amebo.poll('billing');
SELECT stream, version, state, attempt FROM amebo.consumer_events JOIN amebo.events USING (stream, position)
ORDER BY position;

-- ack in the consumer's transaction: rolled back with it, committed with it.
BEGIN;
SELECT amebo.ack('billing', 0, ARRAY(SELECT event_id FROM amebo.events WHERE stream = 'cons-2'));
ROLLBACK;
SELECT count(*) AS still_leased FROM amebo.consumer_events WHERE stream = 'cons-2';
SELECT amebo.ack('billing', 0, ARRAY(SELECT event_id FROM amebo.events WHERE stream = 'cons-2'));
-- Acking it again, or an event never handed out, raises AM009: a duplicate worker's
-- transaction (and its read-model writes) rolls back.
SELECT regress.masked_outcome(format('SELECT amebo.ack(%L, 0, %L)', 'billing',
    ARRAY(SELECT event_id FROM amebo.events WHERE stream = 'cons-2')));
SELECT regress.masked_outcome(format('SELECT amebo.ack(%L, 0, %L)', 'billing',
    ARRAY(SELECT event_id FROM amebo.events WHERE stream = 'cons-3' AND action = 'cons.other')));
-- A partly held list acknowledges nothing.
SELECT regress.masked_outcome(format('SELECT amebo.ack(%L, 0, %L)', 'billing',
    ARRAY(SELECT event_id FROM amebo.events WHERE stream IN ('cons-2', 'cons-3'))));
-- The error names the first id not held, not a held one given before it.
SELECT regress.outcome(format('SELECT amebo.ack(%L, 0, %L)', 'billing', ARRAY[held.event_id, gone.event_id]))
       LIKE '%event ' || gone.event_id || ' is not leased%' AS names_the_unheld_event
FROM (SELECT event_id FROM amebo.consumer_events WHERE state = 'leased' ORDER BY position LIMIT 1) held,
     (SELECT event_id FROM amebo.events WHERE stream = 'cons-2') gone;
SELECT count(*) AS leased FROM amebo.consumer_events WHERE state = 'leased';

-- cons-1's third event was held: its stream had events leased when the cursor passed it.
-- nack: a retry goes out at the next poll with the next attempt, and later events of its
-- stream wait for it while other streams go on.
SELECT amebo.nack('billing', 0, event_id) FROM amebo.events WHERE stream = 'cons-1' AND version < 3 ORDER BY version;
SELECT amebo.ack('billing', 0, ARRAY(SELECT event_id FROM amebo.events WHERE stream = 'cons-3' AND action = 'cons.b'));
SELECT stream, version, attempt FROM amebo.poll('billing');
-- With max_retries 1 the second nack parks it; parked, it holds its stream back no more.
SELECT amebo.nack('billing', 0, (SELECT event_id FROM amebo.events WHERE stream = 'cons-1' AND version = 1));
SELECT amebo.ack('billing', 0, ARRAY(SELECT event_id FROM amebo.events WHERE stream = 'cons-1' AND version > 1));
-- A retry delayed by retry_after blocks its stream until then.
SELECT amebo.append_event('cons-4', 'cons.a', '{"n": 1}');
SELECT stream, version, attempt FROM amebo.poll('billing');
SELECT amebo.nack('billing', 0, (SELECT event_id FROM amebo.events WHERE stream = 'cons-4'), '1 hour');
SELECT amebo.append_event('cons-4', 'cons.b', '{"n": 2}');
SELECT amebo.append_event('cons-5', 'cons.b', '{"n": 1}');
SELECT stream, version, attempt FROM amebo.poll('billing');
SELECT stream, version, state, attempt FROM amebo.consumer_events JOIN amebo.events USING (stream, position)
ORDER BY position;
SELECT consumer, member, stream, action, attempts FROM amebo.consumer_parked;

-- replay_parked sends the parked event out again with a fresh count. (An id given twice
-- to ack counts once.)
SELECT amebo.ack('billing', 0, (SELECT ARRAY[event_id, event_id] FROM amebo.events WHERE stream = 'cons-5'));
SELECT amebo.replay_parked('billing');
SELECT stream, version, attempt FROM amebo.poll('billing');
SELECT amebo.ack('billing', 0, ARRAY(SELECT event_id FROM amebo.events WHERE stream = 'cons-1' AND version = 1));

-- An expired lease goes out again with the next attempt; past max_retries it is parked.
SELECT amebo.append_event('cons-6', 'cons.a', '{"n": 1}');
SELECT stream, version, attempt FROM amebo.poll('billing', lease => '1 millisecond');
SELECT pg_sleep(0.02);
SELECT stream, version, attempt FROM amebo.poll('billing', lease => '1 millisecond');
SELECT pg_sleep(0.02);
SELECT stream, version, attempt FROM amebo.poll('billing');
SELECT stream, attempts FROM amebo.consumer_parked ORDER BY position;

-- Status: position, lag, in-flight counts.
SELECT consumer, member, state, position = (SELECT max(position) FROM amebo.events) AS at_end,
       lag_events, lag_seconds >= 0 AS lag_seconds_known, leased, waiting, held, parked
FROM amebo.consumer_status;

-- Pause: polls return nothing until resume.
SELECT amebo.pause_consumer('billing');
SELECT amebo.append_event('cons-7', 'cons.a', '{"n": 1}');
SELECT count(*) AS while_paused FROM amebo.poll('billing');
SELECT amebo.resume_consumer('billing');
SELECT stream, version, attempt FROM amebo.poll('billing');

-- Reset to a position drops leased, waiting and held events (parked stay) and hands the
-- events after it out again; reset to a time takes the first event recorded at or after it.
SELECT amebo.reset_consumer('billing', (SELECT min(position) - 1 FROM amebo.events WHERE stream = 'cons-1'))
     = (SELECT min(position) - 1 FROM amebo.events WHERE stream = 'cons-1') AS reset;
SELECT state, count(*) FROM amebo.consumer_events GROUP BY state ORDER BY state;
SELECT stream, version, attempt FROM amebo.poll('billing', 0, 3);
SELECT amebo.reset_consumer('billing', now() + interval '1 hour') = (SELECT max(position) FROM amebo.events) AS reset_to_end;
SELECT count(*) AS after_reset_to_end FROM amebo.poll('billing');

-- Members: each stream goes to consumer_member(stream, members), hashtext modulo members.
SELECT amebo.create_consumer('split', ARRAY['cons.split'], members => 3);
SELECT amebo.append_event('split-' || i, 'cons.split', '{}') FROM generate_series(1, 12) i \g /dev/null
SELECT stream, amebo.consumer_member(stream, 3) AS member FROM amebo.events
WHERE action = 'cons.split' ORDER BY position;
SELECT m, array_agg(p.stream ORDER BY p.position) AS streams
FROM generate_series(0, 2) m CROSS JOIN LATERAL amebo.poll('split', m) p GROUP BY m ORDER BY m;
SELECT amebo.consumer_member('any', 1) AS one_member,
       amebo.consumer_member('order-17', 4) = ((hashtext('order-17')::bigint + 2147483648) % 4) AS documented_formula;
-- A new members count is refused while events are in flight, then starts every member at
-- the lowest position of the old ones.
SELECT regress.outcome($$SELECT amebo.alter_consumer('split', members => 2)$$);
SELECT amebo.ack('split', m, ARRAY(SELECT event_id FROM amebo.consumer_events WHERE consumer = 'split' AND member = m))
FROM generate_series(0, 2) m;
SELECT amebo.alter_consumer('split', members => 2, max_retries => 7);
SELECT name, members, max_retries FROM amebo.consumers WHERE name = 'split';
SELECT count(*) AS handed_out_again FROM generate_series(0, 1) m CROSS JOIN LATERAL amebo.poll('split', m) p;

-- Bad input.
SELECT q, regress.masked_outcome(q) FROM (VALUES
    ($$SELECT amebo.poll('nobody')$$),
    ($$SELECT amebo.poll('split', 2)$$),
    ($$SELECT amebo.poll('split', -1)$$),
    ($$SELECT amebo.poll('split', NULL)$$),
    ($$SELECT amebo.poll('split', 0, 0)$$),
    ($$SELECT amebo.poll('split', 0, 10001)$$),
    ($$SELECT amebo.poll('split', 0, 10, '0 seconds')$$),
    ($$SELECT amebo.poll('split', 0, 10, '2 days')$$),
    ($$SELECT amebo.ack('nobody', 0, '{}')$$),
    ($$SELECT amebo.ack('split', 5, '{}')$$),
    ($$SELECT amebo.ack('split', 0, NULL)$$),
    ($$SELECT amebo.ack('split', 0, ARRAY[NULL]::uuid[])$$),
    ($$SELECT amebo.nack('split', 0, NULL)$$),
    ($$SELECT amebo.nack('split', 0, gen_random_uuid())$$),
    ($$SELECT amebo.nack('split', 0, gen_random_uuid(), '-1 second')$$),
    ($$SELECT amebo.create_consumer('split')$$),
    ($$SELECT amebo.create_consumer('Bad Name')$$),
    ($$SELECT amebo.create_consumer(NULL)$$),
    ($$SELECT amebo.create_consumer('c', '{}')$$),
    ($$SELECT amebo.create_consumer('c', ARRAY[NULL])$$),
    ($$SELECT amebo.create_consumer('c', NULL, 0)$$),
    ($$SELECT amebo.create_consumer('c', NULL, 1025)$$),
    ($$SELECT amebo.create_consumer('c', NULL, 1, -1)$$),
    ($$SELECT amebo.alter_consumer('nobody', 2)$$),
    ($$SELECT amebo.alter_consumer('split', 0)$$),
    ($$SELECT amebo.drop_consumer('nobody')$$),
    ($$SELECT amebo.pause_consumer('nobody')$$),
    ($$SELECT amebo.resume_consumer('nobody')$$),
    ($$SELECT amebo.reset_consumer('nobody', 0)$$),
    ($$SELECT amebo.reset_consumer('split', -1)$$),
    ($$SELECT amebo.reset_consumer('split', NULL::timestamptz)$$),
    ($$SELECT amebo.replay_parked('nobody')$$)
) AS t(q);
-- poll refuses REPEATABLE READ (its horizon needs a newer snapshot than the transaction's).
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT regress.outcome($$SELECT amebo.poll('split')$$);
ROLLBACK;

-- Privileges: readers see status, writers consume, admins manage.
CREATE ROLE amebo_regress_consumer_reader LOGIN IN ROLE amebo_reader;
CREATE ROLE amebo_regress_consumer_writer LOGIN IN ROLE amebo_writer;
GRANT USAGE ON SCHEMA regress TO amebo_regress_consumer_reader, amebo_regress_consumer_writer;
SET ROLE amebo_regress_consumer_reader;
SELECT count(*) > 0 AS reader_sees_status FROM amebo.consumer_status;
SELECT regress.outcome($$SELECT amebo.poll('split')$$) AS reader_poll;
SET ROLE amebo_regress_consumer_writer;
SELECT count(*) >= 0 AS writer_polls FROM amebo.poll('split');
SELECT regress.outcome($$SELECT amebo.create_consumer('mine')$$) AS writer_create;
SELECT regress.outcome($$DELETE FROM amebo.consumer_events$$) AS writer_delete;
RESET ROLE;
REVOKE USAGE ON SCHEMA regress FROM amebo_regress_consumer_reader, amebo_regress_consumer_writer;
DROP ROLE amebo_regress_consumer_reader, amebo_regress_consumer_writer;

-- Drop removes the consumer and its bookkeeping.
SELECT amebo.drop_consumer('split');
SELECT amebo.drop_consumer('billing');
DROP FUNCTION regress.masked_outcome(text);
SELECT (SELECT count(*) FROM amebo.consumers) AS consumers,
       (SELECT count(*) FROM amebo.consumer_members) AS members,
       (SELECT count(*) FROM amebo.consumer_events) AS in_flight;
