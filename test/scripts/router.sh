#!/usr/bin/env bash
# amebo_router: four shard clusters and a router cluster on loopback, then
# test/router/router_test.py (signatures equal amebo's, placement by shard_of, routed reads
# equal direct ones, errors and retries through the router, the merged feed under concurrent
# writers, one shard stopped, definitions converging, bad input). Run from the tree root as an
# unprivileged user:
#   bash test/scripts/router.sh
# Environment:
#   AMEBO_ROUTER_PORT   first port to try (default 55711; the first free ones are used)
#   AMEBO_ROUTER_SEED   seed of the writers' choices (thread timing still varies)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"
source "$top/test/router/clusters.sh"
work=$(mktemp -d /tmp/amebo-router.XXXXXX)
trap 'router_clusters_stop "$work"; rm -rf "$work"' EXIT
PYTHON_BIN=$(python_with_psycopg)
export PYTHONDONTWRITEBYTECODE=1
router_clusters_start "$work" "${AMEBO_ROUTER_PORT:-55711}" 4
status=0
timeout --kill-after=10 240 "$PYTHON_BIN" "$top/test/router/router_test.py" --work "$work" \
    --router-port "$ROUTER_PORT" --shard-ports "${SHARD_PORTS[*]}" --pg-bin "$PG_BIN" \
    ${AMEBO_ROUTER_SEED:+--seed "$AMEBO_ROUTER_SEED"} || status=$?
if [ $status -ne 0 ]; then
    for log in "$work"/router/server.log "$work"/shard*/server.log; do
        echo "--- $log: errors (last 10)"
        grep -a -E "PANIC|FATAL|TRAP|ERROR" "$log" | tail -n 10 || true
    done
fi
exit $status
