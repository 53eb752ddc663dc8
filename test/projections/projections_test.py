"""Projections and the background worker (run by test/scripts/projections.sh).

Sections, each printing what it checked with counts (a failed check prints FAIL and makes
the exit status 1; an exception in a section fails it and the next section runs):
 1. worker: wait_for_worker, worker_status serves database postgres; an async projection
    created on a store that already has events catches up on all of them, then follows 4
    concurrent writers (transactions and savepoints rolled back at random): every committed
    event applied exactly once and in position order, the read model equals the fold of the
    committed events, lag_events 0; then the latency from append to read model with
    amebo.worker_naptime = 10s (which the timer cannot explain: the latch wake-up must).
 2. handler error: the projection pauses with the error and error_position of the failing
    event, applies nothing after it (also not later appends), and after CREATE OR REPLACE of
    the handler and resume_projection catches up with nothing skipped or duplicated.
 3. filters: an async and an inline projection with actions => ARRAY[...] see only those
    actions; an async rebuild with since replays only events recorded since then.
 4. rebuild progress and cancellation: an inline projection with a slow handler over 2000
    events; progress rises in projection_status and rebuild_progress() with the right
    total; pg_cancel_backend ends it with 57014, the progress row disappears and the read
    model is unchanged (the reset rolled back).
 5. an inline rebuild blocks an append started meanwhile until it commits; the rebuild's
    count and the read model afterwards are exact.
 6. the worker across DROP EXTENSION amebo CASCADE + CREATE EXTENSION, a config reload, and
    a change of amebo.database_name to another database (and back).
"""
import argparse
import os
import random
import statistics
import sys
import threading
import time
import traceback
import uuid

import psycopg
from psycopg.types.json import Jsonb

parser = argparse.ArgumentParser()
parser.add_argument("--host", required=True, help="socket directory of the test cluster")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--log", help="the server log, to show the worker's lines at the end")
parser.add_argument("--writers", type=int, default=4)
parser.add_argument("--appends", type=int, default=500, help="append calls per writer")
parser.add_argument("--streams", type=int, default=20)
parser.add_argument("--seed", type=int, default=None)
args = parser.parse_args()

SEED = args.seed if args.seed is not None else random.randrange(1, 1 << 30)
NAPTIME_FOR_LATENCY = 10.0  # seconds; amebo.worker_naptime while latencies are measured
REBUILD_EVENTS = 2000
LOST_AFTER = 3.0  # seconds; an apply slower than this waited for the 10 s timer


# ---------------------------------------------------------------------------------------
# Checks and helpers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checks import Checks  # noqa: E402

checks = Checks()
check = checks.check
eq = checks.eq


def db(dbname="postgres"):
    """An autocommit connection; statement_timeout keeps a hang finite."""
    return psycopg.connect(host=args.host, port=args.port, dbname=dbname, user="postgres",
                           autocommit=True, options="-c statement_timeout=60000")


def one(conn, sql, params=None):
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def rows(conn, sql, params=None):
    return conn.execute(sql, params).fetchall()


def sample(items, n=5):
    items = sorted(items, key=str)
    return items[:n] + (["..."] if len(items) > n else [])


def check_applied_exactly(conn, table, what, where="TRUE", ordered=True):
    """The read model table (event_id primary key, position, seq) holds exactly the events
    matching where, each at its position; with ordered, applied in position order."""
    events = dict(rows(conn, f"SELECT event_id::text, position FROM amebo.events WHERE {where}"))
    applied_rows = rows(conn, f"SELECT event_id::text, position FROM {table}")
    applied = dict(applied_rows)
    missing = events.keys() - applied.keys()
    extra = applied.keys() - events.keys()
    moved = [k for k in events.keys() & applied.keys() if events[k] != applied[k]]
    check(not missing and not extra and not moved and len(applied_rows) == len(events),
          f"{what}: {len(applied_rows)} events applied = the {len(events)} events in the store",
          f"missing {len(missing)} {sample(missing)}, extra {len(extra)} {sample(extra)}, "
          f"wrong position {len(moved)}")
    if ordered:
        positions = [r[0] for r in rows(conn, f"SELECT position FROM {table} ORDER BY seq")]
        backwards = sum(1 for a, b in zip(positions, positions[1:]) if b <= a)
        check(backwards == 0, f"{what}: applied in position order ({len(positions)} events)",
              f"{backwards} events applied after a later position")
    return len(events)


def projection_status(conn, name):
    row = conn.execute(
        "SELECT state, position, lag_events, error, error_position, error_at, "
        "rebuild_replayed, rebuild_total, rebuild_pid "
        "FROM amebo.projection_status WHERE name = %s", (name,)).fetchone()
    keys = ("state", "position", "lag_events", "error", "error_position", "error_at",
            "rebuild_replayed", "rebuild_total", "rebuild_pid")
    return dict(zip(keys, row)) if row else None


def wait_projection(conn, name, timeout=30):
    t0 = time.monotonic()
    ok = one(conn, "SELECT amebo.wait_for_projection(%s, %s)", (name, timeout))
    return ok, time.monotonic() - t0


def append(conn, stream, action, payload, event_id=None):
    """Appends one event (autocommit unless in a transaction); returns its event id."""
    event_id = event_id or str(uuid.uuid4())
    conn.execute("SELECT amebo.append_event(%s, %s, %s, NULL, NULL, %s::uuid)",
                 (stream, action, Jsonb(payload), event_id))
    return event_id


def position_of(conn, event_id):
    return one(conn, "SELECT position FROM amebo.events WHERE event_id = %s::uuid", (event_id,))


def worker_backends(conn):
    return rows(conn, "SELECT pid, datname FROM pg_stat_activity "
                      "WHERE backend_type = 'amebo worker' ORDER BY pid")


def worker_status(conn):
    return conn.execute("SELECT pid, database, started_at, last_run_at "
                        "FROM amebo.worker_status()").fetchall()


def set_naptime(conn, value):
    """ALTER SYSTEM amebo.worker_naptime (None: reset), reload, and give the worker time to
    read it (the reload signal sets its latch, so it does not wait for the old timer)."""
    if value is None:
        conn.execute("ALTER SYSTEM RESET amebo.worker_naptime")
    else:
        conn.execute(f"ALTER SYSTEM SET amebo.worker_naptime = '{value}'")
    conn.execute("SELECT pg_reload_conf()")
    time.sleep(1.2)
    with db() as fresh:
        return one(fresh, "SHOW amebo.worker_naptime")


def measure_latency(append_conn, poll_conn, table, stream, n, what):
    """Appends n events one by one, with idle gaps (so the worker sleeps on its latch), and
    measures each until its handler's row is visible. With the naptime at 10 s, an event not
    applied within LOST_AFTER seconds waits for the timer: its commit's wake-up was lost.
    Checks the median is below 1 s and that no wake-up was lost (stops after 3 lost)."""
    rng = random.Random(SEED + 7)
    latencies, lost = [], 0
    for _ in range(n):
        time.sleep(rng.uniform(0.05, 0.15))
        t0 = time.monotonic()
        event_id = append(append_conn, stream, "lat.ping", {})
        while True:
            if poll_conn.execute(f"SELECT 1 FROM {table} WHERE event_id = %s::uuid",
                                 (event_id,)).fetchone():
                latencies.append(time.monotonic() - t0)
                break
            if time.monotonic() - t0 > LOST_AFTER:
                latencies.append(float("inf"))
                lost += 1
                break
            time.sleep(0.001)
        if lost >= 3:
            break
    median = statistics.median(latencies)
    shown = [f"{x * 1000:.1f}" if x != float("inf") else "lost" for x in latencies]
    check(median < 1.0,
          f"{what}: append to read model, median {median * 1000:.1f} ms over "
          f"{len(latencies)} appends (worker_naptime {NAPTIME_FOR_LATENCY:g} s: the latch "
          f"woke it)", f"latencies in ms: {shown}")
    check(lost == 0,
          f"{what}: wake-ups lost (applied only after > {LOST_AFTER:g} s): {lost} of "
          f"{len(latencies)}; fastest {min(latencies) * 1000:.1f} ms, "
          f"slowest {max(latencies) * 1000:.1f} ms",
          f"latencies in ms: {shown}")
    return median


def poll_until(conn, sql, params=None, timeout=LOST_AFTER):
    """Polls sql (one boolean) until true; returns the seconds it took, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if one(conn, sql, params):
            return time.monotonic() - t0
        time.sleep(0.002)
    return None


class Background(threading.Thread):
    """Runs fn in a thread; keeps its result or exception and when it ended."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn = fn
        self.result = None
        self.error = None
        self.started_at = None
        self.ended_at = None

    def run(self):
        self.started_at = time.monotonic()
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc
        finally:
            self.ended_at = time.monotonic()

    def finished(self):
        return self.ended_at is not None


# ---------------------------------------------------------------------------------------
# 1. The worker, catch-up, concurrent writers, latency

T1_ACTIONS = ("t1.deposited", "t1.withdrawn")


def t1_sign(action):
    return 1 if action == "t1.deposited" else -1


def section_worker(c):
    eq(one(c, "SELECT amebo.wait_for_worker(10)"), True, "wait_for_worker(10)")
    status = worker_status(c)
    eq(len(status), 1, "worker_status() rows")
    pid, database, started_at, last_run_at = status[0]
    eq(database, "postgres", "worker_status().database")
    check(started_at is not None and last_run_at is not None and last_run_at >= started_at,
          f"worker_status() pid {pid}: started_at and last_run_at set, in order",
          f"started_at {started_at}, last_run_at {last_run_at}")
    eq(worker_backends(c), [(pid, "postgres")], "pg_stat_activity's amebo worker (pid, datname)")
    # From here on the timer is 10 s: a prompt apply shows a wake-up through the latch.
    eq(set_naptime(c, f"{NAPTIME_FOR_LATENCY:g}s"), f"{NAPTIME_FOR_LATENCY:g}s",
       "amebo.worker_naptime after ALTER SYSTEM + pg_reload_conf")

    c.execute("""
        CREATE TABLE t1_applied (event_id uuid PRIMARY KEY, position bigint NOT NULL,
                                 seq bigserial NOT NULL);
        CREATE TABLE t1_balance (stream text PRIMARY KEY, balance bigint NOT NULL,
                                 events integer NOT NULL);
        CREATE FUNCTION t1_handle(e amebo.events) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.t1_applied (event_id, position) VALUES (e.event_id, e.position);
            IF e.action IN ('t1.deposited', 't1.withdrawn') THEN
                INSERT INTO public.t1_balance AS b
                VALUES (e.stream, CASE e.action WHEN 't1.deposited' THEN 1 ELSE -1 END
                                  * (e.payload->>'amount')::bigint, 1)
                ON CONFLICT (stream) DO UPDATE
                SET balance = b.balance + EXCLUDED.balance, events = b.events + 1;
            END IF;
        END $$;
        CREATE FUNCTION t1_reset() RETURNS void LANGUAGE sql AS
            $$ DELETE FROM public.t1_applied; DELETE FROM public.t1_balance $$;
    """)

    # Events before the projection exists.
    expected = {}  # stream -> [balance, events]
    seed_events = 300
    c.execute("""SELECT amebo.append_event('t1acct-' || lpad((i %% %s)::text, 2, '0'),
                                           CASE WHEN i %% 3 = 0 THEN 't1.withdrawn'
                                                ELSE 't1.deposited' END,
                                           jsonb_build_object('amount', i %% 17 + 1))
                 FROM generate_series(1, %s) i""", (args.streams, seed_events))
    for i in range(1, seed_events + 1):
        entry = expected.setdefault(f"t1acct-{i % args.streams:02d}", [0, 0])
        entry[0] += (-1 if i % 3 == 0 else 1) * (i % 17 + 1)
        entry[1] += 1
    c.execute("SELECT amebo.create_projection('t1', 't1_handle(amebo.events)'::regprocedure, "
              "mode => 'async', reset => 't1_reset()'::regprocedure)")
    # No wait_for_projection (it wakes the worker itself): create_projection must wake it,
    # after its commit, and the append after it must wake it too (timer: 10 s).
    took = poll_until(c, "SELECT count(*) = %s FROM t1_applied", (seed_events,))
    check(took is not None,
          f"async projection t1 created on {seed_events} existing events caught up in "
          f"{took if took is None else round(took, 3)} s without wait_for_projection "
          f"(create_projection woke the worker)",
          f"not within {LOST_AFTER:g} s: the worker missed the new projection until its timer")
    first_id = append(c, "t1acct-first", "t1.deposited", {"amount": 1})
    took = poll_until(c, "SELECT count(*) = 1 FROM t1_applied WHERE event_id = %s::uuid",
                      (first_id,))
    check(took is not None,
          f"the first append after create_projection applied in "
          f"{took if took is None else round(took, 3)} s (its commit woke the worker)",
          f"not within {LOST_AFTER:g} s")
    expected["t1acct-first"] = [1, 1]
    ok, took = wait_projection(c, "t1")
    check(ok, f"wait_for_projection(t1) after {took:.2f} s")
    check_applied_exactly(c, "t1_applied", "t1 after catch-up")
    balances = {r[0]: [r[1], r[2]] for r in rows(c, "SELECT * FROM t1_balance")}
    eq(balances == expected, True,
       f"t1 read model equals the fold of the {seed_events} events over {len(expected)} streams")

    # Concurrent writers.
    results = [None] * args.writers

    def writer(index):
        rng = random.Random(SEED * 31 + index)
        committed, rolled_back, errors = [], [], []
        with db() as conn:
            done = 0
            while done < args.appends:
                size = min(rng.randint(1, 3), args.appends - done)
                rollback = rng.random() < 0.15
                batch, undone = [], []
                # Streams in name order within a transaction, as appends lock their streams
                # until commit: opposite orders in two transactions could deadlock.
                streams = sorted(f"t1acct-{rng.randrange(args.streams):02d}"
                                 for _ in range(size))
                try:
                    with conn.transaction():
                        for stream in streams:
                            ev = (str(uuid.uuid4()), stream, rng.choice(T1_ACTIONS),
                                  rng.randint(1, 100))
                            append(conn, ev[1], ev[2], {"amount": ev[3], "writer": index},
                                   ev[0])
                            batch.append(ev)
                        if rng.random() < 0.1:  # one more, rolled back to a savepoint
                            with conn.transaction():
                                ev = (str(uuid.uuid4()), f"t1own-{index}",
                                      "t1.deposited", 1000000)
                                append(conn, ev[1], ev[2], {"amount": ev[3], "writer": index},
                                       ev[0])
                                undone.append(ev)
                                raise psycopg.Rollback()
                        if rollback:
                            raise psycopg.Rollback()
                    (rolled_back if rollback else committed).extend(batch)
                    rolled_back.extend(undone)
                except Exception as exc:  # noqa: BLE001
                    errors.append(repr(exc))
                done += size
        results[index] = (committed, rolled_back, errors)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(args.writers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    write_time = time.monotonic() - t0
    applied_when_done = one(c, "SELECT count(*) FROM t1_applied")
    committed = [ev for r in results for ev in r[0]]
    rolled_back = [ev for r in results for ev in r[1]]
    errors = [e for r in results for e in r[2]]
    eq(errors, [], f"errors of {args.writers} writers x {args.appends} appends")
    ok, took = wait_projection(c, "t1")
    check(ok, f"t1 caught up {took:.2f} s after the writers ended ({len(committed)} committed "
              f"in {write_time:.2f} s, {len(rolled_back)} rolled back; {applied_when_done} "
              f"events applied when the writers ended)")
    stored = {r[0] for r in rows(c, "SELECT event_id::text FROM amebo.events "
                                    "WHERE payload ? 'writer'")}
    eq(stored == {ev[0] for ev in committed}, True,
       f"the store holds exactly the {len(committed)} committed writer events")
    check_applied_exactly(c, "t1_applied", "t1 after the writers")
    for event_id, stream, action, amount in committed:
        entry = expected.setdefault(stream, [0, 0])
        entry[0] += t1_sign(action) * amount
        entry[1] += 1
    balances = {r[0]: [r[1], r[2]] for r in rows(c, "SELECT * FROM t1_balance")}
    eq(balances == expected, True,
       f"t1 read model equals the fold of the committed events "
       f"({sum(v[1] for v in expected.values())} events over {len(expected)} streams)")
    st = projection_status(c, "t1")
    eq((st["state"], st["lag_events"], st["error"]), ("running", 0, None),
       "t1 (state, lag_events, error)")
    max_position = one(c, "SELECT max(position) FROM amebo.events")
    check(st["position"] >= max_position,
          f"t1 checkpoint {st['position']} >= the last position {max_position}")

    # Latency: the timer is 10 s, so a fast apply shows the latch wake-up.
    with db() as poll:
        measure_latency(c, poll, "t1_applied", "lat-1", 20, "t1")


# ---------------------------------------------------------------------------------------
# 2. Handler errors

def section_handler_error(c):
    c.execute("""
        CREATE TABLE t2_applied (event_id uuid PRIMARY KEY, position bigint NOT NULL,
                                 seq bigserial NOT NULL);
        CREATE FUNCTION t2_handle(e amebo.events) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            -- The insert comes first: the failed event's subtransaction must undo it.
            INSERT INTO public.t2_applied (event_id, position) VALUES (e.event_id, e.position);
            IF e.payload->>'poison' = 'yes' THEN
                RAISE EXCEPTION 'poisoned event at position %', e.position;
            END IF;
        END $$;
    """)
    c.execute("SELECT amebo.create_projection('t2', 't2_handle(amebo.events)'::regprocedure, "
              "mode => 'async')")
    ok, took = wait_projection(c, "t2")
    check(ok, f"async projection t2 (every action) caught up in {took:.2f} s")
    check_applied_exactly(c, "t2_applied", "t2 before the poisoned event")

    before = [append(c, "t2s-1", "t2.ok", {"n": i}) for i in range(5)]
    poison = append(c, "t2s-1", "t2.ok", {"poison": "yes"})
    after = [append(c, "t2s-1", "t2.ok", {"n": i}) for i in range(5)]
    poison_position = position_of(c, poison)
    ok, took = wait_projection(c, "t2", 20)
    check(ok is False and took < 10,
          f"wait_for_projection(t2) is false, after {took:.2f} s (paused, not timed out)")
    st = projection_status(c, "t2")
    eq(st["state"], "paused", "t2 state after the handler raised")
    check(st["error"] is not None and f"poisoned event at position {poison_position}"
          in st["error"], f"t2 error: {st['error']!r}")
    eq(st["error_position"], poison_position, "t2 error_position (the poisoned event's)")
    check(st["error_at"] is not None, "t2 error_at is set")
    previous = one(c, "SELECT max(position) FROM amebo.events WHERE position < %s",
                   (poison_position,))
    eq(st["position"], previous, "t2 checkpoint (the event before the poisoned one)")
    check_applied_exactly(c, "t2_applied", "t2 while paused",
                          where=f"position < {poison_position}")
    applied_after = one(c, "SELECT count(*) FROM t2_applied WHERE position >= %s",
                        (poison_position,))
    eq(applied_after, 0, "t2 events applied at or after the poisoned one")

    # More appends while paused, the worker woken: still nothing applied.
    later = [append(c, "t2s-2", "t2.ok", {"n": i}) for i in range(3)]
    c.execute("SELECT amebo.wake_worker()")
    time.sleep(1.0)
    eq(one(c, "SELECT count(*) FROM t2_applied WHERE position >= %s", (poison_position,)), 0,
       "t2 events applied after 3 more appends and a wake-up while paused")
    st = projection_status(c, "t2")
    eq((st["state"], st["lag_events"]), ("paused", 1 + len(after) + len(later)),
       "t2 (state, lag_events) while paused")
    # resume without a fix: fails again on the same event. No wait_for_projection first:
    # resume_projection must wake the worker (after its commit).
    error_at = st["error_at"]
    c.execute("SELECT amebo.resume_projection('t2')")
    took = poll_until(c, "SELECT state = 'paused' AND error_at > %s FROM amebo.projections "
                         "WHERE name = 't2'", (error_at,))
    check(took is not None,
          f"resume_projection (unfixed) retried the failed event in "
          f"{took if took is None else round(took, 3)} s (it woke the worker)",
          f"not within {LOST_AFTER:g} s: the worker ran before resume_projection committed?")
    ok, took = wait_projection(c, "t2", 20)
    st = projection_status(c, "t2")
    eq((ok, st["state"], st["error_position"]), (False, "paused", poison_position),
       "t2 resumed unfixed: (caught up, state, error_position)")

    c.execute("""
        CREATE OR REPLACE FUNCTION t2_handle(e amebo.events) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.t2_applied (event_id, position) VALUES (e.event_id, e.position);
        END $$;
    """)
    c.execute("SELECT amebo.resume_projection('t2')")
    took = poll_until(c, "SELECT state = 'running' AND lag_events = 0 "
                         "FROM amebo.projection_status WHERE name = 't2'")
    check(took is not None,
          f"t2 caught up {took if took is None else round(took, 3)} s after the fixed handler "
          f"and resume_projection (it woke the worker)",
          f"not within {LOST_AFTER:g} s: the worker ran before resume_projection committed?")
    ok, took = wait_projection(c, "t2")
    check(ok, f"wait_for_projection(t2) after {took:.2f} s")
    st = projection_status(c, "t2")
    eq((st["state"], st["lag_events"], st["error"], st["error_position"], st["error_at"]),
       ("running", 0, None, None, None),
       "t2 (state, lag_events, error, error_position, error_at)")
    check_applied_exactly(c, "t2_applied", "t2 after resume")
    ids = before + [poison] + after + later
    eq(one(c, "SELECT count(*) FROM t2_applied WHERE event_id = ANY(%s::uuid[])", (ids,)),
       len(ids), "t2 applied the 14 events around the error, once each")


# ---------------------------------------------------------------------------------------
# 3. Action filters, rebuild with since

def section_filters(c):
    c.execute("""
        CREATE TABLE t3_applied (event_id uuid PRIMARY KEY, position bigint NOT NULL,
                                 action text NOT NULL, seq bigserial NOT NULL);
        CREATE FUNCTION t3_handle(e amebo.events) RETURNS void LANGUAGE sql AS $$
            INSERT INTO public.t3_applied (event_id, position, action)
            VALUES (e.event_id, e.position, e.action) $$;
        CREATE FUNCTION t3_reset() RETURNS void LANGUAGE sql AS $$ DELETE FROM public.t3_applied $$;
        CREATE TABLE t3i_applied (event_id uuid PRIMARY KEY, position bigint NOT NULL,
                                  action text NOT NULL, seq bigserial NOT NULL);
        CREATE FUNCTION t3i_handle(e amebo.events) RETURNS void LANGUAGE sql AS $$
            INSERT INTO public.t3i_applied (event_id, position, action)
            VALUES (e.event_id, e.position, e.action) $$;
    """)
    actions = ["t3.alpha", "t3.beta", "t3.gamma", "t3.delta"]
    appended = []  # (event_id, action) in append order
    for i in range(20):
        appended.append((append(c, f"t3s-{i % 3}", actions[i % 4], {"i": i}), actions[i % 4]))
    c.execute("SELECT amebo.create_projection('t3', 't3_handle(amebo.events)'::regprocedure, "
              "ARRAY['t3.alpha', 't3.gamma'], 'async', 't3_reset()'::regprocedure)")
    c.execute("SELECT amebo.create_projection('t3inline', 't3i_handle(amebo.events)'::regprocedure,"
              " ARRAY['t3.beta'])")
    inline_from = len(appended)
    inline_seen_at_once = 0
    for i in range(20, 80):
        event_id = append(c, f"t3s-{i % 3}", actions[i % 4], {"i": i})
        appended.append((event_id, actions[i % 4]))
        if actions[i % 4] == "t3.beta":
            inline_seen_at_once += one(c, "SELECT count(*) FROM t3i_applied "
                                          "WHERE event_id = %s::uuid", (event_id,))
    ok, took = wait_projection(c, "t3")
    check(ok, f"async projection t3 (alpha, gamma) caught up in {took:.2f} s")
    n = check_applied_exactly(c, "t3_applied", "t3 (actions alpha, gamma)",
                              where="action IN ('t3.alpha', 't3.gamma')")
    eq(n, sum(1 for _, a in appended if a in ("t3.alpha", "t3.gamma")),
       "t3.alpha + t3.gamma events appended")
    eq(rows(c, "SELECT DISTINCT action FROM t3_applied ORDER BY 1"),
       [("t3.alpha",), ("t3.gamma",)], "actions in t3's read model")
    eq(projection_status(c, "t3")["lag_events"], 0, "t3 lag_events")
    betas = [e for e, a in appended[inline_from:] if a == "t3.beta"]
    eq(inline_seen_at_once, len(betas),
       "t3.beta appends whose inline handler row was there right after the append")
    got = sorted(r[0] for r in rows(c, "SELECT event_id::text FROM t3i_applied"))
    check(got == sorted(betas),
          f"inline t3inline (beta) read model: the {len(betas)} beta events appended after it",
          f"got {len(got)} rows: {sample(got)}")

    # Async rebuild since the recorded_at of the 40th event.
    since_id = appended[40][0]
    since = one(c, "SELECT recorded_at FROM amebo.events WHERE event_id = %s::uuid",
                (since_id,))
    expected = {e for e, a in appended[40:] if a in ("t3.alpha", "t3.gamma")}
    replayed = one(c, "SELECT amebo.rebuild_projection('t3', %s)", (since,))
    eq(replayed, len(expected), "rebuild_projection('t3', since 40th event) count")
    got = {r[0] for r in rows(c, "SELECT event_id::text FROM t3_applied")}
    eq(got == expected, True, f"t3 read model after rebuild since: the {len(expected)} events")
    st = projection_status(c, "t3")
    max_position = one(c, "SELECT max(position) FROM amebo.events")
    check(st["state"] == "running" and st["position"] >= max_position and st["lag_events"] == 0,
          f"t3 after async rebuild: running, checkpoint {st['position']} >= {max_position}, "
          f"lag 0", repr(st))
    new_id = append(c, "t3s-0", "t3.alpha", {"after": "rebuild"})
    ok, _ = wait_projection(c, "t3")
    got = {r[0] for r in rows(c, "SELECT event_id::text FROM t3_applied")}
    eq(ok and got == expected | {new_id}, True, "t3 applies a new alpha after the rebuild")


# ---------------------------------------------------------------------------------------
# 4 and 5. Rebuild progress, cancellation, completion; an inline rebuild blocks appends

def section_rebuild(c):
    c.execute("""
        CREATE TABLE t4_applied (event_id uuid PRIMARY KEY, position bigint NOT NULL);
        CREATE FUNCTION t4_handle(e amebo.events) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_sleep(coalesce(nullif(current_setting('t4.sleep', true), ''), '0')::float8);
            INSERT INTO public.t4_applied (event_id, position) VALUES (e.event_id, e.position);
        END $$;
        CREATE FUNCTION t4_reset() RETURNS void LANGUAGE sql AS $$ DELETE FROM public.t4_applied $$;
    """)
    c.execute("SELECT count(amebo.append_event('t4tick-' || (i %% 10), 't4.tick', "
              "jsonb_build_object('n', i))) FROM generate_series(1, %s) i", (REBUILD_EVENTS,))
    c.execute("SELECT amebo.create_projection('t4', 't4_handle(amebo.events)'::regprocedure, "
              "ARRAY['t4.tick'], 'inline', 't4_reset()'::regprocedure)")
    eq(one(c, "SELECT amebo.rebuild_projection('t4')"), REBUILD_EVENTS,
       "first rebuild_projection('t4') count (fast handler)")
    check_applied_exactly(c, "t4_applied", "t4 after the first rebuild",
                          where="action = 't4.tick'", ordered=False)
    c.execute("INSERT INTO t4_applied VALUES (gen_random_uuid(), -1)")  # the reset deletes it
    model_before = set(rows(c, "SELECT event_id::text, position FROM t4_applied"))

    a = db()
    a_pid = one(a, "SELECT pg_backend_pid()")
    a.execute("SET t4.sleep = '0.002'")
    rebuild = Background(lambda: one(a, "SELECT amebo.rebuild_projection('t4')"))
    rebuild.start()
    samples, progress_rows, concurrent_counts = [], [], set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not rebuild.finished():
        st = projection_status(c, "t4")
        if st["rebuild_replayed"] is not None:
            samples.append((st["rebuild_replayed"], st["rebuild_total"], st["rebuild_pid"]))
            progress_rows += rows(c, "SELECT pid, projection, replayed, total, started_at "
                                     "FROM amebo.rebuild_progress()")
            concurrent_counts.add(one(c, "SELECT count(*) FROM t4_applied"))
        positives = sorted({s[0] for s in samples if s[0] > 0})
        if len(positives) >= 3:
            break
        time.sleep(0.05)
    running_at_cancel = not rebuild.finished()
    replayed = [s[0] for s in samples]
    check(len({r for r in replayed if r > 0}) >= 3 and replayed == sorted(replayed),
          f"projection_status.rebuild_replayed rose while rebuilding: {sorted(set(replayed))}")
    eq({(s[1], s[2]) for s in samples}, {(REBUILD_EVENTS, a_pid)},
       "projection_status (rebuild_total, rebuild_pid) while rebuilding")
    eq({(r[0], r[1], r[3], r[4] is not None) for r in progress_rows},
       {(a_pid, "t4", REBUILD_EVENTS, True)},
       "rebuild_progress() (pid, projection, total, started_at set) while rebuilding")
    eq(concurrent_counts, {REBUILD_EVENTS + 1},
       "t4_applied row counts seen by another session while rebuilding (the old model)")
    check(running_at_cancel, "the rebuild still ran when cancelled")
    eq(one(c, "SELECT pg_cancel_backend(%s)", (a_pid,)), True, "pg_cancel_backend")
    rebuild.join(30)
    eq(getattr(rebuild.error, "sqlstate", repr(rebuild.error)), "57014",
       "the cancelled rebuild's SQLSTATE")
    eq(rows(c, "SELECT * FROM amebo.rebuild_progress()"), [],
       "rebuild_progress() after the cancellation")
    st = projection_status(c, "t4")
    eq((st["rebuild_replayed"], st["rebuild_total"], st["rebuild_pid"]), (None, None, None),
       "projection_status rebuild columns after the cancellation")
    model_after = set(rows(c, "SELECT event_id::text, position FROM t4_applied"))
    eq(model_after == model_before, True,
       f"t4 read model unchanged by the cancelled rebuild ({len(model_after)} rows, "
       f"the reset rolled back)")

    # 5. A rebuild to completion on the same backend; an append started meanwhile waits.
    a.execute("SET t4.sleep = '0.001'")
    rebuild = Background(lambda: one(a, "SELECT amebo.rebuild_projection('t4')"))
    rebuild.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not rebuild.finished():
        st = projection_status(c, "t4")
        if st["rebuild_replayed"] and st["rebuild_replayed"] >= 100:
            break
        time.sleep(0.02)
    replayed_at_append = projection_status(c, "t4")["rebuild_replayed"]
    b = db()
    b_pid = one(b, "SELECT pg_backend_pid()")
    late_id = str(uuid.uuid4())
    late = Background(lambda: append(b, "t4tick-late", "t4.tick", {"late": True}, late_id))
    late.start()
    time.sleep(0.5)
    wait_event = one(c, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (b_pid,))
    replayed_later = projection_status(c, "t4")["rebuild_replayed"]
    rebuild_was_running = not rebuild.finished()
    check(rebuild_was_running and not late.finished() and wait_event == "Lock",
          f"an append started during the inline rebuild waits on a lock "
          f"(rebuild progress {replayed_at_append} -> {replayed_later} meanwhile)",
          f"rebuild running {rebuild_was_running}, append finished {late.finished()}, "
          f"wait_event_type {wait_event}")
    rebuild.join(60)
    late.join(30)
    eq((rebuild.error, rebuild.result), (None, REBUILD_EVENTS),
       "rebuild_projection('t4') to completion: (error, count)")
    eq(late.error, None, "the waiting append's error")
    if late.finished() and rebuild.finished():
        check(late.ended_at - late.started_at > 0.4,
              f"the append waited {late.ended_at - late.started_at:.2f} s, until the rebuild "
              f"committed")
    check_applied_exactly(c, "t4_applied", "t4 after the rebuild and the waiting append",
                          where="action = 't4.tick'", ordered=False)
    eq(one(c, "SELECT count(*) FROM t4_applied WHERE position = -1"), 0,
       "the sentinel row is gone (the completed rebuild's reset ran)")
    st = projection_status(c, "t4")
    eq((st["rebuild_replayed"], len(rows(c, "SELECT * FROM amebo.rebuild_progress()"))),
       (None, 0), "rebuild progress after completion (projection_status, rebuild_progress rows)")
    a.close()
    b.close()


# ---------------------------------------------------------------------------------------
# 6. The worker across DROP/CREATE EXTENSION, a reload and a change of database

def create_t6(conn):
    conn.execute("""
        CREATE TABLE IF NOT EXISTS t6_applied (event_id uuid PRIMARY KEY,
                                               position bigint NOT NULL,
                                               seq bigserial NOT NULL);
        CREATE FUNCTION t6_handle(e amebo.events) RETURNS void LANGUAGE sql AS $$
            INSERT INTO public.t6_applied (event_id, position) VALUES (e.event_id, e.position) $$;
        SELECT amebo.create_projection('t6', 't6_handle(amebo.events)'::regprocedure,
                                       mode => 'async');
    """)


def wait_worker_database(conn, database, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        status = worker_status(conn)
        if status and status[0][1] == database and status[0][3] is not None:
            return status[0], time.monotonic() - t0
        time.sleep(0.1)
    return (worker_status(conn) or [None])[0], time.monotonic() - t0


def section_lifecycle(c):
    # The earlier projections hold every event, once, before the extension goes.
    for name, table in (("t1", "t1_applied"), ("t2", "t2_applied")):
        ok, _ = wait_projection(c, name)
        check(ok, f"{name} caught up before DROP EXTENSION")
        check_applied_exactly(c, table, f"{name} at the end (every event of sections 1-5)")

    pid_before = worker_status(c)[0][0]
    c.execute("DROP EXTENSION amebo CASCADE")
    dropped_at = one(c, "SELECT clock_timestamp()")
    c.execute("SELECT pg_reload_conf()")  # sets its latch: a pass without the extension
    time.sleep(1.0)
    eq(worker_backends(c), [(pid_before, "postgres")],
       "amebo worker in pg_stat_activity 1 s after DROP EXTENSION amebo CASCADE and a reload")
    c.execute("CREATE EXTENSION amebo")
    last_run_at = worker_status(c)[0][3]
    check(last_run_at is not None and last_run_at > dropped_at,
          "the worker ran a pass while the extension was dropped (last_run_at after the drop)",
          f"last_run_at {last_run_at}, dropped at {dropped_at}")
    status = worker_status(c)
    check(len(status) == 1 and status[0][1] == "postgres"
          and worker_backends(c) == [(status[0][0], "postgres")],
          f"worker_status() after CREATE EXTENSION: pid {status[0][0] if status else None} "
          f"(before {pid_before}) running, database postgres", repr(status))
    eq(one(c, "SELECT amebo.wait_for_worker(10)"), True, "wait_for_worker after re-create")
    c.execute("SELECT pg_sleep(0.2), amebo.wake_worker()")  # it knows of no projections
    ids = [append(c, f"t6s-{i % 4}", "t6.x", {"i": i}) for i in range(30)]
    create_t6(c)
    took = poll_until(c, "SELECT count(*) = 30 FROM t6_applied")
    check(took is not None,
          f"new async projection t6 after re-create caught up on 30 events in "
          f"{took if took is None else round(took, 3)} s without wait_for_projection",
          f"not within {LOST_AFTER:g} s: the worker missed the new projection until its timer")
    ids.append(append(c, "t6s-first", "t6.x", {}))
    took = poll_until(c, "SELECT count(*) = 1 FROM t6_applied WHERE event_id = %s::uuid",
                      (ids[-1],))
    check(took is not None,
          f"the first append after create_projection applied in "
          f"{took if took is None else round(took, 3)} s (its commit woke the worker)",
          f"not within {LOST_AFTER:g} s")
    ok, took = wait_projection(c, "t6")
    check(ok, f"wait_for_projection(t6) after re-create: {took:.2f} s")
    check_applied_exactly(c, "t6_applied", "t6 after re-create")
    with db() as poll:
        measure_latency(c, poll, "t6_applied", "lat-6", 5, "t6 after re-create")

    # An inline projection after re-create, from a session that cached the old ones.
    c.execute("""
        CREATE TABLE t6i_applied (event_id uuid PRIMARY KEY, position bigint NOT NULL);
        CREATE FUNCTION t6i_handle(e amebo.events) RETURNS void LANGUAGE sql AS $$
            INSERT INTO public.t6i_applied VALUES (e.event_id, e.position) $$;
    """)
    with db() as other_session:
        other_session.execute("SELECT amebo.create_projection('t6inline', "
                              "'t6i_handle(amebo.events)'::regprocedure)")
    inline_id = append(c, "t6s-i", "t6.x", {})
    eq(one(c, "SELECT count(*) FROM t6i_applied WHERE event_id = %s::uuid", (inline_id,)), 1,
       "inline projection created after re-create runs in a session that appended before")

    # A reload keeps the worker.
    pid = worker_status(c)[0][0]
    c.execute("SELECT pg_reload_conf()")
    time.sleep(1.0)
    eq([(s[0], s[1]) for s in worker_status(c)], [(pid, "postgres")],
       "worker_status (pid, database) 1 s after pg_reload_conf()")
    with db() as poll:
        measure_latency(c, poll, "t6_applied", "lat-6", 5, "t6 after a reload")

    # Another database.
    c.execute("CREATE DATABASE other")
    o = db("other")
    o.execute("CREATE EXTENSION amebo")
    create_t6(o)
    for i in range(20):
        append(o, f"o6s-{i % 3}", "t6.x", {"i": i})
    c.execute("ALTER SYSTEM SET amebo.database_name = 'other'")
    c.execute("SELECT pg_reload_conf()")
    status, took = wait_worker_database(o, "other", 15)
    check(status is not None and status[1] == "other" and status[0] != pid,
          f"worker_status() after amebo.database_name = 'other': pid {status and status[0]} "
          f"(was {pid}), database other, after {took:.2f} s", repr(status))
    eq(worker_backends(o), [(status[0] if status else None, "other")],
       "pg_stat_activity's amebo worker (pid, datname)")
    ok, took = wait_projection(o, "t6")
    check(ok, f"t6 in database other caught up in {took:.2f} s")
    check_applied_exactly(o, "t6_applied", "t6 in database other")
    with db("other") as poll:
        measure_latency(o, poll, "t6_applied", "lat-o", 5, "t6 in database other")
    # Database postgres is not served now.
    away_id = append(c, "t6s-away", "t6.x", {})
    ok, _ = wait_projection(c, "t6", 2)
    applied = one(c, "SELECT count(*) FROM t6_applied WHERE event_id = %s::uuid", (away_id,))
    eq((ok, applied), (False, 0), "postgres's t6 while the worker serves other: "
                                  "(wait_for_projection(2 s), event applied)")

    # And back.
    c.execute("ALTER SYSTEM RESET amebo.database_name")
    c.execute("SELECT pg_reload_conf()")
    status, took = wait_worker_database(c, "postgres", 15)
    check(status is not None and status[1] == "postgres",
          f"worker back on database postgres after {took:.2f} s", repr(status))
    ok, took = wait_projection(c, "t6")
    check(ok, f"t6 in postgres caught up on the event appended meanwhile in {took:.2f} s")
    check_applied_exactly(c, "t6_applied", "t6 in postgres at the end")
    o.close()


# ---------------------------------------------------------------------------------------

def show_worker_log():
    """Prints the server log's lines about the worker (start, exit, its own messages)."""
    if not args.log or not os.path.exists(args.log):
        return
    with open(args.log, encoding="utf-8", errors="replace") as f:
        lines = [l.rstrip() for l in f if "amebo worker" in l]
    print(f"--- server log lines about the amebo worker ({len(lines)}):")
    for line in lines[-12:]:
        print("    " + line)


def main():
    print(f"projections test: seed {SEED}, {args.writers} writers x {args.appends} appends "
          f"over {args.streams} streams")
    t_start = time.monotonic()
    c = db()
    sections = [("1. worker, catch-up, concurrent writers, latency", section_worker),
                ("2. handler error, pause, resume", section_handler_error),
                ("3. action filters, rebuild since", section_filters),
                ("4+5. rebuild progress, cancellation, blocking appends", section_rebuild),
                ("6. worker across DROP/CREATE EXTENSION, reload, database change",
                 section_lifecycle)]
    for title, fn in sections:
        print(f"== {title}", flush=True)
        t0 = time.monotonic()
        try:
            fn(c)
        except Exception:  # noqa: BLE001
            checks.check(False, f"section {title} raised", traceback.format_exc())
            if c.closed or c.broken:
                c = db()
        print(f"   ({time.monotonic() - t0:.1f} s)", flush=True)
    show_worker_log()
    total = time.monotonic() - t_start
    if checks.failed:
        print(f"FAILED: {len(checks.failed)} of {checks.passed + len(checks.failed)} checks "
              f"failed ({total:.1f} s, seed {SEED}):")
        for what in checks.failed:
            print(f"  - {what}")
        return 1
    print(f"all {checks.passed} checks passed ({total:.1f} s, seed {SEED})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
