#!/usr/bin/env python3
"""Soak test: a bounded run of mixed load against amebo and a flaky webhook receiver, then
checks that nothing was lost and nothing grew (run by test/soak/run.sh, which starts the
cluster; see there for the settings and the environment).

Load (threads, one connection each, loopback only, until --seconds have passed):
  hot writers   append_event with expected versions on a few hot streams (acct-*): they race,
                so version conflicts (AM001) happen and are counted
  cold writer   append_event and append_events batches on many cold streams (item-*), each
                with explicit event ids; some calls are sent again (idempotent retries: the
                same version back, nothing written) and some transactions roll back
  reader        read_all paging from the last position seen, read_stream paging
  state loader  load_state through a registered reducer (snapshots written automatically),
                compared with replay_state at the same version
  projections   an inline one (acct balances) and an async one (counts of every stream)
  subscriptions patterns, a payload filter, an ordered one, a batched one, and two with few
                retries, against test/lib/receiver.py failing 20% and hanging on 1% of requests
  sampler       the worker's memory (/proc), the slot's retained WAL, the delivery lag
At the end (load stopped, amebo.wait_for_deliveries): every matching event was received with a
2xx at least once or is dead after max_retries + 1 attempts; every logged message followed its
rules; no message is pending; the ordered subscription kept each stream's order; the store
holds exactly what the writers were told; both projections equal a replay of the events; the
worker's memory did not grow after warm-up; the retained WAL stayed under its bound.
"""
import argparse
import base64
import datetime
import json
import os
import random
import re
import signal
import statistics
import sys
import threading
import time
import uuid

import psycopg
from psycopg.types.json import Jsonb

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "stress"))
from checks import Checks  # noqa: E402
from common import Failures, check_store, sqlstate  # noqa: E402
from receiver import Receiver  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--host", required=True, help="socket directory of the soak cluster")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--seconds", type=float, default=600, help="how long the load runs")
parser.add_argument("--warmup", type=float, default=None,
                    help="seconds before the memory plateau is taken (default: 20%% of the run, "
                         "at least 20)")
parser.add_argument("--sample-every", type=float, default=5.0, help="sampling interval (s)")
parser.add_argument("--rate", type=float, default=1.0, help="load multiplier (1: ~40 events/s)")
parser.add_argument("--settle-timeout", type=float, default=300.0,
                    help="seconds wait_for_deliveries may take after the load")
parser.add_argument("--memory-tolerance-kb", type=int, default=2048,
                    help="growth of the worker's private memory (RssAnon) allowed after warm-up")
parser.add_argument("--max-retained-wal-mb", type=float, default=16.0,
                    help="bound on amebo.delivery_queue.retained_wal_bytes")
parser.add_argument("--stall-every", type=float, default=15.0,
                    help="stop the worker (SIGSTOP) this often, 0: never")
parser.add_argument("--stall-seconds", type=float, default=1.5,
                    help="for this long: requests outlive the hold time and time out together")
parser.add_argument("--receiver-log", required=True, help="the receiver's JSON lines log")
parser.add_argument("--receiver-pid-file", help="where to write the receiver's pid")
parser.add_argument("--seed", type=int, default=None)
args = parser.parse_args()

SEED = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
WARMUP = args.warmup if args.warmup is not None else max(20.0, 0.2 * args.seconds)
APP = "soak"
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
HOT_STREAMS = [f"acct-{i}" for i in range(4)]
COLD_STREAMS = 3000
ACTIONS = ["acct.deposited", "acct.withdrawn", "item.created", "item.updated"]
# Every action's schema: appends are validated on the way in.
SCHEMA = {"type": "object", "required": ["amount"],
          "properties": {"amount": {"type": "integer", "minimum": 1}, "vip": {"type": "boolean"}}}
FAIL_RATIO, HANG_RATIO, HANG_SECONDS = 0.20, 0.01, 5.0
# name -> (action pattern, max_retries, filter, ordered, batch_size)
SUBSCRIPTIONS = {
    "hot": ("acct.*", 10, None, False, 1),
    "cold": ("item.*", 10, None, False, 1),
    "vip": ("*", 10, {"vip": True}, False, 1),
    "ordered": ("acct.withdrawn", 10, None, True, 1),
    "batched": ("item.*", 10, None, False, 10),
    "fragile": ("*", 1, None, False, 1),
    "brittle": ("acct.withdrawn", 0, None, False, 1),
}

checks = Checks()
stop = threading.Event()
thread_errors = Failures()


# An autocommit connection to the soak cluster; statement_timeout keeps a hang finite.
def db():
    return psycopg.connect(host=args.host, port=args.port, dbname="postgres", user="postgres",
                           autocommit=True, options="-c statement_timeout=120000")


# Prints a progress line with the time since the start.
def say(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---------------------------------------------------------------------------------------
# Set-up: reducer, projections, application and subscriptions

SETUP_SQL = """
CREATE FUNCTION soak_acct_reducer(state jsonb, event amebo.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'balance', (state->>'balance')::bigint + CASE event.action
            WHEN 'acct.deposited' THEN (event.payload->>'amount')::bigint
            WHEN 'acct.withdrawn' THEN -(event.payload->>'amount')::bigint ELSE 0 END,
        'events', (state->>'events')::bigint + 1, 'version', event.version)
$$;
SELECT amebo.create_reducer('acct', 'soak_acct_reducer(jsonb, amebo.events)',
                            '{"balance": 0, "events": 0, "version": 0}', 10);

CREATE TABLE soak_balances (stream text PRIMARY KEY, balance bigint NOT NULL,
                            events bigint NOT NULL, last_version bigint NOT NULL);
CREATE FUNCTION soak_balances_apply(event amebo.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO public.soak_balances AS b VALUES (event.stream,
        CASE event.action WHEN 'acct.deposited' THEN 1 ELSE -1 END
            * (event.payload->>'amount')::bigint, 1, event.version)
    ON CONFLICT (stream) DO UPDATE SET balance = b.balance + excluded.balance,
        events = b.events + 1, last_version = excluded.last_version
$$;
SELECT amebo.create_projection('soak_balances', 'soak_balances_apply(amebo.events)',
                               ARRAY['acct.deposited', 'acct.withdrawn'], 'inline');

CREATE TABLE soak_counts (stream text PRIMARY KEY, events bigint NOT NULL,
                          amount bigint NOT NULL, last_position bigint NOT NULL);
-- Raises when a stream's events come out of position order: the projection then pauses.
CREATE FUNCTION soak_counts_apply(event amebo.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM public.soak_counts c
               WHERE c.stream = event.stream AND c.last_position >= event.position) THEN
        RAISE EXCEPTION 'soak_counts: position % of % applied out of order',
            event.position, event.stream;
    END IF;
    INSERT INTO public.soak_counts AS c VALUES (event.stream, 1,
        coalesce((event.payload->>'amount')::bigint, 0), event.position)
    ON CONFLICT (stream) DO UPDATE SET events = c.events + 1,
        amount = c.amount + excluded.amount, last_position = excluded.last_position;
END
$$;
SELECT amebo.create_projection('soak_counts', 'soak_counts_apply(amebo.events)', NULL, 'async');
"""


# Creates the reducer, the projections, the application and the subscriptions; sets the
# receiver's failures on every subscription's path.
def set_up(conn, rcv):
    conn.execute(SETUP_SQL)
    conn.execute("SELECT amebo.create_application(%s, %s, %s)", (APP, rcv.base_url, SECRET))
    for action in ACTIONS:
        conn.execute("SELECT amebo.create_action(%s, %s, %s)", (action, APP, Jsonb(SCHEMA)))
    for name, (action, retries, filt, ordered, batch) in SUBSCRIPTIONS.items():
        conn.execute("SELECT amebo.create_subscription(%s, %s, %s, %s, %s, %s, %s, %s)",
                     (APP, name, action, rcv.url(f"/{name}"), retries,
                      Jsonb(filt) if filt else None, ordered, batch))
        rcv.client.behave(f"/{name}", mode="ok", fail_ratio=FAIL_RATIO, hang_ratio=HANG_RATIO,
                          hang_seconds=HANG_SECONDS)


# ---------------------------------------------------------------------------------------
# Load


class Tally:
    """Thread-safe counters of what the load did."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}

    # Adds n to a counter.
    def add(self, name, n=1):
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n

    # The counter's value.
    def get(self, name):
        with self.lock:
            return self.counts.get(name, 0)


tally = Tally()
acked_lock = threading.Lock()
acked = {}  # event_id -> (stream, version) the writers were told
rolled_back = set()  # event ids of appends whose transaction rolled back


# Sleeps for about interval seconds at the load's rate; false once the load must stop.
def pace(interval, rng):
    return not stop.wait(rng.uniform(0.5, 1.5) * interval / args.rate)


# Records what an append returned: the events' ids at versions last-n+1 .. last.
def acknowledge(stream, event_ids, last_version):
    with acked_lock:
        for i, event_id in enumerate(event_ids):
            acked[event_id] = (stream, last_version - len(event_ids) + 1 + i)


# Runs a load function in a thread; an unexpected error is recorded and ends that thread.
def load_thread(name, fn, *fn_args):
    def run():
        try:
            fn(*fn_args)
        except Exception as e:  # noqa: BLE001 - any error of a load thread fails the run
            thread_errors.add(f"{name}: {type(e).__name__}: {e}")
    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t


# Appends to the hot streams with the version just read as the expected version; the hot
# writers race each other, so some appends fail with AM001 (counted).
def hot_writer(seed):
    rng = random.Random(seed)
    with db() as conn:
        while pace(0.2, rng):
            stream = rng.choice(HOT_STREAMS)
            version = conn.execute("SELECT amebo.stream_version(%s)", (stream,)).fetchone()[0]
            time.sleep(rng.uniform(0, 0.05))  # think time: the other hot writers get in first
            action = rng.choice(["acct.deposited"] * 3 + ["acct.withdrawn"])
            payload = {"amount": rng.randint(1, 100), "vip": rng.random() < 0.1}
            event_id = str(uuid.uuid4())
            try:
                new = conn.execute(
                    "SELECT amebo.append_event(%s, %s, %s, %s, NULL, %s)",
                    (stream, action, Jsonb(payload), version, event_id)).fetchone()[0]
            except psycopg.Error as e:
                if sqlstate(e) != "AM001":
                    raise
                tally.add("conflicts")
                continue
            acknowledge(stream, [event_id], new)
            tally.add("hot appends")


# One cold append: a single event or a batch, at the version this writer knows (it is the
# only writer of the cold streams); returns (event ids, call, parameters, new version).
def cold_append(conn, rng, versions):
    n = rng.randint(0, COLD_STREAMS - 1)
    stream = f"item-{n}"
    expected = versions.get(n, 0)
    ids = [str(uuid.uuid4()) for _ in range(rng.choice([1, 1, 2, 3, 5]))]
    events = [{"action": "item.created" if expected == 0 and i == 0 else "item.updated",
               "payload": {"amount": rng.randint(1, 50), "vip": rng.random() < 0.1},
               "event_id": event_id} for i, event_id in enumerate(ids)]
    if len(ids) == 1:
        e = events[0]
        sql = "SELECT amebo.append_event(%s, %s, %s, %s, NULL, %s)"
        params = (stream, e["action"], Jsonb(e["payload"]), expected, e["event_id"])
    else:
        sql = "SELECT amebo.append_events(%s, %s, %s)"
        params = (stream, Jsonb(events), expected)
    new = conn.execute(sql, params).fetchone()[0]
    versions[n] = new
    return stream, ids, sql, params, new


# Appends to many cold streams, one event or a batch at a time; sends some calls again (they
# must return the same version and write nothing) and rolls some transactions back.
def cold_writer(seed):
    rng = random.Random(seed)
    versions = {}
    with db() as conn:
        while pace(0.08, rng):
            if rng.random() < 0.03:
                roll_back_one(conn, rng)
                continue
            stream, ids, sql, params, new = cold_append(conn, rng, versions)
            acknowledge(stream, ids, new)
            tally.add("cold appends")
            tally.add("batches" if len(ids) > 1 else "single cold appends")
            if rng.random() < 0.15:
                again = conn.execute(sql, params).fetchone()[0]
                tally.add("idempotent retries")
                if again != new:
                    thread_errors.add(f"retry of {ids} returned version {again}, not {new}")


# Appends one event in a transaction that rolls back: it must never be stored nor delivered.
def roll_back_one(conn, rng):
    event_id = str(uuid.uuid4())
    with acked_lock:
        rolled_back.add(event_id)
    conn.execute("BEGIN")
    conn.execute("SELECT amebo.append_event(%s, 'item.updated', %s, NULL, NULL, %s)",
                 (f"item-rb-{rng.randint(0, 9)}", Jsonb({"amount": 1}), event_id))
    conn.execute("ROLLBACK")
    tally.add("rolled back appends")


# Pages through read_all from the last position seen (positions must grow) and through a
# random stream with read_stream (versions must be 1..n); keeps every position read_all gave
# in seen["positions"] and the last one in seen["last"].
def reader(seed, seen):
    rng = random.Random(seed)
    last = 0
    with db() as conn:
        while pace(0.1, rng):
            rows = conn.execute("SELECT position FROM amebo.read_all(%s, 200)",
                                (last,)).fetchall()
            positions = [p for (p,) in rows]
            if positions and (positions[0] <= last or positions != sorted(set(positions))):
                thread_errors.add(f"read_all after {last} returned positions out of order")
            seen["positions"].extend(positions)
            last = positions[-1] if positions else last
            seen["last"] = last
            tally.add("read_all pages")
            read_stream_paged(conn, rng)


# Reads one stream in pages of 3 with read_stream; its versions must be 1..n.
def read_stream_paged(conn, rng):
    stream = rng.choice(HOT_STREAMS + [f"item-{rng.randint(0, COLD_STREAMS - 1)}"])
    versions, after = [], 0
    while True:
        page = conn.execute("SELECT version FROM amebo.read_stream(%s, %s, 3)",
                            (stream, after)).fetchall()
        if not page:
            break
        versions.extend(v for (v,) in page)
        after = page[-1][0]
    if versions != list(range(1, len(versions) + 1)):
        thread_errors.add(f"read_stream({stream}) paged versions are not 1..n: {versions[:20]}")
    tally.add("read_stream pagings")


# Loads hot streams' state through the reducer (which saves snapshots) and compares it with
# a full replay at the same version, in one snapshot.
def state_loader(seed):
    rng = random.Random(seed)
    with db() as conn:
        while pace(0.2, rng):
            stream = rng.choice(HOT_STREAMS)
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                state, version = conn.execute(
                    "SELECT state, version FROM amebo.load_state(%s)", (stream,)).fetchone()
                replay = conn.execute("SELECT amebo.replay_state(%s, %s)",
                                      (stream, version)).fetchone()[0]
            tally.add("state loads")
            if state != replay:
                thread_errors.add(f"load_state({stream}) at {version}: {state} != replay {replay}")


# Stops the worker now and then for a moment (as a saturated machine does), so that its
# requests outlive the hold time and time out in the same pass; counts the stalls.
def staller(seed):
    rng = random.Random(seed)
    with db() as conn:
        while args.stall_every > 0 and pace(args.stall_every * args.rate, rng):
            pid = worker_pid(conn)
            if pid is None:
                continue
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(args.stall_seconds)
            finally:
                os.kill(pid, signal.SIGCONT)
            tally.add("worker stalls")


# ---------------------------------------------------------------------------------------
# Sampling: worker memory, retained WAL, lag


# The amebo worker's pid, from pg_stat_activity.
def worker_pid(conn):
    row = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'amebo worker'"
                       ).fetchone()
    return row[0] if row else None


# The memory figures of a process in kB: VmRSS and RssAnon (/proc/pid/status), Pss and
# Pss_Anon (/proc/pid/smaps_rollup).
def memory_of(pid):
    figures = {}
    for name in ("status", "smaps_rollup"):
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "Pss", "Pss_Anon"):
                    figures[key] = int(rest.split()[0])
    return figures


# One sample: time, phase, worker pid and memory, retained WAL, lag, events stored.
def take_sample(conn, t0, phase):
    pid = worker_pid(conn)
    mem = memory_of(pid) if pid else {}
    queue = conn.execute(
        "SELECT retained_wal_bytes, unconfirmed_wal_bytes, events_behind FROM amebo.delivery_queue"
    ).fetchone() or (None, None, None)
    lag = conn.execute("SELECT coalesce(max(lag_seconds), 0), coalesce(sum(pending), 0), "
                       "coalesce(sum(dead), 0), string_agg(name || ':' || pending, ',' ORDER BY "
                       "name) FILTER (WHERE pending > 0) FROM amebo.subscription_status"
                       ).fetchone()
    events = conn.execute("SELECT coalesce(max(position), 0) FROM amebo.events").fetchone()[0]
    projection_lag = conn.execute("SELECT lag_events FROM amebo.projection_status "
                                  "WHERE name = 'soak_counts'").fetchone()[0]
    return {"t": time.monotonic() - t0, "phase": phase, "pid": pid, **mem,
            "retained": queue[0], "unconfirmed": queue[1], "behind": queue[2],
            "lag": float(lag[0]), "pending": lag[1], "dead": lag[2], "pending by subscription": lag[3],
            "events": events, "projection lag": projection_lag}


# Samples every --sample-every seconds until told to stop; prints each sample.
def sampler(samples, phase, done):
    t0 = T0
    with db() as conn:
        while True:
            s = take_sample(conn, t0, phase[0])
            samples.append(s)
            say(f"sample t={s['t']:6.0f}s {s['phase']:6} pid={s['pid']} "
                f"RssAnon={s.get('RssAnon')}kB VmRSS={s.get('VmRSS')}kB Pss={s.get('Pss')}kB "
                f"retained={(s['retained'] or 0) / 1048576:.1f}MB behind={s['behind']} "
                f"lag={s['lag']:.1f}s pending={s['pending']} ({s['pending by subscription']}) "
                f"dead={s['dead']} events={s['events']} async lag={s['projection lag']}")
            if done.wait(args.sample_every):
                return


# ---------------------------------------------------------------------------------------
# Checks after the load


# The subscriptions as stored: name -> dict(id, action, max_retries, filter, ordered,
# batch_size, start_position).
def stored_subscriptions(conn):
    rows = conn.execute("SELECT name, id, action, max_retries, filter, ordered, batch_size, "
                        "start_position, state FROM amebo.subscriptions WHERE application = %s",
                        (APP,)).fetchall()
    keys = ("id", "action", "max_retries", "filter", "ordered", "batch_size", "start", "state")
    return {r[0]: dict(zip(keys, r[1:])) for r in rows}


# True when the event matches the subscription (pattern with '*', payload containment),
# computed here independently of amebo's matcher.
def matches(sub, action, payload):
    pattern = "^" + ".*".join(re.escape(p) for p in sub["action"].split("*")) + "$"
    if not re.match(pattern, action):
        return False
    return all(payload.get(k) == v for k, v in (sub["filter"] or {}).items())


# Reads the receiver's log: per path, the list of (event ids, versions-by-stream, success)
# in the order received; counts invalid signatures.
def read_receiver_log(path):
    by_path, invalid = {}, 0
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            body = rec["body"] or {}
            envelopes = body["events"] if "events" in body else [body]
            ok = 200 <= rec["status"] < 300 and rec["mode"] != "hang"
            invalid += 0 if rec["signature_valid"] else 1
            by_path.setdefault(rec["path"], []).append(
                {"envelopes": envelopes, "ok": ok, "received_at": rec["received_at"],
                 "webhook_id": rec["webhook_id"]})
    return by_path, invalid


# Per (subscription id, webhook_id): the attempt numbers and statuses in the delivery log.
def delivery_log(conn):
    logged = {}
    for sub_id, webhook_id, attempt, status, positions in conn.execute(
            "SELECT subscription_id, webhook_id, attempt, status, positions "
            "FROM amebo.delivery_log ORDER BY attempted_at"):
        entry = logged.setdefault((sub_id, webhook_id), {"attempts": [], "statuses": [],
                                                         "positions": positions})
        entry["attempts"].append(attempt)
        entry["statuses"].append(status)
    return logged


# Checks one subscription against the events, the receiver's requests, amebo.deliveries and
# the delivery log; returns its figures.
def check_subscription(name, sub, events, received, stored, logged):
    wanted = {e[1]: e for e in events if e[0] > sub["start"] and matches(sub, e[4], e[5])}
    ok_count, any_count = {}, {}
    for req in received:
        for env in req["envelopes"]:
            any_count[env["event_id"]] = any_count.get(env["event_id"], 0) + 1
            if req["ok"]:
                ok_count[env["event_id"]] = ok_count.get(env["event_id"], 0) + 1
    dead = {p: d for d in stored if d["state"] == "dead" for p in d["positions"]}
    pending = [d for d in stored if d["state"] == "pending"]
    lost, dead_events = [], 0
    for event_id, e in wanted.items():
        if ok_count.get(event_id):
            continue
        d = dead.get(e[0])
        if d is None:
            lost.append(e[0])
            continue
        dead_events += 1
    strangers = set(any_count) - set(wanted)
    bad_dead = [d["webhook_id"] for d in stored if d["state"] == "dead" and (
        d["attempts"] != sub["max_retries"] + 1
        or len(logged.get((sub["id"], d["webhook_id"]), {}).get("attempts", []))
        != sub["max_retries"] + 1)]
    checks.check(not lost, f"{name}: every one of {len(wanted)} matching events was received "
                 f"with a 2xx or is dead ({dead_events} dead)",
                 f"{len(lost)} lost, positions {sorted(lost)[:20]}")
    checks.check(not strangers, f"{name}: no event it does not match was sent",
                 f"{len(strangers)} strangers, e.g. {sorted(strangers)[:5]}")
    checks.check(not pending, f"{name}: no message left pending",
                 f"{len(pending)} pending, e.g. {pending[:3]}")
    checks.check(not bad_dead, f"{name}: each dead message has max_retries + 1 = "
                 f"{sub['max_retries'] + 1} attempts (stored and logged)",
                 f"{len(bad_dead)} wrong, e.g. {bad_dead[:5]}")
    check_logged_rules(name, sub, logged, stored)
    duplicates = sum(c - 1 for c in ok_count.values() if c > 1)
    return {"events": len(wanted), "requests": len(received),
            "retries": len(received) - len({r["webhook_id"] for r in received}),
            "dead events": dead_events, "dead messages": sum(
                1 for d in stored if d["state"] == "dead"),
            "duplicates": duplicates}


# Every message in the delivery log: attempts numbered 1..k, at most max_retries + 1; it ends
# with its only 2xx, or it is dead after max_retries + 1 failures.
def check_logged_rules(name, sub, logged, stored):
    dead_ids = {d["webhook_id"] for d in stored if d["state"] == "dead"}
    limit = sub["max_retries"] + 1
    wrong = []
    for (sub_id, webhook_id), entry in logged.items():
        if sub_id != sub["id"]:
            continue
        attempts, statuses = entry["attempts"], entry["statuses"]
        successes = [i for i, s in enumerate(statuses) if s is not None and 200 <= s < 300]
        numbered = sorted(attempts) == list(range(1, len(attempts) + 1)) and len(attempts) <= limit
        if successes:
            fine = numbered and successes == [len(statuses) - 1] and webhook_id not in dead_ids
        else:
            fine = numbered and len(attempts) == limit and webhook_id in dead_ids
        if not fine:
            wrong.append((webhook_id, attempts, statuses))
    checks.check(not wrong, f"{name}: every logged message succeeded once within "
                 f"{limit} attempts or died after {limit}",
                 f"{len(wrong)} wrong, e.g. {wrong[:3]}")


# The ordered subscription: per stream, the versions of its requests (retries included) never
# go back, and the first successes come in version order.
def check_ordered(received):
    last_request, last_success, violations = {}, {}, []
    for req in received:
        for env in req["envelopes"]:
            stream, version = env["stream"], env["version"]
            if version < last_request.get(stream, 0):
                violations.append(f"{stream} v{version} ({req['webhook_id']}, ok {req['ok']}) "
                                  f"requested at {req['received_at']:.3f} after "
                                  f"v{last_request[stream]}")
            last_request[stream] = max(version, last_request.get(stream, 0))
            if req["ok"] and version > last_success.get(stream, 0):
                last_success[stream] = version
    checks.check(not violations, f"ordered: each of {len(last_request)} streams' requests "
                 "came in version order, retries included",
                 f"{len(violations)} violations, e.g. {violations[:5]}")


# Every delivery-related check; returns the figures per subscription.
def check_deliveries(conn, events, receiver_log):
    subs = stored_subscriptions(conn)
    logged = delivery_log(conn)
    stored_rows = conn.execute(
        "SELECT subscription_id, webhook_id, positions, state, attempts FROM amebo.deliveries"
    ).fetchall()
    by_path, invalid = read_receiver_log(receiver_log)
    checks.eq(invalid, 0, "requests with an invalid signature")
    figures = {}
    for name, sub in sorted(subs.items()):
        checks.eq(sub["state"], "active", f"{name}: state")
        stored = [{"webhook_id": w, "positions": p, "state": s, "attempts": a}
                  for sid, w, p, s, a in stored_rows if sid == sub["id"]]
        figures[name] = check_subscription(name, sub, events, by_path.get(f"/{name}", []),
                                           stored, logged)
    check_ordered(by_path.get("/ordered", []))
    figures["_latency"] = first_attempt_latency(by_path, events)
    return figures


# Seconds from an event's recorded_at to its first request (any subscription): p50 and p99.
def first_attempt_latency(by_path, events):
    recorded = {e[1]: e[6] for e in events}
    first = {}
    for reqs in by_path.values():
        for req in reqs:
            for env in req["envelopes"]:
                key = env["event_id"]
                first[key] = min(first.get(key, req["received_at"]), req["received_at"])
    lat = sorted(first[k] - recorded[k] for k in first if k in recorded)
    if not lat:
        return (None, None)
    return (lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))])


# The store holds exactly the acknowledged events (and no rolled-back one); read_all's pages
# gave every position up to the reader's last one.
def check_store_and_writers(conn, seen):
    fail = Failures()
    rows = check_store(conn, fail)
    checks.check(not fail, f"store invariants hold over {len(rows)} events (versions 1..n, "
                 "read_stream, read_all from 0)", f"{len(fail)} failures")
    stored = {r[1]: (r[2], r[3]) for r in rows}
    wrong = [k for k, v in acked.items() if stored.get(k) != v]
    checks.check(not wrong, f"every one of {len(acked)} acknowledged events is stored at the "
                 "version the writer was told", f"{len(wrong)} differ, e.g. {wrong[:5]}")
    checks.eq(len(rows), len(acked), "events stored = events acknowledged")
    checks.eq(len(rolled_back & set(stored)), 0, "rolled-back events stored")
    last, positions = seen["last"], seen["positions"]
    expected = [r[0] for r in rows if r[0] <= last]
    first_difference = next((i for i, (a, b) in enumerate(zip(positions, expected)) if a != b),
                            min(len(positions), len(expected)))
    checks.check(positions == expected, f"read_all paging saw every one of {len(expected)} "
                 f"positions up to {last}, once, in order",
                 f"saw {len(positions)}, first difference at index {first_difference}")


# The inline projection equals the acct events folded here; the async one caught up and
# equals every event counted here; load_state equals replay_state; snapshots were written.
def check_state(conn, events):
    balances, counts = {}, {}
    for pos, _eid, stream, version, action, payload, _rec in events:
        if action in ("acct.deposited", "acct.withdrawn"):
            sign = 1 if action == "acct.deposited" else -1
            b = balances.get(stream, (0, 0, 0))
            balances[stream] = (b[0] + sign * payload["amount"], b[1] + 1, version)
        c = counts.get(stream, (0, 0, 0))
        counts[stream] = (c[0] + 1, c[1] + payload.get("amount", 0), pos)
    inline = {r[0]: tuple(r[1:]) for r in conn.execute("SELECT * FROM soak_balances")}
    differ = [(s, inline.get(s), b) for s, b in balances.items() if inline.get(s) != b]
    checks.check(inline == balances, f"inline projection equals a replay ({len(inline)} streams)",
                 f"{len(differ)} differ (stream, projection, replay): {differ[:5]}")
    caught_up = conn.execute("SELECT amebo.wait_for_projection('soak_counts', 120)").fetchone()[0]
    status = conn.execute("SELECT state, error FROM amebo.projection_status "
                          "WHERE name = 'soak_counts'").fetchone()
    checks.check(caught_up, f"async projection caught up (state {status[0]})", f"{status}")
    asynchronous = {r[0]: tuple(r[1:]) for r in conn.execute("SELECT * FROM soak_counts")}
    differ = [(s, asynchronous.get(s), c) for s, c in counts.items() if asynchronous.get(s) != c]
    checks.check(asynchronous == counts, f"async projection equals a replay ({len(counts)} "
                 "streams)", f"{len(differ)} differ (stream, projection, replay): {differ[:5]}")
    differ = conn.execute("SELECT s FROM unnest(%s::text[]) s WHERE (SELECT state FROM "
                          "amebo.load_state(s)) IS DISTINCT FROM amebo.replay_state(s)",
                          (HOT_STREAMS,)).fetchall()
    checks.check(not differ, "load_state equals replay_state for every hot stream", f"{differ}")
    snaps = conn.execute("SELECT count(*) FROM amebo.snapshots WHERE stream LIKE 'acct-%'"
                         ).fetchone()[0]
    checks.check(snaps > 0, f"snapshots were written by load_state: {snaps} kept")


# The worker's private memory (RssAnon: its heap, not the shared buffers it touches, which
# VmRSS and Pss count and which grow as it touches more pages) after warm-up: the plateau is
# the largest sample in the first tenth of the samples after warm-up (at least 3); the end
# is the median of the last 3 under load; end <= plateau + tolerance. Prints the series.
# Also: one worker pid all along (a restart would hide a leak and is a bug of its own).
def check_memory(samples):
    load = [s for s in samples if s["phase"] == "load" and "RssAnon" in s]
    pids = {s["pid"] for s in samples}
    checks.check(len(pids) == 1 and None not in pids, f"one worker all along (pid {pids})")
    print("worker memory series (s: RssAnon/VmRSS/Pss kB):")
    print("  " + " ".join(f"{s['t']:.0f}:{s.get('RssAnon')}/{s.get('VmRSS')}/{s.get('Pss')}"
                          for s in samples))
    after = [s for s in load if s["t"] >= WARMUP]
    window = max(3, len(after) // 10)
    if len(after) < window + 3:
        checks.check(False, "enough memory samples after warm-up",
                     f"{len(after)} samples after {WARMUP:.0f}s; run longer")
        return None
    plateau = max(s["RssAnon"] for s in after[:window])
    end = statistics.median(s["RssAnon"] for s in after[-3:])
    settled = [s["RssAnon"] for s in samples if s["phase"] == "settle" and "RssAnon" in s]
    tolerance = args.memory_tolerance_kb
    slope = slope_kb_per_min([(s["t"], s["RssAnon"]) for s in after])
    checks.check(end <= plateau + tolerance,
                 f"worker memory did not grow after warm-up: RssAnon plateau {plateau} kB "
                 f"(t {after[0]['t']:.0f}-{after[window - 1]['t']:.0f}s), end {end:.0f} kB, "
                 f"tolerance {tolerance:.0f} kB, trend {slope:+.1f} kB/min",
                 f"grew by {end - plateau:.0f} kB")
    return {"plateau": plateau, "end": end, "after settle": settled[-1] if settled else None,
            "slope": slope, "max": max(s["RssAnon"] for s in load)}


# The least-squares slope of (seconds, kB) points, in kB per minute.
def slope_kb_per_min(points):
    if len(points) < 2:
        return 0.0
    mt = statistics.mean(t for t, _ in points)
    mv = statistics.mean(v for _, v in points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return 60 * sum((t - mt) * (v - mv) for t, v in points) / den if den else 0.0


# The slot's retained WAL stayed under the bound in every sample.
def check_wal(samples, wal_written):
    retained = [s["retained"] for s in samples if s["retained"] is not None]
    top = max(retained) if retained else None
    bound = args.max_retained_wal_mb * 1048576
    checks.check(top is not None and top <= bound,
                 f"retained WAL stayed bounded: max {(top or 0) / 1048576:.1f} MB <= "
                 f"{args.max_retained_wal_mb:g} MB (WAL written {wal_written / 1048576:.0f} MB)")
    return top


# All events as (position, event_id, stream, version, action, payload, recorded_at epoch).
def all_events(conn):
    return conn.execute("SELECT position, event_id::text, stream, version, action, payload, "
                        "extract(epoch FROM recorded_at)::float8 FROM amebo.events "
                        "ORDER BY position").fetchall()


# Asks the worker to log its memory contexts (the server log gets a "Grand total" line).
def log_worker_contexts(conn, when):
    pid = worker_pid(conn)
    if pid:
        conn.execute("SELECT pg_log_backend_memory_contexts(%s)", (pid,))
        say(f"worker {pid} memory contexts logged to the server log ({when})")


# ---------------------------------------------------------------------------------------
# Main


# Prints the figures of the run.
def print_figures(figures, memory, wal_top, duration, wal_written, samples):
    print("--- figures")
    print(f"load: {duration:.0f} s at rate x{args.rate}; seed {SEED}; "
          f"receiver fails {FAIL_RATIO:.0%}, hangs {HANG_RATIO:.0%} for {HANG_SECONDS:.0f} s")
    for name in sorted(tally.counts):
        print(f"  {name}: {tally.get(name)}")
    print(f"  events appended: {len(acked)}")
    total = {"requests": 0, "retries": 0, "dead events": 0, "dead messages": 0, "duplicates": 0}
    for name, f in sorted(figures.items()):
        if name.startswith("_"):
            continue
        print(f"  subscription {name}: " + ", ".join(f"{k} {v}" for k, v in f.items()))
        for k in total:
            total[k] += f[k]
    print("  deliveries (all subscriptions): " + ", ".join(f"{k} {v}" for k, v in total.items()))
    p50, p99 = figures["_latency"]
    if p50 is not None:
        print(f"  first request after recording: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    print(f"  max events_behind {max((s['behind'] or 0) for s in samples)}, "
          f"max lag_seconds {max(s['lag'] for s in samples):.1f}, max async projection lag "
          f"{max(s['projection lag'] or 0 for s in samples)} events")
    print(f"  WAL written {wal_written / 1048576:.1f} MB, max retained "
          f"{(wal_top or 0) / 1048576:.1f} MB")
    if memory:
        print(f"  worker RssAnon kB: plateau {memory['plateau']}, end {memory['end']:.0f}, "
              f"after settle {memory['after settle']}, max {memory['max']}, "
              f"trend {memory['slope']:+.1f} kB/min")


# Starts the load threads; returns them and the reader's list of positions.
def start_load():
    rng = random.Random(SEED)
    seen = {"positions": [], "last": 0}
    threads = [load_thread(f"hot-{i}", hot_writer, rng.random()) for i in range(3)]
    threads.append(load_thread("cold", cold_writer, rng.random()))
    threads.append(load_thread("reader", reader, rng.random(), seen))
    threads.append(load_thread("state", state_loader, rng.random()))
    threads.append(load_thread("staller", staller, rng.random()))
    return threads, seen


def main():
    global T0
    say(f"soak: {args.seconds:.0f} s of load, warm-up {WARMUP:.0f} s, seed {SEED}")
    with Receiver(secret=SECRET, log=args.receiver_log, seed=SEED, keep_records=False) as rcv, \
            db() as conn:
        if args.receiver_pid_file:
            with open(args.receiver_pid_file, "w") as f:
                f.write(f"{rcv.proc.pid}\n")
        set_up(conn, rcv)
        checks.check(conn.execute("SELECT amebo.wait_for_worker(60)").fetchone()[0],
                     "the worker runs")
        lsn0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        T0 = time.monotonic()
        samples, phase, done = [], ["load"], threading.Event()
        sampling = threading.Thread(target=sampler, args=(samples, phase, done), daemon=True)
        sampling.start()
        threads, seen = start_load()
        warm_logged = False
        while time.monotonic() - T0 < args.seconds and not thread_errors:
            time.sleep(1)
            if not warm_logged and time.monotonic() - T0 >= WARMUP:
                log_worker_contexts(conn, "after warm-up")
                warm_logged = True
        stop.set()
        for t in threads:
            t.join(60)
        duration = time.monotonic() - T0
        phase[0] = "settle"
        say(f"load stopped after {duration:.0f} s; waiting for deliveries to settle")
        settled = conn.execute("SELECT amebo.wait_for_deliveries(%s)",
                               (args.settle_timeout,)).fetchone()[0]
        say(f"settled: {settled} after {time.monotonic() - T0 - duration:.0f} s")
        log_worker_contexts(conn, "after settling")
        time.sleep(args.sample_every)
        done.set()
        sampling.join(30)
        wal_written = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)",
                                   (lsn0,)).fetchone()[0]
        print("--- checks")
        checks.check(not thread_errors, "no load thread saw an error",
                     "; ".join(thread_errors.items[:5]))
        checks.check(settled, f"wait_for_deliveries({args.settle_timeout:.0f}) returned true")
        events = all_events(conn)
        check_store_and_writers(conn, seen)
        check_state(conn, events)
        figures = check_deliveries(conn, events, args.receiver_log)
        memory = check_memory(samples)
        wal_top = check_wal(samples, wal_written)
        print_figures(figures, memory, wal_top, duration, wal_written, samples)
    print("--- summary")
    print(f"{checks.passed} passed, {len(checks.failed)} failed")
    for name in checks.failed:
        print(f"FAIL: {name}")
    return 1 if checks.failed else 0


T0 = time.monotonic()
if __name__ == "__main__":
    sys.exit(main())
