#!/usr/bin/env bash
# Secret rotation and the private-target allowlist end to end (issue 16, items 4 and 5), on a
# throwaway cluster with amebo.allow_private_targets off and amebo.allowed_private_targets
# listing the receiver's addresses, against a Node receiver (test/rotation) whose requests
# are verified afterwards with the Standard Webhooks library for Node (`standardwebhooks`,
# installed with `npm ci` into a copy), once per secret:
#   - before a rotation every delivery verifies with the old secret only;
#   - during the overlap every delivery carries two signatures and verifies with either
#     secret alone;
#   - after the overlap (no restart, no reload) only with the new secret, and the old fails;
#   - a tampered body verifies with neither (negative control).
# Then the allowlist: a subscription to 127.0.0.2 (created while the list held 127.0.0.0/8)
# is delivered to; once a reload narrows the list to 127.0.0.1/32 its deliveries are
# refused at connect time, while 127.0.0.1 still gets everything; and a handler named by
# host (localhost), accepted while its addresses are listed, is refused at connect time once
# a reload empties the list.
# Run from the tree root as an unprivileged user: bash test/scripts/webhook_security.sh
# Environment: AMEBO_SECURITY_PORT   first port to try (default 55560)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"

overlap_seconds=8
start_test_cluster webhook-security "${AMEBO_SECURITY_PORT:-55560}" \
    "wal_level = logical" \
    "amebo.allowed_private_targets = '127.0.0.0/8'" \
    "amebo.retry_base_delay = 100" "amebo.retry_max_delay = 500" \
    "amebo.delivery_timeout = 2000" "amebo.worker_naptime = 200"
trap stop_receiver_and_cluster EXIT

# Runs SQL in the test database; prints unaligned tuples.
sql() {
    "$PG_BIN/psql" -X -q -At -h "$TEST_CLUSTER" -p "$TEST_PORT" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 "$@"
}

failures=0
# Records a check: description, then the command's status.
check() {
    local what=$1
    shift
    if "$@"; then
        echo "ok: $what"
    else
        echo "FAILED: $what"
        failures=$((failures + 1))
    fi
}

# Waits (up to 60 s) until the subscription has delivered at least $2 events.
wait_delivered() {
    local subscription=$1 count=$2 deadline=$((SECONDS + 60))
    while [ "$(sql -c "SELECT delivered FROM amebo.subscription_status WHERE name = '$subscription'")" -lt "$count" ]; do
        if [ $SECONDS -ge $deadline ]; then
            echo "timed out waiting for $count deliveries to $subscription" >&2
            return 1
        fi
        sleep 0.2
    done
}

echo "== npm ci (test/rotation, in a copy)"
verifier=$TEST_WORK/verifier
mkdir "$verifier"
tar -C "$top/test/rotation" --exclude=node_modules -cf - . | tar -C "$verifier" -xf -
export npm_config_cache=$TEST_WORK/npm-cache npm_config_update_notifier=false \
    npm_config_audit=false npm_config_fund=false
(cd "$verifier" && timeout --kill-after=10 300 npm ci --no-progress >/dev/null)

receiver_port=$(free_port $((TEST_PORT + 1)))
received=$TEST_WORK/received.jsonl
node "$verifier/receiver.js" "$received" "$receiver_port" 127.0.0.1 127.0.0.2 \
    >"$TEST_WORK/receiver.log" 2>&1 &
echo $! >"$TEST_WORK/receiver.pid"
for _ in $(seq 50); do
    [ "$(grep -c listening "$TEST_WORK/receiver.log" || true)" -eq 2 ] && break
    sleep 0.1
done

# Appends 20 events of a phase to streams s-1 .. s-20.
append_phase() {
    sql -c "SELECT amebo.append_event('s-' || i, 'rot.tick', jsonb_build_object('phase', '$1', 'i', i))
            FROM generate_series(1, 20) i" >/dev/null
}

old_secret=$(sql -c "SELECT amebo.create_application('rot')")
sql -c "SELECT amebo.create_subscription('rot', 'near', 'rot.*', 'http://127.0.0.1:$receiver_port/hook')" >/dev/null
sql -c "SELECT amebo.create_subscription('rot', 'far', 'rot.*', 'http://127.0.0.2:$receiver_port/hook')" >/dev/null

echo "== before the rotation"
append_phase before
wait_delivered near 20
wait_delivered far 20

echo "== during the overlap ($overlap_seconds s)"
new_secret=$(sql -c "SELECT amebo.rotate_application_secret('rot', overlap => '$overlap_seconds seconds')")
append_phase during
wait_delivered near 40
wait_delivered far 40
left=$(sql -c "SELECT extract(epoch FROM previous_secret_expires_at - now()) > 0 FROM amebo.applications WHERE name = 'rot'")
check "the overlap phase was delivered before the overlap ended" [ "$left" = t ]

echo "== after the overlap; the list narrowed to 127.0.0.1/32"
sql -c "ALTER SYSTEM SET amebo.allowed_private_targets = '127.0.0.1/32'" -c "SELECT pg_reload_conf()" >/dev/null
sleep_until=$(sql -c "SELECT ceil(extract(epoch FROM previous_secret_expires_at - now()))::int + 1 FROM amebo.applications WHERE name = 'rot'")
sleep "$sleep_until"
append_phase after
wait_delivered near 60
# The far subscription's attempts are refused: wait until each of the 20 has failed once.
deadline=$((SECONDS + 60))
refused_query="SELECT count(DISTINCT l.webhook_id) FROM amebo.delivery_log l
               JOIN amebo.subscriptions s ON s.id = l.subscription_id
               WHERE s.name = 'far' AND l.error LIKE 'refused to connect to 127.0.0.2: loopback address%'"
while [ "$(sql -c "$refused_query")" -lt 20 ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done

echo "== a host name: allowed while its addresses are listed, refused at connect time after"
sql -c "ALTER SYSTEM SET amebo.allowed_private_targets = '127.0.0.1/32, ::1'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
sql -c "SELECT amebo.create_subscription('rot', 'named', 'rot.*', 'http://localhost:$receiver_port/named')" >/dev/null
sql -c "ALTER SYSTEM SET amebo.allowed_private_targets = ''" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
sql -c "SELECT amebo.append_event('late-1', 'rot.tick', '{\"phase\": \"late\"}')" >/dev/null
named_query="SELECT count(*) FROM amebo.delivery_log l JOIN amebo.subscriptions s ON s.id = l.subscription_id
             WHERE s.name = 'named' AND l.error LIKE 'refused to connect to %: loopback address%'"
deadline=$((SECONDS + 30))
while [ "$(sql -c "$named_query")" -lt 1 ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
check "localhost's addresses are refused at connect time once the list is empty" \
    [ "$(sql -c "$named_query")" -ge 1 ]

results=$(node "$verifier/verify.js" "$received" "$old_secret" "$new_secret")
echo "verified: $results"
# The count of a phase's field from the verifier's results.
count() {
    python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2], {}).get(sys.argv[3], 0))' \
        "$results" "$1" "$2"
}
for address in 127.0.0.1 127.0.0.2; do
    check "before@$address: 20 requests, 20 verify with the old secret, 0 with the new" \
        [ "$(count before@$address requests)/$(count before@$address old)/$(count before@$address new)" = 20/20/0 ]
    check "during@$address: 20 requests with two signatures, each secret alone verifies all" \
        [ "$(count during@$address requests)/$(count during@$address two_signatures)/$(count during@$address old)/$(count during@$address new)" = 20/20/20/20 ]
done
check "after@127.0.0.1: 20 requests, one signature, 20 verify with the new secret, 0 with the old" \
    [ "$(count after@127.0.0.1 requests)/$(count after@127.0.0.1 two_signatures)/$(count after@127.0.0.1 new)/$(count after@127.0.0.1 old)" = 20/0/20/0 ]
tampered=$(python3 -c 'import json, sys; print(sum(p["tampered"] for p in json.loads(sys.argv[1]).values()))' "$results")
check "no tampered body verifies with either secret (negative control)" [ "$tampered" = 0 ]
check "late: nothing reaches localhost once the list is empty" \
    [ "$(count late@127.0.0.1 requests)/$(count late@127.0.0.2 requests)" = 0/0 ]
check "after@127.0.0.2: nothing arrives once the list no longer holds it" \
    [ "$(count after@127.0.0.2 requests)" = 0 ]
check "each of the 20 far deliveries was refused at connect time" \
    [ "$(sql -c "$refused_query")" -ge 20 ]
check "the secrets never reached the server log" \
    bash -c "! grep -a -F -e '${old_secret#whsec_}' -e '${new_secret#whsec_}' '$TEST_CLUSTER/server.log'"

show_unexpected_errors "this_matches_nothing_expected" | tail -n 5
if [ $failures -ne 0 ]; then
    echo "webhook_security: $failures check(s) FAILED"
    exit 1
fi
echo "webhook_security: all checks passed"
