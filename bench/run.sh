#!/usr/bin/env bash
# Benchmarks amebo's append path against a plain INSERT (the physical limit) and a PL/pgSQL
# event store (bench/baselines.sql, "append"), the cost of JSON Schema validation on append
# (bench/validation.py, "validation"), snapshots and inline projections (bench/state.py,
# "state"), pull consumers (bench/consumers.py, "consumers") and retention
# (bench/retention.py, "retention"), on a throwaway cluster, sharding (bench/router.py,
# "router", on four shards and a router of its own), then webhook delivery
# (bench/webhooks.sh, "webhooks", on a cluster of its own); writes
# bench/RESULTS.md and prints it. As the tests and the
# demonstration do (test/lib/prepare.sh), it installs missing packages, builds and installs
# amebo, and runs as an unprivileged user, so it works as root or as a user who may sudo.
# Usage: bash bench/run.sh (or make bench); about 17 minutes (10 without webhooks).
#   BENCH_SUITES=...   which benchmarks to run, a comma-separated subset of
#                      append,validation,state,consumers,retention,router,webhooks (default: all of them); the sections
#                      of bench/RESULTS.md that the others wrote stay as they are
#   BENCH_NO_BUILD=1   benchmark the amebo already installed (no build, no make install)
#   BENCH_PORT=N       the cluster's port (default: the first free one from 55432)
#   BENCH_ROUNDS, BENCH_PGBENCH_ROUNDS, BENCH_PGBENCH_SECONDS, BENCH_CONTENTION_ROUNDS,
#   BENCH_CONTENTION_SECONDS, BENCH_EVENTS, BENCH_PARTS (e.g. "1,3"): see bench/bench.py.
#   BENCH_STATE_ROUNDS, BENCH_PROJECTION_ROUNDS, BENCH_STATE_PARTS ...: see bench/state.py.
#   BENCH_WEBHOOKS=0   skip the webhook delivery benchmark (BENCH_WEBHOOK_*: bench/webhooks.py)
#   BENCH_CONSUMER_*: see bench/consumers.py; BENCH_RETENTION_*: see bench/retention.py
# Exits 0 whether the targets are met or not (PASS/MISS is in the report); non-zero only when
# the benchmark could not run. Leaves nothing running.
# shellcheck source-path=SCRIPTDIR/..
set -euo pipefail
cd "$(dirname "$0")/.."

# Whether BENCH_SUITES (default: every suite) names the suite $1.
suite_wanted() {
    case ",${BENCH_SUITES:-append,validation,state,consumers,retention,router,webhooks}," in
        *",$1,"*) return 0 ;;
        *) return 1 ;;
    esac
}

# The part that runs as the unprivileged user, in its work tree: cluster up, benchmarks,
# cluster down. Argument: the report to write.
run_benchmarks() {
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
    source test/lib/cluster.sh
    port=${BENCH_PORT:-$(free_port 55432)}
    dir=$(mktemp -d /tmp/amebo-bench.XXXXXX)
    # shellcheck disable=SC2064 # expand dir now: the trap runs after the function returned
    trap "cluster_stop '$dir'; rm -rf '$dir'" EXIT
    # fsync on (test/amebo.conf turns it off) so that synchronous_commit matters; JIT off so
    # that no variant pays for compiling its plan; no autovacuum or timed checkpoint running
    # into a measurement (the benchmark checkpoints before each one).
    cluster_start "$dir" "$port" \
        "fsync = on" \
        "jit = off" \
        "shared_buffers = 512MB" \
        "max_wal_size = 8GB" \
        "checkpoint_timeout = 30min" \
        "autovacuum = off"
    if suite_wanted append; then
        "$python" bench/bench.py --host "$dir" --port "$port" --out "$out" --logdir "$dir/pgbench"
    fi
    # Validation on append (JSON Schema), snapshots and inline projections, then pull
    # consumers against read_all: each replaces its own section of the same report.
    if suite_wanted validation; then
        "$python" bench/validation.py --host "$dir" --port "$port" --out "$out"
    fi
    if suite_wanted state; then
        "$python" bench/state.py --host "$dir" --port "$port" --out "$out"
    fi
    if suite_wanted consumers; then
        "$python" bench/consumers.py --host "$dir" --port "$port" --out "$out"
    fi
    if suite_wanted retention; then
        "$python" bench/retention.py --host "$dir" --port "$port" --out "$out"
    fi
    if suite_wanted router; then
        # Routed against direct calls: bench/router.py starts four shards and a router.
        "$python" bench/router.py --out "$out"
    fi
    if suite_wanted webhooks && [ "${BENCH_WEBHOOKS:-1}" != 0 ]; then
        # Webhook delivery, on a cluster of its own (wal_level = logical); this one stops
        # first so that it does not share the CPUs.
        cluster_stop "$dir"
        bash bench/webhooks.sh --as-user "$out"
    fi
}

if [ "${1:-}" = "--as-user" ]; then
    (run_benchmarks bench/RESULTS.md)
    exit
fi

source bench/lib.sh
bench_as_test_user "everything" "bash bench/run.sh --as-user"
# One table of every measure with a target, at the top of RESULTS.md and in the README.
python3 bench/summary.py "$AMEBO_TOP/bench/RESULTS.md" "$AMEBO_TOP/README.md" >/dev/null
echo
cat "$AMEBO_TOP/bench/RESULTS.md"
