#!/usr/bin/env bash
# The README's demonstration does what it shows: runs its walk (bash examples/demo.sh
# --walk; run-all.sh already built and installed amebo) and fails unless the walk exits 0
# within a minute (examples/demo.py stops at the first claim that does not hold) and its
# output shows all ten steps, the version conflict (AM001 with its DETAIL), the schema error
# naming /email, exactly two webhooks with valid signatures, and that nothing of the demo
# (cluster, receiver) is left running. Run from the tree root as an unprivileged user:
#   bash test/scripts/demo.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
TMPDIR=$(mktemp -d /tmp/amebo-demo-test.XXXXXX) # the walk's folder goes in here
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
output=$TMPDIR/demo.out
failures=0

source "$top/test/lib/expect_lines.sh"

start=$(date +%s%N)
status=0
timeout --kill-after=10 120 bash "$top/examples/demo.sh" --walk >"$output" 2>&1 || status=$?
milliseconds=$((($(date +%s%N) - start) / 1000000))
echo "the walk took $milliseconds ms and exited with status $status"
[ "$status" -eq 0 ] || failures=$((failures + 1))
[ "$milliseconds" -lt 60000 ] || { echo "FAILED: over a minute"; failures=$((failures + 1)); }

expect_lines "ten numbered steps" '^([1-9]|10)\. [A-Z]' 10
expect_lines "handler B got AM001" '^ +ERROR AM001: version conflict on stream "user-42"' 1
expect_lines "the DETAIL has the actual version" '^ +DETAIL: Stream "user-42" is at version 2;' 1
expect_lines "the schema error names /email" '^ +ERROR AM004: .* at /email: ' 1
expect_lines "two webhooks, signatures valid" 'action user\.created .* signature valid: yes$' 2
expect_lines "no invalid signature" 'signature valid: NO' 0
expect_lines "every claim held" '^All [0-9]+ claims above were checked and hold\.$' 1
expect_lines "the walk says nothing is left running" 'nothing of the demo is left running\.$' 1
if pgrep -a -f "$TMPDIR"; then
    echo "FAILED: processes of the demo still run"
    failures=$((failures + 1))
fi
if [ "$failures" -ne 0 ]; then
    echo "--- the walk's output"
    cat "$output"
    exit 1
fi
echo "the demonstration passed"
