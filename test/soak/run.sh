#!/usr/bin/env bash
# Soak test (not part of test/run-all.sh): SOAK_SECONDS (default 600) of mixed load on a
# throwaway cluster against test/lib/receiver.py on 127.0.0.1 failing 20% and hanging on 1% of
# requests, then checks that no event was lost (every matching event received with a 2xx or
# dead after max_retries + 1 attempts, nothing pending), that every message followed the retry
# rules, that the ordered subscription kept each stream's order, that both projections equal
# a replay, that the worker's memory did not grow after warm-up and that the WAL the slot
# retains stayed bounded; prints the figures. See test/soak/soak.py for the load.
# Usage, as root or as a user who may sudo (it installs what is missing, builds and installs
# amebo, and runs as the unprivileged test user, like the tests):
#   make soak                      or   bash test/soak/run.sh
#   SOAK_SECONDS=90 make soak      a shorter run (warm-up is 20% of it, at least 20 s)
# Environment:
#   SOAK_SECONDS     seconds of load (default 600); the settling and checks add a minute or two
#   SOAK_RATE        load multiplier (default 1: about 40 events/s)
#   SOAK_SEED        seed of the load and of the receiver's failures
#   SOAK_STALL_EVERY stop the worker (SIGSTOP) for 1.5 s about this often (default 15 s; 0: never),
#                    as a saturated machine does
#   SOAK_PORT        first port to try (default 55650; the first free one is used)
#   SOAK_MAX_RETAINED_WAL_MB  bound on the slot's retained WAL (default 16)
#   SOAK_MEMORY_TOLERANCE_KB  allowed growth of the worker's RssAnon after warm-up (default 2048)
# Internal: bash test/soak/run.sh --as-user (the run itself, as the unprivileged user).
# shellcheck source-path=SCRIPTDIR/../..
set -euo pipefail
cd "$(dirname "$0")/../.."

# As the unprivileged user, in its work tree: the cluster, the receiver and the load
# (soak.py), then everything stopped and removed.
run_soak() {
    source test/lib/script_test.sh
    TEST_WORK=$(mktemp -d /tmp/amebo-soak.XXXXXX)
    TEST_CLUSTER=$TEST_WORK/cluster
    TEST_PORT=$(free_port "${SOAK_PORT:-55650}")
    PYTHON_BIN=$(python_with_psycopg)
    export PYTHONDONTWRITEBYTECODE=1
    trap stop_receiver_and_cluster EXIT
    cluster_start "$TEST_CLUSTER" "$TEST_PORT" \
        "wal_level = logical" \
        "amebo.allow_private_targets = on" \
        "amebo.retry_base_delay = 200" \
        "amebo.retry_max_delay = 2000" \
        "amebo.delivery_timeout = 2000"
    "$PG_BIN/psql" -X -q -h "$TEST_CLUSTER" -p "$TEST_PORT" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 -c "CREATE EXTENSION amebo"
    local seconds=${SOAK_SECONDS:-600} status=0
    echo "== soak: $seconds s of load on port $TEST_PORT ($(nproc) CPUs, load average" \
        "$(cut -d' ' -f1-3 /proc/loadavg) at the start)"
    timeout --kill-after=10 $((seconds + 900)) "$PYTHON_BIN" test/soak/soak.py \
        --host "$TEST_CLUSTER" --port "$TEST_PORT" --seconds "$seconds" \
        --rate "${SOAK_RATE:-1}" --stall-every "${SOAK_STALL_EVERY:-15}" \
        --max-retained-wal-mb "${SOAK_MAX_RETAINED_WAL_MB:-16}" \
        --memory-tolerance-kb "${SOAK_MEMORY_TOLERANCE_KB:-2048}" \
        --receiver-log "$TEST_WORK/receiver.jsonl" --receiver-pid-file "$TEST_WORK/receiver.pid" \
        ${SOAK_SEED:+--seed "$SOAK_SEED"} || status=$?
    echo "--- worker memory contexts (pg_log_backend_memory_contexts, after warm-up and at the end)"
    grep -E "Grand total" "$TEST_CLUSTER/server.log" || echo "(none logged)"
    echo "--- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ $status -ne 0 ]; then
        show_unexpected_errors "version conflict|canceling statement due to user request"
    fi
    echo "=== soak: exit status $status"
    return $status
}

if [ "${1:-}" = --as-user ]; then
    run_soak
    exit
fi
source test/lib/prepare.sh
echo "== building and installing amebo"
amebo_prepare >/dev/null
if [ "$AMEBO_WORK" != "$AMEBO_TOP" ]; then
    # shellcheck disable=SC2064 # expand AMEBO_WORK now
    trap "rm -rf '$AMEBO_WORK'" EXIT
fi
# The SOAK_* settings reach the test user through the environment (su keeps it).
as_test_user "bash test/soak/run.sh --as-user"
