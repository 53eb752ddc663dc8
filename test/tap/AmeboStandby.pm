# A primary with amebo preloaded (wal_level = logical, loopback handlers allowed) and a
# streaming hot standby of it, for the TAP tests in test/tap.
package AmeboStandby;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;

# Starts the primary (with amebo created in database postgres) and its standby; extra_conf
# is appended to the primary's postgresql.conf. Returns ($primary, $standby).
sub start_primary_and_standby {
	my ($extra_conf) = @_;
	my $primary = PostgreSQL::Test::Cluster->new('primary');
	$primary->init(allows_streaming => 'logical');
	$primary->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'amebo'
amebo.allow_private_targets = on
log_statement = none
$extra_conf
});
	$primary->start;
	$primary->backup('backup');
	my $standby = PostgreSQL::Test::Cluster->new('standby');
	$standby->init_from_backup($primary, 'backup', has_streaming => 1);
	$standby->start;
	$primary->safe_psql('postgres', 'CREATE EXTENSION amebo');
	return ($primary, $standby);
}

# Waits until the standby replayed everything and the publication of the primary's settled
# position (which does not wait for its WAL flush, so it can reach the standby a WAL writer
# round after the rest): read_all on the standby then returns every event the primary's does.
sub wait_for_horizon {
	my ($primary, $standby) = @_;
	my $settled = $primary->safe_psql('postgres', 'SELECT amebo.settled_position()');
	$primary->wait_for_catchup($standby);
	$standby->poll_query_until('postgres', "SELECT amebo.settled_position() >= $settled")
	  or die "the standby did not get the primary's settled position $settled";
	return;
}

1;
