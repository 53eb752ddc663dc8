# read_all on a hot standby under late commits (run by test/scripts/standby_horizon.sh).
#
# The primary's worker publishes its settled position into amebo.settled_horizon; on the
# standby read_all stops there. Checks:
# - a late commit: while a transaction holds position p open on the primary and a later append
#   p+1 has committed and replayed, the standby returns neither; once p commits it returns
#   both, in order;
# - paging read_all on the standby while 4 pgbench clients append on the primary, each holding
#   its transaction open a random while after the append and rolling back one in ten: every
#   committed event is seen once (0 skipped, 0 repeated), in position order;
# - nothing is written while nothing is appended, and the next append is published;
# - negative control: with publishing off and the published row forced far ahead (what a
#   standby did before: no horizon at all), the same late commit is skipped, so the checks
#   above can fail.
# Notes (not checked): WAL per publication (records of its transactions, from pg_waldump) and
# the worker's CPU time under the load.
use strict;
use warnings;

use File::Basename qw(dirname);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use lib dirname(__FILE__);
use AmeboStandby;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# A signal ends the test through die, so that END blocks stop the nodes.
$SIG{TERM} = $SIG{INT} = sub { die "killed by a signal\n" };

my $load_seconds = 15;
my ($primary, $standby) = AmeboStandby::start_primary_and_standby('');
is($primary->safe_psql('postgres', 'SELECT amebo.wait_for_worker(30)'), 't', 'the worker runs');
is($primary->safe_psql('postgres', 'SHOW amebo.standby_horizon_interval'), '100ms',
	'amebo.standby_horizon_interval defaults to 100 ms');

# Waits until the standby has replayed the publication of the primary's settled position.
# The publishing transaction does not wait for its WAL flush, so the standby may get it a WAL
# writer round (wal_writer_delay) after the primary committed it: poll the standby.
sub wait_for_published_horizon
{
	my $settled = $primary->safe_psql('postgres', 'SELECT amebo.settled_position()');
	ok( $primary->poll_query_until(
			'postgres', "SELECT position >= $settled FROM amebo.settled_horizon"),
		"the primary's worker published settled position $settled");
	ok($standby->poll_query_until('postgres', "SELECT amebo.settled_position() = $settled"),
		'the standby reports the published settled position');
	return $settled;
}

# Reads the standby's next page of positions after $after (at most $max).
sub standby_page
{
	my ($after, $max) = @_;
	my $page = $standby->safe_psql('postgres',
		"SELECT position FROM amebo.read_all(after_position => $after, max_count => $max)");
	return grep { /\d/ } split /\n/, $page;
}

# Opens a transaction on the primary that appends one event and stays open; returns the
# session and the position it took.
sub open_late_append
{
	my ($stream) = @_;
	my $session = $primary->background_psql('postgres');
	$session->query_safe(qq{BEGIN; SELECT amebo.append_event('$stream', 'late.opened', '{}')});
	my $position =
	  $session->query_safe(qq{SELECT position FROM amebo.events WHERE stream = '$stream'});
	chomp $position;
	return ($session, $position);
}

# The late commit: position p held open, p+1 committed and replayed. Returns what the standby
# paged after $after before p committed and after, and p.
sub late_commit_case
{
	my ($after, $name) = @_;
	my ($late, $p) = open_late_append("$name-late");
	$primary->safe_psql('postgres', "SELECT amebo.append_event('$name-early', 'late.done', '{}')");
	# Longer than the interval: a publication past p would have happened by now.
	usleep(400_000);
	$primary->wait_for_catchup($standby);
	my @before = standby_page($after, 10);
	$late->query_safe('COMMIT');
	$late->quit;
	$primary->wait_for_catchup($standby);
	my $last = @before ? $before[-1] : $after;
	my @after;
	my $deadline = time + 30;
	while (time < $deadline && !grep { $_ == $p + 1 } @before, @after)
	{
		push @after, standby_page($last, 10);
		$last = $after[-1] if @after;
		usleep(50_000);
	}
	return (\@before, \@after, $p);
}

my $start = wait_for_published_horizon();

# -- one late commit
my ($before, $after, $p) = late_commit_case($start, 'one');
is(join(',', @$before), '', "while position $p is open the standby returns nothing after $start");
is(join(',', @$after), join(',', $p, $p + 1), 'after it commits the standby returns p and p+1');

# -- nothing is written while nothing is appended
$start = wait_for_published_horizon();
my $row = q{SELECT xmin, position, published_at FROM amebo.settled_horizon};
my $idle = $primary->safe_psql('postgres', $row);
usleep(1_500_000);
is($primary->safe_psql('postgres', $row), $idle, 'idle: the worker wrote nothing in 1.5 s');
my $idle_xmin = (split /\|/, $idle)[0];
$primary->safe_psql('postgres', q{SELECT amebo.append_event('idle-1', 'idle.ended', '{}')});
ok( $primary->poll_query_until(
		'postgres', "SELECT xmin::text <> '$idle_xmin' FROM amebo.settled_horizon"),
	'an append is published');
ok( $primary->poll_query_until(
		'postgres', "SELECT position = amebo.settled_position() FROM amebo.settled_horizon"),
	'the published position is the settled position');

# -- paging under concurrent appenders with late commits and rollbacks
$start = wait_for_published_horizon();
my $worker_pid = $primary->safe_psql('postgres', 'SELECT pid FROM amebo.worker_status()');
my $load = page_under_load($start, $load_seconds);
my $settled = $load->{settled};
cmp_ok($load->{committed}, '>', 100, "$load->{committed} events committed under the load");
cmp_ok($load->{rolled_back}, '>', 0, "$load->{rolled_back} positions rolled back");
is($load->{skipped}, 0, 'paging on the standby skipped no event');
is($load->{repeated}, 0, 'paging on the standby repeated no event');
ok($load->{in_order}, 'the standby returned them in position order');
my ($publications, $wal_bytes) = publication_wal($load->{lsn_before}, $load->{lsn_after});
cmp_ok($publications, '<=', $load_seconds * 10 + 20, "$publications publications: at most one per 100 ms");

# -- negative control: no horizon on the standby (publishing off, the row far ahead)
$primary->safe_psql('postgres', q{
	ALTER SYSTEM SET amebo.standby_horizon_interval = 0;
	SELECT pg_reload_conf();});
$primary->poll_query_until('postgres',
	q{SELECT current_setting('amebo.standby_horizon_interval') = '0'});
usleep(300_000);
$primary->safe_psql('postgres', q{UPDATE amebo.settled_horizon SET position = 1000000000000000});
$primary->wait_for_catchup($standby);
($before, $after, $p) = late_commit_case($settled, 'control');
my @control = (@$before, @$after);
ok(!grep({ $_ == $p } @control),
	"negative control: without the horizon the standby skipped position $p ("
	  . join(',', @control) . ')');
my $control = page_under_load($p + 1, $load_seconds);
cmp_ok($control->{skipped}, '>', 0,
	"negative control: under the same load the standby skipped $control->{skipped} of "
	  . "$control->{committed} events");
is((publication_wal($control->{lsn_before}, $control->{lsn_after}))[0], 0,
	'negative control: nothing published');

# -- what publishing cost the primary (notes)
note(sprintf('standby horizon figures: %d events (%d rolled back) in %d s, paged in %d pages; '
		  . '%d publications, %.0f bytes of WAL each (%.0f bytes/s); worker CPU %.0f ms '
		  . 'publishing against %.0f ms not publishing under the same load (%.2f ms more per '
		  . 'publication); without the horizon: %d of %d events skipped',
		$load->{committed}, $load->{rolled_back}, $load_seconds, $load->{pages},
		$publications, $publications ? $wal_bytes / $publications : 0,
		$wal_bytes / $load_seconds, $load->{worker_cpu_ms}, $control->{worker_cpu_ms},
		$publications ? ($load->{worker_cpu_ms} - $control->{worker_cpu_ms}) / $publications : 0,
		$control->{skipped}, $control->{committed}));

done_testing();

# Publications between two LSNs and their WAL bytes: the records of every transaction that
# updated amebo.settled_horizon, as pg_waldump lists them.
sub publication_wal
{
	my ($from, $to) = @_;
	my $relfile = $primary->safe_psql('postgres',
		q{SELECT pg_relation_filenode('amebo.settled_horizon')});
	my ($out, $err) = run_command([ 'pg_waldump', '-p', $primary->data_dir . '/pg_wal',
		'-s', $from, '-e', $to ]);
	my (%publishing, %bytes);
	for my $line (split /\n/, $out)
	{
		next unless $line =~ /len \(rec\/tot\):\s*\d+\/\s*(\d+), tx:\s*(\d+)/;
		my ($total, $xid) = ($1, $2);
		next if $xid == 0;
		$bytes{$xid} += $total;
		$publishing{$xid} = 1 if $line =~ /rel \d+\/\d+\/$relfile\b/;
	}
	my $sum = 0;
	$sum += $bytes{$_} for keys %publishing;
	return (scalar keys %publishing, $sum);
}

# Pages read_all on the standby from position $start while 4 pgbench clients append on the
# primary for $seconds seconds (a transaction stays open a random while after its append, one
# in ten rolls back), then until the standby has every committed event. Returns the figures.
sub page_under_load
{
	my ($start, $seconds) = @_;
	my %figures = (lsn_before => $primary->safe_psql('postgres', 'SELECT pg_current_wal_lsn()'));
	my $cpu_before = slurp_file("/proc/$worker_pid/stat");
	my $script = "${PostgreSQL::Test::Utils::tmp_check}/late_appends.sql";
	unlink $script;
	append_to_file(
		$script, q{\set stream random(1, 40)
\set roll random(1, 10)
BEGIN;
SELECT amebo.append_event('load-' || :stream, 'load.appended', '{}');
SELECT pg_sleep(random() * 0.03);
\if :roll = 1
ROLLBACK;
\else
COMMIT;
\endif
});
	my ($out, $err) = ('', '');
	my $bench = IPC::Run::start(
		[ 'pgbench', '-n', '-c', '4', '-j', '1', '-T', $seconds, '-f', $script,
		  $primary->connstr('postgres') ],
		'>', \$out, '2>', \$err);
	my @seen;
	my $last = $start;
	$figures{pages} = 0;
	while ($bench->pumpable)
	{
		my @got = standby_page($last, 50);
		$figures{pages}++;
		push @seen, @got;
		$last = $got[-1] if @got;
		usleep(20_000) unless @got;
		$bench->pump_nb;
	}
	$bench->finish;
	like($out, qr/number of transactions actually processed: [1-9]/, 'pgbench appended')
	  or diag($err);
	$figures{worker_cpu_ms} =
	  (cpu_ticks(slurp_file("/proc/$worker_pid/stat")) - cpu_ticks($cpu_before)) * 10;
	$figures{lsn_after} = $primary->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	# Every append has ended: the standby can have all of them once it replayed them.
	my $settled = $primary->safe_psql('postgres', 'SELECT amebo.settled_position()');
	$primary->poll_query_until('postgres', "SELECT position >= $settled FROM amebo.settled_horizon");
	$standby->poll_query_until('postgres', "SELECT amebo.settled_position() >= $settled");
	while (my @got = standby_page($last, 500))
	{
		push @seen, @got;
		$last = $got[-1];
	}
	my %count;
	$count{$_}++ for @seen;
	my @expected = split /,/, $primary->safe_psql('postgres',
		"SELECT string_agg(position::text, ',' ORDER BY position) FROM amebo.events
		 WHERE position > $start AND position <= $settled");
	$figures{settled} = $settled;
	$figures{committed} = @expected;
	$figures{rolled_back} = $settled - $start - @expected;
	$figures{skipped} = grep { !$count{$_} } @expected;
	$figures{repeated} = grep { $count{$_} > 1 } keys %count;
	$figures{in_order} = join(',', @seen) eq join(',', @expected);
	return \%figures;
}

# User plus system CPU ticks from a /proc/PID/stat line.
sub cpu_ticks
{
	my ($stat) = @_;
	my @fields = split / /, ($stat =~ /\) (.*)/)[0];
	return $fields[11] + $fields[12];
}
