# Failover of one shard behind amebo_router (run by test/scripts/shard_failover.sh).
#
# A router and two shards; shard 1 is a primary with a synchronous streaming standby, and the
# router reaches it through a multi-host connection string with target_session_attrs=
# read-write. An application (one secret, created through the router) has a subscription on
# both shards to a receiver that verifies every signature. Two appenders call append_event
# through the router, each with its own event ids; meanwhile shard 1's primary is stopped in
# immediate mode (as kill -9) and its standby promoted. Checks:
# - while shard 1 is down, its appends fail with an error that names the shard, and shard 0's
#   go on;
# - a router session that had a connection to the old primary, and new sessions, append on
#   the promoted server (PL/Proxy connects again);
# - every acknowledged append is stored, once, on its stream's shard (no acknowledged append
#   lost), and the failed ones retried with their event ids are stored once too;
# - every stored event reaches the receiver at least once, with a valid signature under the
#   one secret, its shard in the envelope and webhook-id msg_s<shard>_<event id>: the promoted
#   shard's worker caught up from the delivery checkpoint.
use strict;
use warnings;

use Digest::MD5 qw(md5_hex);
use File::Basename qw(dirname);
use File::Spec;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

my $top = File::Spec->rel2abs(dirname(__FILE__) . '/../..');
my $python = $ENV{PYTHON} || 'python3';
my $work = PostgreSQL::Test::Utils::tempdir('shard_failover');
my $receiver_log = "$work/receiver.log";
my $receiver_port = PostgreSQL::Test::Cluster::get_free_port();
my $appends_per_appender = 250;
my $receiver;

# A signal ends the test through die, so that END blocks stop the nodes and the receiver.
$SIG{TERM} = $SIG{INT} = sub { die "killed by a signal\n" };
END { $receiver->kill_kill(grace => 5) if $receiver; }

# A shard's node: amebo preloaded, wal_level logical, loopback handlers allowed, the role the
# router connects as; $extra is appended to postgresql.conf.
sub start_shard
{
	my ($name, $extra) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => 'logical');
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'amebo'
amebo.allow_private_targets = on
amebo.retry_base_delay = 100
amebo.worker_naptime = 200
$extra
});
	$node->start;
	return $node;
}

# Makes a started shard's database postgres an amebo shard the router can use.
sub create_amebo
{
	my ($node) = @_;
	$node->safe_psql('postgres',
		'CREATE EXTENSION amebo; CREATE ROLE amebo_app LOGIN IN ROLE amebo_admin');
	return;
}

# -- the shards: shard 0 alone, shard 1 with a synchronous standby
my $shard0 = start_shard('shard0', '');
my $shard1 = start_shard('shard1', "synchronous_standby_names = 'shard1_standby'");
$shard1->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('shard1_standby');
$standby->init_from_backup($shard1, 'backup', has_streaming => 1);
# Once promoted, it has no standby of its own to wait for.
$standby->append_conf('postgresql.conf', "synchronous_standby_names = ''");
$standby->start;
create_amebo($_) for $shard0, $shard1;
$shard1->wait_for_catchup($standby);

# -- the router
my $router = PostgreSQL::Test::Cluster->new('router');
$router->init;
$router->start;
my $p0 = sprintf('host=%s port=%d dbname=postgres', $shard0->host, $shard0->port);
my $p1 = sprintf('host=%s,%s port=%d,%d dbname=postgres target_session_attrs=read-write',
	$shard1->host, $standby->host, $shard1->port, $standby->port);
$router->safe_psql(
	'postgres', qq{
	CREATE EXTENSION amebo_router CASCADE;
	CREATE SERVER amebo_shards FOREIGN DATA WRAPPER plproxy OPTIONS (p0 '$p0', p1 '$p1');
	CREATE USER MAPPING FOR PUBLIC SERVER amebo_shards OPTIONS (user 'amebo_app');
	SELECT amebo.setup_shards();});
is($shard1->safe_psql('postgres', 'SELECT shard || \'/\' || shards FROM amebo.shard_identity'),
	'1/2', 'shard 1 knows its identity');

# -- the application, its subscription on both shards, the receiver
my $secret = $router->safe_psql('postgres', q{SELECT amebo.create_application('shop')});
$router->safe_psql('postgres', qq{
	SELECT amebo.create_subscription('shop', 'orders', 'order.*',
	                                 'http://127.0.0.1:$receiver_port/orders')});
my $port_file = "$work/receiver.port";
my ($receiver_out, $receiver_err) = ('', '');
$receiver = IPC::Run::start(
	[ $python, "$top/test/lib/receiver.py", '--port', $receiver_port, '--secret', $secret,
	  '--log', $receiver_log, '--port-file', $port_file ],
	'>', \$receiver_out, '2>', \$receiver_err);
my $deadline = time + 30;
until (-s $port_file)
{
	$receiver->pump_nb;
	die "the receiver did not start: $receiver_err" if time > $deadline || !$receiver->pumpable;
	sleep 0.05;
}

# The SQL that appends event $i through the router (its event id derives from $i).
sub append_sql
{
	my ($i) = @_;
	return qq{SELECT amebo.append_event('order-$i', 'order.placed', '{"n": $i}',
	                                     event_id => md5('event-$i')::uuid)};
}

# The event id of event $i, as append_sql gives it (md5('event-' || i)::uuid).
sub event_id
{
	my ($i) = @_;
	return join '-', unpack('A8 A4 A4 A4 A12', md5_hex("event-$i"));
}

# Starts an appender: one psql per append through the router, for events $from to $to;
# writes "ok I" or "failed I: error" lines to $log.
sub start_appender
{
	my ($from, $to, $log) = @_;
	my $connstr = $router->connstr('postgres');
	my $script = qq{
		for i in \$(seq $from $to); do
			sql="SELECT amebo.append_event('order-\$i', 'order.placed', '{\\"n\\": \$i}',
			     event_id => md5('event-\$i')::uuid)"
			if out=\$(psql -X -q -At -v ON_ERROR_STOP=1 -d "$connstr" -c "\$sql" 2>&1); then
				echo "ok \$i"
			else
				echo "failed \$i: \$(echo "\$out" | tr '\\n' ' ')"
			fi
		done >> "$log"};
	return IPC::Run::start([ 'bash', '-c', $script ]);
}

# The lines an appender wrote so far.
sub appender_lines
{
	my ($log) = @_;
	return () unless -e $log;
	return grep { /\S/ } split /\n/, slurp_file($log);
}

# A router session kept open across the failover; it appends to shard 1 before.
my $session = $router->background_psql('postgres', on_error_stop => 0);
my @shard1_streams = grep { $_ } split /\n/, $router->safe_psql('postgres', q{
	SELECT i FROM generate_series(100001, 100100) i WHERE amebo.shard_of('order-' || i) = 1
	ORDER BY i LIMIT 2});
my ($before_failover, $after_failover) = @shard1_streams;
$session->query_safe(append_sql($before_failover));

# -- appenders through the router; shard 1's primary stops (immediate) and its standby is
# promoted while they run
my @logs = ("$work/appender0.log", "$work/appender1.log");
my @appenders = (
	start_appender(1, $appends_per_appender, $logs[0]),
	start_appender($appends_per_appender + 1, 2 * $appends_per_appender, $logs[1]));
$deadline = time + 60;
sleep 0.1 until time > $deadline || appender_lines($logs[0]) + appender_lines($logs[1]) >= 150;
$shard1->stop('immediate');
my $stopped_at = time;
sleep 1;
$standby->promote;
note(sprintf('shard 1 promoted %.1f s after its primary stopped', time - $stopped_at));
$_->finish for @appenders;

my (%acknowledged, %failed, @failure_messages);
for my $line (map { appender_lines($_) } @logs)
{
	if ($line =~ /^ok (\d+)$/) { $acknowledged{$1} = 1; }
	elsif ($line =~ /^failed (\d+): (.*)$/) { $failed{$1} = 1; push @failure_messages, $2; }
}
my $attempts = keys(%acknowledged) + keys(%failed);
is($attempts, 2 * $appends_per_appender, "every append was answered ($attempts)");
cmp_ok(scalar keys %failed, '>', 0, scalar(keys %failed) . ' appends failed while shard 1 was down');
my $shard_of = $router->safe_psql('postgres', q{
	SELECT string_agg(i || ':' || amebo.shard_of('order-' || i), ',')
	FROM generate_series(1, } . (2 * $appends_per_appender) . q{) i});
my %shard_of = map { split /:/ } split /,/, $shard_of;
is(scalar(grep { $shard_of{$_} != 1 } keys %failed), 0, 'only appends to shard 1 failed');
cmp_ok(scalar(grep { $shard_of{$_} == 0 } keys %acknowledged), '>', 0,
	"shard 0's appends went on");
like($failure_messages[0] // '', qr/shard 1 of amebo_shards is unreachable/,
	'the error names the shard: ' . ($failure_messages[0] // ''));

# -- after the promotion: the old session, new sessions, retries of the failed appends
# Runs SQL in the kept session; returns its error output ('' when it succeeded; warnings,
# such as PL/Proxy's about the connection it dropped, do not count).
sub session_error
{
	my ($sql) = @_;
	$session->query($sql);
	my $errors = $session->{stderr};
	$session->{stderr} = '';
	return $errors =~ /ERROR/ ? $errors : '';
}
my $error = session_error(append_sql($after_failover));
# PL/Proxy may fail the first call on the connection it had to the stopped primary, and then
# connect again: the retry (same event id) must succeed.
note("the kept router session's first call after the failover failed: $error") if $error;
$error = session_error(append_sql($after_failover)) if $error;
is($error, '', 'the router session open across the failover appends on the promoted server');
$session->quit;
$acknowledged{$_} = 1 for $before_failover, $after_failover;
$shard_of{$_} = 1 for $before_failover, $after_failover;
for my $i (sort { $a <=> $b } keys %failed)
{
	$router->safe_psql('postgres', append_sql($i));
	$acknowledged{$i} = 1;
}
pass('every failed append retried with its event id through the router succeeded');

# -- no acknowledged append lost, none stored twice, each on its stream's shard
my %stored;
for my $node ([ 0, $shard0 ], [ 1, $standby ])
{
	my ($shard, $shard_node) = @$node;
	for my $row (split /\n/, $shard_node->safe_psql('postgres', q{
		SELECT substr(stream, 7), count(*) FROM amebo.events GROUP BY stream}))
	{
		my ($i, $count) = split /\|/, $row;
		$stored{$i} = { shard => $shard, count => $count };
	}
}
my @lost = grep { !$stored{$_} } keys %acknowledged;
my @twice = grep { $stored{$_}{count} != 1 } keys %stored;
my @misplaced = grep { $stored{$_}{shard} != $shard_of{$_} } keys %stored;
my @unknown = grep { !$acknowledged{$_} } keys %stored;
is(scalar @lost, 0, scalar(keys %acknowledged) . ' acknowledged appends, none lost')
  or diag("lost: @lost");
is(scalar @twice, 0, 'no event stored twice');
is(scalar @misplaced, 0, "every event on its stream's shard");
is(scalar @unknown, 0, 'no event stored that was not acknowledged');

# -- webhooks: every event delivered at least once from its shard, signed with the one secret
my %event_ids = map {
	my $i = $_;
	(event_id($i) => $i)
} keys %acknowledged;
my (%received, $invalid, @bad_shard, @bad_id, $receipts);
$deadline = time + 90;
while (1)
{
	(%received, @bad_shard, @bad_id) = ();
	($invalid, $receipts) = (0, 0);
	my $json = JSON::PP->new;
	for my $record (map { $json->decode($_) } grep { /\S/ } split /\n/,
		-e $receiver_log ? slurp_file($receiver_log) : '')
	{
		next unless $record->{path} eq '/orders';
		$receipts++;
		$invalid++ unless $record->{signature_valid};
		my $body = $record->{body} || {};
		my $i = $event_ids{ $body->{event_id} // '' };
		next unless defined $i;
		$received{$i}++;
		push @bad_shard, $i unless ($body->{shard} // -1) == $shard_of{$i};
		my $want = "msg_s$shard_of{$i}_" . ($body->{event_id} =~ s/-//gr);
		push @bad_id, "$i: $record->{webhook_id}" unless $record->{webhook_id} eq $want;
	}
	last if keys(%received) == keys(%acknowledged) || time > $deadline;
	sleep 0.5;
}
is(scalar(keys %received), scalar(keys %acknowledged),
	'every stored event reached the receiver (the promoted shard caught up)')
  or diag('missing: ' . join(' ', grep { !$received{$_} } sort keys %acknowledged));
is($invalid, 0, "every delivery verified with the application's one secret ($receipts requests)");
is(scalar @bad_shard, 0, 'every envelope carries its shard');
is(scalar @bad_id, 0, 'every webhook-id is msg_s<shard>_<event id>') or diag("@bad_id[0..2]");
note(sprintf('shard failover figures: %d appends (%d failed while shard 1 was down, retried), '
		  . '%d deliveries for %d events (%d again after the failover)',
		$attempts, scalar keys %failed, $receipts, scalar keys %received,
		$receipts - scalar keys %received));

done_testing();
