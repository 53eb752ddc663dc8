#!/usr/bin/env bash
# Runs every test of amebo on a fresh Debian 12 machine: installs missing packages, builds
# (warnings are errors), installs the extension, then, as an unprivileged user, runs the
# pg_regress suite, the isolation specs and the script tests (test/scripts/*.sh), each on
# its own throwaway cluster.  Usage (as root, or as a user who may sudo): bash test/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source test/lib/prepare.sh

make -s clean
amebo_prepare

status=0
# Runs one named step as the test user and records a failure without stopping.
run_step() {
    local name=$1
    shift
    echo "== $name"
    if ! as_test_user "$@"; then
        echo "FAILED: $name"
        status=1
    fi
}

run_step "format (.clang-format)" "make -s format-check"
run_step "unit tests (pure C++)" "make -s unit"
run_step "webhook receiver self-test" "bash test/lib/receiver_selftest.sh"
run_step "pg_regress and isolation" \
    "make -s installcheck || { cat regression.diffs test/isolation/regression.diffs 2>/dev/null; exit 1; }"
for script in test/scripts/*.sh; do
    [ -e "$script" ] || continue
    run_step "$(basename "$script" .sh)" "bash $script"
done

if [ $status -eq 0 ]; then echo "== all tests passed"; else echo "== some tests FAILED"; fi
exit $status
