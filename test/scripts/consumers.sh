#!/usr/bin/env bash
# Pull consumers under concurrency: four appenders (random rollbacks, late commits), four
# members served by worker sessions terminated at random mid-lease; at least once, exactly
# once in a read model written with transactional acks, per-stream order; parking and
# replay; NOTIFY for commits only. See test/consumers/consumers.py. Run from the tree root
# as an unprivileged user: bash test/scripts/consumers.sh
# Environment:
#   AMEBO_CONSUMERS_PORT  first port to try (default 55571)
#   AMEBO_CONSUMERS_ARGS  more arguments for consumers.py, e.g. "--seed 7 --transactions 500"
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"
start_test_cluster consumers "${AMEBO_CONSUMERS_PORT:-55571}"
status=0
# shellcheck disable=SC2086 # AMEBO_CONSUMERS_ARGS is a list of words
timeout --kill-after=10 300 "$PYTHON_BIN" "$top/test/consumers/consumers.py" \
    --host "$TEST_CLUSTER" --port "$TEST_PORT" ${AMEBO_CONSUMERS_ARGS:-} || status=$?
if [ $status -ne 0 ]; then
    show_unexpected_errors "terminating connection due to administrator command|is not leased"
fi
exit $status
