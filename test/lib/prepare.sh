#!/usr/bin/env bash
# Shared set-up for the test runner, the demonstration and the benchmarks: install missing
# packages, build and install amebo, and run commands as an unprivileged user (initdb
# refuses root). Source it from the tree's root; then call amebo_prepare.

AMEBO_TOP=${AMEBO_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
AMEBO_USER=${AMEBO_TEST_USER:-amebo_test}

# Runs a command as root (directly, or through sudo for a developer's own account).
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Installs missing packages, builds with warnings as errors, installs the extension, and
# sets AMEBO_WORK: the tree the unprivileged user works in (a copy owned by it, as root).
amebo_prepare() {
    (cd "$AMEBO_TOP" && bash test/lib/setup-machine.sh)
    make -s -C "$AMEBO_TOP" AMEBO_WERROR=-Werror
    as_root make -s -C "$AMEBO_TOP" install
    AMEBO_WORK=$AMEBO_TOP
    if [ "$(id -u)" -eq 0 ]; then
        id "$AMEBO_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$AMEBO_USER"
        AMEBO_WORK=$(mktemp -d /tmp/amebo-work.XXXXXX)
        tar -C "$AMEBO_TOP" --exclude=.git -cf - . | tar -C "$AMEBO_WORK" -xf -
        chown -R "$AMEBO_USER" "$AMEBO_WORK"
    fi
}

# Runs a shell command line in AMEBO_WORK, as the unprivileged user when we are root.
as_test_user() {
    if [ "$(id -u)" -eq 0 ]; then
        su "$AMEBO_USER" -c "cd '$AMEBO_WORK' && $*"
    else
        (cd "$AMEBO_WORK" && bash -c "$*")
    fi
}
