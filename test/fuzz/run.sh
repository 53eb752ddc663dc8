#!/usr/bin/env bash
# Runs amebo's libFuzzer targets (built by `make fuzz-build` into BUILD_DIR) for SECONDS each,
# starting from the hand-written seeds in test/fuzz/corpus/<target>/ and the kept crash inputs
# in test/fuzz/regressions/<target>/. New corpus entries go to BUILD_DIR/corpus/<target>/ (the
# seeds stay as written); a crashing input goes to BUILD_DIR/findings/<target>/, to be copied
# into test/fuzz/regressions/<target>/ once fixed. Prints executions per second per target and
# fails when any target found something. Usage: `make fuzz [FUZZ_SECONDS=60]`, or
# bash test/fuzz/run.sh BUILD_DIR SECONDS TARGET...
set -euo pipefail
build_dir=$1
seconds=$2
shift 2
cd "$(dirname "$0")/../.."

status=0
summary=()
for target in "$@"; do
    corpus=$build_dir/corpus/$target
    findings=$build_dir/findings/$target
    log=$build_dir/logs/$target.log
    mkdir -p "$corpus" "$findings" "$(dirname "$log")"
    seeds=(test/fuzz/corpus/"$target")
    [ -d test/fuzz/regressions/"$target" ] && seeds+=(test/fuzz/regressions/"$target")
    echo "== fuzzing $target for ${seconds}s"
    result=found
    # -timeout: an input slower than 10 s is a finding too; -rss_limit_mb bounds memory.
    if timeout $((seconds + 120)) "$build_dir/$target" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
        -artifact_prefix="$findings/" "$corpus" "${seeds[@]}" >"$log" 2>&1; then
        result=clean
    else
        status=1
        grep -m 20 -E "ERROR|property failed|SUMMARY|Test unit written" "$log" || tail -20 "$log"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    summary+=("$(printf '%-16s %-6s %10s runs %8s exec/s  corpus %s' "$target" "$result" \
        "${runs:-?}" "${rate:-?}" "$(find "$corpus" -type f | wc -l)")")
done
echo "== fuzz summary (${seconds}s per target; logs in $build_dir/logs)"
printf '%s\n' "${summary[@]}"
exit $status
