#!/usr/bin/env bash
# Projections and the background worker, on a throwaway cluster: async catch-up and
# following concurrent writers (every committed event applied exactly once, in order), the
# latch wake-up latency, handler errors (pause, error position, resume), action filters,
# rebuild progress, cancellation and completion, an inline rebuild blocking appends, and the
# worker across DROP/CREATE EXTENSION, a config reload and a change of amebo.database_name.
# See test/projections/projections_test.py. Run from the tree root as an unprivileged user:
#   bash test/scripts/projections.sh
# Environment:
#   AMEBO_PROJECTIONS_PORT   first port to try (default 55491; the first free one is used)
#   AMEBO_PROJECTIONS_SEED   seed of the writers' choices (thread timing still varies)
#   AMEBO_PROJECTIONS_ARGS   more arguments for projections_test.py, e.g. "--appends 1000"
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"
start_test_cluster projections "${AMEBO_PROJECTIONS_PORT:-55491}"
status=0
# shellcheck disable=SC2086 # AMEBO_PROJECTIONS_ARGS is a list of words
timeout --kill-after=10 300 "$PYTHON_BIN" "$top/test/projections/projections_test.py" \
    --host "$TEST_CLUSTER" --port "$TEST_PORT" --log "$TEST_CLUSTER/server.log" \
    ${AMEBO_PROJECTIONS_SEED:+--seed "$AMEBO_PROJECTIONS_SEED"} \
    ${AMEBO_PROJECTIONS_ARGS:-} || status=$?
if [ $status -ne 0 ]; then
    show_unexpected_errors "poisoned event|canceling statement due to user request"
fi
exit $status
