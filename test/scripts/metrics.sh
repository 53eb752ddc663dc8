#!/usr/bin/env bash
# amebo's metrics through prometheus-postgres-exporter (contrib/prometheus/amebo_queries.yaml):
# a throwaway cluster with three subscriptions (one delivered to, one whose endpoint fails
# until its messages are dead, one paused with pending messages), the exporter on a free
# loopback port connected as a role with only amebo_reader and pg_monitor, and a scrape of
# /metrics whose amebo_* values must equal what SQL says (test/metrics/compare.py).
# Run from the tree root as an unprivileged user: bash test/scripts/metrics.sh
# Environment: AMEBO_METRICS_PORT   first port to try (default 55570)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"

exporter=${AMEBO_EXPORTER:-/usr/bin/prometheus-postgres-exporter}
if [ ! -x "$exporter" ]; then
    echo "metrics: $exporter is missing (install Debian's prometheus-postgres-exporter)" >&2
    exit 1
fi
start_test_cluster metrics "${AMEBO_METRICS_PORT:-55570}" \
    "wal_level = logical" "amebo.allowed_private_targets = '127.0.0.1/32'" \
    "amebo.retry_base_delay = 50" "amebo.retry_max_delay = 100" \
    "amebo.delivery_timeout = 2000" "amebo.worker_naptime = 200"
exporter_pid=
trap '[ -n "$exporter_pid" ] && kill "$exporter_pid" 2>/dev/null; stop_receiver_and_cluster' EXIT

# Runs SQL in the test database; prints unaligned tuples.
sql() {
    "$PG_BIN/psql" -X -q -At -h "$TEST_CLUSTER" -p "$TEST_PORT" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 "$@"
}

receiver_port=$(free_port $((TEST_PORT + 1)))
"$PYTHON_BIN" "$top/test/lib/receiver.py" --port "$receiver_port" --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
    --no-records >"$TEST_WORK/receiver.log" 2>&1 &
echo $! >"$TEST_WORK/receiver.pid"
for _ in $(seq 50); do grep -q listening "$TEST_WORK/receiver.log" && break; sleep 0.1; done
curl -sf -X POST -d '{"path": "/bad", "mode": "fail", "status": 500}' \
    "http://127.0.0.1:$receiver_port/_control/behave" >/dev/null

hook=http://127.0.0.1:$receiver_port
sql -c "SELECT amebo.create_application('shop')" \
    -c "SELECT amebo.create_subscription('shop', 'good', 'order.*', '$hook/good')" \
    -c "SELECT amebo.create_subscription('shop', 'bad', 'order.*', '$hook/bad', max_retries => 2)" \
    -c "SELECT amebo.create_subscription('shop', 'held', 'order.*', '$hook/held')" \
    -c "SELECT amebo.pause_subscription('shop', 'held')" \
    -c "CREATE ROLE amebo_metrics LOGIN IN ROLE amebo_reader, pg_monitor" >/dev/null
sql -c "SELECT amebo.append_event('order-' || i, 'order.placed', jsonb_build_object('i', i))
        FROM generate_series(1, 25) i" >/dev/null

echo "== waiting for 25 deliveries to good and 25 dead messages of bad"
deadline=$((SECONDS + 90))
settled="SELECT (SELECT delivered FROM amebo.subscription_status WHERE name = 'good') = 25
            AND (SELECT dead FROM amebo.subscription_status WHERE name = 'bad') = 25
            AND (SELECT pending FROM amebo.subscription_status WHERE name = 'held') = 25
            AND (SELECT sum(in_flight) FROM amebo.subscription_status) = 0"
until [ "$(sql -c "$settled")" = t ]; do
    if [ $SECONDS -ge $deadline ]; then
        sql -c "SELECT * FROM amebo.subscription_status" >&2
        exit 1
    fi
    sleep 0.3
done
sleep 1 # the worker writes attempts down within a few milliseconds; let them land

metrics_port=$(free_port $((receiver_port + 1)))
DATA_SOURCE_NAME="postgresql://amebo_metrics@127.0.0.1:$TEST_PORT/postgres?sslmode=disable" \
    "$exporter" --web.listen-address="127.0.0.1:$metrics_port" --disable-default-metrics \
    --disable-settings-metrics --extend.query-path="$top/contrib/prometheus/amebo_queries.yaml" \
    >"$TEST_WORK/exporter.log" 2>&1 &
exporter_pid=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$TEST_WORK/metrics.txt" 2>/dev/null &&
        grep -q '^amebo_subscription_delivered' "$TEST_WORK/metrics.txt" && break
    sleep 0.2
done

PGHOST=$TEST_CLUSTER PGPORT=$TEST_PORT "$PYTHON_BIN" "$top/test/metrics/compare.py" \
    "$TEST_WORK/metrics.txt" || { echo "--- exporter log"; tail -n 20 "$TEST_WORK/exporter.log"; exit 1; }
