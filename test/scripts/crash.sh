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
source "$top/test/lib/cluster.sh"
source "$top/test/stress/lib.sh"

python=$(python_with_psycopg)
export PYTHONDONTWRITEBYTECODE=1
dir=$(mktemp -d /tmp/amebo-crash.XXXXXX)
port=$(free_port "${AMEBO_CRASH_PORT:-55481}")
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    cluster_stop "$dir/cluster" || true
    rm -rf "$dir"
}
trap cleanup EXIT

cluster_start "$dir/cluster" "$port"
"$PG_BIN/psql" -X -q -h "$dir/cluster" -p "$port" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -c "CREATE EXTENSION amebo"
status=0
# shellcheck disable=SC2086 # AMEBO_CRASH_ARGS is a list of words
timeout --kill-after=10 600 "$python" "$top/test/stress/crash.py" \
    --pg-bin "$PG_BIN" --dir "$dir/cluster" --port "$port" ${AMEBO_CRASH_ARGS:-} || status=$?
if [ $status -ne 0 ]; then
    echo "--- server log: errors other than the expected conflicts (last 40)"
    grep -E "PANIC|FATAL|TRAP|terminated|ERROR|redo|ready" "$dir/cluster/server.log" |
        grep -v -E "version conflict|with different content|partly stored" | tail -n 40 || true
fi
exit $status
