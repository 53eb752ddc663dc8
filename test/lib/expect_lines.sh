#!/usr/bin/env bash
# A check for the demonstrations' tests (test/scripts/demo.sh, router_demo.sh): source it
# after setting output (the walk's output file) and failures (a count, usually 0).

# Records a failure unless exactly N lines of the walk's output match the extended regex.
expect_lines() {
    local what=$1 pattern=$2 wanted=$3 found
    found=$(grep -c -E -- "$pattern" "$output" || true)
    if [ "$found" -eq "$wanted" ]; then
        echo "ok: $what"
    else
        echo "FAILED: $what: $found lines match /$pattern/, wanted $wanted"
        failures=$((failures + 1))
    fi
}
