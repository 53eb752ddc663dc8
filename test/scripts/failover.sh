#!/usr/bin/env bash
# Failover test of webhook delivery (TAP, PostgreSQL::Test::Cluster): a streaming standby is
# promoted after the primary stops in immediate mode while deliveries were failing; the new
# primary's worker must create its slot, catch up from amebo.delivery_checkpoint and deliver
# every event committed before the failover (stored pending messages included), then new
# ones. See test/tap/failover.pl. Run from the tree root as an unprivileged user:
#   bash test/scripts/failover.sh
# Environment: PYTHON (a python3 for the receiver), PG_TEST_NOCLEAN (keep the nodes' folders).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/tap.sh"

run_tap_test "$top/test/tap/failover.pl" 240
