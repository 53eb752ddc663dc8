"""amebo_router on four shards and a router (run by test/scripts/router.sh).

Sections, each printing what it checked (a failed check prints FAIL and makes the exit status
1; an exception in a section fails it and the next section runs):
 1. signatures: every router function named as one of amebo's has amebo's arguments (names,
    types, defaults), result and volatility (a reducer or handler is text on the router);
    negative control: a changed volatility is found.
 2. placement: streams appended through the router sit on shard shard_of(stream), which the
    router and the shard compute alike; every shard holds some.
 3. routed results equal direct reads on the shard: read_stream, stream_version,
    load_snapshot, load_state and replay_state (with a reducer defined through the router).
 4. errors: AM001 through the router has the SQLSTATE, message, detail and hint of the same
    conflict on the shard; an idempotent retry with the same event_id appends once; an
    append_events batch with one invalid element leaves nothing; 1,000 conflicts take at
    most twice the time of 1,000 successful routed appends (no reconnect per error).
 5. merged feed: 4 writers per shard (directly on the shards, transactions rolled back at
    random and committed late) while a reader pages read_all through the router: every
    committed event seen exactly once, no rolled-back one; an open transaction on one shard
    holds back only that shard's element.
 6. one shard stopped: its streams and a merged read_all get 08006 naming it, other shards'
    streams and read_all of one shard work, a definition fails naming it (and changes no
    shard); after the restart it works again. A shard lacking a definition is reported by
    definition_differences(), and re-running it through the router converges (one secret on
    every shard); a create that differs from the shards' is refused (55000), an update or
    drop through the router brings every shard to it.
 7. projections and subscriptions: created twice through the router, they exist (and an
    inline projection runs) on every shard; update_subscription reaches every shard; a
    subscription with another handler is refused (42710); drops run twice converge.
 8. bad input: a cursor of the wrong length, a negative position, an unknown shard (22023);
    a cluster of 3 shards refused (PL/Proxy's own check of the server's options), a missing
    server refused at setup (22023); a shard given another number (55000).
"""
import argparse
import os
import random
import subprocess
import sys
import threading
import time
import traceback
import uuid

import psycopg
from psycopg.types.json import Jsonb

parser = argparse.ArgumentParser()
parser.add_argument("--work", required=True, help="folder of the shards and the router")
parser.add_argument("--router-port", type=int, required=True)
parser.add_argument("--shard-ports", required=True, help="the shards' ports, in order")
parser.add_argument("--pg-bin", required=True)
parser.add_argument("--role", default="amebo_app", help="the role applications log in as")
parser.add_argument("--seed", type=int, default=None)
args = parser.parse_args()

SEED = args.seed if args.seed is not None else random.randrange(1, 1 << 30)
SHARD_PORTS = [int(p) for p in args.shard_ports.split()]
SHARDS = len(SHARD_PORTS)
STREAM_FUNCTIONS = ["append_event", "append_events", "stream_version", "read_stream",
                    "save_snapshot", "load_snapshot", "load_state", "replay_state", "shard_of"]

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checks import Checks  # noqa: E402

checks = Checks()


# A connection to the router as the application's role.
def router(autocommit=True):
    return psycopg.connect(host="127.0.0.1", port=args.router_port, dbname="router",
                           user=args.role, autocommit=autocommit)


# A connection to the router as its superuser (to change the cluster's configuration).
def router_admin():
    return psycopg.connect(host="127.0.0.1", port=args.router_port, dbname="router",
                           user="postgres", autocommit=True)


# A direct connection to a shard (the application's role unless user is given).
def shard(number, user=None, autocommit=True):
    return psycopg.connect(host="127.0.0.1", port=SHARD_PORTS[number], dbname="amebo",
                           user=user or args.role, autocommit=autocommit)


# The error a statement raises (None when it raises none).
def error_of(conn, sql, params=None):
    try:
        conn.execute(sql, params)
    except psycopg.Error as error:
        return error
    return None


# SQLSTATE, message, detail and hint of an error.
def diagnostics(error):
    if error is None:
        return None
    d = error.diag
    return (d.sqlstate, d.message_primary, d.message_detail, d.message_hint)


# A stream name of prefix that shard_of places on shard `number`.
def stream_on(conn, number, prefix):
    for i in range(10000):
        name = f"{prefix}-{i}"
        if conn.execute("SELECT amebo.shard_of(%s)", (name,)).fetchone()[0] == number:
            return name
    raise RuntimeError(f"no stream of {prefix} on shard {number}")


# Runs pg_ctl on shard `number`'s cluster.
def pg_ctl(number, *command):
    folder = os.path.join(args.work, f"shard{number}")
    subprocess.run([os.path.join(args.pg_bin, "pg_ctl"), "-D", os.path.join(folder, "data"),
                    "-l", os.path.join(folder, "server.log"), "-w", "-t", "60", *command],
                   check=True, stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------
# 1. Signatures

SIGNATURES = """
SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_function_arguments(p.oid),
       pg_get_function_result(p.oid), p.provolatile
FROM pg_proc p WHERE p.pronamespace = 'amebo'::regnamespace AND p.proname = ANY(%s)
ORDER BY 1, 2
"""


# The signatures of amebo's functions of these names, as text (regprocedure read as text).
def signatures(conn, names):
    return [tuple(c.replace("regprocedure", "text") if isinstance(c, str) else c for c in row)
            for row in conn.execute(SIGNATURES, (names,)).fetchall()]


def section_signatures():
    print("1. signatures")
    with router_admin() as r, shard(0, user="postgres") as s:
        on_router = [row[0] for row in r.execute(
            "SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'amebo'::regnamespace"
            " AND proname <> 'read_all'")]
        names = [n for n in on_router
                 if s.execute("SELECT 1 FROM pg_proc WHERE pronamespace = 'amebo'::regnamespace"
                              " AND proname = %s", (n,)).fetchone()]
        checks.check(set(STREAM_FUNCTIONS) <= set(names),
                     f"the router has amebo's stream functions ({len(names)} names shared)")
        routed, direct = signatures(r, names), signatures(s, names)
        differing = sorted(set(routed) ^ set(direct))
        checks.check(not differing, f"{len(routed)} router signatures equal amebo's",
                     f"differences: {differing}")
        r.execute("BEGIN")
        r.execute("ALTER FUNCTION amebo.replay_state(text, bigint) VOLATILE")
        changed = set(signatures(r, names)) ^ set(direct)
        r.execute("ROLLBACK")
        checks.check(len(changed) == 2, "negative control: a changed volatility is found")


# ---------------------------------------------------------------------------------------
# 2. Placement

def section_placement():
    print("2. placement")
    with router() as r:
        streams = [f"place-{i}" for i in range(200)]
        for name in streams:
            r.execute("SELECT amebo.append_event(%s, 'place.made', '{}')", (name,))
        expected = {name: r.execute("SELECT amebo.shard_of(%s)", (name,)).fetchone()[0]
                    for name in streams}
    misplaced, counts, disagreements = 0, [], 0
    for number in range(SHARDS):
        with shard(number) as s:
            held = [row[0] for row in s.execute(
                "SELECT stream FROM amebo.events WHERE stream LIKE 'place-%'")]
            counts.append(len(held))
            misplaced += sum(1 for name in held if expected[name] != number)
            disagreements += s.execute(
                "SELECT count(*) FROM unnest(%s::text[]) n WHERE amebo.shard_of(n) <> %s",
                (held, number)).fetchone()[0]
    checks.eq(misplaced, 0, f"streams on the shard shard_of names (per shard {counts})")
    checks.eq(sum(counts), 200, "every appended event is on one shard")
    checks.check(min(counts) > 0, "every shard holds streams")
    checks.eq(disagreements, 0, "each shard computes shard_of as the router does")


# ---------------------------------------------------------------------------------------
# 3. Routed results equal direct reads

def section_routed_reads():
    print("3. routed results equal direct reads")
    for number in range(SHARDS):
        with shard(number, user="postgres") as s:
            s.execute("CREATE FUNCTION public.count_events(state jsonb, event amebo.events)"
                      " RETURNS jsonb LANGUAGE sql IMMUTABLE AS"
                      " $$SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1)$$")
            s.execute(f"GRANT EXECUTE ON FUNCTION public.count_events(jsonb, amebo.events)"
                      f" TO {args.role}")
    with router() as r:
        r.execute("SELECT amebo.create_reducer('tally', 'public.count_events(jsonb, amebo.events)',"
                  " '{}', 5)")
        mismatches = 0
        for number in range(SHARDS):
            name = stream_on(r, number, "tally")
            r.execute("SELECT amebo.append_events(%s, %s)",
                      (name, Jsonb([{"action": "tally.counted", "payload": {"i": i}}
                                    for i in range(12)])))
            r.execute("SELECT amebo.save_snapshot(%s, 3, '{\"n\": 3}')", (name,))
            queries = [
                ("SELECT * FROM amebo.read_stream(%s)", (name,)),
                ("SELECT * FROM amebo.read_stream(%s, 4, 3)", (name,)),
                ("SELECT amebo.stream_version(%s)", (name,)),
                ("SELECT (amebo.load_snapshot(%s)).*", (name,)),
                ("SELECT * FROM amebo.load_state(%s)", (name,)),
                ("SELECT amebo.replay_state(%s, 7)", (name,)),
            ]
            with shard(number) as s:
                for sql, params in queries:
                    routed = r.execute(sql, params).fetchall()
                    direct = s.execute(sql, params).fetchall()
                    if routed != direct or not routed:
                        mismatches += 1
                        print(f"         {sql} on shard {number}: {routed} != {direct}")
        checks.eq(mismatches, 0, f"{6 * SHARDS} routed reads equal the shard's own")
        checks.eq(r.execute("SELECT amebo.load_snapshot('tally-none') IS NULL").fetchone()[0],
                  True, "load_snapshot of a stream without one is NULL")


# ---------------------------------------------------------------------------------------
# 4. Errors

def section_errors():
    print("4. errors, retries, atomic batches, the cost of a conflict")
    with router() as r:
        name = stream_on(r, 2, "conflict")
        r.execute("SELECT amebo.append_event(%s, 'conflict.made', '{}', 0)", (name,))
        routed = diagnostics(error_of(r, "SELECT amebo.append_event(%s, 'conflict.made', '{}', 0)",
                                      (name,)))
        with shard(2) as s:
            direct = diagnostics(error_of(
                s, "SELECT amebo.append_event(%s, 'conflict.made', '{}', 0)", (name,)))
        checks.eq(routed[0], "AM001", "a conflict through the router is AM001")
        checks.eq(routed, direct, "its message, detail and hint are the shard's own")
        checks.check(name in routed[1] and "expected version 0" in routed[1]
                     and "actual version 1" in routed[1], "the message names stream, expected"
                     " and actual version")

        event_id = uuid.uuid4()
        versions = [r.execute("SELECT amebo.append_event(%s, 'conflict.made', '{}', 1,"
                              " event_id => %s)", (name, event_id)).fetchone()[0]
                    for _ in range(3)]
        checks.eq(versions, [2, 2, 2], "a retry with the same event_id returns the same version")
        with shard(2) as s:
            checks.eq(s.execute("SELECT count(*) FROM amebo.events WHERE event_id = %s",
                                (event_id,)).fetchone()[0], 1, "and appends the event once")

        batch = stream_on(r, 1, "batch")
        bad = Jsonb([{"action": "batch.made", "payload": {}}, {"payload": {}},
                     {"action": "batch.made", "payload": {}}])
        error = diagnostics(error_of(r, "SELECT amebo.append_events(%s, %s)", (batch, bad)))
        with shard(1) as s:
            direct = diagnostics(error_of(s, "SELECT amebo.append_events(%s, %s)", (batch, bad)))
            left = s.execute("SELECT count(*) FROM amebo.events WHERE stream = %s",
                             (batch,)).fetchone()[0]
        checks.eq(error, direct, "a batch with an invalid element fails as on the shard")
        checks.eq(left, 0, "and leaves nothing")

        rounds = 1000
        fresh = stream_on(r, 3, "timed")
        started = time.monotonic()
        for _ in range(rounds):
            r.execute("SELECT amebo.append_event(%s, 'timed.made', '{}')", (fresh,))
        succeeded = time.monotonic() - started
        started = time.monotonic()
        for _ in range(rounds):
            error_of(r, "SELECT amebo.append_event(%s, 'timed.made', '{}', 0)", (fresh,))
        conflicted = time.monotonic() - started
        checks.check(conflicted <= 2 * succeeded,
                     f"{rounds} conflicts {conflicted:.2f} s, {rounds} appends {succeeded:.2f} s"
                     f" (ratio {conflicted / succeeded:.2f}, at most 2)")


# ---------------------------------------------------------------------------------------
# 5. The merged feed under concurrent writers

def writer(number, index, stop, acknowledged, rolled_back, failures):
    rng = random.Random(SEED * 100 + number * 10 + index)
    try:
        with shard(number, autocommit=False) as s:
            while not stop.is_set():
                ids = [uuid.uuid4() for _ in range(rng.randint(1, 3))]
                for event_id in ids:
                    s.execute("SELECT amebo.append_event(%s, 'feed.made', '{}', event_id => %s)",
                              (f"feed-{number}-{index}-{rng.randint(0, 4)}", event_id))
                if rng.random() < 0.3:
                    time.sleep(rng.uniform(0.01, 0.08))
                if rng.random() < 0.25:
                    s.rollback()
                    rolled_back.update((number, i) for i in ids)
                else:
                    s.commit()
                    acknowledged.update((number, i) for i in ids)
    except Exception as error:  # noqa: BLE001 - reported as a failed check
        failures.append(f"writer {number}/{index}: {error}")


def page(conn, cursor, seen):
    rows = conn.execute("SELECT shard, position, event_id FROM amebo.read_all(%s, 50)",
                        (cursor,)).fetchall()
    for number, position, event_id in rows:
        seen.append((number, event_id))
        cursor[number] = max(cursor[number], position)
    return len(rows)


def section_feed():
    print("5. merged feed under concurrent writers with rollbacks and late commits")
    with router() as r:
        cursor = [int(p) for p in r.execute(
            "SELECT array_agg(coalesce(m, 0) ORDER BY s) FROM generate_series(0, %s) s"
            " LEFT JOIN (SELECT shard, max(position) m FROM amebo.read_all(NULL, 100000)"
            " GROUP BY shard) x ON x.shard = s", (SHARDS - 1,)).fetchone()[0]]
        stop, acknowledged, rolled_back, failures = threading.Event(), set(), set(), []
        threads = [threading.Thread(target=writer, args=(n, i, stop, acknowledged, rolled_back,
                                                         failures))
                   for n in range(SHARDS) for i in range(4)]
        for t in threads:
            t.start()
        seen, pages, ends = [], 0, time.monotonic() + 8
        while time.monotonic() < ends:
            pages += 1
            page(r, cursor, seen)
        stop.set()
        for t in threads:
            t.join()
        while page(r, cursor, seen):
            pages += 1
        written = {event_id for _, event_id in acknowledged | rolled_back}
        seen_ids = [s for s in seen if s[1] in written]
        checks.eq(failures, [], "writers ran without errors")
        checks.eq(len(seen_ids), len(set(seen_ids)), f"no event seen twice ({len(seen_ids)} seen"
                  f" in {pages} pages)")
        checks.eq(set(seen_ids) - acknowledged, set(), "no rolled-back event seen")
        checks.eq(acknowledged - set(seen_ids), set(),
                  f"every one of {len(acknowledged)} committed events seen"
                  f" ({len(rolled_back)} rolled back)")

        held, after_held = stream_on(r, 1, "held"), stream_on(r, 1, "after-held")
        other_stream = stream_on(r, 2, "other")
        with shard(1, autocommit=False) as open_tx:
            open_tx.execute("SELECT amebo.append_event(%s, 'feed.made', '{}')", (held,))
            r.execute("SELECT amebo.append_event(%s, 'feed.made', '{}')", (after_held,))
            r.execute("SELECT amebo.append_event(%s, 'feed.made', '{}')", (other_stream,))
            before = len(seen)
            page(r, cursor, seen)
            shards_seen = sorted({n for n, _ in seen[before:]})
            checks.eq(shards_seen, [2], "an open append on shard 1 holds back only shard 1")
            open_tx.commit()
        before = len(seen)
        page(r, cursor, seen)
        checks.eq(sorted(n for n, _ in seen[before:]), [1, 1], "after its commit both come")


# ---------------------------------------------------------------------------------------
# 6. One shard stopped

def section_shard_down():
    print("6. one shard stopped, then restarted")
    down = 3
    with router() as r:
        on_down, on_up = stream_on(r, down, "down"), stream_on(r, 0, "up")
        r.execute("SELECT amebo.append_event(%s, 'down.made', '{}')", (on_down,))
        pg_ctl(down, "stop", "-m", "fast")
        try:
            error = diagnostics(error_of(r, "SELECT amebo.append_event(%s, 'down.made', '{}')",
                                         (on_down,)))
            checks.check(error and error[0] == "08006" and f"shard {down}" in error[1],
                         f"an append to a stream of the stopped shard: {error and error[:2]}")
            error = diagnostics(error_of(r, "SELECT * FROM amebo.read_stream(%s)", (on_down,)))
            checks.check(error and error[0] == "08006" and f"shard {down}" in error[1],
                         "read_stream of it too")
            checks.eq(r.execute("SELECT amebo.append_event(%s, 'down.made', '{}')",
                                (on_up,)).fetchone()[0], 1, "streams of shard 0 keep working")
            checks.check(r.execute("SELECT count(*) FROM amebo.read_all(0, 0)").fetchone()[0] > 0,
                         "read_all of shard 0 works")
            error = diagnostics(error_of(r, "SELECT * FROM amebo.read_all(NULL)"))
            checks.check(error and error[0] == "08006" and f"shard {down}" in error[1],
                         f"the merged read_all names the stopped shard: {error and error[1]}")
            error = diagnostics(error_of(r, "SELECT amebo.create_application('late', NULL)"))
            checks.check(error is not None and f"shard {down}" in error[1],
                         "a definition made meanwhile fails naming it")
        finally:
            pg_ctl(down, "start")
        checks.eq(r.execute("SELECT amebo.append_event(%s, 'down.made', '{}')",
                            (on_down,)).fetchone()[0], 2, "after the restart its streams work")
        checks.eq(r.execute("SELECT count(*) FROM amebo.definition_differences()").fetchone()[0],
                  0, "the failed definition left no difference (PL/Proxy connects first)")
        # A shard that lacks a definition the others have (a partial run, or a shard restored
        # from an older backup): reported, and a re-run through the router converges.
        first = r.execute("SELECT amebo.create_application('late', NULL)").fetchone()[0]
        with shard(down) as s:
            s.execute("SELECT amebo.drop_application('late')")
        missing = r.execute("SELECT shard FROM amebo.definition_differences()"
                            " WHERE name = 'late' AND digest IS NULL").fetchall()
        checks.eq(missing, [(down,)], "definition_differences() reports it missing there")
        secret = r.execute("SELECT amebo.create_application('late', NULL)").fetchone()[0]
        checks.eq(secret, first, "re-running create_application keeps the shards' secret")
        checks.eq(r.execute("SELECT count(*) FROM amebo.definition_differences()").fetchone()[0],
                  0, "re-running the definition converges: no differences")
        secrets = set()
        for number in range(SHARDS):
            with shard(number) as s:
                secrets.add(s.execute("SELECT amebo.application_secret('late')").fetchone()[0])
        checks.eq(secrets, {secret}, "one secret on every shard, the one returned")
        r.execute("SELECT amebo.create_action('late.made', 'late', '{\"type\": \"object\"}')")
        r.execute("SELECT amebo.create_action('late.made', 'late', '{\"type\": \"object\"}')")
        error = diagnostics(error_of(r, "SELECT amebo.create_action('late.made', 'late')"))
        checks.eq(error and error[0], "42710", "a create differing from the shards' is refused")
        with shard(1) as s:
            s.execute("SELECT amebo.update_action('late.made', compatibility => 'backward')")
        differing = r.execute("SELECT DISTINCT kind, name FROM amebo.definition_differences()"
                              ).fetchall()
        checks.eq(differing, [("action", "late.made")], "a change on one shard is reported")
        r.execute("SELECT amebo.update_action('late.made', compatibility => 'backward')")
        checks.eq(r.execute("SELECT count(*) FROM amebo.definition_differences()").fetchone()[0],
                  0, "an update through the router brings every shard to it")
        r.execute("SELECT amebo.drop_action('late.made')")
        r.execute("SELECT amebo.drop_action('late.made')")
        checks.eq(r.execute("SELECT count(*) FROM amebo.definition_differences()").fetchone()[0],
                  0, "a drop run twice converges")


# ---------------------------------------------------------------------------------------
# 7. Projections and subscriptions on every shard

def section_projections_subscriptions():
    print("7. projections and subscriptions on every shard")
    for number in range(SHARDS):
        with shard(number, user="postgres") as s:
            s.execute("CREATE TABLE public.seen (event_id uuid PRIMARY KEY)")
            s.execute("CREATE FUNCTION public.note_event(event amebo.events) RETURNS void"
                      " LANGUAGE sql AS $$INSERT INTO public.seen VALUES (event.event_id)$$")
            s.execute(f"GRANT ALL ON public.seen TO {args.role}")
            s.execute(f"GRANT EXECUTE ON FUNCTION public.note_event(amebo.events) TO {args.role}")
    with router() as r:
        for _ in range(2):
            r.execute("SELECT amebo.create_projection('seen', 'public.note_event(amebo.events)',"
                      " ARRAY['seen.made'])")
        streams = [stream_on(r, number, "seen") for number in range(SHARDS)]
        for name in streams:
            r.execute("SELECT amebo.append_event(%s, 'seen.made', '{}')", (name,))
        noted = []
        for number in range(SHARDS):
            with shard(number) as s:
                noted.append(s.execute("SELECT count(*) FROM public.seen").fetchone()[0])
        checks.eq(noted, [1] * SHARDS, "an inline projection created twice runs on every shard")
        r.execute("SELECT amebo.create_application('hooks', NULL)")
        ids = [r.execute("SELECT amebo.create_subscription('hooks', 'all', 'seen.*',"
                         " 'https://hooks.example.invalid/in', batch_size => 10)").fetchone()[0]
               for _ in range(2)]
        checks.check(ids[0] is not None, f"a subscription on every shard (ids {ids})")
        r.execute("SELECT amebo.update_subscription('hooks', 'all', max_retries => 7)")
        retries = set()
        for number in range(SHARDS):
            with shard(number) as s:
                retries.add(s.execute("SELECT max_retries FROM amebo.subscriptions"
                                      " WHERE name = 'all'").fetchone()[0])
        checks.eq(retries, {7}, "update_subscription reaches every shard")
        r.execute("SELECT amebo.update_subscription('hooks', 'all', rate_limit => 5)")
        secret = r.execute("SELECT amebo.rotate_application_secret('hooks')").fetchone()[0]
        r.execute("SELECT amebo.rotate_application_secret('hooks', %s)", (secret,))
        limits, rotated, replayed = set(), set(), set()
        for number in range(SHARDS):
            with shard(number, user="postgres") as s:
                limits.add(s.execute("SELECT rate_limit FROM amebo.subscriptions"
                                     " WHERE name = 'all'").fetchone()[0])
                rotated.add(s.execute(
                    "SELECT secret = %s AND previous_secret IS NOT NULL"
                    " AND previous_secret <> secret FROM amebo.applications"
                    " WHERE name = 'hooks'", (secret,)).fetchone()[0])
                s.execute("SELECT amebo.pause_subscription('hooks', 'all')")
                s.execute("SELECT amebo.replay_subscription('hooks', 'all', 0)")
                replayed |= {row[0] for row in s.execute(
                    "SELECT d.webhook_id FROM amebo.deliveries d"
                    " JOIN amebo.subscriptions x ON x.id = d.subscription_id"
                    " WHERE x.name = 'all'")}
                s.execute("SELECT amebo.resume_subscription('hooks', 'all')")
        checks.eq(limits, {5.0}, "a rate limit set through the router reaches every shard")
        checks.eq(rotated, {True}, "a rotation re-run with its secret keeps the overlap on "
                  "every shard")
        prefixes = {webhook_id.split("_")[1] for webhook_id in replayed}
        checks.eq(prefixes, {f"s{number}" for number in range(SHARDS)},
                  "replayed messages' webhook ids name their shard (msg_s<i>_...)")
        error = diagnostics(error_of(r, "SELECT amebo.create_subscription('hooks', 'all',"
                                        " 'seen.*', 'https://hooks.example.invalid/other')"))
        checks.eq(error and error[0], "42710", "a subscription of another handler is refused")
        checks.eq(r.execute("SELECT count(*) FROM amebo.definition_differences()").fetchone()[0],
                  0, "no differences")
        for _ in range(2):
            r.execute("SELECT amebo.drop_subscription('hooks', 'all')")
            r.execute("SELECT amebo.drop_projection('seen')")
            r.execute("SELECT amebo.drop_application('hooks')")
        left = r.execute("SELECT count(*) FROM amebo.definition_differences()").fetchone()[0]
        checks.eq(left, 0, "drops run twice converge")


# ---------------------------------------------------------------------------------------
# 8. Bad input

def section_bad_input():
    print("8. bad input")
    with router() as r:
        for sql, what in [
            ("SELECT * FROM amebo.read_all('{0,0,0}')", "a cursor of 3 elements for 4 shards"),
            ("SELECT * FROM amebo.read_all('{0,0,0,0,0}')", "a cursor of 5 elements"),
            ("SELECT * FROM amebo.read_all('{}')", "an empty cursor"),
            ("SELECT * FROM amebo.read_all('{0,-1,0,0}')", "a negative position"),
            ("SELECT * FROM amebo.read_all(4, 0)", "shard 4 of 4"),
            ("SELECT * FROM amebo.read_all(-1, 0)", "shard -1"),
            ("SELECT * FROM amebo.read_all(1, -5)", "a negative position of one shard"),
            ("SELECT * FROM amebo.read_all(NULL, 0)", "max_count 0"),
        ]:
            error = diagnostics(error_of(r, sql))
            checks.eq(error and error[0], "22023", what)
    with router_admin() as a:
        error = diagnostics(error_of(a, f"ALTER SERVER amebo_shards OPTIONS (DROP p{SHARDS - 1})"))
        checks.check(error is not None and "power of 2" in (error[2] or "") + (error[3] or ""),
                     f"PL/Proxy refuses a cluster of {SHARDS - 1} shards: {error and error[1]}")
        a.execute("BEGIN")
        a.execute("ALTER SERVER amebo_shards RENAME TO amebo_shards_elsewhere")
        error = diagnostics(error_of(a, "SELECT amebo.setup_shards()"))
        a.execute("ROLLBACK")
        checks.eq(error and error[0], "22023", "setup_shards without the server amebo_shards")
        checks.eq(a.execute("SELECT amebo.setup_shards()").fetchone()[0], SHARDS,
                  "setup again with every shard is a no-op")
    with shard(0) as s:
        error = diagnostics(error_of(s, "SELECT amebo.set_shard_identity(1, 4)"))
        checks.eq(error and error[0], "55000", "a shard refuses another number")
        error = diagnostics(error_of(s, "SELECT amebo.set_shard_identity(0, 3)"))
        checks.eq(error and error[0], "22023", "and a count that is not a power of two")


SECTIONS = [section_signatures, section_placement, section_routed_reads, section_errors,
            section_feed, section_shard_down, section_projections_subscriptions,
            section_bad_input]

print(f"router test: {SHARDS} shards, seed {SEED}")
for section in SECTIONS:
    try:
        section()
    except Exception:  # noqa: BLE001 - a section's crash fails it, the next one runs
        traceback.print_exc()
        checks.failed.append(f"{section.__name__} raised")
print(f"{checks.passed} checks passed, {len(checks.failed)} failed")
for name in checks.failed:
    print(f"  FAILED: {name}")
sys.exit(1 if checks.failed else 0)
