"""Retention script test (test/scripts/retention.sh).

1. Holds: with a retention policy of one second on category "log", a paused async projection
   keeps every event, and retention_status says it waits on it; a paused subscription's
   queued messages keep their events.
2. A redaction while webhooks for the redacted events are queued (the subscription paused):
   after resume_subscription the receiver gets the redacted bodies, signed.
3. Crashes in the middle of retention passes: SIGKILL of the worker (the postmaster then
   restarts every process), then SIGKILL of the postmaster and all its children. After each
   restart nothing is half-removed (each stream keeps a contiguous run of versions ending at
   its head, the policy's count of removed events matches the table), versions never restart,
   and the pass resumes until every event of the category is gone.
"""
import argparse
import json
import os
import signal
import sys
import time

import psycopg

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import server_crash  # noqa: E402
from receiver import Receiver  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--pg-bin", required=True)
parser.add_argument("--dir", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--streams", type=int, default=300)
parser.add_argument("--events-per-stream", type=int, default=200)
args = parser.parse_args()
DATA = os.path.join(args.dir, "data")
PER_ROUND = args.streams * args.events_per_stream
ROUNDS = 2  # the worker is killed in the first round's pass, the postmaster in the second's
TOTAL = ROUNDS * PER_ROUND
SPECIAL = 3  # events of stream log-special, action log.special, delivered by the webhook
failures = []


def connect():
    return psycopg.connect(host=args.dir, port=args.port, dbname="postgres", user="postgres",
                           autocommit=True, options="-c statement_timeout=60000")


def wait_connect(timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def check(ok, message):
    print(("ok   " if ok else "FAIL ") + message, flush=True)
    if not ok:
        failures.append(message)


def value(conn, sql, params=()):
    return conn.execute(sql, params or None).fetchone()[0]


def wait_until(conn, sql, timeout, params=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value(conn, sql, params):
            return True
        time.sleep(0.05)
    return False


def load(conn, receiver_url, secret):
    conn.execute("SELECT amebo.create_application('app', NULL, %s)", (secret,))
    conn.execute("SELECT amebo.create_action('log.special', 'app')")
    conn.execute("SELECT amebo.create_subscription('app', 'hook', 'log.special', %s)",
                 (receiver_url + "/hook",))
    conn.execute("SELECT amebo.pause_subscription('app', 'hook')")
    conn.execute("CREATE TABLE counted (position bigint)")
    conn.execute("CREATE FUNCTION count_line(event amebo.events) RETURNS void LANGUAGE sql "
                 "AS 'INSERT INTO counted VALUES (event.position)'")
    conn.execute("SELECT amebo.create_projection('counter', 'count_line(amebo.events)', "
                 "ARRAY['log.line'], 'async')")
    conn.execute("SELECT amebo.pause_projection('counter')")
    append_round(conn, 0)
    for n in range(SPECIAL):
        conn.execute("SELECT amebo.append_event('log-special', 'log.special', %s)",
                     (json.dumps({"n": n, "email": f"person{n}@example.com", "city": "Oslo"}),))
    conn.execute("SELECT count(amebo.append_event('keep-' || (g % 10), 'keep.line', '{}')) "
                 "FROM generate_series(1, 200) g")


def append_round(conn, round_number):
    """Appends events_per_stream events to each of streams new streams of category log."""
    started = time.monotonic()
    first = round_number * args.streams + 1
    conn.execute(
        "SELECT count(amebo.append_events('log-' || s, (SELECT jsonb_agg(jsonb_build_object("
        "'action', 'log.line', 'payload', jsonb_build_object('n', v))) "
        "FROM generate_series(1, %s::integer) v))) FROM generate_series(%s::integer, %s::integer) s",
        (args.events_per_stream, first, first + args.streams - 1))
    print(f"round {round_number}: appended {PER_ROUND} events in "
          f"{time.monotonic() - started:.1f} s", flush=True)


def check_holds(conn):
    conn.execute("SELECT amebo.set_retention('log', max_age => '1 second')")
    time.sleep(2.5)
    conn.execute("SELECT amebo.wait_for_worker(10)")
    time.sleep(0.5)
    left = value(conn, "SELECT count(*) FROM amebo.events WHERE stream LIKE 'log-%'")
    check(left == PER_ROUND + SPECIAL,
          f"a paused async projection keeps every event ({left} kept)")
    waiting = value(conn, "SELECT waiting_on FROM amebo.retention_status")
    check(waiting == "projection counter", f"retention_status waits on it ({waiting!r})")


def check_redaction_while_queued(conn, receiver):
    queued = wait_until(conn, "SELECT count(*) = %s FROM amebo.deliveries WHERE state = 'pending'",
                        30, (SPECIAL,))
    check(queued, "the paused subscription queued its messages in amebo.deliveries")
    count = value(conn, "SELECT amebo.redact('log-special', ARRAY['{email}'], "
                        "'erasure request from the retention test')")
    check(count == SPECIAL, f"redact changed the queued events ({count})")
    conn.execute("SELECT amebo.resume_subscription('app', 'hook')")
    requests = receiver.client.wait_for(lambda reqs: len(reqs) >= SPECIAL, timeout=30,
                                        path="/hook")
    bodies = [r["body"] for r in requests]
    check(len(bodies) >= SPECIAL, f"the receiver got the queued messages ({len(bodies)})")
    check(all("email" not in b["payload"] and b["payload"].get("city") == "Oslo" for b in bodies),
          "every delivered body is redacted")
    check(all(r["signature_valid"] for r in requests), "every delivered body is signed")


def check_store(conn, label, appended):
    """Nothing half-removed: per stream a contiguous run of versions ending at its head; the
    policy's count matches the table. One snapshot for every figure (the pass goes on)."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    rows = conn.execute(
        "SELECT s.stream, min(e.version), max(e.version), count(e.position), "
        "amebo.stream_version(s.stream) "
        "FROM (SELECT 'log-' || g AS stream FROM generate_series(1, %s::integer) g) s "
        "LEFT JOIN amebo.events e ON e.stream = s.stream GROUP BY s.stream",
        (appended // args.events_per_stream,)).fetchall()
    left = value(conn, "SELECT count(*) FROM amebo.events WHERE stream LIKE 'log-%'")
    removed = value(conn, "SELECT removed FROM amebo.retention_policies WHERE category = 'log'")
    emptied = value(conn, "SELECT count(*) FROM amebo.removed_streams r WHERE r.stream LIKE "
                          "'log-%' AND NOT EXISTS (SELECT 1 FROM amebo.events e "
                          "WHERE e.stream = r.stream)")
    conn.execute("COMMIT")
    broken = [r for r in rows
              if r[4] != args.events_per_stream
              or (r[3] > 0 and (r[2] != args.events_per_stream or r[3] != r[2] - r[1] + 1))]
    check(not broken, f"{label}: every stream is a contiguous run up to its head "
                      f"(first broken: {broken[:1]})")
    check(left + removed == appended + SPECIAL,
          f"{label}: {removed} removed + {left} kept = every event of the category")
    empty = sum(1 for r in rows if r[3] == 0)
    check(emptied >= empty, f"{label}: every emptied stream keeps its version ({emptied})")


def crash_mid_pass(conn, how, appended):
    """Kills the worker or the postmaster as soon as the pass has removed something more."""
    start = value(conn, "SELECT removed FROM amebo.retention_policies")
    deadline = time.monotonic() + 30
    removed = start
    while removed == start and time.monotonic() < deadline:
        removed = value(conn, "SELECT removed FROM amebo.retention_policies")
    check(start < removed < appended,
          f"{how}: strikes in the middle of a pass ({removed} of {appended + SPECIAL} removed)")
    if how == "worker":
        os.kill(value(conn, "SELECT pid FROM amebo.worker_status()"), signal.SIGKILL)
        conn.close()
        time.sleep(0.5)
    else:
        conn.close()
        server_crash.kill_server(DATA, args.dir, args.port)
        server_crash.start_server(args.pg_bin, DATA, os.path.join(args.dir, "server.log"))
    conn = wait_connect()
    check_store(conn, f"after SIGKILL of the {how}", appended)
    return conn


def wait_for_the_pass(conn, appended, label):
    done = wait_until(conn, "SELECT count(*) = 0 FROM amebo.events WHERE stream LIKE 'log-%'", 60)
    check(done, f"{label}: the pass resumed and removed every event of the category")
    check_store(conn, label, appended)


def main():
    secret = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    with Receiver(secret=secret) as receiver:
        conn = connect()
        load(conn, receiver.base_url, secret)
        check_holds(conn)
        check_redaction_while_queued(conn, receiver)
    conn.execute("SELECT amebo.resume_projection('counter')")
    conn = crash_mid_pass(conn, "worker", PER_ROUND)
    wait_for_the_pass(conn, PER_ROUND, "round 0")
    append_round(conn, 1)
    conn = crash_mid_pass(conn, "postmaster", TOTAL)
    wait_for_the_pass(conn, TOTAL, "round 1")
    counted = value(conn, "SELECT count(DISTINCT position) FROM counted")
    check(counted == TOTAL, f"the projection applied every event before it went ({counted})")
    keep = value(conn, "SELECT count(*) FROM amebo.events WHERE stream LIKE 'keep-%'")
    check(keep == 200, f"other categories are untouched ({keep})")
    version = value(conn, "SELECT amebo.append_event('log-1', 'log.line', '{}')")
    check(version == args.events_per_stream + 1, f"log-1 goes on at version {version}")
    print("retention test " + ("passed" if not failures else f"FAILED ({len(failures)})"))
    return 1 if failures else 0


sys.exit(main())
