"""Crash test of amebo (run by test/scripts/crash.sh).

Each cycle starts a few appenders on a handful of streams (expected versions, batches,
transactions that commit or roll back, recording every append whose commit the client saw
succeed), waits until appends are in flight, and crashes the server: the first cycle kills
one appending backend with SIGKILL (the postmaster then reinitializes by itself), the others
SIGKILL the postmaster and all its children and start the cluster again. After each restart:
no open append is listed, every stream holds versions 1..n, every acknowledged append is
stored at the version the client was given, nothing known to be rolled back is stored, an
append whose outcome the crash hid is stored entirely or not at all, read_all from 0 returns
the whole table, a read_all consumer that paged across the crash has missed nothing, retries
of the unknown appends with their event ids are idempotent, and appends go on at the right
versions and positions.
"""
import argparse
import os
import random
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import Counter

import psycopg
from psycopg.types.json import Jsonb

from common import EVENT_COLUMNS, Failures, check_store, connect, sqlstate

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import server_crash  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--pg-bin", required=True)
parser.add_argument("--dir", required=True,
                    help="cluster directory (data in DIR/data, socket in DIR)")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--cycles", type=int, default=5,
                    help="1st: pg_terminate_backend, 2nd: SIGKILL of a backend, "
                         "others: SIGKILL of the postmaster and its children")
parser.add_argument("--clients", type=int, default=4)
parser.add_argument("--streams", type=int, default=5)
parser.add_argument("--seed", type=int,
                    default=int(os.environ.get("AMEBO_CRASH_SEED", "0")) or None)
args = parser.parse_args()
args.host = args.dir

seed = args.seed if args.seed is not None else random.randrange(1, 1 << 30)
rng = random.Random(seed)
STREAMS = [f"account-{i}" for i in range(args.streams)]
DATA = os.path.join(args.dir, "data")
fail = Failures()


class Ev:
    __slots__ = ("tag", "event_id", "action", "payload")

    def __init__(self, tag, r):
        self.tag = tag
        self.event_id = str(uuid.UUID(int=r.getrandbits(128), version=4))
        self.action = r.choice(["Deposited", "Withdrawn"])
        self.payload = {"tag": tag, "amount": r.randint(1, 500)}


class Group:
    """The events of one transaction (one autocommit call, or BEGIN ... COMMIT).

    state: "acked" (the client saw the commit), "absent" (rolled back, conflicted, or cut
    off before COMMIT was sent), "uncertain" (the crash hid whether the commit happened).
    calls: [stream, events, version returned or None]."""

    def __init__(self):
        self.calls = []
        self.state = None

    def events(self):
        for stream, events, version in self.calls:
            for i, e in enumerate(events):
                yield stream, e, (None if version is None else version - len(events) + 1 + i)


def stream_version(conn, stream):
    return conn.execute("SELECT amebo.stream_version(%s)", (stream,)).fetchone()[0]


def call_append(conn, stream, events, expected, r=rng):
    if len(events) == 1 and r.random() < 0.7:
        e = events[0]
        sql = "SELECT amebo.append_event(%s, %s, %s, %s::bigint, NULL, %s::uuid)"
        params = (stream, e.action, Jsonb(e.payload), expected, e.event_id)
    else:
        sql = "SELECT amebo.append_events(%s, %s, %s::bigint)"
        params = (stream, Jsonb([{"action": e.action, "payload": e.payload,
                                  "event_id": e.event_id} for e in events]), expected)
    return conn.execute(sql, params).fetchone()[0]


class Crashed(Exception):
    pass


class Appender:
    def __init__(self, cycle, aid, crashing, stop):
        self.cycle, self.aid, self.crashing, self.stop = cycle, aid, crashing, stop
        self.r = random.Random(rng.getrandbits(64))
        self.groups = []
        self.seq = 0
        self.pid = None
        self.stats = Counter()
        self.conn = None

    def new_events(self, n):
        out = []
        for _ in range(n):
            self.seq += 1
            out.append(Ev(f"c{self.cycle}-a{self.aid}-{self.seq}", self.r))
        return out

    def do(self, fn, *a):
        """Runs a statement; an error after the crash began ends the appender."""
        try:
            return fn(*a)
        except psycopg.Error as exc:
            if sqlstate(exc) == "AM001":
                raise
            if self.crashing.is_set():
                raise Crashed() from exc
            raise

    def append(self, group, stream, events, in_tx):
        expected = None
        r = self.r.random()
        if r < 0.7:
            expected = self.do(stream_version, self.conn, stream)
        elif r < 0.8:
            expected = self.r.randint(0, 3)
        call = [stream, events, None]
        group.calls.append(call)
        version = self.do(call_append, self.conn, stream, events, expected, self.r)
        if expected is not None and version != expected + len(events):
            fail.add(f"{events[0].tag}: expected version {expected}, {len(events)} events, "
                     f"returned {version}")
        call[2] = version

    def op(self):
        group = Group()
        self.groups.append(group)
        if self.r.random() < 0.5:
            stream = self.r.choice(STREAMS)
            try:
                self.append(group, stream, self.new_events(self.r.randint(1, 3)), False)
            except Crashed:
                group.state = "uncertain" if group.calls else "absent"
                raise
            except psycopg.Error as exc:
                if sqlstate(exc) != "AM001":
                    raise
                self.stats["conflicts"] += 1
                group.state = "absent"
                return
            group.state = "acked"
            return
        streams = sorted(self.r.sample(STREAMS, self.r.randint(1, 2)))
        try:
            self.do(self.conn.execute, "BEGIN")
            for stream in streams:
                for _ in range(self.r.randint(1, 2)):
                    self.append(group, stream, self.new_events(self.r.randint(1, 2)), True)
                time.sleep(self.r.uniform(0, 0.01))
        except Crashed:
            group.state = "absent"  # COMMIT was never sent
            raise
        except psycopg.Error as exc:
            if sqlstate(exc) != "AM001":
                raise
            self.stats["conflicts"] += 1
            group.state = "absent"
            self.do(self.conn.execute, "ROLLBACK")
            return
        if self.r.random() < 0.15:
            group.state = "absent"
            self.stats["rollbacks"] += 1
            self.do(self.conn.execute, "ROLLBACK")
            return
        try:
            self.do(self.conn.execute, "COMMIT")
        except Crashed:
            group.state = "uncertain"
            raise
        group.state = "acked"

    def run(self):
        try:
            self.conn = connect(args.host, args.port)
            self.pid = self.conn.info.backend_pid
            while not self.stop.is_set():
                self.op()
        except Crashed:
            pass
        except BaseException:
            fail.add(f"appender {self.aid} (cycle {self.cycle}) failed:\n{traceback.format_exc()}")
        finally:
            if self.conn is not None:
                try:
                    self.conn.close()
                except Exception:
                    pass


class Consumer:
    """Pages read_all with after_position = last position seen, across crashes."""

    def __init__(self):
        self.last = 0
        self.seen = []

    def page(self, conn):
        rows = conn.execute(f"SELECT {EVENT_COLUMNS} FROM amebo.read_all(%s, 50)",
                            (self.last,)).fetchall()
        for row in rows:
            if row[0] <= self.last:
                fail.add(f"consumer: position {row[0]} after {self.last}")
            self.last = row[0]
        self.seen.extend(rows)
        return rows

    def run_until_crash(self, crashing, stop):
        try:
            conn = connect(args.host, args.port)
            while not stop.is_set():
                if not self.page(conn):
                    time.sleep(0.005)
            conn.close()
        except psycopg.Error:
            if not crashing.is_set():
                fail.add(f"consumer failed before the crash:\n{traceback.format_exc()}")

    def catch_up(self, conn):
        while self.page(conn):
            pass


def wait_connect(timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(args.host, args.port)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def verify(conn, groups, consumer, label):
    """Checks the store against the groups after a restart; returns (rows, counts)."""
    before = len(fail)
    rows = check_store(conn, fail)
    by_tag = {r[5]: r for r in rows}
    if len(by_tag) != len(rows):
        fail.add(f"{label}: a tag is stored twice")
    counts = Counter()
    known = set()
    for g in groups:
        evs = list(g.events())
        known.update(e.tag for _, e, _ in evs)
        present = [e.tag in by_tag for _, e, _ in evs]
        counts[g.state] += 1
        if g.state == "uncertain":
            counts["uncertain stored" if all(present) else "uncertain lost"] += 1
        for (stream, e, version), there in zip(evs, present):
            row = by_tag.get(e.tag)
            if g.state == "acked" and not there:
                fail.add(f"{label}: acknowledged event {e.tag} ({stream} v{version}) is missing")
            if g.state == "absent" and there:
                fail.add(f"{label}: event {e.tag} was never committed but is stored at "
                         f"{row[2]} v{row[3]}")
            if there and (row[1] != e.event_id or row[2] != stream
                          or (version is not None and row[3] != version)):
                fail.add(f"{label}: event {e.tag}: client saw {stream} v{version} id "
                         f"{e.event_id}, stored {row[2]} v{row[3]} id {row[1]}")
        if g.state == "uncertain" and any(present) and not all(present):
            fail.add(f"{label}: a transaction is partly stored: {sum(present)} of {len(present)}")
        if g.state == "acked":
            counts["acked events"] += len(evs)
    for tag in by_tag:
        if tag not in known:
            fail.add(f"{label}: stored event {tag} was never appended")
    # The consumer paged across the crash: everything it saw must still be stored, as seen.
    stored = {r[0]: r for r in rows}
    for row in consumer.seen:
        if stored.get(row[0]) != row:
            fail.add(f"{label}: the consumer saw {row}, now stored: {stored.get(row[0])}")
    counts["failures"] = len(fail) - before
    return rows, counts


def resume(conn, groups, rows, cycle):
    """Retries the unknown appends with their ids, then appends at each stream's head."""
    max_position = max((r[0] for r in rows), default=0)
    by_tag = {r[5]: r for r in rows}
    retried = Counter()
    for g in groups:
        if g.state != "uncertain":
            continue
        stored = all(e.tag in by_tag for _, e, _ in g.events())
        for call in g.calls:
            stream, events, _ = call
            version = call_append(conn, stream, events, None)
            if stored and version != by_tag[events[-1].tag][3]:
                fail.add(f"retry of stored {events[-1].tag} returned {version}, stored "
                         f"version {by_tag[events[-1].tag][3]}")
            call[2] = version
        g.state = "acked"
        retried["stored" if stored else "appended"] += 1
    r = random.Random(seed + cycle)
    resumed = []
    for stream in STREAMS:
        n = stream_version(conn, stream)
        if n > 0:
            try:
                call_append(conn, stream, [Ev(f"c{cycle}-stale-{stream}", r)], n - 1)
                fail.add(f"after restart: append to {stream} at stale version {n - 1} succeeded")
            except psycopg.Error as exc:
                if sqlstate(exc) != "AM001":
                    raise
        g = Group()
        events = [Ev(f"c{cycle}-resume-{stream}", r)]
        version = call_append(conn, stream, events, n)
        g.calls.append([stream, events, version])
        g.state = "acked"
        groups.append(g)
        resumed.append(events[0].tag)
        if version != n + 1:
            fail.add(f"after restart: append to {stream} at version {n} returned {version}")
    positions = conn.execute("SELECT min(position) FROM amebo.events "
                             "WHERE payload->>'tag' = ANY(%s)", (resumed,)).fetchone()[0]
    if positions is None or positions <= max_position:
        fail.add(f"after restart: new position {positions} is not above the last stored "
                 f"position {max_position}")
    retried["last position"], retried["next position"] = max_position, positions or 0
    return retried


def main():
    print(f"crash: seed {seed}, {args.cycles} cycles, {args.clients} appenders, "
          f"{len(STREAMS)} streams", flush=True)
    started = time.monotonic()
    groups = []
    consumer = Consumer()
    total = Counter()
    modes = ["terminate", "backend"]
    for cycle in range(args.cycles):
        mode = modes[cycle] if cycle < len(modes) else "postmaster"
        crashing, stop = threading.Event(), threading.Event()
        appenders = [Appender(cycle, i, crashing, stop) for i in range(args.clients)]
        threads = [threading.Thread(target=a.run, daemon=True) for a in appenders]
        consumer_thread = threading.Thread(target=consumer.run_until_crash,
                                           args=(crashing, stop), daemon=True)
        for t in threads + [consumer_thread]:
            t.start()
        time.sleep(rng.uniform(1.0, 2.0))
        # Strike while appends are in flight (positions taken, not yet committed).
        monitor = connect(args.host, args.port)
        inflight = []
        deadline = time.monotonic() + 2
        while not inflight and time.monotonic() < deadline:
            inflight = monitor.execute("SELECT pid FROM amebo.inflight_appends()").fetchall()
        crashing.set()
        pids = [p for (p,) in inflight] or [a.pid for a in appenders if a.pid]
        victim = rng.choice(pids)
        if mode == "terminate":
            monitor.execute("SELECT pg_terminate_backend(%s)", (victim,))
            how = f"pg_terminate_backend({victim})"
        elif mode == "backend":
            os.kill(victim, signal.SIGKILL)
            how = f"SIGKILL of backend {victim}"
        else:
            killed = server_crash.kill_server(DATA, args.dir, args.port)
            how = f"SIGKILL of the postmaster and {killed} children"
        stop.set()
        for t in threads + [consumer_thread]:
            t.join(60)
            if t.is_alive():
                fail.add(f"cycle {cycle}: a client did not stop")
                return 1
        if mode == "terminate":
            # The client hears of the termination before the backend has aborted.
            deadline = time.monotonic() + 10
            while monitor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                  (victim,)).fetchone() and time.monotonic() < deadline:
                time.sleep(0.01)
        try:
            monitor.close()
        except Exception:
            pass
        if mode == "postmaster":
            server_crash.start_server(args.pg_bin, DATA, os.path.join(args.dir, "server.log"))
        conn = wait_connect()
        new_groups = [g for a in appenders for g in a.groups]
        groups.extend(new_groups)
        for a in appenders:
            total.update(a.stats)
        rows, counts = verify(conn, groups, consumer, f"cycle {cycle}")
        consumer.catch_up(conn)
        retried = resume(conn, groups, rows, cycle)
        consumer.catch_up(conn)
        cycle_counts = Counter(g.state for g in new_groups)
        print(f"cycle {cycle}: {how} with {len(inflight)} appends in flight; this cycle: "
              f"{len(new_groups)} transactions, {cycle_counts['acked']} acknowledged, "
              f"{cycle_counts['absent']} rolled back or failed, "
              f"{counts['uncertain']} unknown ({counts['uncertain stored']} stored, "
              f"{counts['uncertain lost']} lost); store: {len(rows)} events, "
              f"{counts['acked events']} acknowledged events checked; retried unknown: "
              f"{retried['stored']} idempotent, {retried['appended']} appended anew; "
              f"positions go on at {retried['next position']} after {retried['last position']}; "
              f"checks failed: {counts['failures']}", flush=True)
        conn.close()
    conn = connect(args.host, args.port)
    rows, counts = verify(conn, groups, consumer, "final")
    consumer.catch_up(conn)
    if consumer.seen != rows:
        missed = sorted({r[0] for r in rows} - {r[0] for r in consumer.seen})
        fail.add(f"the read_all consumer saw {len(consumer.seen)} events, the table holds "
                 f"{len(rows)}; missed {missed[:10]}")
    conn.close()
    print(f"total: {len(groups)} transactions, {counts['acked events']} acknowledged events, "
          f"{len(rows)} stored, {total['conflicts']} version conflicts, {total['rollbacks']} "
          f"rollbacks; consumer saw {len(consumer.seen)} events across the crashes; "
          f"time {time.monotonic() - started:.1f} s")
    if fail:
        print(f"crash: FAILED ({len(fail)} failures, seed {seed})")
        return 1
    print("crash: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
