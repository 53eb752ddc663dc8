"""Webhook delivery across a crash of the server (run by test/scripts/webhook_crash.sh).

Two subscriptions (a pattern 'user.*' on /users, the exact action 'order.placed' on
/orders) and events of a matching and a non-matching kind ('order.cancelled') are appended
by several client threads, in batches and one at a time, while the worker delivers them.
Half-way the postmaster and all its children are killed with SIGKILL and the cluster is
started again; the clients retry their cut-off appends with the same event ids and go on.
When every append is done and delivery has drained, the receiver's log must show: every
stored event of a matching action on each matching subscription's path at least once,
nothing else (no non-matching action, no event that is not stored), one webhook-id per
event and path ("msg_" + the event id's hex) however often it came, bodies that match the
stored event, and valid signatures only. Prints the duplicates per subscription and how
long the drain took.
"""
import argparse
import json
import os
import random
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from receiver import ReceiverClient  # noqa: E402
import server_crash  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--pg-bin", required=True)
parser.add_argument("--dir", required=True, help="cluster directory (data in DIR/data)")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--receiver-url", required=True)
parser.add_argument("--receiver-log", required=True)
parser.add_argument("--secret", required=True)
parser.add_argument("--events", type=int, default=10000)
parser.add_argument("--clients", type=int, default=4)
parser.add_argument("--drain-timeout", type=float, default=90)
parser.add_argument("--seed", type=int, default=None)
args = parser.parse_args()

DATA = os.path.join(args.dir, "data")
SEED = args.seed if args.seed is not None else random.randrange(1, 1 << 30)
# action -> share of the events; 'order.cancelled' matches no subscription
ACTIONS = {"user.created": 0.3, "user.renamed": 0.2, "order.placed": 0.3,
           "order.cancelled": 0.2}
SUBSCRIPTIONS = {"users": ("user.*", "/users"), "orders": ("order.placed", "/orders")}
failures = []
failures_lock = threading.Lock()


# Records a failed check (and prints the first few at once).
def fail(message):
    with failures_lock:
        failures.append(message)
        if len(failures) <= 20:
            print(f"FAIL: {message}", flush=True)


# An autocommit connection to the test cluster.
def connect():
    return psycopg.connect(host=args.dir, port=args.port, dbname="postgres", user="postgres",
                           autocommit=True, options="-c statement_timeout=60000",
                           connect_timeout=5)


# Connects, retrying while the server is down or recovering, until the deadline.
def connect_retrying(deadline):
    while True:
        try:
            return connect()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# Which subscriptions' paths an action must reach.
def paths_for(action):
    return {path for pattern, path in SUBSCRIPTIONS.values()
            if pattern == action or (pattern.endswith("*") and action.startswith(pattern[:-1]))}


class Appender(threading.Thread):
    """Appends its share of events on its own streams, in batches and singly; a call cut
    off by the crash is retried with the same event ids after reconnecting."""

    def __init__(self, index, count, progress):
        super().__init__(name=f"appender-{index}")
        self.index, self.count, self.progress = index, count, progress
        self.r = random.Random(SEED * 100 + index)
        self.calls = Counter()
        self.error = None

    # One call's events: (event id, action, payload).
    def make_events(self, n, seq):
        actions, weights = list(ACTIONS), list(ACTIONS.values())
        return [(str(uuid.UUID(int=self.r.getrandbits(128), version=4)),
                 self.r.choices(actions, weights)[0], {"client": self.index, "seq": seq + i})
                for i in range(n)]

    # Appends the events to stream in one call.
    def append(self, conn, stream, events):
        if len(events) == 1:
            eid, action, payload = events[0]
            conn.execute("SELECT amebo.append_event(%s, %s, %s, NULL, NULL, %s::uuid)",
                         (stream, action, Jsonb(payload), eid))
        else:
            conn.execute("SELECT amebo.append_events(%s, %s)",
                         (stream, Jsonb([{"event_id": e, "action": a, "payload": p}
                                         for e, a, p in events])))

    def run(self):
        deadline = time.monotonic() + 120
        conn = None
        done = 0
        try:
            conn = connect_retrying(deadline)
            while done < self.count:  # bounded: each pass appends at least one event
                n = 1 if self.r.random() < 0.4 else self.r.randint(2, 25)
                n = min(n, self.count - done)
                events = self.make_events(n, done)
                stream = f"client{self.index}-{self.r.randrange(20)}"
                for attempt in range(100):  # a retry only follows a lost connection
                    try:
                        self.append(conn, stream, events)
                        break
                    except psycopg.OperationalError:
                        self.calls["retried"] += 1
                        conn.close()
                        conn = connect_retrying(deadline)
                else:
                    raise RuntimeError("an append kept failing")
                self.calls["batch" if n > 1 else "single"] += 1
                done += n
                self.progress.add(n)
                time.sleep(self.r.uniform(0, 0.012))
        except BaseException:
            self.error = traceback.format_exc()
        finally:
            if conn is not None:
                conn.close()


class Progress:
    """A thread-safe count of appended events."""

    def __init__(self):
        self.lock = threading.Lock()
        self.value = 0

    # Adds n appended events.
    def add(self, n):
        with self.lock:
            self.value += n


# The receiver's log: one dict per request.
def read_log():
    with open(args.receiver_log) as f:
        return [json.loads(line) for line in f if line.strip()]


# Sets up the application, actions and subscriptions.
def setup(conn):
    if not conn.execute("SELECT amebo.wait_for_worker(30)").fetchone()[0]:
        raise RuntimeError("the amebo worker did not start")
    conn.execute("SELECT amebo.create_application('shop', NULL, %s)", (args.secret,))
    for action in ACTIONS:
        conn.execute("SELECT amebo.create_action(%s, 'shop')", (action,))
    for name, (pattern, path) in SUBSCRIPTIONS.items():
        conn.execute("SELECT amebo.create_subscription('shop', %s, %s, %s)",
                     (name, pattern, args.receiver_url + path))


# Prints the delivery state (after a failure).
def show_state(conn):
    queries = {
        "status": "SELECT * FROM amebo.subscription_status",
        "queue": "SELECT * FROM amebo.delivery_queue",
        "worker": "SELECT * FROM amebo.worker_status()",
        "stored": "SELECT subscription_id, state, attempts, last_status, last_error, "
                  "min(next_attempt_at), max(next_attempt_at), count(*) "
                  "FROM amebo.deliveries GROUP BY 1, 2, 3, 4, 5 ORDER BY 8 DESC LIMIT 10",
        "log": "SELECT subscription_id, status, error, count(*), max(attempted_at) "
               "FROM amebo.delivery_log GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT 10",
    }
    for name, sql in queries.items():
        try:
            for row in conn.execute(sql).fetchall():
                print(f"{name}: {row}")
        except psycopg.Error as exc:
            print(f"{name}: {exc}")


# Appends everything with a crash half-way; returns (appenders, seconds from the end of
# the appends until delivery had drained).
def run_load(receiver):
    progress = Progress()
    per_client = [args.events // args.clients + (1 if i < args.events % args.clients else 0)
                  for i in range(args.clients)]
    appenders = [Appender(i, n, progress) for i, n in enumerate(per_client)]
    for a in appenders:
        a.start()
    # The crash point: half the events appended (and some delivered, so delivery runs).
    deadline = time.monotonic() + 60
    while progress.value < args.events // 2 or receiver.stats()["count"] < 100:
        if time.monotonic() > deadline or not any(a.is_alive() for a in appenders):
            raise RuntimeError(f"no crash point reached: {progress.value} appended, "
                               f"{receiver.stats()['count']} received")
        while progress.value < args.events // 2 and time.monotonic() < deadline:
            time.sleep(0.005)  # no receiver calls meanwhile: it is busy enough
        time.sleep(0.01)
    received = receiver.stats()["count"]
    killed = server_crash.kill_server(DATA, args.dir, args.port)
    print(f"killed the postmaster and {killed} children after {progress.value} appended "
          f"events and {received} requests received", flush=True)
    server_crash.start_server(args.pg_bin, DATA, os.path.join(args.dir, "server.log"))
    for a in appenders:
        a.join(150)
        if a.is_alive():
            raise RuntimeError(f"{a.name} did not finish")
        if a.error:
            fail(f"{a.name} failed:\n{a.error}")
    calls = sum((a.calls for a in appenders), Counter())
    print(f"appended {progress.value} events: {calls['batch']} batches, {calls['single']} "
          f"single appends, {calls['retried']} calls retried after the crash", flush=True)
    appended_at = time.monotonic()
    with connect_retrying(time.monotonic() + 30) as conn:
        drained = False
        while not drained and time.monotonic() - appended_at < args.drain_timeout:
            drained = conn.execute("SELECT amebo.wait_for_deliveries(5)").fetchone()[0]
        drain = time.monotonic() - appended_at
        if not drained:
            fail(f"delivery did not drain in {args.drain_timeout} s")
            show_state(conn)
    return appenders, drain


# Checks the receiver's log against amebo.events; prints the figures.
def check(conn, drain):
    events = {str(r[0]): r for r in conn.execute(
        "SELECT event_id, stream, version, position, action FROM amebo.events").fetchall()}
    if len(events) != args.events:
        fail(f"{len(events)} events stored, {args.events} appended")
    records = read_log()
    receipts = defaultdict(list)  # (path, event id) -> records
    for rec in records:
        if not rec["signature_valid"]:
            fail(f"invalid signature on {rec['path']} {rec['webhook_id']}")
        body = rec["body"] or {}
        eid = body.get("event_id")
        row = events.get(eid)
        if row is None:
            fail(f"{rec['path']} received an event that is not stored: {body}")
            continue
        if rec["path"] not in paths_for(row[4]):
            fail(f"{rec['path']} received event {eid} of action {row[4]}")
        if (body.get("stream"), body.get("version"), body.get("position"),
                body.get("action")) != tuple(row[1:]):
            fail(f"body of {eid} on {rec['path']} is {body}, stored {row[1:]}")
        receipts[(rec["path"], eid)].append(rec)
    figures = {}
    for name, (pattern, path) in SUBSCRIPTIONS.items():
        expected = [eid for eid, row in events.items() if path in paths_for(row[4])]
        missing = [eid for eid in expected if (path, eid) not in receipts]
        if missing:
            fail(f"{name}: {len(missing)} of {len(expected)} events never reached {path}, "
                 f"e.g. {missing[:3]}")
        total = 0
        for eid in expected:
            recs = receipts.get((path, eid), [])
            total += len(recs)
            ids = {r["webhook_id"] for r in recs}
            want = "msg_" + eid.replace("-", "")
            if recs and ids != {want}:
                fail(f"{name}: event {eid} came with webhook-ids {sorted(ids)}, want {want}")
        figures[name] = (len(expected), total, total - (len(expected) - len(missing)))
    non_matching = sum(1 for row in events.values() if not paths_for(row[4]))
    if non_matching == 0:
        fail("no non-matching event was appended: the test proves nothing about filtering")
    for name, (expected, total, dups) in figures.items():
        print(f"{name}: {expected} matching events, {total} requests, {dups} duplicates")
    print(f"{non_matching} non-matching events, none delivered; {len(records)} requests, "
          f"{sum(1 for r in records if not r['signature_valid'])} invalid signatures")
    print(f"drain after the last append: {drain:.1f} s")
    left = conn.execute("SELECT state, count(*) FROM amebo.deliveries GROUP BY state").fetchall()
    if left:
        fail(f"messages left in amebo.deliveries: {left}")


# Runs the test; returns the exit status.
def main():
    started = time.monotonic()
    receiver = ReceiverClient(args.receiver_url)
    print(f"seed {SEED}", flush=True)
    with connect() as conn:
        setup(conn)
    appenders, drain = run_load(receiver)
    with connect_retrying(time.monotonic() + 30) as conn:
        check(conn, drain)
    print(f"total {time.monotonic() - started:.1f} s")
    if failures:
        print(f"{len(failures)} failures")
        return 1
    print("webhook crash test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
