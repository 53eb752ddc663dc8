# Reads on a streaming hot standby (run by test/scripts/standby_reads.sh).
#
# A primary holds the fixture of test/dump/fixture.sql (registry, reducers, inline and async
# projections, snapshots, many streams) and subscriptions with dead messages. On its hot
# standby, after it caught up:
# - every read function returns what the primary returns: read_stream (with after_version and
#   max_count), read_all (with each filter argument), stream_version, load_snapshot,
#   replay_state, application_events; load_state through the registered reducer returns the
#   state even when it replayed more than snapshot_every events (it would write a snapshot on
#   a primary) and writes nothing;
# - the status views work: subscription_status, subscription_list, delivery_queue,
#   projection_status, projection_list, application_list, action_list, worker_status (empty:
#   the worker runs only on a primary);
# - writes fail with SQLSTATE 25006 (read_only_sql_transaction) and a message that says so;
# - paging through read_all with after_position on the standby while the primary keeps
#   appending (one session, commits in position order) returns every event exactly once, in
#   position order.
use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use PostgreSQL::Test::Cluster;
use lib dirname(__FILE__);
use AmeboStandby;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $top = File::Spec->rel2abs(dirname(__FILE__) . '/../..');

# A signal ends the test through die, so that END blocks stop the nodes.
$SIG{TERM} = $SIG{INT} = sub { die "killed by a signal\n" };

# Runs a SQL file with psql on a node's database postgres, stopping at the first error.
sub run_sql_file
{
	my ($node, $file) = @_;
	$node->command_ok(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-f', $file ],
		"loaded " . File::Spec->abs2rel($file, $top));
	return;
}

# Checks that a query returns the same rows on the standby as on the primary (and some rows).
sub same_on_both
{
	my ($primary, $standby, $sql, $what) = @_;
	my $expected = $primary->safe_psql('postgres', $sql);
	my $actual = $standby->safe_psql('postgres', $sql);
	my $rows = $expected eq '' ? 0 : scalar(split /\n/, $expected);
	ok($rows > 0, "$what: the primary returns rows ($rows)");
	is($actual, $expected, "$what: the standby returns the same");
	return $rows;
}

# Checks that SQL fails on the standby with 25006 and a message about a read-only transaction.
sub refused_on_standby
{
	my ($standby, $sql, $what) = @_;
	my ($ret, $stdout, $stderr) =
	  $standby->psql('postgres', $sql, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	isnt($ret, 0, "$what fails on the standby");
	like($stderr, qr/ERROR:\s+25006: .*(read-only transaction|during recovery)/,
		"$what: 25006 read_only_sql_transaction")
	  or diag($stderr);
	note("$what: " . ($stderr =~ /ERROR:\s+(.*)/ ? $1 : ''));
	return;
}

# -- the primary and its standby
my ($primary, $standby) = AmeboStandby::start_primary_and_standby(
	"amebo.retry_base_delay = 100\namebo.worker_naptime = 200");
run_sql_file($primary, "$top/examples/users/users.sql");
run_sql_file($primary, "$top/test/dump/fixture.sql");
is($primary->safe_psql('postgres', 'SELECT amebo.wait_for_worker(30)'), 't', 'the worker runs on the primary');
# Nothing listens on port 9 (discard) of 127.0.0.1: every request fails, and with no retries
# the messages are dead at once.
my $nowhere = 'http://127.0.0.1:9/hook';
$primary->safe_psql(
	'postgres', qq{
	SELECT amebo.create_subscription('shop', 'orders', 'order.*', '$nowhere', max_retries => 0,
	                                 filter => '{"currency": "EUR"}', batch_size => 5);
	SELECT amebo.create_subscription('mailer', 'users', 'user.*', '$nowhere', ordered => true);
	SELECT amebo.pause_subscription('mailer', 'users');
	SELECT amebo.append_event('order-' || i, 'order.placed',
	                          jsonb_build_object('order_id', 'o' || i, 'total', i, 'currency', 'EUR'))
	FROM generate_series(41, 45) i;
	SELECT amebo.append_event('user-' || i, 'user.created', jsonb_build_object('user_id', 'u' || i,
	                          'email', 'u' || i || '\@example.com', 'name', 'U' || i))
	FROM generate_series(13, 15) i;});
ok( $primary->poll_query_until(
		'postgres', "SELECT dead > 0 FROM amebo.subscription_status WHERE name = 'orders'"),
	'dead messages on the primary');
is($primary->safe_psql('postgres', "SELECT amebo.wait_for_projection('action_counts', 30)"),
	't', 'the async projection caught up');
# order-1: more events after its newest snapshot than its reducer's snapshot_every (3).
$primary->safe_psql('postgres', q{
	SELECT amebo.append_event('order-1', 'order.paid', jsonb_build_object('amount', n))
	FROM generate_series(1, 5) n});
AmeboStandby::wait_for_horizon($primary, $standby);

# -- reads
my $rows = 0;
for my $read (
	[ q{SELECT * FROM amebo.read_stream('order-3')}, 'read_stream' ],
	[ q{SELECT * FROM amebo.read_stream('order-3', after_version => 2, max_count => 2)},
		'read_stream after_version, max_count' ],
	[ q{SELECT * FROM amebo.read_all()}, 'read_all()' ],
	[ q{SELECT * FROM amebo.read_all(after_position => 50, max_count => 20)},
		'read_all after_position, max_count' ],
	[ q{SELECT * FROM amebo.read_all(0, NULL)}, 'read_all max_count NULL' ],
	[ q{SELECT * FROM amebo.read_all(actions => ARRAY['order.paid', 'user.created'])},
		'read_all actions' ],
	[ q{SELECT * FROM amebo.read_all(since => (SELECT recorded_at FROM amebo.events
	                                           WHERE stream = 'user-1'))}, 'read_all since' ],
	[ q{SELECT * FROM amebo.read_all(payload_filter => '{"currency": "EUR"}')},
		'read_all payload_filter' ],
	[ q{SELECT * FROM amebo.application_events('shop')}, 'application_events' ],
	[ q{SELECT s, amebo.stream_version(s) FROM (SELECT DISTINCT stream s FROM amebo.events) x
	    ORDER BY s}, 'stream_version of every stream' ],
	[ q{SELECT amebo.stream_version('nowhere-1')}, 'stream_version of an empty stream' ],
	[ q{SELECT * FROM amebo.load_snapshot('order-3')}, 'load_snapshot' ],
	[ q{SELECT amebo.replay_state('order-1')}, 'replay_state' ],
	[ q{SELECT amebo.replay_state('user-2', 1)}, 'replay_state up to a version' ],
	[ q{SELECT (amebo.load_state('user-' || i)).* FROM generate_series(1, 15) i},
		'load_state of users' ],
	[ q{SELECT * FROM amebo.action_schemas ORDER BY action, version}, 'action_schemas' ])
{
	$rows += same_on_both($primary, $standby, @$read);
}

# load_state on the standby replays more than snapshot_every events and writes nothing.
my $snapshots = $standby->safe_psql('postgres', 'SELECT count(*) FROM amebo.snapshots');
my ($state, $replayed) = split /\|/, $standby->safe_psql('postgres', q{
	SELECT (amebo.load_state('order-1')).state, amebo.stream_version('order-1')
	       - (SELECT max(version) FROM amebo.snapshots WHERE stream = 'order-1')});
cmp_ok($replayed, '>', 3, "load_state replays $replayed events after the snapshot on the standby");
is($state, $primary->safe_psql('postgres', q{SELECT amebo.replay_state('order-1')}),
	'load_state on the standby equals a full replay on the primary');
is($standby->safe_psql('postgres', 'SELECT count(*) FROM amebo.snapshots'),
	$snapshots, 'load_state on the standby saved no snapshot');

# -- status views
for my $view (
	[ q{SELECT application, name, action, handler, max_retries, filter, ordered, batch_size, state
	    FROM amebo.subscription_list ORDER BY 1, 2}, 'subscription_list' ],
	[ q{SELECT application, name, state, pending, dead, delivered, last_error
	    FROM amebo.subscription_status ORDER BY 1, 2}, 'subscription_status' ],
	[ q{SELECT slot_name, checkpoint_position, events_behind FROM amebo.delivery_queue},
		'delivery_queue' ],
	[ q{SELECT name, mode, state, position, lag_events, error FROM amebo.projection_status
	    ORDER BY name}, 'projection_status' ],
	[ q{SELECT * FROM amebo.projection_list ORDER BY name}, 'projection_list' ],
	[ q{SELECT name, address, actions FROM amebo.application_list ORDER BY name},
		'application_list' ],
	[ q{SELECT action, application, schema_version, schema FROM amebo.action_list ORDER BY 1},
		'action_list' ])
{
	$rows += same_on_both($primary, $standby, @$view);
}
is($standby->safe_psql('postgres', q{
	SELECT (SELECT active FROM amebo.delivery_queue) IS NULL,
	       (SELECT count(*) FROM amebo.worker_status())}),
	't|0', 'on the standby the slot is unknown (slots are not replicated) and no worker runs');
is($standby->safe_psql('postgres', q{
	SELECT count(*) FROM amebo.subscription_status WHERE in_flight > 0 OR queued > 0}),
	'0', 'the standby shows no live worker figures');
is($standby->safe_psql('postgres', 'SELECT count(*) FROM amebo.inflight_appends()'),
	'0', 'inflight_appends works on the standby');

# -- writes are refused
for my $write (
	[ q{SELECT amebo.append_event('order-1', 'order.paid', '{"amount": 1}')}, 'append_event' ],
	[ q{SELECT amebo.append_event('order-1', 'order.placed',
	                              '{"order_id": "o1", "total": 10, "currency": "EUR"}', 0,
	                              event_id => md5('placed-1')::uuid)},
		'append_event retrying a stored event_id' ],
	[ q{SELECT amebo.append_events('order-1', '[{"action": "order.paid", "payload": {"amount": 1}}]')},
		'append_events' ],
	[ q{SELECT amebo.save_snapshot('order-1', 1, '{}')}, 'save_snapshot' ],
	[ q{SELECT amebo.create_application('late')}, 'create_application' ],
	[ q{SELECT amebo.create_action('late.thing', 'shop')}, 'create_action' ],
	[ qq{SELECT amebo.create_subscription('shop', 'late', 'order.*', '$nowhere')},
		'create_subscription' ],
	[ q{SELECT amebo.pause_subscription('shop', 'orders')}, 'pause_subscription' ],
	[ q{SELECT amebo.rebuild_projection('order_totals')}, 'rebuild_projection' ],
	[ q{SELECT amebo_internal.run_projection('action_counts')}, 'run_projection' ])
{
	refused_on_standby($standby, @$write);
}

# The same refusal on the primary in a READ ONLY transaction.
my ($ret, $stdout, $stderr) = $primary->psql('postgres', q{
	BEGIN READ ONLY;
	SELECT amebo.append_event('order-1', 'order.paid', '{"amount": 1}');},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/ERROR:\s+25006: cannot execute amebo.append_event\(\) in a read-only transaction/,
	'append_event in a READ ONLY transaction on the primary: 25006');

# -- paging through read_all on the standby while the primary appends (one session)
my $appends = 400;
my $last = $standby->safe_psql('postgres', 'SELECT max(position) FROM amebo.events');
my $start = $last;
my $appender = $primary->background_psql('postgres');
$appender->query_until(qr/appending/, qq{
	\\echo appending
	DO \$\$
	BEGIN
		FOR i IN 1..$appends LOOP
			PERFORM amebo.append_event('tick-' || (i % 7), 'tick.counted', jsonb_build_object('i', i));
			COMMIT;
			IF i % 10 = 0 THEN PERFORM pg_sleep(0.05); END IF;
		END LOOP;
	END
	\$\$;
});
my @positions;
my $pages = 0;
my $deadline = time + 60;
while (time < $deadline)
{
	my $page = $standby->safe_psql('postgres',
		"SELECT position FROM amebo.read_all(after_position => $last, max_count => 25)");
	$pages++;
	my @got = grep { /\d/ } split /\n/, $page;
	push @positions, @got;
	$last = $got[-1] if @got;
	last if @positions >= $appends;
	select(undef, undef, undef, 0.01) unless @got;
}
$appender->quit;
AmeboStandby::wait_for_horizon($primary, $standby);
my $expected = $primary->safe_psql('postgres',
	"SELECT string_agg(position::text, ',' ORDER BY position) FROM amebo.events WHERE position > $start");
is(join(',', @positions), $expected,
	'paging read_all on the standby returned every appended event once, in order');
same_on_both($primary, $standby, 'SELECT * FROM amebo.read_all(0, NULL)',
	'read_all after the standby caught up');
my $append_seconds = $primary->safe_psql('postgres', q{
	SELECT round(extract(epoch FROM max(recorded_at) - min(recorded_at))::numeric, 1)
	FROM amebo.events WHERE action = 'tick.counted'});
note(sprintf('standby figures: %d rows compared; %d events paged in %d pages while the primary '
		  . 'appended them in %s s', $rows, scalar @positions, $pages, $append_seconds));

done_testing();
