#!/usr/bin/env bash
# Crash test: appenders run on a handful of streams while a backend is terminated, a backend
# is killed with SIGKILL, and then (several times) the postmaster and all its children are
# killed with SIGKILL and the cluster is started again. After each restart every acknowledged
# append must be stored at its version, streams must be contiguous, read_all must return
# everything (no position left in flight) and appends must go on at the right versions.
# See test/stress/crash.py. Run from the tree root as an unprivileged user:
#   bash test/scripts/crash.sh
# Environment:
#   AMEBO_CRASH_PORT   first port to try (default 55481; the first free one is used)
#   AMEBO_CRASH_SEED   seed of the appenders' choices (thread timing still varies)
#   AMEBO_CRASH_ARGS   more arguments for crash.py, e.g. "--cycles 12 --clients 8"
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"
start_test_cluster crash "${AMEBO_CRASH_PORT:-55481}"
status=0
# shellcheck disable=SC2086 # AMEBO_CRASH_ARGS is a list of words
timeout --kill-after=10 600 "$PYTHON_BIN" "$top/test/stress/crash.py" \
    --pg-bin "$PG_BIN" --dir "$TEST_CLUSTER" --port "$TEST_PORT" ${AMEBO_CRASH_ARGS:-} || status=$?
if [ $status -ne 0 ]; then
    show_unexpected_errors "version conflict|with different content|partly stored"
fi
exit $status
