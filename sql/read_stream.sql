-- Reading one stream, and its version.
SELECT amebo.append_events('reader-1', '[
    {"action": "reader.a", "payload": {"n": 1}},
    {"action": "reader.b", "payload": {"n": 2}},
    {"action": "reader.c", "payload": {"n": 3}},
    {"action": "reader.d", "payload": {"n": 4}}
]', 0);
SELECT amebo.append_event('reader-2', 'reader.other', '{"n": 1}');
SELECT amebo.append_event('reader-1', 'reader.e', '{"n": 5}', 4);

SELECT version, action, payload FROM amebo.read_stream('reader-1');
SELECT version, action FROM amebo.read_stream('reader-1', 2);
SELECT version, action FROM amebo.read_stream('reader-1', 1, 2);
SELECT version, action FROM amebo.read_stream(stream => 'reader-1', max_count => 1);
SELECT version FROM amebo.read_stream('reader-1', 5);
SELECT count(*) AS empty_stream_rows FROM amebo.read_stream('reader-none');
-- Whole rows come back as amebo.events.
SELECT (e).stream, (e).version FROM (SELECT amebo.read_stream('reader-2') AS e) s;

SELECT amebo.stream_version('reader-1') AS v1, amebo.stream_version('reader-2') AS v2,
       amebo.stream_version('reader-none') AS none;
-- stream_version reads the caller's snapshot, which includes its own appends.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT amebo.stream_version('reader-2');
SELECT amebo.append_event('reader-2', 'reader.other', '{"n": 2}', 1);
SELECT amebo.stream_version('reader-2');
COMMIT;
