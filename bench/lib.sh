#!/usr/bin/env bash
# What bench/run.sh and bench/webhooks.sh share when they are started as root (or a user who
# may sudo): source it, then bench_as_test_user "what" "command". It installs what is missing,
# builds and installs amebo (unless BENCH_NO_BUILD=1: then amebo must be installed already),
# runs the command as the unprivileged test user in its work tree, and copies
# bench/RESULTS.md back into the checkout.

source test/lib/prepare.sh

# Prepares the machine and the test user's work tree (without building when BENCH_NO_BUILD=1).
bench_prepare() {
    if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
        # amebo_prepare without its build and install: packages, user and work tree only.
        # shellcheck disable=SC2317 # called by amebo_prepare
        make() { :; }
        # shellcheck disable=SC2317
        as_root() { :; }
        amebo_prepare
        unset -f make as_root
        if [ ! -f "$(pg_config --sharedir)/extension/amebo.control" ]; then
            echo "amebo is not installed (run without BENCH_NO_BUILD=1 to build it)" >&2
            exit 1
        fi
    else
        echo "== building and installing amebo"
        amebo_prepare >/dev/null
    fi
    if [ "$AMEBO_WORK" != "$AMEBO_TOP" ]; then
        # shellcheck disable=SC2064
        trap "rm -rf '$AMEBO_WORK'" EXIT
    fi
}

# Runs a benchmark command line ($2) as the test user, announced as $1, and brings its
# bench/RESULTS.md back.
bench_as_test_user() {
    bench_prepare
    BENCH_SOURCE=$(git -C "$AMEBO_TOP" describe --always --dirty 2>/dev/null || echo unknown)
    export BENCH_SOURCE
    echo "== benchmarking $1 (progress on stderr)"
    as_test_user "$2"
    if [ "$AMEBO_WORK" != "$AMEBO_TOP" ]; then
        cp "$AMEBO_WORK/bench/RESULTS.md" "$AMEBO_TOP/bench/RESULTS.md"
    fi
}
