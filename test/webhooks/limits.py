#!/usr/bin/env python3
"""Rate limits and the circuit breaker, end to end (run by test/scripts/webhook_limits.sh).

Starts test/lib/receiver.py on 127.0.0.1 and checks, with figures:
  rate limit:  100 events to a subscription limited to 20 requests/s and to an unlimited one
               (AMEBO_LIMITS_RATE sets the rate; the events are five seconds' worth): the unlimited
               one gets all of them long before the limited one (not held back); the limited
               one gets each exactly once, in no 1 s window more than the rate + the burst
               (2) + a margin of 3 (5% of the rate above 60/s), at no more than the limit
               overall after the burst, and with no failed or repeated attempt (waiting is
               not failing). Negative control: the window bound fails for the unlimited one.
  breaker:     with amebo.disable_after = 2s, an endpoint that answers 500 to every attempt
               is disabled with a reason (subscription_status, subscription_list); an
               amebo.subscription_disabled event is appended to amebo-operations and delivered
               to another subscription; resume_subscription re-enables it and its events
               arrive. An endpoint that fails every first attempt but then succeeds, for twice
               the period, stays active (negative control); with amebo.disable_after = 0
               an always-failing endpoint stays active.
The exit status is 1 when any check failed.
"""
import argparse
import base64
import os
import sys
import time

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checks import Checks  # noqa: E402
from receiver import Receiver  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--host", required=True, help="socket directory of the test cluster")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--receiver-pid-file", help="where to write the receiver's pid")
args = parser.parse_args()

APP = "limits"
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
# Requests per second of the limited subscription.
RATE = int(os.environ.get("AMEBO_LIMITS_RATE", "20"))
BURST = max(1, RATE // 10)  # RateLimit::Burst(): a tenth of a second's worth, at least 1
COUNT = 5 * RATE  # events: five seconds' worth
# Receipt times jitter around send times (a busy receiver): the 1 s window bound allows a few
# more than the bucket lets go (rate + burst).
MARGIN = max(3, RATE // 20)
DISABLE_AFTER = 2.0  # amebo.disable_after in webhook_limits.sh

checks = Checks()
check = checks.check
eq = checks.eq


# An autocommit connection to the test cluster.
def db():
    return psycopg.connect(host=args.host, port=args.port, dbname="postgres", user="postgres",
                           autocommit=True, options="-c statement_timeout=60000")


# The first column of the first row, or None.
def one(conn, sql, params=None):
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


# Polls fn() until it returns something truthy or timeout seconds pass; returns its last value.
def wait_until(fn, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# A subscription's row of amebo.subscription_status as a dict.
def status_of(conn, name):
    cur = conn.execute("SELECT * FROM amebo.subscription_status WHERE application = %s "
                       "AND name = %s", (APP, name))
    row = cur.fetchone()
    return None if row is None else dict(zip([d.name for d in cur.description], row))


# Creates a subscription of the receiver's path; returns its id.
def subscribe(conn, rcv, name, action, path, **kw):
    return one(conn, "SELECT amebo.create_subscription(%s, %s, %s, %s, max_retries => %s, "
                     "rate_limit => %s)",
               (APP, name, action, rcv.url(path), kw.get("max_retries", 5),
                kw.get("rate_limit")))


# Successful requests at path, as (received_at, webhook_id), in arrival order.
def received(rcv, path):
    return sorted((r["received_at"], r["webhook_id"]) for r in rcv.client.requests(path)
                  if r["status"] == 200)


# The most requests in any window of seconds starting at a request (times sorted).
def most_in_window(times, seconds):
    most, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + seconds:
            j += 1
        most = max(most, j - i)
    return most


def rate_limit_case(conn, rcv):
    print("--- rate limit", flush=True)
    conn.execute("SELECT amebo.create_action('lim.x', %s)", (APP,))
    limited_id = subscribe(conn, rcv, "limited", "lim.x", "/limited", rate_limit=RATE)
    subscribe(conn, rcv, "unlimited", "lim.x", "/unlimited")
    conn.execute("SELECT amebo.append_events('lim-1', %s)",
                 (Jsonb([{"action": "lim.x", "payload": {"n": n}} for n in range(COUNT)]),))
    fast = wait_until(lambda: len(received(rcv, "/unlimited")) >= COUNT and received(rcv, "/unlimited"), 20)
    limited_then = len(received(rcv, "/limited"))
    check(fast and limited_then < COUNT * 0.8,
          f"the unlimited subscription got all {COUNT} while the limited one had {limited_then}")
    got = wait_until(lambda: len(received(rcv, "/limited")) >= COUNT and received(rcv, "/limited"), 40)
    times = [t for t, _ in got or []]
    eq(len({w for _, w in got or []}), COUNT, "distinct events at the limited subscription")
    if len(times) >= 2:
        span = times[-1] - times[0]
        overall = (len(times) - BURST) / span if span > 0 else float("inf")
        check(overall <= RATE * 1.1,
              f"overall rate after the burst: {overall:.1f}/s over {span:.1f} s (limit {RATE}/s)")
        check(span >= (COUNT - BURST) / RATE * 0.85,
              f"{COUNT} events took {span:.1f} s, at least (events - burst) / rate = "
              f"{(COUNT - BURST) / RATE:.1f} s less 15%")
    window = most_in_window(times, 1.0)
    check(window <= RATE + BURST + MARGIN,
          f"most deliveries in any 1 s window: {window} "
          f"(limit {RATE} + burst {BURST} + margin {MARGIN})")
    unlimited = most_in_window([t for t, _ in fast or []], 1.0)
    check(unlimited > RATE + BURST + MARGIN,
          f"negative control: the same bound fails for the unlimited subscription ({unlimited})")
    eq(one(conn, "SELECT count(*) FILTER (WHERE attempt <> 1 OR error IS NOT NULL) "
                 "FROM amebo.delivery_log WHERE subscription_id = %s", (limited_id,)),
       0, "failed or repeated attempts of the limited subscription")
    eq(len(rcv.client.requests("/limited")), COUNT, "requests to the limited endpoint")


def breaker_case(conn, rcv):
    print("--- circuit breaker", flush=True)
    conn.execute("SELECT amebo.create_action('brk.x', %s)", (APP,))
    conn.execute("SELECT amebo.create_action('flk.x', %s)", (APP,))
    subscribe(conn, rcv, "operations", "amebo.subscription_disabled", "/operations")
    rcv.client.behave("/broken", mode="fail", status=500)
    subscribe(conn, rcv, "broken", "brk.x", "/broken", max_retries=100)
    subscribe(conn, rcv, "flaky", "flk.x", "/flaky", max_retries=100)
    started = time.monotonic()
    conn.execute("SELECT amebo.append_event('brk-1', 'brk.x', '{\"n\": 0}')")
    # The flaky endpoint fails the first attempt of each event, for twice the period.
    n = 1
    while time.monotonic() - started < 2 * DISABLE_AFTER + 0.5:
        rcv.client.behave("/flaky", mode="fail", status=503, count=1)
        conn.execute("SELECT amebo.append_event('flaky-1', 'flk.x', %s)", (Jsonb({"n": n}),))
        n += 1
        time.sleep(0.4)
    st = wait_until(lambda: (status_of(conn, "broken") or {}).get("state") == "disabled"
                    and status_of(conn, "broken"), 15)
    took = time.monotonic() - started
    check(st and (st["disabled_reason"] or "").startswith("every delivery attempt failed"),
          f"the always-failing subscription is disabled after {took:.1f} s: "
          f"reason {st and st['disabled_reason']!r}")
    attempts = len(rcv.client.requests("/broken"))
    check(attempts >= 3, f"attempts at the failing endpoint before it was disabled: {attempts}")
    eq(one(conn, "SELECT state FROM amebo.subscription_list WHERE application = %s "
                 "AND name = 'broken'", (APP,)), "disabled", "subscription_list.state")
    flaky = status_of(conn, "flaky")
    flaky_failures = sum(1 for r in rcv.client.requests("/flaky") if r["status"] != 200)
    check(flaky["state"] == "active" and flaky_failures >= 8,
          f"the subscription that failed {flaky_failures} first attempts over "
          f"{2 * DISABLE_AFTER:.0f} s (and then succeeded) is {flaky['state']}")
    event = conn.execute("SELECT action, payload FROM amebo.events "
                         "WHERE stream = 'amebo-operations'").fetchall()
    eq([(a, p["subscription"], p["application"], p["last_error"]) for a, p in event],
       [("amebo.subscription_disabled", "broken", APP, "HTTP 500")],
       "operational events in amebo-operations (action, subscription, application, last error)")
    check(event and event[0][1].get("since") and event[0][1].get("reason"),
          f"its payload names since and reason: {event and event[0][1]}")
    sent = wait_until(lambda: rcv.client.requests("/operations"), 10)
    check(sent and sent[0]["body"]["action"] == "amebo.subscription_disabled"
          and sent[0]["body"]["payload"]["subscription"] == "broken"
          and sent[0]["signature_valid"],
          f"the event was delivered, signed, to the subscription of amebo.subscription_disabled: "
          f"{sent and sent[0]['body']['payload']}")
    # Re-enabling: the endpoint heals, resume_subscription, its waiting and new events arrive.
    rcv.client.behave("/broken", mode="ok")
    conn.execute("SELECT amebo.resume_subscription(%s, 'broken')", (APP,))
    st = status_of(conn, "broken")
    eq((st["state"], st["disabled_reason"], st["failing_since"]), ("active", None, None),
       "after resume_subscription (state, reason, failing_since)")
    conn.execute("SELECT amebo.append_event('brk-1', 'brk.x', '{\"n\": 1}')")
    delivered = wait_until(lambda: len(sorted(r["body"]["payload"]["n"] for r in rcv.client.requests("/broken")
                                              if r["status"] == 200)) >= 2 and
                           sorted(r["body"]["payload"]["n"] for r in rcv.client.requests("/broken")
                                  if r["status"] == 200), 15)
    eq(delivered, [0, 1], "after resume the waiting event (0) and a new one (1) arrive, once each")
    eq(one(conn, "SELECT count(*) FROM amebo.events WHERE stream = 'amebo-operations'"), 1,
       "no further operational event")


def breaker_off_case(conn, rcv):
    print("--- amebo.disable_after = 0: never disabled", flush=True)
    conn.execute("ALTER SYSTEM SET amebo.disable_after = 0")
    conn.execute("SELECT pg_reload_conf()")
    time.sleep(1.0)  # the worker reads the reload at its next wake-up (naptime 200 ms)
    conn.execute("SELECT amebo.create_action('off.x', %s)", (APP,))
    rcv.client.behave("/never", mode="fail", status=500)
    subscribe(conn, rcv, "never", "off.x", "/never", max_retries=100)
    conn.execute("SELECT amebo.append_event('off-1', 'off.x', '{}')")
    time.sleep(2 * DISABLE_AFTER)
    st = status_of(conn, "never")
    attempts = len(rcv.client.requests("/never"))
    check(st["state"] == "active" and attempts >= 5,
          f"after {attempts} failed attempts over {2 * DISABLE_AFTER:.0f} s it is {st['state']}, "
          f"failing since {st['failing_since']}")
    conn.execute("ALTER SYSTEM RESET amebo.disable_after")
    conn.execute("SELECT pg_reload_conf()")


def main():
    with Receiver(secret=SECRET) as rcv:
        if args.receiver_pid_file:
            with open(args.receiver_pid_file, "w") as f:
                f.write(str(rcv.proc.pid))
        with db() as conn:
            conn.execute("SELECT amebo.create_application(%s, NULL, %s)", (APP, SECRET))
            for case in (rate_limit_case, breaker_case, breaker_off_case):
                try:
                    case(conn, rcv)
                except Exception as error:  # a failed case still lets the next one run
                    check(False, f"{case.__name__} raised {error!r}")
    print(f"--- summary: {checks.passed} checks passed, {len(checks.failed)} failed")
    for what in checks.failed:
        print(f"FAIL {what}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
