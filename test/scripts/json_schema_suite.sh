#!/usr/bin/env bash
# Conformance of amebo's JSON Schema (draft 7) validation with the official
# JSON-Schema-Test-Suite (Debian package json-schema-test-suite): every case of the draft-7
# files (not optional/) goes through amebo.schema_violations on a throwaway cluster; fails
# when fewer than 99% of the non-excluded cases pass. See test/json_schema_suite/run_suite.py.
# Run from the tree root as an unprivileged user:
#   bash test/scripts/json_schema_suite.sh
# Environment:
#   AMEBO_SUITE_PORT   first port to try (default 55480; the first free one is used)
#   AMEBO_SUITE_DIR    the suite's draft-7 folder (default /usr/share/json-schema-test-suite/tests/draft7)
#   AMEBO_SUITE_ARGS   more arguments for run_suite.py, e.g. "--verbose"
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"
start_test_cluster jsonschema "${AMEBO_SUITE_PORT:-55480}"
status=0
# shellcheck disable=SC2086 # AMEBO_SUITE_ARGS is a list of words
timeout --kill-after=10 600 "$PYTHON_BIN" "$top/test/json_schema_suite/run_suite.py" \
    ${AMEBO_SUITE_ARGS:-} "host=$TEST_CLUSTER port=$TEST_PORT user=postgres dbname=postgres" || status=$?
if [ $status -ne 0 ]; then
    show_unexpected_errors "invalid JSON Schema"
fi
exit $status
