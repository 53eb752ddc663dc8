#!/usr/bin/env bash
# Benchmarks webhook delivery (bench/webhooks.py): draining a backlog, sustained appends,
# commit-to-receipt latency, and append throughput with deliveries running, against nginx on
# loopback, each run on a new throwaway cluster with wal_level = logical (test/amebo.conf:
# fsync = off).
# Writes (or replaces) the "Webhook delivery" section of bench/RESULTS.md and prints it.
# Like bench/run.sh it installs missing packages, builds and installs amebo, and runs as an
# unprivileged user, so it works as root or as a user who may sudo. bench/run.sh runs it too.
# Usage: bash bench/webhooks.sh; about 7 minutes.
#   BENCH_NO_BUILD=1   benchmark the amebo already installed (no build, no make install)
#   BENCH_WEBHOOK_PORT=N  the cluster's port (default: the first free one from 55500)
#   BENCH_WEBHOOK_PARTS (e.g. "1,3"), BENCH_WEBHOOK_EVENTS, ...: see bench/webhooks.py.
# Internal: bash bench/webhooks.sh --as-user REPORT (the benchmark, as the unprivileged user);
# bash bench/webhooks.sh --fresh-cluster DIR PORT (a new cluster in DIR, for each run).
# Exits 0 whether the targets are met or not; non-zero only when the benchmark could not run.
# Leaves nothing running.
# shellcheck source-path=SCRIPTDIR/..
set -euo pipefail
cd "$(dirname "$0")/.."

# Replaces the cluster in DIR (if any) by a new one on PORT. Every run of the benchmark gets
# its own: an overloaded run leaves a backlog of WAL behind that would skew the next one.
fresh_cluster() {
    local dir=$1 port=$2
    source test/lib/cluster.sh
    cluster_stop "$dir"
    # The worker needs wal_level = logical; loopback handlers need allow_private_targets.
    # JIT off and no timed checkpoint in a measurement, as in bench/run.sh; autovacuum stays
    # on (the worker's tables are updated all the time, as in production).
    cluster_start "$dir" "$port" \
        "wal_level = logical" \
        "amebo.allow_private_targets = on" \
        "jit = off" \
        "shared_buffers = 512MB" \
        "max_wal_size = 8GB" \
        "checkpoint_timeout = 30min"
}

# As the unprivileged user, in its work tree: the benchmark, which starts a fresh cluster for
# each run (fresh_cluster), then the last cluster down. Argument: the report to update.
run_webhooks() {
    local out=$1 python="" candidate port dir
    for candidate in python3 /usr/bin/python3; do
        if "$candidate" -c 'import psycopg' 2>/dev/null; then
            python=$candidate
            break
        fi
    done
    if [ -z "$python" ]; then
        echo "no python3 with psycopg (Debian: python3-psycopg)" >&2
        return 1
    fi
    if [ ! -x "${BENCH_NGINX:-/usr/sbin/nginx}" ]; then
        echo "no nginx at ${BENCH_NGINX:-/usr/sbin/nginx} (Debian: nginx-light or nginx)" >&2
        return 1
    fi
    source test/lib/cluster.sh
    port=${BENCH_WEBHOOK_PORT:-$(free_port 55500)}
    dir=$(mktemp -d /tmp/amebo-bench-webhooks.XXXXXX)
    # shellcheck disable=SC2064 # expand dir now: the trap runs after the function returned
    trap "cluster_stop '$dir'; rm -rf '$dir'" EXIT
    "$python" bench/webhooks.py --host "$dir" --port "$port" --out "$out" \
        --fresh-cluster "bash bench/webhooks.sh --fresh-cluster '$dir' '$port'"
}

if [ "${1:-}" = "--as-user" ]; then
    (run_webhooks "${2:-bench/RESULTS.md}")
    exit
fi
if [ "${1:-}" = "--fresh-cluster" ]; then
    fresh_cluster "$2" "$3"
    exit
fi

source bench/lib.sh
bench_as_test_user "webhook delivery" "bash bench/webhooks.sh --as-user bench/RESULTS.md"
echo "== bench/RESULTS.md updated (section \"Webhook delivery\")"
