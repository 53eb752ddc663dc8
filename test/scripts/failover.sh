#!/usr/bin/env bash
# Failover test of webhook delivery (TAP, PostgreSQL::Test::Cluster): a streaming standby is
# promoted after the primary stops in immediate mode while deliveries were failing; the new
# primary's worker must create its slot, catch up from amebo.delivery_checkpoint and deliver
# every event committed before the failover (stored pending messages included), then new
# ones. See test/tap/failover.pl. Run from the tree root as an unprivileged user:
#   bash test/scripts/failover.sh
# Environment: PYTHON (a python3 for the receiver), PG_TEST_NOCLEAN (keep the nodes' folders).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
pg_bin=$(pg_config --bindir)
pgxs_src=$(cd "$(dirname "$(pg_config --pgxs)")/.." && pwd)

# As pgxs's prove_installcheck does: the server's programs first on the PATH, pg_regress
# (PostgreSQL::Test::Cluster runs "pg_regress --config-auth" in init), a TESTDIR whose
# tmp_check holds the nodes and their logs, and TMPDIR for the socket folders, so that the
# trap removes everything.
work=$(mktemp -d /tmp/amebo-failover.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tmp_check"
export TESTDIR=$work TMPDIR=$work
export PATH="$pg_bin:$PATH"
export PG_REGRESS="$pgxs_src/test/regress/pg_regress"
export PGPORT=${PGPORT:-65432}
unset PGHOST PGDATA PGDATABASE PGUSER

status=0
timeout --kill-after=15 240 prove -v -I "$pgxs_src/test/perl" "$top/test/tap/failover.pl" ||
    status=$?
if [ $status -ne 0 ]; then
    for log in "$work"/tmp_check/log/*.log; do
        [ -e "$log" ] || continue
        echo "--- $(basename "$log"): errors and amebo lines (last 40)"
        grep -E "PANIC|FATAL|ERROR|amebo|promot|redo" "$log" | grep -v "statement:" |
            tail -n 40 || true
    done
fi
exit $status
