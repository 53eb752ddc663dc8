#!/usr/bin/env python3
"""Dump and restore of an amebo database (run by test/scripts/dump_restore.sh).

Builds a source database that uses everything amebo stores (test/dump/fixture.sql, the user
example, subscriptions against test/lib/receiver.py: one delivering, one paused with queued
messages, one dead-lettering, one with a filter, ordered and batched), lets the worker settle,
moves the worker away, dumps with pg_dump -Fc and restores with pg_restore into a fresh
database of the same cluster, then checks with queries:
  - every table pg_dump must keep is marked for it (pg_extension_config_dump), sequences too,
    and pg_dump --exclude-table-data=amebo.delivery_log_entries leaves out only the attempt log;
  - every amebo table, every read-model table and every amebo sequence equal the source's;
  - the same after pg_restore --single-transaction into the worker's database of a fresh
    cluster, whose worker then keeps the restored checkpoint and delivers new events;
  - the restored database goes on: appends continue at the right versions (AM001 on a
    conflict), new positions and subscription and message ids are above every restored one,
    an idempotent retry of a restored event_id returns its version, schemas validate at their
    version, projections apply (inline at once, async by run_projection), snapshots load and
    state folds, the status views show this database's (not the source's) slot and worker
    figures;
  - then the worker is pointed at the restored database: it creates its own slot, catches up
    the events after the restored delivery checkpoint (and only those) and delivers them.
Prints its figures; exits 1 when a check failed.
"""
import argparse
import os
import subprocess
import sys
import time

import psycopg

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checks import Checks  # noqa: E402
from receiver import Receiver  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--host", required=True, help="socket directory of the test cluster")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--pg-bin", required=True, help="folder of pg_dump and pg_restore")
parser.add_argument("--work", required=True, help="folder for the dump and the receiver's log")
parser.add_argument("--fresh-host", required=True, help="socket directory of a fresh cluster")
parser.add_argument("--fresh-port", type=int, required=True)
args = parser.parse_args()

TOP = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SOURCE, RESTORED = "postgres", "restored"
checks = Checks()

# A connection to a database of the test cluster (or of another), in autocommit mode.
def connect(dbname, host=None, port=None):
    return psycopg.connect(host=host or args.host, port=port or args.port, user="postgres",
                           dbname=dbname, autocommit=True)


# The first column of the first row of a query.
def value(conn, sql, params=None):
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


# Runs a SQL file with psql in a database (stops at the first error).
def run_sql_file(dbname, path):
    subprocess.run([os.path.join(args.pg_bin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                    "-h", args.host, "-p", str(args.port), "-U", "postgres", "-d", dbname,
                    "-f", path], check=True, stdout=subprocess.DEVNULL)


# Waits until a query returns true, for at most timeout seconds; returns whether it did.
def wait_until(conn, sql, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value(conn, sql):
            return True
        time.sleep(0.1)
    return False


# Points the worker at a database (ALTER SYSTEM and reload).
def move_worker(conn, dbname):
    conn.execute(f"ALTER SYSTEM SET amebo.database_name = '{dbname}'")
    conn.execute("SELECT pg_reload_conf()")


# Creates the subscriptions and lets the worker deliver, hold and dead-letter their events.
def subscribe_and_deliver(conn, receiver):
    receiver.client.behave("/failing", mode="fail", status=500)
    conn.execute("SELECT amebo.create_subscription('shop', 'orders', 'order.*', %s, "
                 "filter => '{\"currency\": \"EUR\"}', ordered => true, batch_size => 5)",
                 (receiver.url("/orders"),))
    conn.execute("SELECT amebo.create_subscription('shop', 'failing', 'order.paid', %s, "
                 "max_retries => 0)", (receiver.url("/failing"),))
    conn.execute("SELECT amebo.create_subscription('shop', 'held', 'order.*', %s)",
                 (receiver.url("/held"),))
    conn.execute("SELECT amebo.pause_subscription('shop', 'held')")
    conn.execute("SELECT amebo.create_subscription('mailer', 'users', 'user.*', %s)",
                 (receiver.url("/users"),))
    checks.check(value(conn, "SELECT amebo.wait_for_worker(30)"), "the worker runs in the source")
    # Only events appended after a subscription was created are delivered to it.
    conn.execute("SELECT amebo.append_event('order-' || i, 'order.placed', "
                 "jsonb_build_object('order_id', 'o' || i, 'total', i, 'currency', "
                 "CASE WHEN i % 2 = 0 THEN 'EUR' ELSE 'USD' END)) FROM generate_series(41, 60) i")
    conn.execute("SELECT amebo.append_event('order-' || i, 'order.paid', "
                 "jsonb_build_object('amount', i), event_id => md5('late-paid-' || i)::uuid) "
                 "FROM generate_series(41, 60) i")
    conn.execute("SELECT amebo.append_event('user-' || i, 'user.created', jsonb_build_object("
                 "'user_id', 'u' || i, 'email', 'u' || i || '@example.com', 'name', 'U' || i)) "
                 "FROM generate_series(13, 20) i")
    delivered = value(conn, "SELECT amebo.wait_for_deliveries(60)")
    checks.check(delivered, "the worker handled every event in the source")
    dead = value(conn, "SELECT dead FROM amebo.subscription_status WHERE name = 'failing'")
    held = value(conn, "SELECT pending FROM amebo.subscription_status WHERE name = 'held'")
    checks.eq(dead, 20, "dead messages of the failing subscription")
    checks.eq(held, 40, "messages queued for the paused subscription")
    checks.check(value(conn, "SELECT amebo.wait_for_projection('action_counts', 30)"),
                 "the async projection caught up in the source")


# The names of amebo's tables and whether each is marked for pg_dump, and its sequences.
def dump_marks(conn):
    tables = dict(conn.execute("""
        SELECT c.oid::regclass::text, c.oid = ANY (x.extconfig)
        FROM pg_extension x JOIN pg_depend d ON d.refobjid = x.oid AND d.deptype = 'e'
        JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
        WHERE x.extname = 'amebo' AND c.relkind = 'r'""").fetchall())
    sequences = dict(conn.execute("""
        SELECT c.oid::regclass::text, c.oid = ANY (x.extconfig)
        FROM pg_extension x JOIN pg_class c ON c.relnamespace = 'amebo'::regnamespace
        WHERE x.extname = 'amebo' AND c.relkind = 'S'""").fetchall())
    return tables, sequences


# Checks that every amebo table and sequence is marked for pg_dump (all hold user data).
def check_marks(conn):
    tables, sequences = dump_marks(conn)
    unmarked = sorted(t for t, marked in tables.items() if not marked)
    checks.eq(unmarked, [], f"amebo tables not kept by pg_dump (of {len(tables)})")
    unmarked = sorted(s for s, marked in sequences.items() if not marked)
    checks.eq(unmarked, [], f"amebo sequences not kept by pg_dump (of {len(sequences)})")
    return sorted(tables), sorted(sequences)


# Rows and a digest of a table's contents (text form of every row, sorted).
def table_digest(conn, table):
    return conn.execute(f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' "
                        f"ORDER BY t::text), '')) FROM {table} t").fetchone()


# The state of a sequence: last value and whether it was called.
def sequence_state(conn, sequence):
    return conn.execute(f"SELECT last_value, is_called FROM {sequence}").fetchone()


# Compares every listed table and sequence between two databases; returns rows compared.
def compare(src, dst, tables, sequences, label):
    rows = 0
    for table in tables:
        before, after = table_digest(src, table), table_digest(dst, table)
        checks.eq(after, before, f"{label}: {table}: rows and digest")
        rows += before[0]
    for sequence in sequences:
        checks.eq(sequence_state(dst, sequence), sequence_state(src, sequence),
                  f"{label}: {sequence}: last value, is_called")
    stream_versions = ("SELECT md5(string_agg(s || ':' || amebo.stream_version(s), ',' ORDER BY s)) "
                       "FROM (SELECT DISTINCT stream s FROM amebo.events) x")
    checks.eq(value(dst, stream_versions), value(src, stream_versions),
              f"{label}: stream_version of every stream (digest)")
    return rows


# Checks that SQL raises the SQLSTATE; returns the message.
def raises(conn, sql, sqlstate, what, params=None):
    try:
        conn.execute(sql, params)
    except psycopg.Error as e:
        checks.eq(e.sqlstate, sqlstate, what)
        return str(e)
    checks.check(False, what, f"no error, expected {sqlstate}")
    return ""


# Checks that the restored database goes on where the source stopped.
def check_goes_on(src, dst):
    top = value(dst, "SELECT max(position) FROM amebo.events")
    version = value(dst, "SELECT amebo.stream_version('order-7')")
    checks.eq(value(dst, "SELECT amebo.append_event('order-7', 'order.paid', '{\"amount\": 1}', "
                    "expected_version => %s)", (version,)), version + 1,
              "append with expected_version = restored version")
    raises(dst, "SELECT amebo.append_event('order-7', 'order.paid', '{\"amount\": 1}', "
           "expected_version => %s)", "AM001", "a stale expected_version conflicts",
           (version,))
    new_position = value(dst, "SELECT max(position) FROM amebo.events")
    checks.check(new_position > top, f"new position {new_position} > every restored one ({top})")
    checks.eq(value(dst, "SELECT amebo.append_event('order-3', 'order.placed', "
                    "'{\"order_id\": \"o3\", \"total\": 30, \"currency\": \"EUR\"}', "
                    "expected_version => 0, event_id => md5('placed-3')::uuid)"), 1,
              "an idempotent retry of a restored event_id returns its version")
    checks.eq(value(dst, "SELECT amebo.append_events('order-9', ('[{\"action\": \"order.paid\", "
                    "\"payload\": {\"amount\": 10}, \"event_id\": \"' || md5('paid-9-1')::uuid "
                    "|| '\"}]')::jsonb, expected_version => 0)"), 2,
              "an idempotent batch retry of a restored event_id returns its version")
    message = raises(dst, "SELECT amebo.append_event('order-61', 'order.placed', "
                     "'{\"total\": 5}')", "AM004", "a payload failing the schema is refused")
    checks.check("version 3" in message, "the refusal names schema version 3", message)
    raises(dst, "SELECT amebo.append_event('order-61', 'order.paid', '{\"amount\": 1.5}')",
           "AM004", "order.paid schema version 2 applies")
    checks.eq(value(dst, "SELECT amebo.append_event('order-61', 'order.placed', "
                    "'{\"order_id\": \"o61\"}', expected_version => 0)"), 1,
              "a payload valid under schema version 3 is appended")
    checks.eq(value(dst, "SELECT schema_version FROM amebo.events WHERE stream = 'order-61'"), 3,
              "the new event records schema version 3")
    checks.eq(value(dst, "SELECT paid FROM shop.order_totals WHERE stream = 'order-7'"),
              value(src, "SELECT paid FROM shop.order_totals WHERE stream = 'order-7'") + 1,
              "the inline projection applied the new event")
    checks.eq(value(dst, "SELECT placed FROM shop.order_totals WHERE stream = 'order-61'"), 0,
              "the inline projection applied the new stream")
    behind = value(dst, "SELECT count(*) FROM amebo.events WHERE position > "
                   "(SELECT position FROM amebo.projections WHERE name = 'action_counts')")
    checks.eq(value(dst, "SELECT amebo_internal.run_projection('action_counts')"), behind,
              "run_projection applies the new events to the async projection")
    checks.eq(value(dst, "SELECT lag_events FROM amebo.projection_status "
                    "WHERE name = 'action_counts'"), 0, "the async projection has no lag")
    checks.eq(value(dst, "SELECT amebo.load_snapshot('order-3')::text"),
              value(src, "SELECT amebo.load_snapshot('order-3')::text"),
              "load_snapshot returns the restored snapshot")
    checks.eq(value(dst, "SELECT (amebo.load_state('order-7')).state"),
              value(dst, "SELECT amebo.replay_state('order-7')"),
              "load_state from a restored snapshot equals a full replay")
    checks.eq(value(dst, "SELECT (amebo.load_state('user-2')).state->>'status'"), "active",
              "the user reducer still loads state")
    check_new_ids(dst)
    checks.eq(value(dst, "SELECT amebo.application_secret('shop')"),
              value(src, "SELECT amebo.application_secret('shop')"), "secrets restored")


# Checks that new subscriptions and stored messages get ids above the restored ones.
def check_new_ids(dst):
    old_subscription, old_message = dst.execute(
        "SELECT (SELECT max(id) FROM amebo.subscriptions), (SELECT max(id) FROM amebo.deliveries)"
    ).fetchone()
    try:
        new_subscription = value(dst, "SELECT amebo.create_subscription('mailer', 'restored', "
                                 "'mail.*', 'http://127.0.0.1:9/mail')")
        queued = value(dst, "SELECT amebo.replay_subscription('mailer', 'restored', 0::bigint)")
        new_message = value(dst, "SELECT min(d.id) FROM amebo.deliveries d JOIN "
                            "amebo.subscriptions s ON s.id = d.subscription_id "
                            "WHERE s.name = 'restored'")
        dst.execute("SELECT amebo.drop_subscription('mailer', 'restored')")
    except psycopg.Error as e:
        checks.check(False, "a new subscription and its messages can be stored", str(e))
        return
    checks.check(new_subscription > old_subscription,
                 f"a new subscription's id {new_subscription} > every restored one "
                 f"({old_subscription})")
    checks.check(queued > 0 and new_message > old_message,
                 f"{queued} new stored messages, ids from {new_message} > every restored one "
                 f"({old_message})")


# Checks the status views in the restored database, which no worker serves yet.
def check_views_without_worker(src, dst):
    checks.eq(dst.execute("SELECT application, name, action, handler, max_retries, filter, "
                          "ordered, batch_size, state FROM amebo.subscription_list "
                          "ORDER BY 1, 2").fetchall(),
              src.execute("SELECT application, name, action, handler, max_retries, filter, "
                          "ordered, batch_size, state FROM amebo.subscription_list "
                          "ORDER BY 1, 2").fetchall(), "subscription_list restored")
    checks.eq(dst.execute("SELECT name, pending, dead, delivered FROM amebo.subscription_status "
                          "ORDER BY name").fetchall(),
              src.execute("SELECT name, pending, dead, delivered FROM amebo.subscription_status "
                          "ORDER BY name").fetchall(), "subscription_status figures restored")
    row = dst.execute("SELECT active, restart_lsn, checkpoint_position FROM amebo.delivery_queue"
                      ).fetchone()
    checks.eq(row[:2], (None, None),
              "delivery_queue shows no slot (the source's slot is not this database's)")
    return row[2]


# Where each active subscription of the fixture sends which events (SQL conditions).
DELIVERED_TO = {
    "/orders": "action LIKE 'order.%%' AND payload @> '{\"currency\": \"EUR\"}'",
    "/failing": "action = 'order.paid'",
    "/users": "action LIKE 'user.%%'",
}


# Points the worker at the restored database and checks that it delivers exactly the events
# after the restored delivery checkpoint.
def check_worker_on_restored(admin, dst, receiver, checkpoint):
    dst.execute("SELECT amebo.append_event('order-' || i, 'order.placed', jsonb_build_object("
                "'order_id', 'o' || i, 'currency', 'EUR')) FROM generate_series(62, 71) i")
    dst.execute("SELECT amebo.append_event('user-' || i, 'user.created', jsonb_build_object("
                "'user_id', 'u' || i, 'email', 'u' || i || '@example.com', 'name', 'U' || i)) "
                "FROM generate_series(21, 25) i")
    before = len(receiver.client.requests())
    started = time.monotonic()
    move_worker(admin, RESTORED)
    checks.check(wait_until(dst, "SELECT coalesce((SELECT database FROM amebo.worker_status()) "
                            f"= '{RESTORED}', false)", 30), "the worker moved to the restored database")
    checks.check(value(dst, "SELECT amebo.wait_for_deliveries(60)"),
                 "the worker handled every event of the restored database")
    drain = time.monotonic() - started
    checks.eq(value(dst, "SELECT slot_name FROM amebo.delivery_queue WHERE active"),
              "amebo_" + str(value(dst, "SELECT oid FROM pg_database "
                                   "WHERE datname = current_database()")),
              "the worker created this database's slot")
    new = receiver.client.requests()[before:]
    received = sorted({(r["path"], e["position"]) for r in new
                       for e in (r["body"].get("events") or [r["body"]])})
    expected = sorted((path, position) for path, condition in DELIVERED_TO.items()
                      for (position,) in dst.execute(
                          f"SELECT position FROM amebo.events WHERE position > %s AND {condition}",
                          (checkpoint,)))
    checks.eq(received, expected,
              f"exactly the events after the restored checkpoint {checkpoint} were delivered")
    checks.eq(value(dst, "SELECT pending FROM amebo.subscription_status WHERE name = 'held'"),
              40 + value(dst, "SELECT count(*) FROM amebo.events WHERE position > %s "
                         "AND action LIKE 'order.%%'", (checkpoint,)),
              "the paused subscription queued the caught-up events too")
    print(f"  worker on the restored database: {len(new)} requests for {len(expected)} "
          f"deliveries after checkpoint {checkpoint}, {drain:.1f} s from the move")


# The connection options of pg_dump and pg_restore.
def conn_args():
    return ["-h", args.host, "-p", str(args.port), "-U", "postgres"]


# Dumps the source, restores it into a fresh database; returns (dump s, restore s, bytes).
def dump_and_restore(admin):
    path = os.path.join(args.work, "amebo.dump")
    started = time.monotonic()
    subprocess.run([os.path.join(args.pg_bin, "pg_dump"), *conn_args(), "-Fc", "-f", path,
                    SOURCE], check=True)
    dumped = time.monotonic()
    admin.execute(f"CREATE DATABASE {RESTORED}")
    subprocess.run([os.path.join(args.pg_bin, "pg_restore"), *conn_args(), "--exit-on-error",
                    "-d", RESTORED, path], check=True)
    return dumped - started, time.monotonic() - dumped, path


# Checks that pg_dump --exclude-table-data leaves out the attempt log (and only it).
def check_log_can_be_left_out(full_dump):
    path = os.path.join(args.work, "amebo-without-log.dump")
    subprocess.run([os.path.join(args.pg_bin, "pg_dump"), *conn_args(), "-Fc", "-f", path,
                    "--exclude-table-data=amebo.delivery_log_entries", SOURCE], check=True)
    listed = {}
    for dump in (full_dump, path):
        toc = subprocess.run([os.path.join(args.pg_bin, "pg_restore"), "-l", dump], check=True,
                             capture_output=True, text=True).stdout
        listed[dump] = {line.split(" TABLE DATA ")[1].split(" ")[1] for line in toc.splitlines()
                        if " TABLE DATA amebo " in line}
    checks.eq(sorted(listed[full_dump] - listed[path]), ["delivery_log_entries"],
              "--exclude-table-data=amebo.delivery_log_entries leaves out only the attempt log")


# Makes the source's worker hold a request to /users and checks that the restored copy, whose
# subscription ids are the same, does not show the source worker's figures as its own.
def check_figures_stay_in_their_database(src, dst, receiver):
    move_worker(src, SOURCE)
    checks.check(wait_until(src, "SELECT coalesce((SELECT database FROM amebo.worker_status()) "
                            f"= '{SOURCE}', false)", 30), "the worker is back in the source")
    receiver.client.behave("/users", mode="hang", hang_seconds=3, count=1)
    src.execute("SELECT amebo.append_event('user-30', 'user.created', '{\"user_id\": \"u30\", "
                "\"email\": \"u30@example.com\", \"name\": \"U30\"}')")
    figures = "SELECT in_flight FROM amebo.subscription_status WHERE name = 'users'"
    checks.check(wait_until(src, figures + " AND in_flight > 0", 10),
                 "the source shows its request in flight")
    checks.eq(value(dst, figures), 0, "the restored copy shows none in flight")
    receiver.client.behave("/users", mode="ok")
    checks.check(value(src, "SELECT amebo.wait_for_deliveries(30)"),
                 "the source delivered the held request")


# Restores the dump into the database a fresh cluster's worker serves, in one transaction (the
# worker starts on the extension only once everything is in), and checks that it equals the
# source and that the worker goes on from the restored checkpoint.
def check_fresh_cluster(src, dump_path, receiver, tables, sequences):
    started = time.monotonic()
    subprocess.run([os.path.join(args.pg_bin, "pg_restore"), "-h", args.fresh_host,
                    "-p", str(args.fresh_port), "-U", "postgres", "--single-transaction",
                    "--exit-on-error", "-d", "postgres", dump_path], check=True)
    restore_s = time.monotonic() - started
    with connect("postgres", args.fresh_host, args.fresh_port) as fresh:
        checks.check(wait_until(fresh, "SELECT EXISTS (SELECT FROM amebo.delivery_queue "
                                "WHERE active)", 30), "fresh cluster: the worker took over")
        kept = [t for t in tables if t != "amebo.delivery_checkpoint"]
        compare(src, fresh, kept, sequences, "fresh cluster")
        checkpoint = "SELECT position FROM amebo.delivery_checkpoint"
        checks.eq(value(fresh, checkpoint), value(src, checkpoint),
                  "fresh cluster: the worker kept the restored checkpoint")
        top = value(fresh, "SELECT max(position) FROM amebo.events")
        fresh.execute("SELECT amebo.append_event('order-' || i, 'order.placed', jsonb_build_object("
                      "'order_id', 'o' || i, 'currency', 'EUR')) FROM generate_series(81, 85) i")
        checks.check(value(fresh, "SELECT amebo.wait_for_deliveries(30)"),
                     "fresh cluster: new events delivered")
        sent = {e["position"] for r in receiver.client.requests("/orders")
                for e in r["body"]["events"] if e["stream"] in {f"order-{i}" for i in range(81, 86)}}
        checks.eq(sorted(sent), list(range(top + 1, top + 6)),
                  "fresh cluster: the new events' positions follow the restored ones, delivered")
    print(f"  fresh cluster: restored in one transaction in {restore_s:.2f} s")


# Builds, dumps, restores and compares; returns the exit status.
def main():
    with connect(SOURCE) as src:
        run_sql_file(SOURCE, os.path.join(TOP, "examples", "users", "users.sql"))
        run_sql_file(SOURCE, os.path.join(TOP, "test", "dump", "fixture.sql"))
        secret = value(src, "SELECT amebo.application_secret('shop')")
        with Receiver(secret=secret, log=os.path.join(args.work, "receiver.jsonl")) as receiver:
            receiver.client.set_secret("/users", value(src, "SELECT amebo.application_secret('mailer')"))
            subscribe_and_deliver(src, receiver)
            tables, sequences = check_marks(src)
            move_worker(src, "nowhere")
            checks.check(wait_until(src, "SELECT NOT EXISTS (SELECT FROM pg_stat_activity "
                                    "WHERE datname = 'postgres' AND backend_type = 'amebo worker')",
                                    30), "no worker in the source while it is dumped")
            dump_s, restore_s, dump_path = dump_and_restore(src)
            check_log_can_be_left_out(dump_path)
            with connect(RESTORED) as dst:
                user_tables = ["shop.order_totals", "shop.action_counts", "public.users"]
                rows = compare(src, dst, tables + user_tables, sequences, RESTORED)
                check_fresh_cluster(src, dump_path, receiver, tables + user_tables, sequences)
                checkpoint = check_views_without_worker(src, dst)
                check_goes_on(src, dst)
                check_figures_stay_in_their_database(src, dst, receiver)
                check_worker_on_restored(src, dst, receiver, checkpoint)
    print(f"  figures: {len(tables)} amebo tables, {len(user_tables)} read models and "
          f"{len(sequences)} sequences compared, {rows} rows; dump {dump_s:.2f} s "
          f"({os.path.getsize(dump_path)} bytes), restore {restore_s:.2f} s")
    print(f"--- summary: {checks.passed} checks passed, {len(checks.failed)} failed")
    for name in checks.failed:
        print(f"FAIL: {name}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
