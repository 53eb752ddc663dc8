#!/usr/bin/env bash
# Runs a TAP test of test/tap with PostgreSQL::Test::Cluster from the PGXS install (source it,
# then: run_tap_test FILE TIMEOUT_SECONDS). As pgxs's prove_installcheck does: the server's
# programs first on the PATH, pg_regress (PostgreSQL::Test::Cluster runs "pg_regress
# --config-auth" in init), a TESTDIR whose tmp_check holds the nodes and their logs, and TMPDIR
# for the socket folders, all in a temporary folder removed on exit. On failure it prints the
# errors and amebo's lines of every node's log. Environment: PG_TEST_NOCLEAN keeps the nodes'
# folders (PostgreSQL::Test::Cluster's own switch); PGPORT, the first port tried.

# Runs prove on FILE within TIMEOUT seconds; returns its status.
run_tap_test() {
    local file=$1 seconds=$2 pg_bin pgxs_src work status=0
    pg_bin=$(pg_config --bindir)
    pgxs_src=$(cd "$(dirname "$(pg_config --pgxs)")/.." && pwd)
    work=$(mktemp -d "/tmp/amebo-$(basename "$file" .pl).XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    mkdir -p "$work/tmp_check"
    (
        export TESTDIR=$work TMPDIR=$work
        export PATH="$pg_bin:$PATH"
        export PG_REGRESS="$pgxs_src/test/regress/pg_regress"
        export PGPORT=${PGPORT:-65432}
        unset PGHOST PGDATA PGDATABASE PGUSER
        timeout --kill-after=15 "$seconds" prove -v -I "$pgxs_src/test/perl" "$file"
    ) || status=$?
    if [ $status -ne 0 ]; then
        for log in "$work"/tmp_check/log/*.log; do
            [ -e "$log" ] || continue
            echo "--- $(basename "$log"): errors and amebo lines (last 40)"
            grep -E "PANIC|FATAL|ERROR|amebo|promot|redo" "$log" | grep -v "statement:" |
                tail -n 40 || true
        done
    fi
    return $status
}
