#!/usr/bin/env bash
# The documentation drift test: docs/reference.md must have an entry for every function,
# view, table and sequence the extension installs (read from the catalogs of a throwaway
# cluster; the functions of amebo_internal apart from amebo's), every amebo.* setting, every
# amebo_* role and every SQLSTATE the sources raise, naming each function's arguments and
# each table's or view's columns; no entry for anything that no longer exists; the number of
# functions of each schema; and every amebo.<name> or amebo_internal.<name> that README.md
# and docs/*.md mention must exist. It also proves it can fail: an entry removed from a copy
# of the reference, and a planted mention of a missing object, must be reported. See
# test/docs/check_reference.py for the anchor convention. Run from the tree root as an
# unprivileged user:
#   bash test/scripts/docs_reference.sh
# Environment:
#   AMEBO_DOCS_PORT   first port to try (default 55611; the first free one is used)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"
start_test_cluster docs_reference "${AMEBO_DOCS_PORT:-55611}"
timeout --kill-after=10 120 "$PYTHON_BIN" "$top/test/docs/check_reference.py" \
    --host "$TEST_CLUSTER" --port "$TEST_PORT" --reference "$top/docs/reference.md" \
    --src "$top/src" --sql "$top/sql" --documents "$top/README.md" "$top"/docs/*.md \
    --errcodes "$(pg_config --includedir-server)/utils/errcodes.h"
