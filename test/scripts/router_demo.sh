#!/usr/bin/env bash
# The sharding demonstration does what it shows: runs bash examples/router_demo.sh --walk
# (run-all.sh already built and installed amebo) and fails unless it exits 0 within two
# minutes and its output shows five streams placed on shards, AM001 with its DETAIL through
# the router, the idempotent retry returning version 1, both pages of the merged feed (six
# events, none twice) and nothing left running. Run from the tree root as an unprivileged
# user:
#   bash test/scripts/router_demo.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
TMPDIR=$(mktemp -d /tmp/amebo-router-demo-test.XXXXXX) # the walk's folder goes in here
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
output=$TMPDIR/demo.out
failures=0

source "$top/test/lib/expect_lines.sh"

status=0
timeout --kill-after=10 120 bash "$top/examples/router_demo.sh" --walk >"$output" 2>&1 ||
    status=$?
echo "the walk exited with status $status"
[ "$status" -eq 0 ] || failures=$((failures + 1))

expect_lines "four numbered steps" '^[1-4]\. [A-Z]' 4
expect_lines "five streams with their shard" '^ +order-[1-5] +\| +[0-3]$' 5
expect_lines "AM001 through the router" '^ +ERROR: +version conflict on stream "order-2": expected version 1, actual version 2' 1
expect_lines "its DETAIL" '^ +DETAIL: +Stream "order-2" is at version 2; the append expected version 1\.' 1
expect_lines "feed rows (4 + 2)" '^ +[0-3] \| +[0-9]+ \| order-[1-5] +\| order\.' 6
expect_lines "no event of the first page again" '^ +0$' 1
expect_lines "nothing left running" '^Nothing of the demo is left running\.$' 1
if pgrep -a -f "$TMPDIR"; then
    echo "FAILED: processes of the demo still run"
    failures=$((failures + 1))
fi
if [ "$failures" -ne 0 ]; then
    echo "--- the walk's output"
    cat "$output"
    exit 1
fi
echo "the sharding demonstration passed"
