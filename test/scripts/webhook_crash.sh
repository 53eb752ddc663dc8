#!/usr/bin/env bash
# Webhook crash test: 10,000 events are appended by several clients while the worker delivers
# them to two subscriptions (a pattern and an exact action; a non-matching action is mixed
# in); half-way the postmaster and all its children are killed with SIGKILL and the cluster
# is started again. Every matching event must then reach each matching subscription's path at
# least once, non-matching ones never, duplicates with the same webhook-id, all signed
# correctly. Prints the duplicates per subscription and how long the drain took.
# See test/webhooks/crash.py. Run from the tree root as an unprivileged user:
#   bash test/scripts/webhook_crash.sh
# Environment:
#   AMEBO_WEBHOOK_CRASH_PORT  first port to try (default 55581; the first free one is used)
#   AMEBO_WEBHOOK_CRASH_ARGS  more arguments for crash.py, e.g. "--events 20000 --seed 7"
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"

TEST_WORK=$(mktemp -d /tmp/amebo-webhook-crash.XXXXXX)
TEST_CLUSTER=$TEST_WORK/cluster
TEST_PORT=$(free_port "${AMEBO_WEBHOOK_CRASH_PORT:-55581}")
PYTHON_BIN=$(python_with_psycopg)
export PYTHONDONTWRITEBYTECODE=1
receiver_pid=

# Stops the receiver and the cluster and removes the work folder.
cleanup() {
    if [ -n "$receiver_pid" ]; then
        kill "$receiver_pid" 2>/dev/null || true
        wait "$receiver_pid" 2>/dev/null || true
    fi
    cluster_stop "$TEST_CLUSTER" || true
    rm -rf "$TEST_WORK"
}
trap cleanup EXIT

cluster_start "$TEST_CLUSTER" "$TEST_PORT" "wal_level = logical" \
    "amebo.allow_private_targets = on" "amebo.retry_base_delay = 100"
"$PG_BIN/psql" -X -q -h "$TEST_CLUSTER" -p "$TEST_PORT" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -c "CREATE EXTENSION amebo"

secret="whsec_$(head -c 32 /dev/urandom | base64)"
"$PYTHON_BIN" "$top/test/lib/receiver.py" --port 0 --secret "$secret" \
    --log "$TEST_WORK/receiver.log" --port-file "$TEST_WORK/receiver.port" \
    >"$TEST_WORK/receiver.out" 2>&1 &
receiver_pid=$!
for _ in $(seq 100); do
    [ -s "$TEST_WORK/receiver.port" ] && break
    sleep 0.1
done
if [ ! -s "$TEST_WORK/receiver.port" ]; then
    echo "the receiver did not start:" >&2
    cat "$TEST_WORK/receiver.out" >&2
    exit 1
fi
receiver_port=$(cat "$TEST_WORK/receiver.port")

status=0
# shellcheck disable=SC2086 # AMEBO_WEBHOOK_CRASH_ARGS is a list of words
timeout --kill-after=10 170 "$PYTHON_BIN" "$top/test/webhooks/crash.py" \
    --pg-bin "$PG_BIN" --dir "$TEST_CLUSTER" --port "$TEST_PORT" \
    --receiver-url "http://127.0.0.1:$receiver_port" --receiver-log "$TEST_WORK/receiver.log" \
    --secret "$secret" ${AMEBO_WEBHOOK_CRASH_ARGS:-} || status=$?
if [ $status -ne 0 ]; then
    show_unexpected_errors "terminating connection because of crash|was terminated by signal 9|database system was interrupted|redo|ready"
fi
exit $status
