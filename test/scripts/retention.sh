#!/usr/bin/env bash
# Retention test: holds (a paused async projection, a paused subscription's queued messages),
# a redaction while webhooks are queued, and SIGKILL of the worker and then of the postmaster
# in the middle of retention passes: nothing half-removed, versions kept, the pass resumes.
# See test/retention/retention.py. Run from the tree root as an unprivileged user:
#   bash test/scripts/retention.sh
# Environment:
#   AMEBO_RETENTION_PORT  first port to try (default 55661; the first free one is used)
#   AMEBO_RETENTION_ARGS  more arguments for retention.py, e.g. "--streams 500"
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"
start_test_cluster retention "${AMEBO_RETENTION_PORT:-55661}" "wal_level = logical" \
    "amebo.allow_private_targets = on" "amebo.worker_naptime = 200"
status=0
# shellcheck disable=SC2086 # AMEBO_RETENTION_ARGS is a list of words
timeout --kill-after=10 300 "$PYTHON_BIN" "$top/test/retention/retention.py" \
    --pg-bin "$PG_BIN" --dir "$TEST_CLUSTER" --port "$TEST_PORT" ${AMEBO_RETENTION_ARGS:-} ||
    status=$?
if [ $status -ne 0 ]; then
    show_unexpected_errors "terminated by signal 9|was terminated|redo"
fi
exit $status
