#!/usr/bin/env bash
# Reads on a streaming hot standby (TAP, PostgreSQL::Test::Cluster): every read function and
# status view works there and returns what the primary returns, load_state returns the state
# without writing a snapshot, writes fail with SQLSTATE 25006, and paging through read_all
# while the primary appends returns every event once, in order. See test/tap/standby_reads.pl.
# Run from the tree root as an unprivileged user:
#   bash test/scripts/standby_reads.sh
# Environment: PG_TEST_NOCLEAN (keep the nodes' folders).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/tap.sh"

run_tap_test "$top/test/tap/standby_reads.pl" 150
