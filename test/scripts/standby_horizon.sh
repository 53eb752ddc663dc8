#!/usr/bin/env bash
# read_all on a hot standby under late commits (TAP, PostgreSQL::Test::Cluster): the primary's
# worker publishes its settled position, the standby stops there; paging on the standby while
# 4 clients append with late commits and rollbacks skips and repeats nothing; a negative
# control without the horizon skips. See test/tap/standby_horizon.pl.
# Run from the tree root as an unprivileged user:
#   bash test/scripts/standby_horizon.sh
# Environment: PG_TEST_NOCLEAN (keep the nodes' folders).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/tap.sh"

run_tap_test "$top/test/tap/standby_horizon.pl" 170
