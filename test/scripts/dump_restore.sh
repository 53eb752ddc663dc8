#!/usr/bin/env bash
# Dump and restore: a database that uses everything amebo stores (events, the registry with
# schema versions and secrets, subscriptions with stored and dead messages, snapshots, inline
# and async projections with their read models, reducers) is dumped with pg_dump -Fc and
# restored with pg_restore into a fresh database of the same cluster, and in one transaction
# into the worker's database of a fresh cluster. Every amebo table, read model and sequence
# must come back equal (compared with queries); the restored database must go on where the
# source stopped (versions, conflicts, positions, idempotent retries, schemas, projections,
# snapshots, subscriptions); and the worker, once it serves a restored database, must deliver
# exactly the events after the restored delivery checkpoint. See test/dump/dump_restore.py.
# Run from the tree root as an unprivileged user:
#   bash test/scripts/dump_restore.sh
# Environment: AMEBO_DUMP_PORT (first port to try, default 55571).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"

TEST_WORK=$(mktemp -d /tmp/amebo-dump.XXXXXX)
TEST_CLUSTER=$TEST_WORK/cluster
FRESH_CLUSTER=$TEST_WORK/fresh
PYTHON_BIN=$(python_with_psycopg)
export PYTHONDONTWRITEBYTECODE=1
trap 'cluster_stop "$TEST_CLUSTER" || true; cluster_stop "$FRESH_CLUSTER" || true; rm -rf "$TEST_WORK"' EXIT
settings=("wal_level = logical" "amebo.allow_private_targets = on" "amebo.retry_base_delay = 100"
    "amebo.retry_max_delay = 1000" "amebo.delivery_timeout = 2000" "amebo.worker_naptime = 200")
TEST_PORT=$(free_port "${AMEBO_DUMP_PORT:-55571}")
cluster_start "$TEST_CLUSTER" "$TEST_PORT" "${settings[@]}"
"$PG_BIN/psql" -X -q -h "$TEST_CLUSTER" -p "$TEST_PORT" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -c "CREATE EXTENSION amebo"
# A second cluster without the extension: a backup is restored into its worker's database.
FRESH_PORT=$(free_port $((TEST_PORT + 1)))
cluster_start "$FRESH_CLUSTER" "$FRESH_PORT" "${settings[@]}"

started=$SECONDS
status=0
timeout --kill-after=10 150 "$PYTHON_BIN" "$top/test/dump/dump_restore.py" \
    --host "$TEST_CLUSTER" --port "$TEST_PORT" --pg-bin "$PG_BIN" --work "$TEST_WORK" \
    --fresh-host "$FRESH_CLUSTER" --fresh-port "$FRESH_PORT" ||
    status=$?
[ $status -eq 0 ] || show_unexpected_errors "fixture|canceling statement due to user request"
echo "=== dump_restore: exit status $status, $((SECONDS - started)) s"
exit $status
