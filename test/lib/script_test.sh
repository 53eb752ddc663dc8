#!/usr/bin/env bash
# The frame every test/scripts/*.sh shares (source it): a throwaway cluster with amebo
# created in database postgres, removed on exit, and helpers to find a port and a python.

source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

# Prints a python3 that can import psycopg (3): $PYTHON, python3 on the PATH, or the system's.
python_with_psycopg() {
    local candidate
    for candidate in ${PYTHON:-} python3 /usr/bin/python3; do
        if "$candidate" -c "import psycopg" 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "no python3 with psycopg 3 (install python3-psycopg)" >&2
    return 1
}

# Starts the test's cluster: name (for the temp folder), first port to try, then any extra
# postgresql.conf lines. Sets TEST_CLUSTER (its folder, also its socket directory), TEST_PORT
# and PYTHON_BIN, creates the extension, and stops and removes the cluster when the script exits.
start_test_cluster() {
    local name=$1 first_port=$2
    shift 2
    TEST_WORK=$(mktemp -d "/tmp/amebo-$name.XXXXXX")
    TEST_CLUSTER=$TEST_WORK/cluster
    TEST_PORT=$(free_port "$first_port")
    PYTHON_BIN=$(python_with_psycopg)
    export PYTHONDONTWRITEBYTECODE=1
    trap 'cluster_stop "$TEST_CLUSTER" || true; rm -rf "$TEST_WORK"' EXIT
    cluster_start "$TEST_CLUSTER" "$TEST_PORT" "$@"
    "$PG_BIN/psql" -X -q -h "$TEST_CLUSTER" -p "$TEST_PORT" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 -c "CREATE EXTENSION amebo"
}

# Stops the receiver whose pid a test program left in $TEST_WORK/receiver.pid (if it still
# runs), then the cluster; removes $TEST_WORK. For tests that start their own receiver.
stop_receiver_and_cluster() {
    local pid
    pid=$(cat "$TEST_WORK/receiver.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
    fi
    cluster_stop "$TEST_CLUSTER" || true
    rm -rf "$TEST_WORK"
}

# Prints the server log's errors except those matching the pattern $1 (expected ones).
show_unexpected_errors() {
    echo "--- server log: unexpected errors (last 40)"
    grep -a -E "PANIC|FATAL|TRAP|terminated|ERROR|redo|ready" "$TEST_CLUSTER/server.log" |
        grep -v -E "$1" | tail -n 40 || true
}
