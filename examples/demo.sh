#!/usr/bin/env bash
# The demonstration: on a fresh Debian 12 machine (as root, or a user who may sudo) it
# installs what is missing, builds and installs amebo, then walks the design guide's user
# story (examples/demo.py) on a throwaway cluster with a local webhook receiver, and stops
# both: nothing is left running.
# Usage: bash examples/demo.sh           (also: make demo)
#        bash examples/demo.sh --walk    only the walk: amebo installed, as a non-root user
#                                        (what test/scripts/demo.sh runs)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != --walk ]; then
    source test/lib/prepare.sh
    echo "Installing what is missing, building and installing amebo (quiet; takes a while once)"
    amebo_prepare >/dev/null
    [ "$AMEBO_WORK" = "$AMEBO_TOP" ] || trap 'rm -rf "$AMEBO_WORK"' EXIT
    as_test_user "bash examples/demo.sh --walk"
    exit
fi

source test/lib/script_test.sh # cluster_start, cluster_stop, free_port, python_with_psycopg
work=$(mktemp -d -t amebo-demo.XXXXXX)
receiver_pid=

# Stops the receiver and the cluster; fails if a process of the demo is still running.
stop_everything() {
    if [ -n "$receiver_pid" ]; then
        kill "$receiver_pid" 2>/dev/null || true
        wait "$receiver_pid" || true
    fi
    cluster_stop "$work/cluster" || true
    if pgrep -f "$work" >/dev/null; then
        echo "still running:" && pgrep -a -f "$work"
        return 1
    fi
    rm -rf "$work"
}
trap stop_everything EXIT

port=$(free_port 55399)
echo "Starting a throwaway PostgreSQL 15 cluster on port $port and a webhook receiver"
cluster_start "$work/cluster" "$port" "wal_level = logical" "amebo.allow_private_targets = on"
python=$(python_with_psycopg)
"$python" test/lib/receiver.py --port 0 --port-file "$work/receiver.port" >/dev/null &
receiver_pid=$!
timeout 10 bash -c "until [ -s '$work/receiver.port' ]; do sleep 0.05; done"

PYTHONDONTWRITEBYTECODE=1 "$python" examples/demo.py --host "$work/cluster" --port "$port" \
    --receiver "http://127.0.0.1:$(cat "$work/receiver.port")"

trap - EXIT
stop_everything
echo "Stopped the cluster and the receiver: nothing of the demo is left running."
