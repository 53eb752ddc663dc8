#!/usr/bin/env bash
# Slow endpoints test: 200 subscriptions to handlers answering after 50 ms (nginx with
# libnginx-mod-http-echo, each on a loopback address of its own) and 3 fast ones, with the
# default delivery settings: every event delivered once to each, the fast handlers done long
# before the slow ones, the worker's memory printed, and the worker ending promptly on SIGTERM
# with thousands of requests in flight. See test/webhooks/slow_endpoints.py. Under a minute.
# Run from the tree root as an unprivileged user: bash test/scripts/webhook_slow_endpoints.sh
# Environment: AMEBO_SLOW_ENDPOINTS_PORT  first port to try (default 55611)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"

start_test_cluster webhook-slow-endpoints "${AMEBO_SLOW_ENDPOINTS_PORT:-55611}" \
    "wal_level = logical" "amebo.allow_private_targets = on"
timeout --kill-after=10 170 "$PYTHON_BIN" "$top/test/webhooks/slow_endpoints.py" \
    --host "$TEST_CLUSTER" --port "$TEST_PORT" --workdir "$TEST_WORK"
