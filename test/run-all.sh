#!/usr/bin/env bash
# Runs every test of amebo on a fresh Debian 12 machine: installs missing packages, builds
# (warnings are errors), installs the extension, then, as an unprivileged user, runs the
# pg_regress suite, the isolation specs and the script tests on throwaway clusters.
# Usage (as root, or as a user who can sudo): bash test/run-all.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

bash test/lib/setup-machine.sh
make -s clean
make -s AMEBO_WERROR=-Werror
sudo_if_needed make -s install

# initdb refuses root: as root, run the tests as an unprivileged user on a copy of the tree.
test_user=${AMEBO_TEST_USER:-amebo_test}
work=$top
if [ "$(id -u)" -eq 0 ]; then
    id "$test_user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$test_user"
    work=$(mktemp -d /tmp/amebo-test.XXXXXX)
    tar -C "$top" --exclude=.git -cf - . | tar -C "$work" -xf -
    chown -R "$test_user" "$work"
fi

# Runs a command in the work tree, as the test user when we are root.
as_test_user() {
    if [ "$(id -u)" -eq 0 ]; then
        su "$test_user" -c "cd '$work' && $*"
    else
        (cd "$work" && bash -c "$*")
    fi
}

status=0
run_step() {
    local name=$1
    shift
    echo "== $name"
    if ! as_test_user "$@"; then
        echo "FAILED: $name"
        status=1
    fi
}

run_step "pg_regress and isolation" "make -s installcheck || { cat regression.diffs test/isolation/regression.diffs 2>/dev/null; exit 1; }"
for t in test/scripts/*.sh; do
    run_step "$(basename "$t" .sh)" "bash $t"
done

if [ $status -eq 0 ]; then echo "== all tests passed"; else echo "== some tests FAILED"; fi
exit $status
