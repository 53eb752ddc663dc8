#!/usr/bin/env bash
# Randomized concurrency stress test: 8 writers make 10,000 append calls on 50 hot streams
# (random expected versions, batches, transactions rolled back whole or to a savepoint,
# idempotent and racing retries) while read_all consumers page through the log; then checks
# that the store, the writers' acknowledgements and what every consumer saw agree.
# See test/stress/stress.py. Run from the tree root as an unprivileged user:
#   bash test/scripts/stress.sh
# Environment:
#   AMEBO_STRESS_PORT           first port to try (default 55471; the first free one is used)
#   AMEBO_STRESS_SEED           seed of the writers' choices (thread timing still varies)
#   AMEBO_STRESS_ARGS           more arguments for stress.py, e.g. "--streams 5 --appends 2000"
#   AMEBO_STRESS_BROKEN_READER=1  consumer 0 pages with a plain SELECT instead of read_all:
#                               the test must then fail (it misses late commits)
#   AMEBO_STRESS_STRICT_IDS=0   tolerate 23505 instead of AM002 when one new event_id races
#                               into two streams (fixed; strict is the default)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"
start_test_cluster stress "${AMEBO_STRESS_PORT:-55471}"
status=0
# shellcheck disable=SC2086 # AMEBO_STRESS_ARGS is a list of words
timeout --kill-after=10 600 "$PYTHON_BIN" "$top/test/stress/stress.py" \
    --host "$TEST_CLUSTER" --port "$TEST_PORT" ${AMEBO_STRESS_ARGS:-} || status=$?
if [ $status -ne 0 ]; then
    show_unexpected_errors "version conflict|with different content|partly stored"
fi
exit $status
