#!/usr/bin/env bash
# Hostile input at the SQL level: every function of the installed extension, in schemas amebo
# and amebo_internal (enumerated from the catalogs, so new functions are covered), is called
# with NULLs, wrong types, empty and 1 MB strings, payloads around amebo.max_payload_size,
# 10,000-deep JSON, pathological JSON Schemas, odd handler URLs, extreme numbers and huge
# arrays, each call in its own transaction with statement_timeout; then hostile events go
# through the background worker. Fails on a lost connection, a crash in the server log,
# XX000, an error without SQLSTATE, a call slower than statement_timeout + 1 s, or an
# unasked-for statement_timeout cancellation.
# See test/hostile/hostile_input.py. Run from the tree root as an unprivileged user:
#   bash test/scripts/hostile_input.sh
# Environment:
#   AMEBO_HOSTILE_PORT   first port to try (default 55571; the first free one is used)
#   AMEBO_HOSTILE_ARGS   more arguments for hostile_input.py, e.g. "--only read_ --verbose"
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"
start_test_cluster hostile "${AMEBO_HOSTILE_PORT:-55571}" \
    "wal_level = logical" \
    "amebo.allow_private_targets = on" \
    "amebo.worker_naptime = 200" \
    "log_min_error_statement = panic"
status=0
# shellcheck disable=SC2086 # AMEBO_HOSTILE_ARGS is a list of words
timeout --kill-after=10 900 "$PYTHON_BIN" "$top/test/hostile/hostile_input.py" \
    --host "$TEST_CLUSTER" --port "$TEST_PORT" --log "$TEST_CLUSTER/server.log" \
    ${AMEBO_HOSTILE_ARGS:-} || status=$?
if [ $status -ne 0 ]; then
    show_unexpected_errors "ERROR|canceling statement"
fi
exit $status
