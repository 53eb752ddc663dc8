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
source "$top/test/lib/cluster.sh"
source "$top/test/stress/lib.sh"

python=$(python_with_psycopg)
export PYTHONDONTWRITEBYTECODE=1
dir=$(mktemp -d /tmp/amebo-stress.XXXXXX)
port=$(free_port "${AMEBO_STRESS_PORT:-55471}")
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
# shellcheck disable=SC2086 # AMEBO_STRESS_ARGS is a list of words
timeout --kill-after=10 600 "$python" "$top/test/stress/stress.py" \
    --host "$dir/cluster" --port "$port" ${AMEBO_STRESS_ARGS:-} || status=$?
if [ $status -ne 0 ]; then
    echo "--- server log: errors other than the expected conflicts (last 30)"
    grep -E "PANIC|FATAL|TRAP|terminated|ERROR" "$dir/cluster/server.log" |
        grep -v -E "version conflict|with different content|partly stored" | tail -n 30 || true
fi
exit $status
