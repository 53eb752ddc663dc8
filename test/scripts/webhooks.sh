#!/usr/bin/env bash
# Webhook delivery end to end, on a throwaway cluster with wal_level = logical and fast retry
# settings, against test/lib/receiver.py on 127.0.0.1: every matching event arrives exactly
# once and signed (patterns, exact names, '*', payload filters, batches, bodies equal to the
# stored events); a failing endpoint follows the backoff schedule to dead and redeliver; a
# failing or hanging endpoint does not delay a healthy subscription; ordered subscriptions
# keep each stream's order under retries; 410 disables; Retry-After; private targets refused
# at create and connect time; deliver_after; replay, pause and resume; the worker across
# DROP/CREATE EXTENSION and a reload. See test/webhooks/test_webhooks.py.
# Run from the tree root as an unprivileged user:
#   bash test/scripts/webhooks.sh
# Environment:
#   AMEBO_WEBHOOKS_PORT   first port to try (default 55531; the first free one is used)
#   AMEBO_WEBHOOKS_CASES  comma-separated case numbers to run (default: all)
#   AMEBO_WEBHOOKS_SEED   seed of the receiver's random failures
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"

# Like start_test_cluster, with the settings the webhook tests need.
start_webhooks_cluster() {
    TEST_WORK=$(mktemp -d "/tmp/amebo-webhooks.XXXXXX")
    TEST_CLUSTER=$TEST_WORK/cluster
    TEST_PORT=$(free_port "${AMEBO_WEBHOOKS_PORT:-55531}")
    PYTHON_BIN=$(python_with_psycopg)
    export PYTHONDONTWRITEBYTECODE=1
    trap stop_receiver_and_cluster EXIT
    cluster_start "$TEST_CLUSTER" "$TEST_PORT" \
        "wal_level = logical" \
        "amebo.allow_private_targets = on" \
        "amebo.retry_base_delay = 100" \
        "amebo.retry_max_delay = 2000" \
        "amebo.delivery_timeout = 2000" \
        "amebo.worker_naptime = 200"
    "$PG_BIN/psql" -X -q -h "$TEST_CLUSTER" -p "$TEST_PORT" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 -c "CREATE EXTENSION amebo"
}

start_webhooks_cluster
started=$SECONDS
status=0
timeout --kill-after=10 170 "$PYTHON_BIN" "$top/test/webhooks/test_webhooks.py" \
    --host "$TEST_CLUSTER" --port "$TEST_PORT" \
    --receiver-log "$TEST_WORK/receiver.jsonl" --receiver-pid-file "$TEST_WORK/receiver.pid" \
    ${AMEBO_WEBHOOKS_CASES:+--cases "$AMEBO_WEBHOOKS_CASES"} \
    ${AMEBO_WEBHOOKS_SEED:+--seed "$AMEBO_WEBHOOKS_SEED"} \
    | tee "$TEST_WORK/output.txt" || status=$?
if [ $status -ne 0 ]; then
    show_unexpected_errors "amebo.allow_private_targets|canceling statement due to user request"
fi
summary=$(sed -n '/^--- summary/,$p' "$TEST_WORK/output.txt")
echo "=== webhooks: $(grep -c '^PASS case' <<<"$summary" || true) cases passed," \
    "$(grep -c '^FAIL case' <<<"$summary" || true) failed, exit status $status," \
    "$((SECONDS - started)) s"
exit $status
