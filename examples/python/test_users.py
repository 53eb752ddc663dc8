"""Tests of the Python example against a real amebo database (direct or through pgbouncer).

The database comes from the PG* environment variables and must have CREATE EXTENSION amebo,
examples/users/users.sql (the server-side "users" projection) and examples/python/setup.sql
loaded. Run from this folder:
  PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres PGDATABASE=app python3 test_users.py
"""
import json
import os
import select
import subprocess
import sys
import unittest
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from amebo_store import (AggregateNotFound, AmeboEventStore, ConcurrencyError,
                         DuplicateEventError, SchemaRejected, connect)
from users import (USER_ACTIONS, UserAggregate, UserCommandHandler, UserProjection,
                   rebuild_projection, rebuild_registered_projection)
from worker import UserDirectoryWorker

HERE = os.path.dirname(os.path.abspath(__file__))
READ_MODEL_COLUMNS = "user_id, email, name, status, version"


# A new user id (a UUID, as the user.created schema requires).
def new_user_id():
    return str(uuid.uuid4())


class StoreTestCase(unittest.TestCase):
    """Gives each test a connection, an event store and a command handler."""

    def setUp(self):
        self.conn = connect()
        self.addCleanup(self.conn.close)
        self.event_store = AmeboEventStore(self.conn)
        self.command_handler = UserCommandHandler(self.event_store)

    # Creates a user through the command handler and returns its id.
    def create_user(self, email="test@example.com", name="Test User"):
        user_id = new_user_id()
        self.command_handler.handle_create_user(
            {"user_id": user_id, "email": email, "name": name})
        return user_id

    # The rows of a users table, ordered, in the columns both read models share.
    def read_model_rows(self, table):
        return self.conn.execute(
            f"SELECT {READ_MODEL_COLUMNS} FROM {table} ORDER BY user_id").fetchall()


class EventSourcingTest(StoreTestCase):
    """The guide's aggregate, command handler and event store on amebo."""

    # The guide's test, with the real event store instead of an in-memory one.
    def test_user_creation_and_verification(self):
        # Given
        user_id = new_user_id()
        event_store = self.event_store
        command_handler = UserCommandHandler(event_store)

        # When - Create user
        create_command = {"user_id": user_id, "email": "test@example.com",
                          "name": "Test User"}
        user = command_handler.handle_create_user(create_command)

        # Then
        self.assertEqual(user.email, "test@example.com")
        self.assertEqual(user.status, "pending")
        self.assertEqual(user.version, 1)

        # When - Verify email
        user = command_handler.handle_verify_email({"user_id": user_id})

        # Then
        self.assertEqual(user.status, "active")
        self.assertEqual(user.version, 2)

        # Verify events were stored
        events = event_store.get_events(f"user-{user_id}")
        self.assertEqual(len(events), 2)
        self.assertEqual(events[0]["action"], "user.created")
        self.assertEqual(events[1]["action"], "user.email_verified")
        self.assertEqual([e["version"] for e in events], [1, 2])
        self.assertEqual([e["schema_version"] for e in events], [1, 1])
        reloaded = event_store.load_aggregate(UserAggregate, user_id)
        self.assertEqual((reloaded.status, reloaded.version, reloaded.name),
                         ("active", 2, "Test User"))

    # A command decided on a stale version is refused with ConcurrencyError (AM001).
    def test_version_conflict(self):
        user_id = self.create_user()
        first = self.event_store.load_aggregate(UserAggregate, user_id)
        second = self.event_store.load_aggregate(UserAggregate, user_id)
        self.event_store.save_events(first.stream, [first.verify_email()], 1)
        stale_event = second.verify_email()
        with self.assertRaises(ConcurrencyError) as caught:
            self.event_store.save_events(second.stream, [stale_event], 1)
        self.assertEqual(caught.exception.__cause__.sqlstate, "AM001")
        self.assertIn("actual version 2", str(caught.exception))
        self.assertEqual(self.event_store.get_current_version(f"user-{user_id}"), 2)
        with self.assertRaises(ConcurrencyError):
            self.event_store.save_events(
                f"user-{user_id}", [UserAggregate(user_id).create("a@example.com", "A")], 0)
        with self.assertRaisesRegex(ValueError, "already exists"):
            self.command_handler.handle_create_user(
                {"user_id": user_id, "email": "b@example.com", "name": "B"})
        with self.assertRaisesRegex(ValueError, "already verified"):
            self.command_handler.handle_verify_email({"user_id": user_id})

    # Sending the same events again (a retry after a lost reply) stores nothing twice, even
    # though the expected version no longer matches; one id with other content is AM002.
    def test_idempotent_retry(self):
        user = UserAggregate(new_user_id())
        created = user.create("retry@example.com", "Retry")
        self.assertEqual(self.event_store.save_events(user.stream, [created], 0), 1)
        self.assertEqual(self.event_store.save_events(user.stream, [created], 0), 1)
        batch = [user.verify_email(),
                 {"event_id": uuid.uuid4(), "action": "user.note_added",
                  "payload": {"note": "batch of two"}, "metadata": {"by": "test"}}]
        self.assertEqual(self.event_store.save_events(user.stream, batch, 1), 3)
        self.assertEqual(self.event_store.save_events(user.stream, batch, 1), 3)
        events = self.event_store.get_events(user.stream)
        self.assertEqual([e["event_id"] for e in events],
                         [created["event_id"]] + [e["event_id"] for e in batch])
        self.assertEqual(events[2]["metadata"], {"by": "test"})
        changed = dict(created, payload=dict(created["payload"], name="Other"))
        with self.assertRaises(DuplicateEventError):
            self.event_store.save_events(user.stream, [changed], None)
        self.assertEqual(self.event_store.get_current_version(user.stream), 3)

    # With the actions registered (setup.sql), a payload failing the schema is refused
    # before it is stored, and the error names the failing place.
    def test_schema_rejection(self):
        registered = self.conn.execute(
            "SELECT count(*) FROM amebo.action_list WHERE action = ANY(%s)"
            " AND schema_version > 0", (USER_ACTIONS,)).fetchone()[0]
        self.assertEqual(registered, 2, "setup.sql registers two actions with schemas")
        user_id = new_user_id()
        with self.assertRaises(SchemaRejected) as caught:
            self.command_handler.handle_create_user(
                {"user_id": user_id, "email": "not-an-email", "name": "Bad"})
        self.assertEqual(caught.exception.__cause__.sqlstate, "AM004")
        self.assertIn("/email", str(caught.exception))
        self.assertEqual(self.event_store.get_current_version(f"user-{user_id}"), 0)
        with self.assertRaises(SchemaRejected):
            self.command_handler.handle_create_user(
                {"user_id": user_id, "email": "ok@example.com", "name": ""})
        # An unregistered action under amebo.unknown_actions = reject (set for this
        # transaction only: SET LOCAL is also what works through pgbouncer) is AM005.
        unregistered = {"action": "user.nickname_set", "payload": {"nickname": "x"}}
        with self.assertRaises(SchemaRejected) as caught:
            with self.conn.transaction():
                self.conn.execute("SET LOCAL amebo.unknown_actions = 'reject'")
                self.event_store.save_events(f"user-{user_id}", [unregistered], None)
        self.assertEqual(caught.exception.__cause__.sqlstate, "AM005")
        self.assertEqual(self.event_store.save_events(f"user-{user_id}", [unregistered], None), 1)

    # Loading a user that has no events raises AggregateNotFound.
    def test_load_missing_aggregate(self):
        with self.assertRaises(AggregateNotFound):
            self.event_store.load_aggregate(UserAggregate, new_user_id())


class ProjectionTest(StoreTestCase):
    """UserProjection, the guide's rebuild_projection, and amebo.rebuild_projection."""

    # The read model follows the events, and a second catch-up has nothing to apply.
    def test_catch_up(self):
        projection = UserProjection(self.conn)
        projection.catch_up()
        user_id = self.create_user(email="proj@example.com", name="Proj")
        self.assertEqual(projection.catch_up(), 1)
        self.assertEqual(projection.get_user(user_id)["status"], "pending")
        self.command_handler.handle_verify_email({"user_id": user_id})
        self.assertEqual(projection.catch_up(), 1)
        self.assertEqual(projection.catch_up(), 0)
        row = projection.get_user(user_id)
        self.assertEqual((row["email"], row["name"], row["status"], row["version"]),
                         ("proj@example.com", "Proj", "active", 2))
        self.assertIsNotNone(row["verified_at"])
        self.assertIsNone(projection.get_user(new_user_id()))

    # Both rebuilds replay every user event and give the same rows as before; a rebuild
    # from a date keeps only the users created since then.
    def test_rebuilds(self):
        projection = UserProjection(self.conn)
        self.create_user(email="old@example.com")
        since = datetime.now(timezone.utc)
        recent = [self.create_user(email=f"new{i}@example.com") for i in range(3)]
        self.command_handler.handle_verify_email({"user_id": recent[0]})
        projection.catch_up()
        before = self.read_model_rows("readmodel.users")
        user_events = self.conn.execute(
            "SELECT count(*) FROM amebo.events WHERE action = ANY(%s)",
            (USER_ACTIONS,)).fetchone()[0]

        self.assertEqual(rebuild_projection(projection), user_events)
        self.assertEqual(self.read_model_rows("readmodel.users"), before)
        self.assertEqual(rebuild_registered_projection(self.conn, "users"), user_events)
        self.assertEqual(self.read_model_rows("public.users"), before)

        self.assertEqual(rebuild_projection(projection, from_date=since), 4)
        self.assertEqual(sorted(r[0] for r in self.read_model_rows("readmodel.users")),
                         sorted(recent))
        self.assertEqual(rebuild_projection(projection), user_events)
        self.assertEqual(projection.catch_up(), 0)


class ConsumerWorkerTest(StoreTestCase):
    """The pull-consumer worker: poll, read model and ack in one transaction."""

    # Runs the worker until nothing is due; returns how many events it applied.
    def drain(self, worker):
        total = 0
        while (applied := worker.run_once()) > 0:
            total += applied
        return total

    def directory(self, email):
        return self.conn.execute(
            "SELECT user_id::text, verified, version FROM readmodel.user_directory WHERE email = %s",
            (email,)).fetchone()

    # Every user event reaches the read model once; a failed batch rolls back with its
    # leases: the read model is untouched and the events are due again at once.
    def test_worker(self):
        worker = UserDirectoryWorker(connect())
        self.addCleanup(worker.conn.close)
        self.drain(worker)
        email, broken_email = (f"{name}-{uuid.uuid4()}@example.com" for name in ("worker", "broken"))
        user_id = self.create_user(email=email, name="Worker")
        self.command_handler.handle_verify_email({"user_id": user_id})
        self.assertEqual(self.drain(worker), 2)
        self.assertEqual(self.directory(email), (user_id, True, 2))

        broken = UserDirectoryWorker(connect())
        self.addCleanup(broken.conn.close)
        broken.apply = lambda *event: 1 / 0
        other = self.create_user(email=broken_email, name="Broken")
        with self.assertRaises(ZeroDivisionError):
            broken.run_once()
        self.assertIsNone(self.directory(broken_email))
        self.assertEqual(self.conn.execute(
            "SELECT leased FROM amebo.consumer_status WHERE consumer = 'user-directory'"
        ).fetchone()[0], 0)
        self.assertEqual(self.drain(worker), 1)
        self.assertEqual(self.directory(broken_email), (other, False, 1))

    # A worker blocked on LISTEN wakes when a user is created (a session of its own:
    # through pgbouncer in transaction mode notifications never arrive).
    @unittest.skipIf(os.environ.get("AMEBO_THROUGH_PGBOUNCER"), "LISTEN needs a session")
    def test_listen(self):
        worker = UserDirectoryWorker(connect())
        self.addCleanup(worker.conn.close)
        worker.conn.execute("LISTEN amebo_consumer")
        self.drain(worker)
        email = f"listen-{uuid.uuid4()}@example.com"
        self.create_user(email=email, name="Listen")
        readable, _, _ = select.select([worker.conn.fileno()], [], [], 5)
        self.assertTrue(readable, "no NOTIFY within 5 s")
        self.assertEqual(self.drain(worker), 1)
        self.assertIsNotNone(self.directory(email))


# Sends one JSON request to the service; returns (status, parsed body).
def http(base_url, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class HttpServiceTest(unittest.TestCase):
    """app.py as a real process on 127.0.0.1, driven over HTTP."""

    @classmethod
    def setUpClass(cls):
        cls.server = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "app.py"), "--port", "0"],
            stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([cls.server.stdout], [], [], 30)
        line = cls.server.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            cls.stop_server()
            raise RuntimeError(f"app.py did not start: {line!r}")
        cls.base_url = line.split()[-1]

    # Stops the service process.
    @classmethod
    def stop_server(cls):
        cls.server.terminate()
        try:
            cls.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cls.server.kill()
            cls.server.wait()
        cls.server.stdout.close()

    @classmethod
    def tearDownClass(cls):
        cls.stop_server()

    # POST /users answers 201 with the new id and version; GET reads the read model.
    def test_create_and_get(self):
        status, created = http(self.base_url, "POST", "/users",
                               {"email": "http@example.com", "name": "Http User"})
        self.assertEqual(status, 201)
        self.assertEqual(created["version"], 1)
        uuid.UUID(created["user_id"])
        status, user = http(self.base_url, "GET", f"/users/{created['user_id']}")
        self.assertEqual(status, 200)
        self.assertEqual((user["email"], user["name"], user["status"], user["version"]),
                         ("http@example.com", "Http User", "pending", 1))

    # Verifying an email moves the user to active; a second verification is a conflict.
    def test_verify_email(self):
        _, created = http(self.base_url, "POST", "/users",
                          {"email": "verify@example.com", "name": "Verify"})
        path = f"/users/{created['user_id']}"
        status, verified = http(self.base_url, "POST", path + "/verify-email")
        self.assertEqual((status, verified["status"], verified["version"]), (200, "active", 2))
        status, user = http(self.base_url, "GET", path)
        self.assertEqual((status, user["status"], user["version"]), (200, "active", 2))
        self.assertIsNotNone(user["verified_at"])
        status, body = http(self.base_url, "POST", path + "/verify-email")
        self.assertEqual(status, 409)
        self.assertIn("already verified", body["error"])

    # Concurrent requests: creates all succeed and are readable at once; of concurrent
    # verifications of one user exactly one succeeds, the others get 409 (a version conflict
    # or "already verified", depending on when each loaded the user).
    def test_concurrent_requests(self):
        with ThreadPoolExecutor(max_workers=8) as pool:
            created = list(pool.map(lambda i: http(self.base_url, "POST", "/users", {
                "email": f"many{i}@example.com", "name": f"Many {i}"}), range(16)))
            self.assertEqual([status for status, _ in created], [201] * 16)
            reads = list(pool.map(lambda c: http(self.base_url, "GET", f"/users/{c[1]['user_id']}"),
                                  created))
            self.assertEqual(sorted(user["email"] for _, user in reads),
                             sorted(f"many{i}@example.com" for i in range(16)))
            path = f"/users/{created[0][1]['user_id']}"
            verified = list(pool.map(lambda _: http(self.base_url, "POST", path + "/verify-email"),
                                     range(8)))
        self.assertEqual(sorted(status for status, _ in verified), [200] + [409] * 7)
        status, user = http(self.base_url, "GET", path)
        self.assertEqual((status, user["status"], user["version"]), (200, "active", 2))

    # Unknown users are 404, a malformed body 400, a payload failing its schema 422.
    def test_errors(self):
        missing = new_user_id()
        status, body = http(self.base_url, "GET", f"/users/{missing}")
        self.assertEqual((status, body["error"]), (404, "User not found"))
        status, _ = http(self.base_url, "POST", f"/users/{missing}/verify-email")
        self.assertEqual(status, 404)
        status, _ = http(self.base_url, "POST", "/users", {"email": "x@example.com"})
        self.assertEqual(status, 400)
        status, body = http(self.base_url, "POST", "/users",
                            {"email": "not-an-email", "name": "Bad"})
        self.assertEqual(status, 422)
        self.assertIn("/email", body["error"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
