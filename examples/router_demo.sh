#!/usr/bin/env bash
# The sharding demonstration: four amebo shards and an amebo_router on throwaway clusters on
# loopback; appends go through the router to each stream's shard, a conflict comes back as
# amebo raises it, and the router's read_all merges every shard's feed, paged with one
# position per shard. Everything is stopped at the end.
# Usage: bash examples/router_demo.sh          (as root or a user who may sudo: installs,
#                                               builds and installs amebo first)
#        bash examples/router_demo.sh --walk   only the walk: amebo installed, as a non-root
#                                               user (what test/scripts/router_demo.sh runs)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != --walk ]; then
    source test/lib/prepare.sh
    echo "Installing what is missing, building and installing amebo (quiet; takes a while once)"
    amebo_prepare >/dev/null
    [ "$AMEBO_WORK" = "$AMEBO_TOP" ] || trap 'rm -rf "$AMEBO_WORK"' EXIT
    as_test_user "bash examples/router_demo.sh --walk"
    exit
fi

source test/lib/script_test.sh # cluster_start, cluster_stop, free_port
source test/router/clusters.sh
work=$(mktemp -d -t amebo-router-demo.XXXXXX)
trap 'router_clusters_stop "$work"; rm -rf "$work"' EXIT

echo "Starting four shards and a router (PostgreSQL 15, PL/Proxy) on loopback"
router_clusters_start "$work" 55801 4
echo "  router on port $ROUTER_PORT; shards on ports ${SHARD_PORTS[*]}"

# Shows a statement and runs it on the router as the application's role.
on_router() {
    echo "router> $1"
    "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$ROUTER_PORT" -U "$ROUTER_APP_ROLE" -d router \
        -v ON_ERROR_STOP=1 -v SHOW_CONTEXT=never -c "$1" 2>&1 | sed 's/^/  /'
}

echo
echo "1. Each order stream lives on one shard: hashtext(stream) & 3"
on_router "SELECT s AS stream, amebo.shard_of(s) AS shard
           FROM unnest(ARRAY['order-1', 'order-2', 'order-3', 'order-4', 'order-5']) s"

echo "2. Appends through the router, with client-made event ids"
for n in 1 2 3 4 5; do
    on_router "SELECT amebo.append_event('order-$n', 'order.placed', '{\"order\": $n}',
               expected_version => 0, event_id => '00000000-0000-4000-8000-00000000000$n')"
done
on_router "SELECT amebo.append_event('order-2', 'order.paid', '{\"order\": 2}', 1)"

echo "3. A stale writer gets AM001 as amebo raises it"
on_router "SELECT amebo.append_event('order-2', 'order.cancelled', '{}', 1)" || true
echo "   and a retry with the same event id appends nothing new"
on_router "SELECT amebo.append_event('order-1', 'order.placed', '{\"order\": 1}',
           expected_version => 0, event_id => '00000000-0000-4000-8000-000000000001')"

echo "4. The merged feed: every shard's events, each with its shard and its shard's position"
on_router "SELECT shard, position, stream, action FROM amebo.read_all(NULL, 4)"
echo "   the next page, after the highest position seen on each shard"
cursor=$("$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$ROUTER_PORT" -U "$ROUTER_APP_ROLE" -d router -c \
    "SELECT array_agg(coalesce(m, 0) ORDER BY s)::text FROM generate_series(0, 3) s
     LEFT JOIN (SELECT shard, max(position) m FROM amebo.read_all(NULL, 4) GROUP BY shard) x
     ON x.shard = s")
on_router "SELECT shard, position, stream, action FROM amebo.read_all('$cursor', 4)"
echo "   no event of the first page comes again"
on_router "SELECT count(*) AS seen_twice FROM amebo.read_all('$cursor', 4) f
           WHERE EXISTS (SELECT 1 FROM amebo.read_all(NULL, 4) g WHERE g.event_id = f.event_id)"

echo
echo "Stopping the shards and the router."
trap - EXIT
router_clusters_stop "$work"
rm -rf "$work"
echo "Nothing of the demo is left running."
