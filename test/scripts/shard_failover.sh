#!/usr/bin/env bash
# Failover of one shard behind amebo_router (TAP, PostgreSQL::Test::Cluster): a router and two
# shards, shard 1 a primary with a synchronous standby reached through a multi-host connection
# string (target_session_attrs=read-write); its primary stops in immediate mode under appends
# through the router and the standby is promoted: no acknowledged append lost, the router's
# later calls succeed on the promoted server, and its webhooks catch up, verified with the one
# application secret. See test/tap/shard_failover.pl.
# Run from the tree root as an unprivileged user:
#   bash test/scripts/shard_failover.sh
# Environment: PG_TEST_NOCLEAN (keep the nodes' folders).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/tap.sh"

run_tap_test "$top/test/tap/shard_failover.pl" 170
