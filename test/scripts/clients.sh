#!/usr/bin/env bash
# The client examples against a throwaway cluster, directly and through pgbouncer in
# transaction pooling mode: the Python example (examples/python: event store, aggregate,
# command handler, read model, both rebuilds, the Flask service over real HTTP), the Node
# example (examples/node: append, read, AM001 conflicts and the retry loop, idempotent
# retries; `npm ci` into a copy), and what must not be used through pgbouncer
# (test/clients/pgbouncer_limits.py, plus named queries in the Node test). Prints each
# suite's figures and the total. Run from the tree root as an unprivileged user:
#   bash test/scripts/clients.sh
# Environment: AMEBO_CLIENTS_PORT   first port to try (default 55530; the first free one is used)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"
source "$top/test/lib/pgbouncer.sh"
start_test_cluster clients "${AMEBO_CLIENTS_PORT:-55530}"
trap 'pgbouncer_stop "$TEST_WORK/pgbouncer"; cluster_stop "$TEST_CLUSTER" || true
      rm -rf "$TEST_WORK"' EXIT

# Runs SQL (and files given as -f FILE) in a database of the test cluster.
sql() {
    "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$TEST_PORT" -U postgres -v ON_ERROR_STOP=1 "$@" >/dev/null
}

sql -d postgres -c "CREATE DATABASE python" -c "CREATE DATABASE node"
sql -d python -c "CREATE EXTENSION amebo" -f "$top/examples/users/users.sql" \
    -f "$top/examples/python/setup.sql"
sql -d node -c "CREATE EXTENSION amebo"

bouncer_port=$(free_port $((TEST_PORT + 1)))
server="host=127.0.0.1 port=$TEST_PORT"
pgbouncer_start "$TEST_WORK/pgbouncer" "$bouncer_port" \
    "python = $server dbname=python" "python_one = $server dbname=python pool_size=1" \
    "node = $server dbname=node" "node_one = $server dbname=node pool_size=1"
echo "cluster on port $TEST_PORT, pgbouncer (transaction pooling) on port $bouncer_port"

node_dir=$TEST_WORK/node
mkdir "$node_dir"
tar -C "$top/examples/node" --exclude=node_modules -cf - . | tar -C "$node_dir" -xf -
export npm_config_cache=$TEST_WORK/npm-cache npm_config_update_notifier=false \
    npm_config_audit=false npm_config_fund=false
echo "== npm ci (examples/node, in a copy)"
(cd "$node_dir" && timeout --kill-after=10 300 npm ci --no-progress)

passed=0 failed=0 suites=""
# Runs one suite: label, kind (python: unittest output; node: node:test output), the
# working folder, then env assignments and the command. Adds its counts to the totals.
run_suite() {
    local label=$1 kind=$2 dir=$3 start=$SECONDS status=0 out ran bad skipped
    shift 3
    out=$TEST_WORK/$label.out
    echo "== $label"
    (cd "$dir" && timeout --kill-after=10 300 env "$@") >"$out" 2>&1 || status=$?
    cat "$out"
    if [ "$kind" = python ]; then
        ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in .*/\1/p' "$out" | tail -n 1)
        bad=$(grep -oE '(failures|errors|unexpected successes)=[0-9]+' "$out" |
            awk -F= '{ sum += $2 } END { print sum + 0 }' || true)
        skipped=$(grep -oE 'skipped=[0-9]+' "$out" | tail -n 1 | cut -d= -f2 || true)
        ran=$((${ran:-0} - ${skipped:-0} - ${bad:-0})) bad=${bad:-0}
    else
        ran=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$out" | tail -n 1)
        bad=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$out" | tail -n 1)
        ran=${ran:-0} bad=${bad:-0}
    fi
    # A suite that exits non-zero without a counted failure (crash, timeout) counts as one.
    if [ $status -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
    passed=$((passed + ran)) failed=$((failed + bad))
    suites+=$(printf '  %-18s %3d passed, %d failed, %3d s' "$label" "$ran" "$bad" \
        $((SECONDS - start)))$'\n'
}

direct=(PGHOST=127.0.0.1 "PGPORT=$TEST_PORT" PGUSER=postgres)
bouncer=(PGHOST=127.0.0.1 "PGPORT=$bouncer_port" PGUSER=postgres)
run_suite python-direct python "$top/examples/python" "${direct[@]}" PGDATABASE=python \
    "$PYTHON_BIN" test_users.py
run_suite python-pgbouncer python "$top/examples/python" "${bouncer[@]}" PGDATABASE=python \
    AMEBO_THROUGH_PGBOUNCER=1 "$PYTHON_BIN" test_users.py
run_suite node-direct node "$node_dir" "${direct[@]}" PGDATABASE=node npm test
run_suite node-pgbouncer node "$node_dir" "${bouncer[@]}" PGDATABASE=node \
    AMEBO_BOUNCER_ONE_DATABASE=node_one npm test
run_suite pgbouncer-limits python "$top/test/clients" \
    "AMEBO_DIRECT_DSN=$server user=postgres dbname=python" \
    "AMEBO_BOUNCER_DSN=host=127.0.0.1 port=$bouncer_port user=postgres dbname=python" \
    "AMEBO_BOUNCER_ONE_DSN=host=127.0.0.1 port=$bouncer_port user=postgres dbname=python_one" \
    "$PYTHON_BIN" pgbouncer_limits.py

echo "== figures"
printf '%s' "$suites"
echo "  total time ${SECONDS} s"
# Errors the tests cause on purpose (conflicts, duplicates, schema failures, the pgbouncer
# demonstrations) are left out of the server log excerpt.
expected_errors="version conflict|already appended|fails its schema|does not exist|already exists"
[ $failed -eq 0 ] || show_unexpected_errors "$expected_errors"
echo "clients: $passed passed, $failed failed"
[ $failed -eq 0 ]
