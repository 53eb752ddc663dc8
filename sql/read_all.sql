-- Reading across streams in position order, with filters; the open-append horizon.
SELECT amebo.append_event('acct-1', 'account.opened', '{"owner": "ada", "tier": "gold"}');
SELECT amebo.append_event('acct-2', 'account.opened', '{"owner": "bob", "tier": "basic"}');
SELECT amebo.append_event('acct-1', 'account.credited', '{"amount": 5}');
SELECT amebo.append_event('acct-2', 'account.closed', '{"reason": "moved"}');
SELECT amebo.append_event('acct-3', 'account.opened', '{"owner": "cy", "tier": "gold"}');

CREATE TEMP TABLE seen AS SELECT position, stream, version, action FROM amebo.read_all();
SELECT stream, version, action FROM seen ORDER BY position;
SELECT bool_and(position > 0) AND count(*) = count(DISTINCT position) AS positions_unique FROM seen;

-- Paging by the last position seen returns the rest, in order, each once.
SELECT stream, version FROM amebo.read_all(0, 2);
SELECT stream, version FROM amebo.read_all((SELECT position FROM seen ORDER BY position OFFSET 1 LIMIT 1), 2);
SELECT stream, version FROM amebo.read_all((SELECT position FROM seen ORDER BY position OFFSET 3 LIMIT 1), 2);
SELECT count(*) AS past_the_end FROM amebo.read_all((SELECT max(position) FROM seen));

-- Filters: actions, since, payload containment, and all together.
SELECT stream, action FROM amebo.read_all(actions => ARRAY['account.closed', 'account.credited']);
SELECT count(*) AS since_now FROM amebo.read_all(since => now());
SELECT count(*) AS since_tomorrow FROM amebo.read_all(since => now() + interval '1 day');
SELECT stream FROM amebo.read_all(payload_filter => '{"tier": "gold"}');
SELECT stream FROM amebo.read_all(0, 1, ARRAY['account.opened'], now() - interval '1 hour',
                                  '{"tier": "gold"}');
SELECT count(*) AS unlimited FROM amebo.read_all(max_count => NULL);

-- An open transaction that appended holds read_all back at its first position, even for
-- itself; it is listed by inflight_appends() until it ends.
BEGIN;
SELECT amebo.append_event('acct-4', 'account.opened', '{"owner": "dee"}') AS appended;
SELECT count(*) AS open_appends, bool_and(pid = pg_backend_pid()) AS mine,
       bool_and(first_position > (SELECT max(position) FROM seen)) AS after_seen
FROM amebo.inflight_appends();
SELECT count(*) AS visible_to_read_all FROM amebo.read_all((SELECT max(position) FROM seen));
COMMIT;
SELECT count(*) AS open_appends FROM amebo.inflight_appends();
SELECT stream FROM amebo.read_all((SELECT max(position) FROM seen));

-- A transaction that never appends holds nothing back.
BEGIN;
SELECT count(*) AS open_appends FROM amebo.inflight_appends();
SELECT count(*) >= 6 AS everything_visible FROM amebo.read_all();
COMMIT;
