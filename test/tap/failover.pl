# Failover test of webhook delivery (run by test/scripts/failover.sh).
#
# A primary delivers events to a receiver; the receiver goes away, so deliveries fail and are
# retried and stored in amebo.deliveries; more events are appended and replayed by a
# streaming standby; the primary is stopped in immediate mode and the standby promoted. The
# receiver comes back on the same port. The promoted standby has no slot (PostgreSQL 15 keeps
# none on standbys): its worker must create one, catch up from amebo.delivery_checkpoint and
# deliver every event committed before the failover that had not been delivered, the stored
# pending messages included, and then deliver new events too. Every event must reach the
# endpoint at least once, with one webhook-id per event and valid signatures.
use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use lib dirname(__FILE__);
use AmeboStandby;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

my $top = File::Spec->rel2abs(dirname(__FILE__) . '/../..');
my $receiver_py = "$top/test/lib/receiver.py";
my $python = $ENV{PYTHON} || 'python3';
my $work = PostgreSQL::Test::Utils::tempdir('failover');
my $receiver_log = "$work/receiver.log";
my $receiver_port = PostgreSQL::Test::Cluster::get_free_port();
my $receiver;    # the running receiver's IPC::Run harness
my $app_secret;

# A signal ends the test through die, so that END blocks stop the nodes and the receiver.
$SIG{TERM} = $SIG{INT} = sub { die "killed by a signal\n" };

# Starts the receiver on $receiver_port, appending to $receiver_log; waits until it listens.
sub start_receiver
{
	my $port_file = "$work/receiver.port";
	unlink $port_file;
	my ($out, $err) = ('', '');
	$receiver = IPC::Run::start(
		[
			$python, $receiver_py, '--port', $receiver_port, '--secret', $app_secret,
			'--log', $receiver_log, '--port-file', $port_file
		],
		'>', \$out, '2>', \$err);
	my $deadline = time + 30;
	until (-s $port_file)
	{
		$receiver->pump_nb;
		die "the receiver did not start: $out $err" if time > $deadline || !$receiver->pumpable;
		sleep 0.05;
	}
	return;
}

# Stops the receiver (SIGTERM, then SIGKILL after 5 s).
sub stop_receiver
{
	return unless $receiver;
	$receiver->kill_kill(grace => 5);
	$receiver = undef;
	return;
}

END { stop_receiver(); }

# The receiver's log: one hash per request.
sub receipts
{
	return () unless -e $receiver_log;
	open my $fh, '<', $receiver_log or die "cannot read $receiver_log: $!";
	my $json = JSON::PP->new;
	my @records = map { $json->decode($_) } grep { /\S/ } <$fh>;
	close $fh;
	return @records;
}

# Every stored event as event_id => position.
sub stored_events
{
	my ($node) = @_;
	my %events = map { split /\|/ }
	  split /\n/, $node->safe_psql('postgres', 'SELECT event_id, position FROM amebo.events');
	return %events;
}

# Appends $count events in batches of up to 10 on a few streams, tagged with $phase.
sub append_events
{
	my ($node, $phase, $count) = @_;
	$node->safe_psql(
		'postgres', qq{
		SELECT amebo.append_events('order-$phase-' || (g / 10 % 5),
			(SELECT jsonb_agg(jsonb_build_object('action',
				CASE WHEN n % 2 = 0 THEN 'order.placed' ELSE 'order.paid' END,
				'payload', jsonb_build_object('phase', '$phase', 'n', n)))
			 FROM generate_series(g, least(g + 9, $count)) n))
		FROM generate_series(1, $count, 10) g});
	return;
}

# Polls amebo.wait_for_deliveries on $node until it is true or $timeout seconds passed.
sub wait_for_deliveries
{
	my ($node, $timeout) = @_;
	my $deadline = time + $timeout;
	while (time < $deadline)
	{
		return 1
		  if $node->safe_psql('postgres', 'SELECT amebo.wait_for_deliveries(5)') eq 't';
	}
	return 0;
}

# Positions as ranges, e.g. "3-7 9".
sub ranges
{
	my @sorted = sort { $a <=> $b } @_;
	my @out;
	while (@sorted)
	{
		my $first = my $last = shift @sorted;
		$last = shift @sorted while @sorted && $sorted[0] == $last + 1;
		push @out, $first == $last ? $first : "$first-$last";
	}
	return join ' ', @out;
}

# Checks that every event in %$events reached /orders at least once with its own webhook-id
# and only valid signatures; returns (missing, receipts, duplicates).
sub check_receipts
{
	my ($label, $events) = @_;
	my (%ids, %count);
	my $invalid = 0;
	for my $r (receipts())
	{
		next unless $r->{path} eq '/orders';
		$invalid++ unless $r->{signature_valid};
		my $eid = ($r->{body} || {})->{event_id} // '';
		$count{$eid}++;
		$ids{$eid}{ $r->{webhook_id} // '' } = 1;
	}
	my @missing = grep { !$count{$_} } sort keys %$events;
	my @bad_ids = grep {
		my $want = 'msg_' . ($_ =~ s/-//gr);
		$count{$_} && join(',', keys %{ $ids{$_} }) ne $want
	} sort keys %$events;
	my @unknown = grep { !exists $events->{$_} } keys %count;
	my $receipts = 0;
	$receipts += $count{$_} for keys %count;
	is(scalar @missing, 0, "$label: every event reached the endpoint")
	  or diag('missing positions: ' . ranges(map { $events->{$_} } @missing));
	is(scalar @bad_ids, 0, "$label: one webhook-id per event, msg_<event id>")
	  or diag("e.g. $bad_ids[0]: " . join(',', keys %{ $ids{ $bad_ids[0] } }));
	is(scalar @unknown, 0, "$label: no event arrived that is not stored");
	is($invalid, 0, "$label: all signatures valid");
	return (scalar @missing, $receipts, $receipts - (keys(%$events) - @missing));
}

# -- the primary and its standby

my ($primary, $standby) = AmeboStandby::start_primary_and_standby(
	"amebo.retry_base_delay = 100\namebo.retry_max_delay = 1000");
is($primary->safe_psql('postgres', 'SELECT amebo.wait_for_worker(30)'),
	't', 'the worker runs on the primary');
$app_secret = $primary->safe_psql('postgres', "SELECT amebo.create_application('shop')");
start_receiver();
$primary->safe_psql(
	'postgres', qq{
	SELECT amebo.create_subscription('shop', 'orders', 'order.*',
		'http://127.0.0.1:$receiver_port/orders', max_retries => 100)});

# -- phase 1: delivered while the receiver is up
append_events($primary, 'one', 50);
ok(wait_for_deliveries($primary, 30), 'phase 1 delivered on the primary');
my %events = stored_events($primary);
check_receipts('before failover', \%events);

# -- phase 2: the receiver is down; deliveries fail, are retried and stored
stop_receiver();
my %received_before = map { (($_->{body} || {})->{event_id} // '') => 1 } receipts();
my $receipts_before = () = receipts();
append_events($primary, 'two', 200);
ok( $primary->poll_query_until(
		'postgres',
		"SELECT count(*) > 0 FROM amebo.deliveries WHERE state = 'pending' AND attempts > 0"),
	'failed deliveries are stored for retry on the primary');
# -- phase 3: events the old primary's worker never handles. A session holds SHARE locks
# that its next bookkeeping transaction waits for, so the checkpoint stays behind them (the
# locks are not WAL-logged: the standby does not see them).
my $blocker = $primary->background_psql('postgres');
$blocker->query_safe(
	'BEGIN; LOCK TABLE amebo.delivery_log_entries, amebo.delivery_checkpoint IN SHARE MODE');
ok( $primary->poll_query_until(
		'postgres', q{
		SELECT count(*) > 0 FROM pg_locks
		WHERE NOT granted AND relation IN ('amebo.delivery_log_entries'::regclass,
		                                   'amebo.delivery_checkpoint'::regclass)}),
	'the old primary\'s worker waits for its bookkeeping');
append_events($primary, 'three', 100);
$primary->wait_for_catchup($standby);
$primary->stop('immediate');
eval { $blocker->quit };    # its server is gone

my ($pending, $attempted, $checkpoint, $head) = split /\|/, $standby->safe_psql(
	'postgres', q{
	SELECT (SELECT count(*) FROM amebo.deliveries WHERE state = 'pending'),
	       (SELECT count(*) FROM amebo.deliveries WHERE state = 'pending' AND attempts > 0),
	       (SELECT position FROM amebo.delivery_checkpoint),
	       (SELECT max(position) FROM amebo.events)});
my $dead = $standby->safe_psql('postgres',
	"SELECT count(*) FROM amebo.deliveries WHERE state = 'dead'");
is($dead, 0, 'no message is dead at failover');
cmp_ok($pending, '>', 0, 'failed deliveries were replicated as pending messages');
cmp_ok($checkpoint, '<=', $head - 100, 'the delivery checkpoint is behind phase 3 at failover');
note("at failover: $head events, checkpoint at $checkpoint, $pending pending messages "
	  . "($attempted of them attempted)");

# -- failover
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the standby was not promoted';
my $promoted_at = time;
start_receiver();
my $caught_up = wait_for_deliveries($standby, 90);
my $drain = time - $promoted_at;
ok($caught_up, 'the promoted standby delivered everything');
unless ($caught_up)
{
	diag($standby->safe_psql('postgres', 'SELECT * FROM amebo.subscription_status'));
	diag($standby->safe_psql('postgres', 'SELECT * FROM amebo.delivery_queue'));
}
my $slot = $standby->safe_psql('postgres',
	'SELECT slot_name FROM amebo.delivery_queue WHERE active_pid IS NOT NULL');
like($slot, qr/^amebo_\d+$/, 'the worker created its slot on the new primary');
like(slurp_file($standby->logfile),
	qr/amebo: created replication slot/, 'the new primary logged the catch-up');

%events = stored_events($standby);
is(scalar keys %events, 350, 'every event committed before the failover is stored');
my $caught_up_events = grep { !$received_before{$_} } keys %events;
my ($missing, $receipts, $duplicates) = check_receipts('after failover', \%events);

# -- new events on the new primary
append_events($standby, 'four', 20);
ok(wait_for_deliveries($standby, 30), 'new events delivered on the new primary');
%events = stored_events($standby);
is(scalar keys %events, 370, 'new events stored');
my ($missing_new, $receipts_new, $duplicates_new) = check_receipts('new primary', \%events);

my $log_failures = $standby->safe_psql('postgres',
	"SELECT count(*) FROM amebo.delivery_log WHERE status IS NULL OR status NOT BETWEEN 200 AND 299"
);
note(sprintf(
		"failover figures: %d events before the failover, %d of them delivered before it; "
		  . "checkpoint at %d, %d pending messages (%d attempted); %d events caught up with "
		  . "%d requests in %.1f s (%d duplicates); after 20 new events: %d receipts in all, "
		  . "%d duplicates; %d failed attempts logged on the new primary",
		$head, $head - $caught_up_events, $checkpoint, $pending, $attempted, $caught_up_events,
		$receipts - $receipts_before, $drain, $duplicates, $receipts_new, $duplicates_new,
		$log_failures));

stop_receiver();
done_testing();
