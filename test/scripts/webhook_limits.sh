#!/usr/bin/env bash
# Per-subscription rate limits and the circuit breaker, end to end, on a throwaway cluster
# (wal_level = logical, amebo.disable_after = 2s, fast retries) against test/lib/receiver.py
# on 127.0.0.1: a limited subscription's deliveries stay within its rate plus the burst while
# an unlimited one is not held back; an endpoint that fails every attempt for 2 s is disabled
# with a reason, its amebo.subscription_disabled event is delivered to another subscription,
# and resuming it delivers again; one that fails only some attempts stays active, and so does
# every one with amebo.disable_after = 0. See test/webhooks/limits.py. Run from the tree
# root as an unprivileged user:
#   bash test/scripts/webhook_limits.sh
# Environment: AMEBO_LIMITS_PORT, the first port to try (default 55561; the first free one);
# AMEBO_LIMITS_RATE, the limited subscription's rate (default 20 requests per second).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"

TEST_WORK=$(mktemp -d "/tmp/amebo-limits.XXXXXX")
TEST_CLUSTER=$TEST_WORK/cluster
TEST_PORT=$(free_port "${AMEBO_LIMITS_PORT:-55561}")
PYTHON_BIN=$(python_with_psycopg)
export PYTHONDONTWRITEBYTECODE=1
trap stop_receiver_and_cluster EXIT
cluster_start "$TEST_CLUSTER" "$TEST_PORT" \
    "wal_level = logical" \
    "amebo.allow_private_targets = on" \
    "amebo.retry_base_delay = 100" \
    "amebo.retry_max_delay = 400" \
    "amebo.delivery_timeout = 2000" \
    "amebo.worker_naptime = 200" \
    "amebo.disable_after = 2s"
"$PG_BIN/psql" -X -q -h "$TEST_CLUSTER" -p "$TEST_PORT" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -c "CREATE EXTENSION amebo"

started=$SECONDS
status=0
timeout --kill-after=10 170 "$PYTHON_BIN" "$top/test/webhooks/limits.py" \
    --host "$TEST_CLUSTER" --port "$TEST_PORT" --receiver-pid-file "$TEST_WORK/receiver.pid" \
    | tee "$TEST_WORK/output.txt" || status=$?
if [ $status -ne 0 ]; then
    show_unexpected_errors "could not append its operational event"
fi
echo "=== webhook_limits: $(grep -c '^  ok' "$TEST_WORK/output.txt" || true) checks passed," \
    "$(grep -c '^  FAIL' "$TEST_WORK/output.txt" || true) failed, exit status $status," \
    "$((SECONDS - started)) s"
exit $status
