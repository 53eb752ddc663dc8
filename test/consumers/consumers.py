"""Pull consumers under fire (test/scripts/consumers.sh).

Four appenders write jobs to 40 streams in transactions that roll back at random or commit
late (after a later position committed); a consumer with four members is served by worker
sessions that poll, write a read model and ack in one transaction, nack now and then, and
are terminated at random in the middle of their leases. Then: every committed job was
handed out at least once and written to the read model exactly once, no rolled-back job
was, each stream's jobs went into the read model in version order, and nothing is left in
flight. Also: a poison event is parked after max_retries and replayed; NOTIFY arrives for a
commit that adds an event a consumer takes, and not for a rollback or an untaken action.
"""

import argparse
import random
import select
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from checks import Checks  # noqa: E402

MEMBERS = 4
STREAMS = 40
LEASE = "1 second"


def connect(args, autocommit=True):
    return psycopg.connect(host=args.host, port=args.port, dbname="postgres", user="postgres",
                           autocommit=autocommit, options="-c statement_timeout=60000")


# Waits up to timeout seconds for notifications on a LISTENing connection; returns payloads.
def notifications(conn, timeout):
    got = []
    deadline = time.monotonic() + timeout
    while True:
        conn.pgconn.consume_input()
        while (n := conn.pgconn.notifies()) is not None:
            got.append(n.extra.decode())
        left = deadline - time.monotonic()
        if left <= 0:
            return got
        select.select([conn.fileno()], [], [], left)


class Appenders:
    """Appends jobs in transactions of 1 to 3 events; a fifth roll back, some commit late."""

    def __init__(self, args, seed):
        self.args = args
        self.rng = random.Random(seed)
        self.committed = {}  # event_id -> (stream, version)
        self.rolled_back = set()
        self.lock = threading.Lock()
        self.errors = []

    def run(self, n):
        rng = random.Random(self.rng.random())
        with connect(self.args, autocommit=False) as conn:
            for _ in range(self.args.transactions):
                ids = []
                try:
                    # Streams in one order in every transaction: appenders never deadlock.
                    streams = sorted(rng.randrange(STREAMS) for _ in range(rng.randint(1, 3)))
                    for stream in (f"job-{s}" for s in streams):
                        event_id = str(uuid.uuid4())
                        conn.execute("SELECT amebo.append_event(%s, 'job.done', %s, NULL, NULL, %s)",
                                     (stream, psycopg.types.json.Jsonb({"by": n}), event_id))
                        ids.append(event_id)
                    if rng.random() < 0.3:
                        time.sleep(rng.uniform(0.005, 0.05))  # a late commit
                    if rng.random() < 0.2:
                        conn.rollback()
                        with self.lock:
                            self.rolled_back.update(ids)
                    else:
                        conn.commit()
                        with self.lock:
                            for event_id in ids:
                                self.committed[event_id] = None
                except psycopg.Error as e:
                    self.errors.append(str(e))
                    conn.rollback()


class Workers:
    """Worker sessions, two per member: poll, write the read model and ack (in one transaction,
    or the poll in one of its own), nack now and then, sometimes too slow for the lease."""

    def __init__(self, args, seed):
        self.args = args
        self.rng = random.Random(seed)
        self.handed_out = {}  # event_id -> times handed out
        self.pids = {}  # worker -> backend pid
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.kills = 0
        self.nacks = 0
        self.lost_acks = 0
        self.errors = []

    def serve(self, worker, member):
        rng = random.Random(self.rng.random())
        while not self.stop.is_set():
            try:
                with connect(self.args, autocommit=False) as conn:
                    conn.execute("LISTEN amebo_consumer")
                    conn.commit()
                    with self.lock:
                        self.pids[worker] = conn.info.backend_pid
                    self.loop(conn, member, rng)
            except psycopg.OperationalError:
                continue  # terminated: a new session takes over
            except psycopg.Error as e:
                self.errors.append(f"worker {worker}: {e}")
                return

    def loop(self, conn, member, rng):
        while not self.stop.is_set():
            rows = conn.execute(
                "SELECT event_id::text, stream, version, attempt FROM amebo.poll('workers', %s, 20, %s)",
                (member, LEASE)).fetchall()
            with self.lock:
                for event_id, *_ in rows:
                    self.handed_out[event_id] = self.handed_out.get(event_id, 0) + 1
            if not rows:
                conn.commit()
                notifications(conn, 0.2)  # LISTEN wakes the worker
                continue
            if rng.random() < 0.5:
                # The lease in its own transaction (the other session of the member may poll
                # meanwhile); otherwise poll, writes and ack share one.
                conn.commit()
            try:
                self.process(conn, member, rng, rows)
            except psycopg.Error as e:
                if e.sqlstate not in ("AM009", "40P01"):
                    raise
                # Our lease ended and another session of the member acknowledged or gave back
                # the event first (AM009), or that session, re-leasing our expired events,
                # and we locked the same events in opposite orders (40P01): drop our writes.
                conn.rollback()
                self.lost_acks += 1

    def process(self, conn, member, rng, rows):
        """Writes the read model for the batch and acknowledges it in the same transaction,
        giving back an event now and then (with the later ones of its stream)."""
        acked, failed_streams = [], set()
        for event_id, stream, version, attempt in rows:
            if stream in failed_streams or rng.random() < 0.03:
                # A failure: this event and the later ones of its stream go back.
                failed_streams.add(stream)
                conn.execute("SELECT amebo.nack('workers', %s, %s, '20 milliseconds')",
                             (member, event_id))
                self.nacks += 1
                continue
            conn.execute("INSERT INTO read_model (event_id, stream, version, member, attempt) "
                         "VALUES (%s, %s, %s, %s, %s)", (event_id, stream, version, member, attempt))
            acked.append(event_id)
        if rng.random() < 0.05:
            time.sleep(rng.uniform(0.5, 1.5))  # slow: the lease may end meanwhile
        if acked:
            conn.execute("SELECT amebo.ack('workers', %s, %s::uuid[])", (member, acked))
        conn.commit()

    def kill_at_random(self, args, until):
        rng = random.Random(self.rng.random())
        with connect(args) as conn:
            while not until.is_set():
                time.sleep(rng.uniform(0.1, 0.4))
                with self.lock:
                    pid = rng.choice(list(self.pids.values())) if self.pids else None
                if pid is not None:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    self.kills += 1


def check_load(args, checks):
    admin = connect(args)
    admin.execute("SELECT amebo.create_consumer('workers', ARRAY['job.done'], %s, 1000)", (MEMBERS,))
    admin.execute("CREATE TABLE read_model (seq bigserial PRIMARY KEY, event_id uuid NOT NULL, "
                  "stream text NOT NULL, version bigint NOT NULL, member integer NOT NULL, "
                  "attempt integer NOT NULL)")
    appenders = Appenders(args, args.seed)
    workers = Workers(args, args.seed + 1)
    appending = [threading.Thread(target=appenders.run, args=(n,)) for n in range(4)]
    serving = [threading.Thread(target=workers.serve, args=(w, w % MEMBERS)) for w in range(MEMBERS * 2)]
    killing_done = threading.Event()
    killer = threading.Thread(target=workers.kill_at_random, args=(args, killing_done))
    for t in appending + serving + [killer]:
        t.start()
    for t in appending:
        t.join()
    killing_done.set()
    killer.join()
    # Let the workers finish: every member caught up, nothing in flight.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = admin.execute("SELECT sum(lag_events + leased + waiting + held + parked) "
                             "FROM amebo.consumer_status WHERE consumer = 'workers'").fetchone()[0]
        if left == 0:
            break
        time.sleep(0.2)
    workers.stop.set()
    for t in serving:
        t.join()
    checks.eq(appenders.errors + workers.errors, [], "no unexpected errors")
    committed = set(appenders.committed)
    print(f"  {len(committed)} jobs committed, {len(appenders.rolled_back)} rolled back; "
          f"{workers.kills} sessions terminated, {workers.nacks} nacks, "
          f"{workers.lost_acks} acks lost to another session", flush=True)
    checks.check(workers.kills > 0 and workers.nacks > 0, "workers were killed and nacked")
    status = admin.execute("SELECT member, lag_events, leased, waiting, held, parked "
                           "FROM amebo.consumer_status WHERE consumer = 'workers' ORDER BY member").fetchall()
    checks.eq(status, [(m, 0, 0, 0, 0, 0) for m in range(MEMBERS)], "every member caught up, nothing in flight")
    missing = [e for e in committed if workers.handed_out.get(e, 0) < 1]
    checks.eq(len(missing), 0, "committed jobs never handed out")
    rows = admin.execute("SELECT event_id::text, stream, version, member FROM read_model ORDER BY seq").fetchall()
    counts = {}
    for event_id, *_ in rows:
        counts[event_id] = counts.get(event_id, 0) + 1
    checks.eq(sorted(counts) == sorted(committed), True, "the read model holds every committed job")
    checks.eq(sum(1 for c in counts.values() if c != 1), 0, "jobs written twice")
    checks.eq(len(set(counts) & appenders.rolled_back), 0, "rolled-back jobs in the read model")
    last_version, out_of_order, wrong_member = {}, 0, 0
    members = dict(admin.execute("SELECT s, amebo.consumer_member(s, %s) FROM "
                                 "(SELECT DISTINCT stream FROM amebo.events) x(s)", (MEMBERS,)).fetchall())
    for _event_id, stream, version, member in rows:
        if version <= last_version.get(stream, 0):
            out_of_order += 1
        last_version[stream] = version
        wrong_member += members[stream] != member
    checks.eq(out_of_order, 0, "jobs written out of their stream's order")
    checks.eq(wrong_member, 0, "jobs handled by another member than consumer_member()")
    redelivered = sum(1 for c in workers.handed_out.values() if c > 1)
    print(f"  {redelivered} jobs handed out more than once (expired leases, nacks)", flush=True)
    admin.close()


def check_parking(args, checks):
    admin = connect(args)
    admin.execute("SELECT amebo.create_consumer('poison', ARRAY['poison.pill', 'poison.ok'], 1, 2)")
    admin.execute("SELECT amebo.append_event('pill-1', 'poison.pill', '{}')")
    admin.execute("SELECT amebo.append_event('pill-1', 'poison.ok', '{}')")
    admin.execute("SELECT amebo.append_event('pill-2', 'poison.ok', '{}')")
    handled, attempts = [], []
    for _ in range(10):
        for event_id, action, attempt in admin.execute(
                "SELECT event_id, action, attempt FROM amebo.poll('poison')").fetchall():
            if action == "poison.pill":
                attempts.append(attempt)
                admin.execute("SELECT amebo.nack('poison', 0, %s)", (event_id,))
            else:
                handled.append(action)
                admin.execute("SELECT amebo.ack('poison', 0, %s)", ([event_id],))
    checks.eq(attempts, [1, 2, 3], "the poison event's attempts before it is parked (max_retries 2)")
    checks.eq(handled, ["poison.ok", "poison.ok"], "the other events went on")
    parked = admin.execute("SELECT stream, action, attempts FROM amebo.consumer_parked").fetchall()
    checks.eq(parked, [("pill-1", "poison.pill", 3)], "consumer_parked")
    checks.eq(admin.execute("SELECT amebo.replay_parked('poison')").fetchone()[0], 1, "replay_parked")
    again = admin.execute("SELECT action, attempt FROM amebo.poll('poison')").fetchall()
    checks.eq(again, [("poison.pill", 1)], "the replayed event goes out again")
    admin.close()


def check_notify(args, checks):
    admin = connect(args)
    listener = connect(args)
    listener.execute("LISTEN amebo_consumer")
    app = connect(args, autocommit=False)
    # The appender's cache of consumers is loaded (empty) before the consumer exists.
    app.execute("SELECT amebo.append_event('note-0', 'note.taken', '{}')")
    app.commit()
    checks.eq(notifications(listener, 0.3), [], "no NOTIFY without a consumer")
    admin.execute("SELECT amebo.create_consumer('listener', ARRAY['note.taken'])")
    app.execute("SELECT amebo.append_event('note-1', 'note.taken', '{}')")
    app.execute("SELECT amebo.append_event('note-2', 'note.taken', '{}')")
    app.commit()
    checks.eq(sorted(set(notifications(listener, 0.5)) - {"workers", "poison"}), ["listener"],
              "NOTIFY for a commit of taken events")
    app.execute("SELECT amebo.append_event('note-1', 'note.taken', '{}')")
    app.rollback()
    checks.eq([p for p in notifications(listener, 0.5) if p == "listener"], [], "no NOTIFY for a rollback")
    app.execute("SELECT amebo.append_event('note-3', 'note.ignored', '{}')")
    app.commit()
    checks.eq([p for p in notifications(listener, 0.5) if p == "listener"], [], "no NOTIFY for an untaken action")
    app.execute("SELECT amebo.append_event('note-1', 'note.taken', '{}')")
    app.execute("SAVEPOINT s")
    app.execute("SELECT amebo.append_event('note-1', 'note.taken', '{}')")
    app.execute("ROLLBACK TO SAVEPOINT s")
    app.commit()
    checks.eq([p for p in notifications(listener, 0.5) if p == "listener"], ["listener"],
              "one NOTIFY per transaction")
    # The cache follows the consumers: a dropped consumer is not notified any more.
    admin.execute("SELECT amebo.drop_consumer('listener')")
    app.execute("SELECT amebo.append_event('note-4', 'note.taken', '{}')")
    app.commit()
    checks.eq([p for p in notifications(listener, 0.5) if p == "listener"], [], "no NOTIFY after drop_consumer")
    for conn in (admin, listener, app):
        conn.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transactions", type=int, default=500)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    print(f"seed {args.seed}", flush=True)
    checks = Checks()
    check_notify(args, checks)
    check_parking(args, checks)
    check_load(args, checks)
    print(f"{checks.passed} checks passed, {len(checks.failed)} failed", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
