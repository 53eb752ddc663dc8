#!/usr/bin/env python3
"""The demonstration's walk: the design guide's user story told through amebo's SQL API.

Every step prints a heading, one sentence, the SQL and its result, and checks what it claims;
a claim that does not hold stops the walk with "CLAIM FAILED" and exit status 1 (the test
test/scripts/demo.sh relies on it). examples/demo.sh starts the cluster and the webhook
receiver and runs this file:
    python3 examples/demo.py --host SOCKET_DIR --port PORT --receiver http://127.0.0.1:PORT
"""

import argparse
import json
import os
import sys
import threading
import time

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "lib"))
from receiver import ReceiverClient  # noqa: E402  (the tests' webhook receiver)

CREATE_USER_CREATED = """SELECT amebo.create_action('user.created', 'users-service', '{
    "type": "object", "required": ["user_id", "email", "name"],
    "properties": {"user_id": {"type": "string"}, "email": {"type": "string", "format": "email"},
                   "name": {"type": "string", "minLength": 1}}}')"""
CREATE_EMAIL_VERIFIED = """SELECT amebo.create_action('user.email_verified', 'users-service', '{
    "type": "object", "required": ["user_id", "verified_at"],
    "properties": {"verified_at": {"type": "string", "format": "date-time"}}}')"""
VERIFY_42 = """SELECT amebo.append_event('user-42', 'user.email_verified',
           '{"user_id": "42", "verified_at": "2026-11-27T10:00:00Z"}', expected_version => 1)"""
READ_MODEL = "SELECT user_id, email, status, verified_at, version FROM users ORDER BY user_id"
RETRY_43 = """SELECT amebo.append_event('user-43', 'user.created',
           '{"user_id": "43", "email": "alan@example.com", "name": "Alan Turing"}',
           expected_version => 0, event_id => '5f0c6a52-2f7e-4c55-9d8c-1b0a9e1f4a43')"""

claims_checked = 0


# Stops the walk unless a claim the output makes holds.
def claim(holds, what):
    global claims_checked
    if not holds:
        print(f"\nCLAIM FAILED: {what}")
        sys.exit(1)
    claims_checked += 1


# Prints a step's numbered heading and the sentence saying what it shows.
def step(number, title, sentence):
    print(f"{number}. {title}\n   {sentence}\n")


# Prints a statement after the name of who runs it, continuation lines indented.
def print_statement(sql, who="sql"):
    prompt = f"   {who}> "
    lines = [line.strip() for line in sql.splitlines()]
    print(prompt + ("\n" + " " * (len(prompt) + 4)).join(lines))


# Runs a statement after printing it and returns its cursor; errors propagate.
def run(conn, sql, who="sql"):
    print_statement(sql, who)
    return conn.execute(sql)


# The text psql would show for a value (JSON as JSON, NULL as nothing).
def cell_text(value):
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


# Prints a result (one value after an arrow, rows under aligned column names) and returns
# its rows as text.
def print_rows(cursor):
    names = [c.name for c in cursor.description]
    rows = [[cell_text(value) for value in row] for row in cursor.fetchall()]
    if len(names) == 1 and len(rows) == 1:
        print(f"     -> {rows[0][0]}\n")
        return rows
    widths = [max(len(x) for x in column) for column in zip(names, *rows)]
    for line in [names, ["-" * w for w in widths]] + rows:
        print("     " + "  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip())
    print()
    return rows


# Prints an error as psql does: SQLSTATE, message and DETAIL.
def print_error(error):
    print(f"     ERROR {error.sqlstate}: {error.diag.message_primary}")
    print(f"     DETAIL: {error.diag.message_detail}\n")


# Runs a statement, prints its result and returns the result's rows (as text).
def show(conn, sql, who="sql"):
    return print_rows(run(conn, sql, who))


# Runs a statement that must fail, prints the error and returns it.
def show_error(conn, sql, who="sql"):
    try:
        run(conn, sql, who)
    except psycopg.Error as error:
        print_error(error)
        return error
    claim(False, "the statement above fails")


# Registers the application, its actions with their schemas, and the users read model.
def register(conn, receiver):
    step(1, "Register an application and its actions",
         "The signing secret comes back; every payload must pass its action's JSON Schema.")
    secret = show(conn, "SELECT amebo.create_application('users-service', "
                        "'https://users.example.com')")[0][0]
    show(conn, CREATE_USER_CREATED)
    show(conn, CREATE_EMAIL_VERIFIED)
    show(conn, "SELECT amebo.create_action('user.signed_in', 'users-service')  -- no schema")
    print("   sql> \\i examples/users/users.sql  -- the reducer, the users table, its projection\n")
    with open(os.path.join(HERE, "users", "users.sql")) as users_sql:
        conn.execute(users_sql.read())
    receiver.set_secret("/", secret)

    step(2, "Subscribe a webhook to user.created",
         "A background worker POSTs each new user.created event, signed with the secret above.")
    show(conn, "SELECT amebo.create_subscription('users-service', 'welcome-email', 'user.created',"
               f"\n       '{receiver.url('/welcome')}')")


# Creates user 42 and verifies the email from two command handlers at once.
def create_and_verify(conn, dsn):
    step(3, "Create user 42",
         "expected_version => 0: the stream user-42 must be new; the new version comes back.")
    rows = show(conn, """SELECT amebo.append_event('user-42', 'user.created',
           '{"user_id": "42", "email": "ada@example.com", "name": "Ada Lovelace"}',
           expected_version => 0)""")
    claim(rows == [["1"]], "user 42 was created at version 1")

    step(4, "Verify the email from two command handlers at the same time",
         "Both loaded user 42 at version 1; B waits for A's transaction, then gets AM001.")
    with psycopg.connect(dsn, autocommit=True) as handler_a, \
            psycopg.connect(dsn, autocommit=True) as handler_b:
        run(handler_a, "BEGIN", "handler A")
        rows = show(handler_a, VERIFY_42, "handler A")
        outcome = {}
        racer = threading.Thread(target=append_expecting_conflict, args=(handler_b, outcome))
        racer.start()
        wait_until_blocked(conn, handler_b.info.backend_pid)
        print_statement(VERIFY_42, "handler B")
        print("     ... waits for handler A's transaction\n")
        run(handler_a, "COMMIT", "handler A")
        racer.join(timeout=30)
    error = outcome.get("error")
    claim(error is not None, "handler B failed")
    print("\n   handler B, as soon as A committed:")
    print_error(error)
    claim(rows == [["2"]], "handler A appended version 2")
    claim(error.sqlstate == "AM001", "handler B got AM001")
    claim("is at version 2" in error.diag.message_detail, "the DETAIL gives the actual version")


# Handler B's append (in a thread): records the error it must raise.
def append_expecting_conflict(handler_b, outcome):
    try:
        handler_b.execute(VERIFY_42)
    except psycopg.Error as error:
        outcome["error"] = error


# Waits until a backend waits for a lock (handler B behind handler A's open transaction).
def wait_until_blocked(conn, pid, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = conn.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity "
                               "WHERE pid = %s", (pid,)).fetchone()
        if waiting and waiting[0]:
            return
        time.sleep(0.02)
    claim(False, "handler B waits for handler A's lock")


# A retried append (same event_id) and a payload its schema rejects.
def retry_and_reject(conn):
    step(5, "Retry an append whose reply was lost",
         "The same event_id again returns the same version and stores nothing new.")
    first = show(conn, RETRY_43, "first try")
    retry = show(conn, RETRY_43, "retry")
    count = show(conn, "SELECT count(*) FROM amebo.read_stream('user-43')")
    claim(first == retry == [["1"]], "the retry returned the same version 1")
    claim(count == [["1"]], "user-43 holds one event")

    step(6, "A payload that fails its action's schema is refused",
         "The error names the schema version, the JSON path and the rule that failed.")
    error = show_error(conn, """SELECT amebo.append_event('user-44', 'user.created',
           '{"user_id": "44", "email": "not-an-address", "name": "Eve"}')""")
    claim(error.sqlstate == "AM004" and "at /email" in error.diag.message_primary,
          "the schema error names /email")


# The inline read model, a snapshot-backed state load, and a rebuild.
def read_side(conn):
    step(7, "The users read model",
         "An inline projection updated it inside each appending transaction.")
    before = show(conn, READ_MODEL)
    claim([r[0] for r in before] == ["42", "43"], "the read model has users 42 and 43")
    claim(before[0][2] == "active" and before[0][3] != "", "user 42's email is verified")

    step(8, "Load user 42's state through its reducer",
         "After 10 sign-ins load_state replays more than 10 events, so it saves a snapshot;\n"
         "   the next load starts from that snapshot and equals a full replay.")
    show(conn, """SELECT max(amebo.append_event('user-42', 'user.signed_in', '{"user_id": "42"}'))
       AS version FROM generate_series(1, 10)""")
    show(conn, "SELECT version, state FROM amebo.load_state('user-42')")
    snapshots = show(conn, "SELECT stream, version FROM amebo.snapshots")
    show(conn, """SELECT amebo.append_event('user-42', 'user.signed_in', '{"user_id": "42"}')""")
    loaded = show(conn, "SELECT version, state = amebo.replay_state('user-42') AS equals_replay\n"
                        "FROM amebo.load_state('user-42')")
    claim(snapshots == [["user-42", "12"]], "a snapshot of user-42 was saved at version 12")
    claim(loaded == [["13", "True"]], "loading from the snapshot equals a full replay")

    step(9, "Rebuild the read model from the events",
         "rebuild_projection empties users, replays its actions' events and returns how many.")
    replayed = show(conn, "SELECT amebo.rebuild_projection('users')")
    expected = conn.execute("SELECT count(*) FROM amebo.read_all() WHERE action IN "
                            "('user.created', 'user.email_verified')").fetchone()[0]
    after = show(conn, READ_MODEL)
    claim(replayed == [[str(expected)]], f"the rebuild replayed {expected} events")
    claim(after == before, "the rebuilt read model equals the one kept inline")


# Shows the webhooks the receiver got and checks them against the user.created events.
def webhooks(conn, receiver):
    step(10, "The webhooks the receiver got",
         "One POST per user.created event (the retried append sent none), each signature valid.")
    drained = conn.execute("SELECT amebo.wait_for_deliveries(30)").fetchone()[0]
    claim(drained, "every webhook was delivered within 30 s")
    got = receiver.requests(path="/welcome")
    for request in got:
        valid = "yes" if request["signature_valid"] else "NO"
        print(f"   webhook-id {request['webhook_id']}  action {request['body']['action']}  "
              f"stream {request['body']['stream']}  signature valid: {valid}")
    created = conn.execute("SELECT event_id FROM amebo.read_all() "
                           "WHERE action = 'user.created' ORDER BY position").fetchall()
    claim(sorted(r["webhook_id"] for r in got) == sorted("msg_" + e.hex for (e,) in created),
          "exactly one webhook per user.created event")
    claim(all(r["signature_valid"] for r in got), "every signature is valid")


# Parses the arguments, then walks the story.
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True, help="the cluster's socket directory")
    ap.add_argument("--port", required=True)
    ap.add_argument("--receiver", required=True, help="the webhook receiver's base URL")
    args = ap.parse_args()
    dsn = f"host={args.host} port={args.port} user=postgres dbname=postgres"
    receiver = ReceiverClient(args.receiver)
    print("\namebo, step by step: the design guide's user story (the code: examples/demo.py)\n")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION amebo")
        register(conn, receiver)
        create_and_verify(conn, dsn)
        retry_and_reject(conn)
        read_side(conn)
        webhooks(conn, receiver)
    print(f"\nAll {claims_checked} claims above were checked and hold.")


if __name__ == "__main__":
    main()
