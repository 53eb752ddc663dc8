#!/usr/bin/env python3
"""Webhook delivery end to end (run by test/scripts/webhooks.sh).

Starts test/lib/receiver.py on 127.0.0.1, subscribes its paths, appends events and checks
what arrives. Cases (each prints its checks with figures, then PASS or FAIL; an exception
fails the case and the next case runs; the exit status is 1 when any case failed):
  1 matching:   'user.*' gets every user event of 200 over 20 streams exactly once, signed,
                and no 'order.placed'; exact name, '*', payload filter, batches of 10; the
                bodies equal amebo.read_stream's rows.
  2 failing:    an always-500 endpoint with max_retries 3: attempts 1..4 in delivery_log on
                the backoff schedule, then dead; redeliver after it heals. A healthy
                subscription meanwhile gets its events promptly.
  3 hanging:    a hanging endpoint does not delay a healthy one; its requests time out
                (amebo.delivery_timeout) and are retried.
  4 ordered:    ordered = true under failures: each stream's events succeed in version order.
  5 gone:       410 disables the subscription; later events are not sent; resume re-enables.
  6 retry-after: 429 with Retry-After: 1 delays the next attempt by about a second (and a
                large Retry-After is capped at amebo.retry_max_delay).
  7 private:    amebo.allow_private_targets = off refuses loopback, link-local, localhost,
                and at connect time an existing loopback subscription; bad schemes and
                credentials in the URL are refused.
  8 delayed:    metadata deliver_after holds an event until then.
  9 replay/pause: replay_subscription re-sends; a paused subscription queues and resume
                delivers.
 11 new subscription: events appended at once after create_subscription (while other appends
                keep the worker busy) all arrive, promptly.
 10 lifecycle:  the worker survives DROP/CREATE EXTENSION (one slot afterwards) and a reload
                (runs last: it drops the extension).
The cluster needs amebo.allow_private_targets = on, retry_base_delay 100, retry_max_delay
2000, delivery_timeout 2000 (see webhooks.sh).
"""
import argparse
import base64
import datetime
import os
import signal
import sys
import threading
import time
import traceback
import uuid

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from receiver import Receiver  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--host", required=True, help="socket directory of the test cluster")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--receiver-log", help="the receiver's JSON lines log")
parser.add_argument("--receiver-pid-file", help="where to write the receiver's pid")
parser.add_argument("--cases", help="comma-separated case numbers to run (default: all)")
parser.add_argument("--seed", type=int, default=None)
args = parser.parse_args()

SEED = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
APP = "whapp"
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
RETRY_BASE = 0.100  # seconds; amebo.retry_base_delay in webhooks.sh
RETRY_MAX = 2.0  # amebo.retry_max_delay
DELIVERY_TIMEOUT = 2.0  # amebo.delivery_timeout
HEALTHY_LATENCY_LIMIT = 1.0  # seconds from append to receipt for a healthy subscription

from checks import T_START, Checks  # noqa: E402

checks = Checks()
check = checks.check
eq = checks.eq


# ---------------------------------------------------------------------------------------
# Database and receiver helpers


# An autocommit connection to the test cluster; statement_timeout keeps a hang finite.
def db():
    return psycopg.connect(host=args.host, port=args.port, dbname="postgres", user="postgres",
                           autocommit=True, options="-c statement_timeout=60000")


# The first column of the first row, or None.
def one(conn, sql, params=None):
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


# Every row of a query.
def rows(conn, sql, params=None):
    return conn.execute(sql, params).fetchall()


# The webhook id amebo gives a one-event message.
def webhook_id(event_id):
    return "msg_" + str(event_id).replace("-", "")


# Appends one event with a client-made id; returns (event_id, wall clock before the append).
def append(conn, stream, action, payload, metadata=None):
    event_id = str(uuid.uuid4())
    before = time.time()
    conn.execute("SELECT amebo.append_event(%s, %s, %s, NULL, %s, %s::uuid)",
                 (stream, action, Jsonb(payload),
                  Jsonb(metadata) if metadata is not None else None, event_id))
    return event_id, before


# Position of a stored event.
def position_of(conn, event_id):
    return one(conn, "SELECT position FROM amebo.events WHERE event_id = %s::uuid", (event_id,))


# Polls fn() until it returns something truthy or timeout seconds pass; returns its last value.
def wait_until(fn, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# amebo.wait_for_deliveries(timeout), timed; returns (result, seconds). When it times out,
# prints the delivery state (subscription_status, delivery_queue) to help find why.
def wait_deliveries(conn, timeout=30):
    t0 = time.monotonic()
    ok = one(conn, "SELECT amebo.wait_for_deliveries(%s)", (timeout,))
    if not ok:
        print("  diag subscription_status (name, state, in_flight, queued, pending, dead, "
              "delivered, last_error):")
        for r in rows(conn, "SELECT name, state, in_flight, queued, pending, dead, delivered, "
                            "last_error FROM amebo.subscription_status ORDER BY name"):
            print(f"  diag   {r}")
        for r in rows(conn, "SELECT slot_name, active, checkpoint_position, events_behind, "
                            "(SELECT max(position) FROM amebo.events), "
                            "amebo.settled_position() FROM amebo.delivery_queue"):
            print(f"  diag delivery_queue (slot, active, checkpoint, events_behind, "
                  f"max position, settled_position): {r}")
    return ok, time.monotonic() - t0


# Requests recorded at path whose body is one event, grouped by event id.
def by_event(records):
    grouped = {}
    for r in records:
        body = r.get("body") or {}
        grouped.setdefault(body.get("event_id"), []).append(r)
    return grouped


# True for a request the receiver answered 2xx at once (a hung one is recorded as 200 but
# answered only after hang_seconds, when the worker has given up on it).
def answered_ok(record):
    return 200 <= record["status"] < 300 and record.get("mode") != "hang"


# Event ids of the successful (2xx) requests at path, one per request (single-event bodies).
def delivered_ids(records):
    return [r["body"]["event_id"] for r in records
            if answered_ok(r) and isinstance(r.get("body"), dict)
            and "event_id" in r["body"]]


# The max, median and count of the latencies from append to the first 2xx receipt.
def latency_figures(records, appended):
    first = {}
    for r in records:
        if answered_ok(r) and isinstance(r.get("body"), dict):
            first.setdefault(r["body"].get("event_id"), r["received_at"])
    lat = sorted(first[e] - t for e, t in appended.items() if e in first)
    missing = [e for e in appended if e not in first]
    median = lat[len(lat) // 2] if lat else None
    return (lat[-1] if lat else None), median, len(lat), missing


# Formats seconds as milliseconds for the report lines.
def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


class Subscriptions:
    """The subscriptions a case creates, dropped when the case ends."""

    def __init__(self, conn, receiver):
        self.conn = conn
        self.receiver = receiver
        self.names = []

    # Creates subscription name of action (or pattern) to the receiver's path; returns its id.
    def create(self, name, action, path, **kw):
        sub_id = one(self.conn,
                     "SELECT amebo.create_subscription(%s, %s, %s, %s, "
                     "max_retries => %s, filter => %s, ordered => %s, batch_size => %s)",
                     (APP, name, action, self.receiver.url(path), kw.get("max_retries", 5),
                      Jsonb(kw["filter"]) if kw.get("filter") is not None else None,
                      kw.get("ordered", False), kw.get("batch_size", 1)))
        self.names.append(name)
        return sub_id

    # Drops every subscription of the case that still exists with drop_subscription (a
    # failure is a failed check; the row is then deleted so that later cases start clean).
    def drop_all(self):
        left = [n for n in self.names if one(self.conn, "SELECT count(*) FROM amebo.subscriptions "
                                                        "WHERE application = %s AND name = %s",
                                             (APP, n))]
        errors = []
        for name in left:
            try:
                self.conn.execute("SELECT amebo.drop_subscription(%s, %s)", (APP, name))
            except psycopg.Error as e:
                errors.append(f"{name}: {e.sqlstate} {str(e).splitlines()[0]}")
                self.conn.execute("DELETE FROM amebo.subscriptions WHERE application = %s "
                                  "AND name = %s", (APP, name))
        check(not errors, f"drop_subscription of the case's {len(left)} subscriptions",
              "; ".join(errors))
        self.names.clear()


# Makes sure the actions exist (exact-name subscriptions need them).
def create_actions(conn, *actions):
    for action in actions:
        conn.execute("SELECT amebo.create_action(%s, %s) WHERE NOT EXISTS "
                     "(SELECT 1 FROM amebo.actions WHERE action = %s)", (action, APP, action))


# Delivery log rows of a subscription id: (webhook_id, attempt, status, error, duration_ms,
# attempted_at as Unix seconds), in attempt order.
def delivery_log(conn, sub_id, webhook=None):
    return rows(conn, "SELECT webhook_id, attempt, status, error, duration_ms, "
                      "extract(epoch FROM attempted_at)::float8 FROM amebo.delivery_log "
                      "WHERE subscription_id = %s AND (%s::text IS NULL OR webhook_id = %s) "
                      "ORDER BY attempted_at, attempt", (sub_id, webhook, webhook))


# A subscription's row of amebo.subscription_status as a dict.
def status_of(conn, name):
    cur = conn.execute("SELECT * FROM amebo.subscription_status WHERE application = %s "
                       "AND name = %s", (APP, name))
    row = cur.fetchone()
    return None if row is None else dict(zip([d.name for d in cur.description], row))


# Sets amebo.allow_private_targets with ALTER SYSTEM (None: reset) and reloads; returns the
# value a new session sees once the reload has been read.
def set_private_targets(conn, value):
    if value is None:
        conn.execute("ALTER SYSTEM RESET amebo.allow_private_targets")
    else:
        conn.execute(f"ALTER SYSTEM SET amebo.allow_private_targets = {value}")
    conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)  # the worker reads it on its latch; new sessions read it at start
    with db() as fresh:
        return one(fresh, "SHOW amebo.allow_private_targets")


# ---------------------------------------------------------------------------------------
# Case 1: matching, exactly once, signatures, filters, batches, bodies


def case_matching(conn, rcv, subs):
    create_actions(conn, "user.created", "user.updated", "order.placed")
    sub_user = subs.create("c1-user", "user.*", "/c1/user")
    subs.create("c1-exact", "user.created", "/c1/exact")
    subs.create("c1-all", "*", "/c1/all")
    subs.create("c1-filter", "user.*", "/c1/filter", filter={"plan": "pro"})
    subs.create("c1-batch", "user.*", "/c1/batch", batch_size=10)

    # 20 streams of 10 user events: 10 streams by single appends from 4 threads, 10 by one
    # append_events call each (so that whole transactions can fill a batch); 20 orders.
    events = {}  # event_id -> (stream, action, payload, metadata)
    lock = threading.Lock()
    errors = []

    def plan_of(s, k):
        return "pro" if (s + k) % 3 == 0 else "free"

    def writer(w):
        try:
            with db() as c:
                for s in range(w, 10, 4):
                    for k in range(10):
                        action = "user.created" if k == 0 else "user.updated"
                        payload = {"k": k, "plan": plan_of(s, k), "name": f"u{s}"}
                        meta = {"corr": f"c{s}-{k}"} if k % 2 else None
                        eid, _ = append(c, f"c1u-{s}", action, payload, meta)
                        with lock:
                            events[eid] = (f"c1u-{s}", action, payload, meta or {})
                        if k == 5:
                            oid, _ = append(c, f"c1o-{s}", "order.placed",
                                            {"plan": "pro", "total": s})
                            with lock:
                                events[oid] = (f"c1o-{s}", "order.placed", None, None)
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for s in range(10, 20):
        batch = []
        for k in range(10):
            eid = str(uuid.uuid4())
            action = "user.created" if k == 0 else "user.updated"
            payload = {"k": k, "plan": plan_of(s, k), "name": f"u{s}"}
            batch.append({"action": action, "payload": payload, "event_id": eid})
            events[eid] = (f"c1u-{s}", action, payload, {})
        conn.execute("SELECT amebo.append_events(%s, %s)", (f"c1u-{s}", Jsonb(batch)))
        oid, _ = append(conn, f"c1o-{s}", "order.placed", {"plan": "free", "total": s})
        events[oid] = (f"c1o-{s}", "order.placed", None, None)
    for t in threads:
        t.join()
    eq(errors, [], "writers' errors")
    ok, took = wait_deliveries(conn)
    check(ok, f"wait_for_deliveries: all handled in {took:.2f} s")

    user_ids = {e for e, v in events.items() if v[1].startswith("user.")}
    order_ids = {e for e, v in events.items() if v[1] == "order.placed"}
    created_ids = {e for e, v in events.items() if v[1] == "user.created"}
    pro_ids = {e for e, v in events.items() if v[2] is not None and v[2].get("plan") == "pro"}
    all_records = rcv.client.requests()
    eq(sum(1 for r in all_records if not r["signature_valid"]), 0,
       f"requests with an invalid signature among {len(all_records)}")

    # Single-event subscriptions: exactly the expected events, each exactly once.
    for path, expected, what in (("/c1/user", user_ids, "'user.*'"),
                                 ("/c1/exact", created_ids, "'user.created' (exact name)"),
                                 ("/c1/all", user_ids | order_ids, "'*'"),
                                 ("/c1/filter", pro_ids - order_ids,
                                  "'user.*' with filter {\"plan\": \"pro\"}")):
        records = rcv.client.requests(path)
        ids = delivered_ids(records)
        counts = by_event(records)
        twice = [e for e, rs in counts.items() if len(rs) != 1]
        check(set(ids) == expected and len(ids) == len(expected) and not twice
              and len(records) == len(expected),
              f"{what}: {len(records)} requests = the {len(expected)} expected events, "
              f"each once",
              f"missing {len(expected - set(ids))}, unexpected {len(set(ids) - expected)}, "
              f"repeated {len(twice)}")
        wrong_id = [r for r in records if r["webhook_id"] != webhook_id(r["body"]["event_id"])]
        eq(len(wrong_id), 0, f"{what}: requests whose webhook-id is not msg_<event id hex>")
    leaked = [r for r in rcv.client.requests("/c1/user") if r["body"]["action"] == "order.placed"]
    eq(len(leaked), 0, "'order.placed' events sent to 'user.*'")
    check(len(pro_ids - order_ids) not in (0, len(user_ids)),
          f"the filter case is discriminating: {len(pro_ids - order_ids)} of "
          f"{len(user_ids)} user events are plan pro")

    # Batches: {"events": [...]}, at most 10, every event exactly once across them.
    batches = rcv.client.requests("/c1/batch")
    shapes_ok = all(isinstance(r["body"], dict) and isinstance(r["body"].get("events"), list)
                    and 1 <= len(r["body"]["events"]) <= 10 for r in batches)
    check(shapes_ok, f"batch_size 10: {len(batches)} bodies, each {{\"events\": [1..10]}}")
    batch_ids = [e["event_id"] for r in batches if shapes_ok for e in r["body"]["events"]]
    sizes = [len(r["body"]["events"]) for r in batches] if shapes_ok else []
    check(sorted(batch_ids) == sorted(user_ids),
          f"batches carry {len(batch_ids)} events = the {len(user_ids)} user events, each once",
          f"missing {len(user_ids - set(batch_ids))}, "
          f"repeated {len(batch_ids) - len(set(batch_ids))}")
    check(shapes_ok and max(sizes, default=0) > 1,
          f"batch sizes: max {max(sizes, default=0)}, mean "
          f"{(sum(sizes) / len(sizes)) if sizes else 0:.1f} (some batch holds more than one)")
    # README: "the webhook-id is the first event's followed by _<count>" (one-event batches too).
    bad_batch_ids = [(r["webhook_id"], len(r["body"]["events"])) for r in batches
                     if shapes_ok and r["webhook_id"] != webhook_id(
                         r["body"]["events"][0]["event_id"]) + f"_{len(r['body']['events'])}"]
    check(not bad_batch_ids, f"{len(batches)} batch webhook-ids are msg_<first event>_<count>",
          f"{len(bad_batch_ids)} are not, e.g. (id, count) {bad_batch_ids[:2]}")

    # Bodies equal the stored events (amebo.read_stream rows).
    stored = {}
    for s in range(20):
        cur = conn.execute("SELECT * FROM amebo.read_stream(%s)", (f"c1u-{s}",))
        names = [d.name for d in cur.description]
        for row in cur.fetchall():
            r = dict(zip(names, row))
            stored[str(r["event_id"])] = r
    mismatches = []
    for rec in rcv.client.requests("/c1/user") + [
            {"body": e} for r in batches if shapes_ok for e in r["body"]["events"]]:
        body = rec["body"]
        r = stored.get(body["event_id"])
        if r is None:
            mismatches.append((body["event_id"], "not in read_stream"))
            continue
        expected = {
            "event_id": str(r["event_id"]), "stream": r["stream"], "version": r["version"],
            "position": r["position"], "action": r["action"], "payload": r["payload"],
            "metadata": r["metadata"],
            "recorded_at": r["recorded_at"].astimezone(datetime.timezone.utc)
                           .strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        if body != expected:
            mismatches.append((body, expected))
    check(not mismatches and len(stored) == 200,
          f"{len(rcv.client.requests('/c1/user')) + len(batch_ids)} bodies (single and "
          f"batched) equal their amebo.read_stream row ({len(stored)} rows, all 8 fields)",
          f"{len(mismatches)} differ, e.g. {mismatches[:1]}")
    # The test's own view of the events agrees with the store (payload and metadata).
    differ = [e for e in user_ids if e in stored and
              (stored[e]["payload"], stored[e]["metadata"]) != (events[e][2], events[e][3])]
    eq(len(differ), 0, "stored user events whose payload or metadata differ from what was appended")


# ---------------------------------------------------------------------------------------
# Case 2: failing endpoint, backoff, dead, redeliver; a healthy one unaffected


def case_failing(conn, rcv, subs):
    create_actions(conn, "c2.fail", "c2.tick")
    rcv.client.behave("/c2/fail", mode="fail", status=500)
    fail_id = subs.create("c2-fail", "c2.fail", "/c2/fail", max_retries=3)
    subs.create("c2-ok", "c2.*", "/c2/ok")
    failing, before = append(conn, "c2-s", "c2.fail", {"n": 0})
    wid = webhook_id(failing)
    appended = {failing: before}
    # Healthy traffic while the failing message is retried, until it is dead (at most 8 s).
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 8:
        eid, before = append(conn, f"c2-t{i % 3}", "c2.tick", {"i": i})
        appended[eid] = before
        i += 1
        time.sleep(0.03)
        if i % 5 == 0 and one(conn, "SELECT count(*) FROM amebo.deliveries WHERE "
                                    "subscription_id = %s AND state = 'dead'", (fail_id,)):
            break
    ok, took = wait_deliveries(conn)
    check(ok, f"wait_for_deliveries after {i} healthy events: {took:.2f} s")

    log = delivery_log(conn, fail_id, wid)
    eq([(a, s) for _, a, s, _, _, _ in log], [(1, 500), (2, 500), (3, 500), (4, 500)],
       "failing subscription's delivery_log (attempt, status)")
    # attempted_at is when an attempt ended; a gap runs from one's end to the next's start.
    gaps = [log[n + 1][5] - log[n + 1][4] / 1000 - log[n][5] for n in range(len(log) - 1)]
    expected = [RETRY_BASE * 2 ** n for n in range(len(gaps))]
    fails = rcv.client.requests("/c2/fail")
    rcv_gaps = [fails[n + 1]["received_at"] - fails[n]["received_at"]
                for n in range(len(fails) - 1)]
    check(len(gaps) == 3 and all(g >= 0.7 * e for g, e in zip(gaps, expected)),
          f"gaps between attempts {[ms(g) for g in gaps]} >= 0.7 x schedule "
          f"{[ms(e) for e in expected]} (receiver saw {[ms(g) for g in rcv_gaps]})")
    check(len(gaps) == 3 and all(a < b for a, b in zip(gaps, gaps[1:])),
          f"gaps grow: {[ms(g) for g in gaps]}")
    check(len(gaps) == 3 and all(g <= 1.25 * e + 1.0 for g, e in zip(gaps, expected)),
          f"no gap more than 1 s beyond 1.25 x its schedule: {[ms(g) for g in gaps]}")
    check(len(fails) == 4 and all(r["signature_valid"] for r in fails)
          and [r["attempt"] for r in fails] == [1, 2, 3, 4]
          and len({r["webhook_id"] for r in fails}) == 1,
          f"receiver: {len(fails)} requests with the same webhook-id {wid[:12]}..., all signed")
    dead = rows(conn, "SELECT state, attempts, last_status FROM amebo.deliveries "
                      "WHERE subscription_id = %s", (fail_id,))
    eq(dead, [("dead", 4, 500)], "amebo.deliveries (state, attempts, last_status)")
    st = status_of(conn, "c2-fail")
    eq((st["dead"], st["pending"], st["last_error"] is not None), (1, 0, True),
       "subscription_status (dead, pending, last_error set)")

    span = log[-1][5] - log[0][5] if log else 0
    worst, median, n, missing = latency_figures(rcv.client.requests("/c2/ok"), appended)
    check(not missing and n == len(appended),
          f"healthy subscription got all {len(appended)} events", f"missing {len(missing)}")
    check(worst is not None and worst < HEALTHY_LATENCY_LIMIT,
          f"healthy latency append->receipt: max {ms(worst)}, median {ms(median)} "
          f"(< {HEALTHY_LATENCY_LIMIT:g} s) while the failing one retried for {ms(span)}")

    rcv.client.behave("/c2/fail", mode="ok")
    eq(one(conn, "SELECT amebo.redeliver(%s, 'c2-fail')", (APP,)), 1, "redeliver() revived")
    got = wait_until(lambda: [r for r in rcv.client.requests("/c2/fail", wid)
                              if r["status"] == 200], 10)
    check(len(got) == 1 and got[0]["body"]["event_id"] == failing,
          f"after redeliver the event arrived (200) {len(got)} time(s)")
    ok, _ = wait_deliveries(conn)
    st = status_of(conn, "c2-fail")
    eq((ok, st["dead"], st["pending"], st["delivered"]), (True, 0, 0, 1),
       "after redeliver: (settled, dead, pending, delivered)")


# ---------------------------------------------------------------------------------------
# Case 3: hanging endpoint


def case_hanging(conn, rcv, subs):
    create_actions(conn, "c3.hang", "c3.tick")
    hung = 3
    # The hanging subscription gets only the c3.hang events: its first request for each hangs.
    rcv.client.behave("/c3/hang", mode="hang", hang_seconds=30, count=hung)
    hang_id = subs.create("c3-hang", "c3.hang", "/c3/hang", max_retries=5)
    subs.create("c3-ok", "c3.*", "/c3/ok")
    appended = {}
    first = []
    for i in range(hung):
        eid, before = append(conn, f"c3-h{i}", "c3.hang", {"i": i})
        appended[eid] = before
        first.append(eid)
    # Healthy traffic over the hang (2.6 s), every 50 ms.
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < DELIVERY_TIMEOUT + 0.6:
        eid, before = append(conn, f"c3-t{i % 4}", "c3.tick", {"i": i})
        appended[eid] = before
        i += 1
        time.sleep(0.05)
    worst, median, n, missing = latency_figures(rcv.client.requests("/c3/ok"), appended)
    check(not missing and worst is not None and worst < HEALTHY_LATENCY_LIMIT,
          f"healthy subscription during the hang: {n} of {len(appended)} events, latency max "
          f"{ms(worst)}, median {ms(median)} (< {HEALTHY_LATENCY_LIMIT:g} s)",
          f"missing {len(missing)}")
    ok, took = wait_deliveries(conn)
    check(ok, f"wait_for_deliveries: {took:.2f} s")
    recs = rcv.client.requests("/c3/hang")
    for eid in first:
        log = delivery_log(conn, hang_id, webhook_id(eid))
        tries = [r for r in recs if r["webhook_id"] == webhook_id(eid)]
        timed_out = (len(log) >= 2 and log[0][2] is None and log[0][3] is not None
                     and "time" in log[0][3].lower() and log[0][4] >= 0.9 * DELIVERY_TIMEOUT * 1000
                     and log[-1][2] == 200 and log[-1][1] == len(log))
        check(timed_out,
              f"hung event {eid[:8]}: attempt 1 ended after {log[0][4] if log else 0:.0f} ms "
              f"with {log[0][3] if log else None!r}, then {[(a, s) for _, a, s, *_ in log[1:]]}",
              repr(log))
        check(len(tries) >= 2 and tries[0]["mode"] == "hang" and tries[-1]["status"] == 200
              and tries[1]["received_at"] - tries[0]["received_at"] >= 0.9 * DELIVERY_TIMEOUT,
              f"hung event {eid[:8]}: receiver saw {len(tries)} requests, the retry "
              f"{ms(tries[1]['received_at'] - tries[0]['received_at']) if len(tries) > 1 else '-'}"
              f" after the first")
    ids = delivered_ids(recs)
    check(sorted(ids) == sorted(first), f"hanging subscription finally got its {hung} events "
                                        f"once each ({len(ids)} successes)")
    ids = delivered_ids(rcv.client.requests("/c3/ok"))
    check(sorted(ids) == sorted(appended), f"healthy subscription finally got all "
                                           f"{len(appended)} events, once each ({len(ids)})")


# ---------------------------------------------------------------------------------------
# Case 4: per-stream order under retries


def case_ordered(conn, rcv, subs):
    create_actions(conn, "c4.step")
    fail_first = 3
    rcv.client.behave("/c4/ord", mode="fail", status=500, count=fail_first, fail_ratio=0.15)
    subs.create("c4-ord", "c4.*", "/c4/ord", ordered=True, max_retries=30)
    streams, per_stream = 5, 20
    expected = {}
    errors = []

    def writer(w):
        try:
            with db() as c:
                for v in range(1, per_stream + 1):
                    for s in range(w, streams, 2):
                        eid, _ = append(c, f"c4-s{s}", "c4.step", {"v": v})
                        expected[eid] = (f"c4-s{s}", v)
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    eq(errors, [], "writers' errors")
    ok, took = wait_deliveries(conn, 60)
    check(ok, f"wait_for_deliveries: {took:.2f} s")
    recs = rcv.client.requests("/c4/ord")
    failures = sum(1 for r in recs if r["status"] != 200)
    check(failures >= fail_first, f"the endpoint failed {failures} of {len(recs)} requests")
    firsts = {}
    order = {}
    for r in recs:
        if r["status"] == 200 and r["body"]["event_id"] not in firsts:
            firsts[r["body"]["event_id"]] = r
            order.setdefault(r["body"]["stream"], []).append(r["body"]["version"])
    check(set(firsts) == set(expected), f"every event arrived: {len(firsts)} of {len(expected)}")
    bad = {s: v for s, v in order.items() if v != list(range(1, per_stream + 1))}
    check(len(order) == streams and not bad,
          f"first successful receipts are in version order in all {len(order)} streams",
          f"out of order: {bad}")
    # Stronger: no request for version v of a stream before version v-1 succeeded.
    done = {}
    early = []
    for r in recs:
        s, v = r["body"]["stream"], r["body"]["version"]
        if done.get(s, 0) < v - 1:
            early.append((s, v, done.get(s, 0)))
        if r["status"] == 200:
            done[s] = max(done.get(s, 0), v)
    eq(early[:5], [], "requests sent before their stream's previous version succeeded")


# ---------------------------------------------------------------------------------------
# Case 5: 410 Gone disables


def case_gone(conn, rcv, subs):
    create_actions(conn, "c5.x")
    rcv.client.behave("/c5/gone", mode="gone")
    sub_id = subs.create("c5-gone", "c5.x", "/c5/gone", max_retries=5)
    e1, _ = append(conn, "c5-s", "c5.x", {"n": 1})
    st = wait_until(lambda: (status_of(conn, "c5-gone") or {}).get("state") == "disabled"
                    and status_of(conn, "c5-gone"), 10)
    check(st and st["state"] == "disabled" and st["disabled_reason"],
          f"subscription_status after a 410: state {st and st['state']!r}, "
          f"disabled_reason {st and st['disabled_reason']!r}")
    eq(rows(conn, "SELECT webhook_id, state, last_status FROM amebo.deliveries "
                  "WHERE subscription_id = %s", (sub_id,)),
       [(webhook_id(e1), "dead", 410)], "amebo.deliveries after the 410")
    eq(one(conn, "SELECT state FROM amebo.subscription_list WHERE application = %s "
                 "AND name = 'c5-gone'", (APP,)), "disabled", "subscription_list.state")
    later = [append(conn, "c5-s", "c5.x", {"n": n})[0] for n in (2, 3)]
    wait_deliveries(conn, 5)
    time.sleep(0.6)
    recs = rcv.client.requests("/c5/gone")
    eq(len(recs), 1, "requests to the gone endpoint after 2 more events (disabled)")
    eq(one(conn, "SELECT count(*) FROM amebo.delivery_log WHERE subscription_id = %s",
           (sub_id,)), 1, "delivery_log attempts of the disabled subscription")
    rcv.client.behave("/c5/gone", mode="ok")
    conn.execute("SELECT amebo.resume_subscription(%s, 'c5-gone')", (APP,))
    st = status_of(conn, "c5-gone")
    eq((st["state"], st["disabled_reason"]), ("active", None), "after resume_subscription")
    e4, _ = append(conn, "c5-s", "c5.x", {"n": 4})
    got = wait_until(lambda: [r for r in rcv.client.requests("/c5/gone")
                              if r["body"]["event_id"] == e4 and r["status"] == 200], 10)
    eq(len(got), 1, "an event after resume arrives")
    ok, _ = wait_deliveries(conn, 10)
    seen = {r["body"]["event_id"] for r in rcv.client.requests("/c5/gone")}
    eq((ok, sum(1 for e in later if e in seen)), (True, 0),
       "(settled, events appended while disabled that were sent after resume: dropped)")


# ---------------------------------------------------------------------------------------
# Case 6: 429 Retry-After


def case_retry_after(conn, rcv, subs):
    create_actions(conn, "c6.x", "c6.y")
    rcv.client.behave("/c6/short", mode="throttle", count=1, retry_after="1")
    rcv.client.behave("/c6/long", mode="throttle", count=1, retry_after="30")
    short_id = subs.create("c6-short", "c6.x", "/c6/short")
    long_id = subs.create("c6-long", "c6.y", "/c6/long")
    ex, _ = append(conn, "c6-s", "c6.x", {})
    ey, _ = append(conn, "c6-s", "c6.y", {})
    ok, took = wait_deliveries(conn, 15)
    check(ok, f"wait_for_deliveries: {took:.2f} s")
    for sub_id, eid, path, low, high, what in (
            (short_id, ex, "/c6/short", 0.9, 1.25 + 1.0, "Retry-After: 1"),
            (long_id, ey, "/c6/long", RETRY_MAX * 0.9, RETRY_MAX + 1.0,
             f"Retry-After: 30 (capped at retry_max_delay {RETRY_MAX:g} s)")):
        log = delivery_log(conn, sub_id, webhook_id(eid))
        recs = rcv.client.requests(path)
        gap = log[1][5] - log[1][4] / 1000 - log[0][5] if len(log) == 2 else None
        rgap = recs[1]["received_at"] - recs[0]["received_at"] if len(recs) == 2 else None
        check([(a, s) for _, a, s, *_ in log] == [(1, 429), (2, 200)] and gap is not None
              and low <= gap <= high,
              f"{what}: attempts {[(a, s) for _, a, s, *_ in log]}, the second {ms(gap)} "
              f"after the first ended (receiver: {ms(rgap)}), expected {low:g}..{high:g} s")


# ---------------------------------------------------------------------------------------
# Case 7: private targets


def case_private(conn, rcv, subs):
    create_actions(conn, "c7.x", "c7.never")
    loop_id = subs.create("c7-loop", "c7.x", "/c7/loop", max_retries=0)
    try:
        eq(set_private_targets(conn, "off"), "off", "amebo.allow_private_targets after ALTER "
                                                     "SYSTEM + reload")
        port = rcv.port
        for n, url in enumerate((f"http://127.0.0.1:{port}/c7/x", "http://[::1]/c7/x",
                                 f"http://localhost:{port}/c7/x", "http://169.254.169.254/latest",
                                 "http://10.1.2.3/c7/x", "http://192.168.0.1/c7/x")):
            refuse(conn, subs, f"c7-bad{n}", url, "refused with private targets off")
        # A public address is accepted (nothing is appended for it: no traffic).
        try:
            conn.execute("SELECT amebo.create_subscription(%s, 'c7-public', 'c7.never', "
                         "'http://93.184.216.34/hook')", (APP,))
            subs.names.append("c7-public")
            check(True, "a public address (93.184.216.34) is accepted with private targets off")
        except psycopg.Error as e:
            check(False, "a public address (93.184.216.34) is accepted with private targets off",
                  f"{e.sqlstate}: {e}")

        # The existing loopback subscription fails at connect time.
        eid, _ = append(conn, "c7-s", "c7.x", {})
        log = wait_until(lambda: delivery_log(conn, loop_id), 10)
        err = log[0][3] if log else None
        check(log and log[0][2] is None and err and "loopback" in err.lower(),
              f"loopback subscription's attempt with private targets off: status "
              f"{log[0][2] if log else None}, error {err!r}", repr(log))
        time.sleep(0.3)
        eq(len(rcv.client.requests("/c7/loop")), 0, "requests that reached /c7/loop")
    finally:
        restored = set_private_targets(conn, None)
    eq(restored, "on", "amebo.allow_private_targets restored")
    # Not about private addresses: the scheme and credentials are refused anyway.
    for n, url in enumerate((f"ftp://127.0.0.1:{rcv.port}/c7/x",
                             f"http://user:pass@127.0.0.1:{rcv.port}/c7/x",
                             "file:///etc/passwd", "not a url")):
        refuse(conn, subs, f"c7-url{n}", url, "refused even with private targets on")
    # And once allowed again, the dead message is delivered by redeliver.
    eq(one(conn, "SELECT amebo.redeliver(%s, 'c7-loop')", (APP,)), 1,
       "redeliver() of the refused message")
    got = wait_until(lambda: rcv.client.requests("/c7/loop"), 10)
    eq([(r["body"]["event_id"], r["status"]) for r in got], [(eid, 200)],
       "after restoring the setting it arrives")


# Checks that create_subscription(name, url) fails with SQLSTATE 22023.
def refuse(conn, subs, name, url, what):
    try:
        conn.execute("SELECT amebo.create_subscription(%s, %s, 'c7.never', %s)",
                     (APP, name, url))
    except psycopg.Error as e:
        check(e.sqlstate == "22023", f"{url}: {what}: {e.sqlstate} {str(e).splitlines()[0]}")
        return
    subs.names.append(name)  # dropped at the end of the case
    check(False, f"{url}: {what}", "create_subscription succeeded")


# ---------------------------------------------------------------------------------------
# Case 8: delayed delivery


def case_delayed(conn, rcv, subs):
    create_actions(conn, "c8.x")
    subs.create("c8-delay", "c8.x", "/c8/delay")
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    text = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    delayed, _ = append(conn, "c8-s", "c8.x", {"n": 1}, {"deliver_after": text})
    now_id, before = append(conn, "c8-s", "c8.x", {"n": 2})
    got = wait_until(lambda: [r for r in rcv.client.requests("/c8/delay")
                              if r["body"]["event_id"] == now_id], 3)
    check(got and got[0]["received_at"] - before < HEALTHY_LATENCY_LIMIT,
          f"an event without deliver_after arrives at once "
          f"({ms(got[0]['received_at'] - before) if got else '-'})")
    got = wait_until(lambda: [r for r in rcv.client.requests("/c8/delay")
                              if r["body"]["event_id"] == delayed], 8)
    early = got[0]["received_at"] - at.timestamp() if got else None
    check(got and early >= 0 and early < 2.0,
          f"the event with deliver_after {text} arrived {ms(early)} after that time "
          f"(not before, within 2 s)")


# ---------------------------------------------------------------------------------------
# Case 9: replay, pause and resume


def case_replay_pause(conn, rcv, subs):
    create_actions(conn, "c9.x")
    sub_id = subs.create("c9-r", "c9.x", "/c9/r")
    ids = [append(conn, "c9-s", "c9.x", {"n": n})[0] for n in range(5)]
    wait_deliveries(conn)
    eq(sorted(delivered_ids(rcv.client.requests("/c9/r"))), sorted(ids), "5 events delivered")
    after = position_of(conn, ids[1])
    eq(one(conn, "SELECT amebo.replay_subscription(%s, 'c9-r', %s::bigint)", (APP, after)), 3,
       "replay_subscription(after the 2nd event's position) queued")
    ok, _ = wait_deliveries(conn)
    got = rcv.client.requests("/c9/r")
    counts = {e: len(rs) for e, rs in by_event(got).items()}
    eq([counts.get(e) for e in ids], [1, 1, 2, 2, 2], "requests per event after the replay")
    replayed = got[5:]
    check(all(r["signature_valid"] and r["webhook_id"] == webhook_id(r["body"]["event_id"])
              for r in replayed),
          f"{len(replayed)} replayed requests signed, with the original webhook-ids")
    since = one(conn, "SELECT recorded_at FROM amebo.events WHERE event_id = %s::uuid",
                (ids[3],))
    eq(one(conn, "SELECT amebo.replay_subscription(%s, 'c9-r', %s::timestamptz)", (APP, since)),
       2, "replay_subscription(since the 4th event's recorded_at) queued")
    wait_deliveries(conn)
    eq(len(rcv.client.requests("/c9/r")), 10, "requests after both replays")

    conn.execute("SELECT amebo.pause_subscription(%s, 'c9-r')", (APP,))
    paused = [append(conn, "c9-s", "c9.x", {"n": n})[0] for n in range(5, 9)]
    time.sleep(1.5)  # the hold time (1 s) passes, so the worker stores them
    eq(len(rcv.client.requests("/c9/r")), 10, "requests while paused (4 events appended)")
    st = status_of(conn, "c9-r")
    pending = rows(conn, "SELECT webhook_id FROM amebo.deliveries WHERE subscription_id = %s "
                         "AND state = 'pending' ORDER BY id", (sub_id,))
    eq((st["state"], st["pending"], [p[0] for p in pending]),
       ("paused", 4, [webhook_id(e) for e in paused]),
       "paused: (state, pending, amebo.deliveries rows)")
    conn.execute("SELECT amebo.resume_subscription(%s, 'c9-r')", (APP,))
    t0 = time.monotonic()
    got = wait_until(lambda: set(paused) <= set(delivered_ids(rcv.client.requests("/c9/r"))), 5)
    check(got, f"after resume the 4 queued events arrived in {time.monotonic() - t0:.2f} s")
    ok, _ = wait_deliveries(conn)
    st = status_of(conn, "c9-r")
    eq((ok, st["state"], st["pending"], len(rcv.client.requests("/c9/r"))),
       (True, "active", 0, 14), "after resume: (settled, state, pending, requests)")


# ---------------------------------------------------------------------------------------
# Case 10: the worker across DROP/CREATE EXTENSION and a reload


# The amebo worker's pid from pg_stat_activity (None when none runs).
def worker_pids(conn):
    return [r[0] for r in rows(conn, "SELECT pid FROM pg_stat_activity "
                                     "WHERE backend_type = 'amebo worker'")]


# Sets up the application again after CREATE EXTENSION.
def setup_application(conn):
    eq(one(conn, "SELECT amebo.create_application(%s, NULL, %s)", (APP, SECRET)), SECRET,
       f"create_application({APP}) returns the given secret")


def case_lifecycle(conn, rcv, subs):
    create_actions(conn, "c10.x")
    subs.create("c10-a", "c10.x", "/c10/before")
    e0, _ = append(conn, "c10-s", "c10.x", {})
    wait_deliveries(conn)
    eq(delivered_ids(rcv.client.requests("/c10/before")), [e0], "delivered before the drop")
    pids = worker_pids(conn)
    slots_before = rows(conn, "SELECT slot_name FROM pg_replication_slots "
                              "WHERE slot_name LIKE 'amebo%'")
    conn.execute("DROP EXTENSION amebo CASCADE")
    subs.names.clear()
    conn.execute("SELECT pg_reload_conf()")
    time.sleep(1.0)
    eq(worker_pids(conn), pids, "amebo worker pid 1 s after DROP EXTENSION and a reload")
    conn.execute("CREATE EXTENSION amebo")
    eq(one(conn, "SELECT amebo.wait_for_worker(10)"), True, "wait_for_worker after re-create")
    setup_application(conn)
    create_actions(conn, "c10.x")
    subs.create("c10-b", "c10.x", "/c10/after")
    ids = {}
    for n in range(5):
        eid, before = append(conn, f"c10-s{n}", "c10.x", {"n": n})
        ids[eid] = before
    ok, took = wait_deliveries(conn, 20)
    check(ok, f"wait_for_deliveries after re-create: {took:.2f} s")
    got = rcv.client.requests("/c10/after")
    worst, _, n, _ = latency_figures(got, ids)
    check(sorted(delivered_ids(got)) == sorted(ids),
          f"after re-create {n} of 5 events delivered (latency max {ms(worst)})")
    slots = rows(conn, "SELECT slot_name, active FROM pg_replication_slots "
                       "WHERE slot_name LIKE 'amebo%'")
    check(len(slots) <= 1, f"amebo replication slots after re-create: {slots} "
                           f"(before the drop: {[s[0] for s in slots_before]})")
    eq(worker_pids(conn), pids, "same amebo worker pid after re-create")

    conn.execute("SELECT pg_reload_conf()")
    time.sleep(1.0)
    eq(worker_pids(conn), pids, "amebo worker pid 1 s after pg_reload_conf()")
    eid, before = append(conn, "c10-s", "c10.x", {"after": "reload"})
    got = wait_until(lambda: [r for r in rcv.client.requests("/c10/after")
                              if r["body"]["event_id"] == eid], 5)
    check(got, f"an event after the reload arrives "
               f"({ms(got[0]['received_at'] - before) if got else '-'})")


# ---------------------------------------------------------------------------------------
# Case 11: events appended right after create_subscription


def case_new_subscription(conn, rcv, subs):
    create_actions(conn, "c11.x", "c11.noise")
    rounds, per_round = 8, 5
    # Background appends keep the worker busy, as on a live system.
    stop = threading.Event()
    errors = []

    def noise():
        try:
            with db() as c:
                i = 0
                while not stop.is_set():
                    append(c, f"c11-n{i % 5}", "c11.noise", {"i": i})
                    i += 1
                    time.sleep(0.003)
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            errors.append(repr(e))

    thread = threading.Thread(target=noise)
    thread.start()
    lost, late, worst = [], [], 0.0
    try:
        for n in range(rounds):
            path = f"/c11/r{n}"
            subs.create(f"c11-r{n}", "c11.x", path)
            appended = {}
            for k in range(per_round):
                eid, before = append(conn, f"c11-s{n}", "c11.x", {"k": k})
                appended[eid] = before
            wait_until(lambda: len(rcv.client.requests(path)) >= per_round, 3)
            got = rcv.client.requests(path)
            w, _, _, missing = latency_figures(got, appended)
            worst = max(worst, w or 0.0)
            if missing:
                lost.append((n, len(missing)))
            if w is not None and w >= HEALTHY_LATENCY_LIMIT:
                late.append((n, round(w, 2)))
    finally:
        stop.set()
        thread.join()
    eq(errors, [], "background writer's errors")
    ok, _ = wait_deliveries(conn)
    check(not lost, f"{rounds} new subscriptions, each followed at once by {per_round} appends: "
                    f"every event delivered (rounds with losses: {lost}, settled {ok})")
    check(not late, f"... each within {HEALTHY_LATENCY_LIMIT:g} s (max {ms(worst)}; "
                    f"late rounds: {late})")


# ---------------------------------------------------------------------------------------
# Case 12: the worker moves to another database, survives its DROP DATABASE, comes back


# An autocommit connection to another database of the test cluster.
def db_named(name):
    return psycopg.connect(host=args.host, port=args.port, dbname=name, user="postgres",
                           autocommit=True, options="-c statement_timeout=60000")


# The databases amebo workers are connected to.
def worker_databases(conn):
    return [r[0] for r in rows(conn, "SELECT datname FROM pg_stat_activity "
                                     "WHERE backend_type = 'amebo worker'")]


# Points amebo.database_name at name (NULL: back to the default) and reloads.
def move_worker(conn, name):
    if name is None:
        conn.execute("ALTER SYSTEM RESET amebo.database_name")
    else:
        conn.execute(f"ALTER SYSTEM SET amebo.database_name = '{name}'")
    conn.execute("SELECT pg_reload_conf()")


def case_drop_database(conn, rcv, subs):
    conn.execute("DROP DATABASE IF EXISTS amebo_moved")
    conn.execute("CREATE DATABASE amebo_moved")
    try:
        move_worker(conn, "amebo_moved")
        check(wait_until(lambda: worker_databases(conn) == ["amebo_moved"], 15),
              f"the worker moved to amebo_moved: {worker_databases(conn)}")
        with db_named("amebo_moved") as other:
            other.execute("CREATE EXTENSION amebo")
            other.execute("SELECT amebo.create_application(%s, NULL, %s)", (APP, SECRET))
            other.execute("SELECT amebo.create_action('c12.x', %s)", (APP,))
            other.execute("SELECT amebo.create_subscription(%s, 'c12', 'c12.x', %s)",
                          (APP, rcv.url("/c12/moved")))
            e1, _ = append(other, "c12-s", "c12.x", {})
            wait_deliveries(other)
        eq(delivered_ids(rcv.client.requests("/c12/moved")), [e1],
           "delivered from the other database")
        t0 = time.monotonic()
        conn.execute("DROP DATABASE amebo_moved")  # plain: no FORCE
        check(time.monotonic() - t0 < 10,
              f"plain DROP DATABASE of the worker's database succeeded in "
              f"{time.monotonic() - t0:.2f} s")
        eq(rows(conn, "SELECT slot_name FROM pg_replication_slots "
                      "WHERE database = 'amebo_moved'"), [], "its slot went with it")
        check(wait_until(lambda: one(conn, "SELECT count(*) FROM pg_stat_activity "
                                           "WHERE backend_type = 'amebo launcher'") == 1, 5),
              "the launcher still runs")
        eq(worker_databases(conn), [], "no worker while its database does not exist")
        conn.execute("CREATE DATABASE amebo_moved")
        check(wait_until(lambda: worker_databases(conn) == ["amebo_moved"], 45),
              f"the worker came back when the database was created again: "
              f"{worker_databases(conn)}")
    finally:
        move_worker(conn, None)
        wait_until(lambda: worker_databases(conn) == ["postgres"], 15)
        conn.execute("DROP DATABASE IF EXISTS amebo_moved")
    eq(worker_databases(conn), ["postgres"], "back in postgres after a reset and a reload")
    create_actions(conn, "c12.y")
    subs.create("c12-back", "c12.y", "/c12/back")
    e2, _ = append(conn, "c12-s", "c12.y", {})
    wait_deliveries(conn)
    eq(delivered_ids(rcv.client.requests("/c12/back")), [e2], "delivering in postgres again")


# ---------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------
# Case 13: the slot invalidated by max_slot_wal_keep_size while delivery lagged


# Runs a CHECKPOINT on its own connection (it waits while the stopped worker holds the slot).
def checkpoint_in_background():
    def run():
        with db() as other:
            other.execute("CHECKPOINT")
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# Lets a stopped worker run again; it may be gone already (the watchdog resumed it and the
# invalidation of its slot ended it), which is what the case expects to happen anyway.
def resume(pid):
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def case_lost_slot(conn, rcv, subs):
    create_actions(conn, "c13.x")
    subs.create("c13", "c13.x", "/c13")
    first, _ = append(conn, "c13-s", "c13.x", {"n": 0})
    wait_deliveries(conn)
    pid = one(conn, "SELECT pid FROM amebo.worker_status()")
    conn.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
    conn.execute("SELECT pg_reload_conf()")
    ids = []
    # The worker stopped (SIGSTOP) cannot confirm its slot; five WAL segments later a
    # checkpoint invalidates the slot, terminating the worker once it runs again.
    os.kill(pid, signal.SIGSTOP)
    watchdog = threading.Timer(30, lambda: resume(pid))
    watchdog.start()
    try:
        for n in range(1, 6):
            ids.append(append(conn, "c13-s", "c13.x", {"n": n})[0])
            conn.execute("SELECT pg_switch_wal()")
        checkpoint = checkpoint_in_background()
        time.sleep(1.0)
    finally:
        watchdog.cancel()
        resume(pid)
    checkpoint.join(30)
    check(not checkpoint.is_alive(), "the checkpoint that invalidates the slot finished")
    try:
        ok, took = wait_deliveries(conn, 30)
        check(ok, f"wait_for_deliveries after the slot was lost: {took:.2f} s")
        got = delivered_ids(rcv.client.requests("/c13"))
        eq(sorted(set(got) & set(ids)), sorted(ids),
           "the 5 events appended while the worker was stopped arrive (caught up from the table)")
        check(first in got, "the event delivered before arrives too")
        slots = rows(conn, "SELECT slot_name, wal_status FROM pg_replication_slots "
                           "WHERE slot_name LIKE 'amebo%'")
        check(len(slots) == 1 and slots[0][1] != "lost", f"a new slot replaced it: {slots}")
        check(one(conn, "SELECT pid FROM amebo.worker_status()") not in (None, pid),
              "a new worker process delivers")
    finally:
        conn.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
        conn.execute("SELECT pg_reload_conf()")


CASES = [
    (1, "matching, exactly once, filters, batches, bodies", case_matching),
    (2, "failing endpoint: backoff, dead, redeliver, healthy unaffected", case_failing),
    (3, "hanging endpoint: timeout and retry, healthy unaffected", case_hanging),
    (4, "ordered subscription under retries", case_ordered),
    (5, "410 Gone disables, resume re-enables", case_gone),
    (6, "429 Retry-After", case_retry_after),
    (7, "private targets", case_private),
    (8, "deliver_after", case_delayed),
    (9, "replay, pause and resume", case_replay_pause),
    (11, "events appended right after create_subscription", case_new_subscription),
    (10, "worker across DROP/CREATE EXTENSION and a reload", case_lifecycle),
    (12, "worker across a move, DROP DATABASE and CREATE DATABASE", case_drop_database),
    (13, "slot invalidated by max_slot_wal_keep_size: a new slot and a catch-up", case_lost_slot),
]


# Turns SIGTERM (the timeout) into SystemExit so that the receiver is stopped on the way out.
def on_sigterm(signum, frame):
    raise SystemExit(f"terminated by signal {signum}")


def main():
    signal.signal(signal.SIGTERM, on_sigterm)
    wanted = {int(c) for c in args.cases.split(",")} if args.cases else None
    print(f"webhook tests: seed {SEED}, cluster {args.host}:{args.port}", flush=True)
    results = []
    with db() as conn, Receiver(secret=SECRET, log=args.receiver_log, seed=SEED) as rcv:
        if args.receiver_pid_file:
            with open(args.receiver_pid_file, "w") as f:
                f.write(f"{rcv.proc.pid}\n")
        print(f"receiver on {rcv.base_url}", flush=True)
        if not one(conn, "SELECT amebo.wait_for_worker(20)"):
            print("FAIL the amebo worker is not running")
            return 1
        one(conn, "SELECT amebo.create_application(%s, NULL, %s)", (APP, SECRET))
        for number, name, fn in CASES:
            if wanted and number not in wanted:
                continue
            print(f"case {number}: {name}", flush=True)
            before_failed, before_passed = len(checks.failed), checks.passed
            t0 = time.monotonic()
            subs = Subscriptions(conn, rcv)
            try:
                fn(conn, rcv, subs)
            except Exception:  # noqa: BLE001 - a case's error fails it, the next one runs
                traceback.print_exc(file=sys.stdout)
                checks.failed.append(f"case {number} raised")
            finally:
                try:
                    subs.drop_all()
                except Exception:  # noqa: BLE001
                    traceback.print_exc(file=sys.stdout)
            failed = len(checks.failed) - before_failed
            passed = checks.passed - before_passed
            verdict = "PASS" if failed == 0 else "FAIL"
            line = (f"{verdict} case {number} ({name}): {passed} checks ok, {failed} failed, "
                    f"{time.monotonic() - t0:.1f} s")
            print(line, flush=True)
            results.append(line)
        stats = rcv.client.stats()
    print("--- summary")
    for line in results:
        print(line)
    print(f"receiver: {stats['count']} requests, {stats['invalid_signatures']} with an invalid "
          f"signature; {checks.passed} checks ok, {len(checks.failed)} failed, "
          f"{time.monotonic() - T_START:.1f} s")
    return 1 if checks.failed or any(r.startswith("FAIL") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
