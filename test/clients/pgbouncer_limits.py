"""What must not be used through pgbouncer in transaction pooling mode, shown on a real
pgbouncer (run by test/scripts/clients.sh). Each test shows the failure through pgbouncer,
the same steps behaving correctly on a direct connection, and the safe alternative
working through pgbouncer.

Environment: AMEBO_DIRECT_DSN (the server), AMEBO_BOUNCER_DSN (a pgbouncer pool of at least
2 server connections) and AMEBO_BOUNCER_ONE_DSN (a pool of exactly 1 server connection, so
that two clients deterministically share one server session, as they do at random under
load).
"""
import json
import os
import select
import unittest
import uuid

import psycopg

DIRECT = os.environ["AMEBO_DIRECT_DSN"]
BOUNCER = os.environ["AMEBO_BOUNCER_DSN"]
BOUNCER_ONE = os.environ["AMEBO_BOUNCER_ONE_DSN"]


class TransactionPoolingLimits(unittest.TestCase):
    """Session state does not belong to a client through pgbouncer's transaction pooling."""

    # Opens an autocommit connection (closed after the test), by default without prepared
    # statements.
    def connect(self, dsn, prepare_threshold=None):
        conn = psycopg.connect(dsn, autocommit=True, prepare_threshold=prepare_threshold)
        self.addCleanup(conn.close)
        return conn

    # The value of amebo.snapshots_to_keep that a session sees.
    @staticmethod
    def snapshots_to_keep(conn):
        return conn.execute("SHOW amebo.snapshots_to_keep").fetchone()[0]

    # SET (session level) of an amebo setting leaks to other clients of the same server
    # connection; SET LOCAL inside a transaction does not, and amebo honours it there.
    def test_set_amebo_setting(self):
        for dsn, leaks in ((DIRECT, False), (BOUNCER_ONE, True)):
            setter, other = self.connect(dsn), self.connect(dsn)
            setter.execute("SET amebo.snapshots_to_keep = 1")
            self.assertEqual(self.snapshots_to_keep(other), "1" if leaks else "3", dsn)
            setter.execute("RESET amebo.snapshots_to_keep")

        setter, other = self.connect(BOUNCER_ONE), self.connect(BOUNCER_ONE)
        stream = f"setting-{uuid.uuid4()}"
        setter.execute("SELECT amebo.append_events(%s, %s::jsonb)", (stream, json.dumps(
            [{"action": "setting.tested", "payload": {"n": n}} for n in (1, 2)])))
        with setter.transaction():
            setter.execute("SET LOCAL amebo.snapshots_to_keep = 1")
            setter.execute("SELECT amebo.save_snapshot(%s, 1, '{}')", (stream,))
            setter.execute("SELECT amebo.save_snapshot(%s, 2, '{}')", (stream,))
        kept = setter.execute("SELECT count(*) FROM amebo.snapshots WHERE stream = %s",
                              (stream,)).fetchone()[0]
        self.assertEqual(kept, 1)
        self.assertEqual(self.snapshots_to_keep(other), "3")

    # psycopg prepares a query after its 5th execution (prepare_threshold); through
    # pgbouncer 1.18 another client's prepared statement of the same name is on the server
    # session already (or a client's own is missing on another server session). Prepared
    # statements also outlive the client that made them: they stay on the server session,
    # so this test starts and ends with DEALLOCATE ALL there.
    def test_prepared_statements(self):
        self.connect(BOUNCER_ONE).execute("DEALLOCATE ALL")
        self.addCleanup(lambda: self.connect(BOUNCER_ONE).execute("DEALLOCATE ALL"))
        for dsn, fails in ((DIRECT, False), (BOUNCER_ONE, True)):
            first, second = (self.connect(dsn, prepare_threshold=5) for _ in range(2))
            for _ in range(6):
                first.execute("SELECT amebo.stream_version(%s)", ("prepared-1",))
            try:
                for _ in range(6):
                    second.execute("SELECT amebo.stream_version(%s) + 0", ("prepared-1",))
                error = None
            except psycopg.Error as caught:
                error = caught.sqlstate
            self.assertEqual(error, "42P05" if fails else None, dsn)

        first, second = (self.connect(BOUNCER_ONE) for _ in range(2))
        for _ in range(6):
            first.execute("SELECT amebo.stream_version(%s)", ("prepared-1",))
            second.execute("SELECT amebo.stream_version(%s) + 0", ("prepared-1",))
        self.assertEqual(first.prepare_threshold, None)

    # A session-level advisory lock stays with the server session: another client on it
    # "takes" the same lock too (locks are re-entrant per session). A transaction-level
    # advisory lock excludes as it should.
    def test_advisory_locks(self):
        key = 424242
        for dsn, excludes in ((DIRECT, True), (BOUNCER_ONE, False)):
            holder, other = self.connect(dsn), self.connect(dsn)
            self.assertTrue(holder.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0])
            taken = other.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
            self.assertEqual(taken, not excludes, dsn)
            other.execute("SELECT pg_advisory_unlock_all()")
            holder.execute("SELECT pg_advisory_unlock_all()")

        holder, other = self.connect(BOUNCER), self.connect(BOUNCER)
        with holder.transaction():
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            taken = other.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()[0]
            self.assertFalse(taken)
        self.assertTrue(other.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()[0])

    # Whether a listener on dsn receives a NOTIFY sent by another (direct) session.
    def notification_arrives(self, dsn, timeout):
        listener = self.connect(dsn)
        received = []
        listener.add_notify_handler(received.append)
        channel = f"amebo_{uuid.uuid4().hex}"
        listener.execute(f"LISTEN {channel}")
        self.connect(DIRECT).execute(f"NOTIFY {channel}, 'hello'")
        readable, _, _ = select.select([listener.fileno()], [], [], timeout)
        if readable:
            listener.execute("SELECT 1")
        return [n.payload for n in received] == ["hello"]

    # LISTEN belongs to the server session, which goes back to the pool after the
    # statement: the client never hears the notification.
    def test_listen(self):
        self.assertTrue(self.notification_arrives(DIRECT, 10))
        self.assertFalse(self.notification_arrives(BOUNCER, 2))

    # A temporary table belongs to the server session: another client on it sees it. One
    # created in a transaction with ON COMMIT DROP is safe.
    def test_temp_tables(self):
        for dsn, leaks in ((DIRECT, False), (BOUNCER_ONE, True)):
            creator, other = self.connect(dsn), self.connect(dsn)
            creator.execute("CREATE TEMP TABLE scratch (n int)")
            creator.execute("INSERT INTO scratch VALUES (1)")
            try:
                seen = other.execute("SELECT count(*) FROM scratch").fetchone()[0]
            except psycopg.errors.UndefinedTable:
                seen = None
            self.assertEqual(seen, 1 if leaks else None, dsn)
            creator.execute("DROP TABLE scratch")

        creator, other = self.connect(BOUNCER_ONE), self.connect(BOUNCER_ONE)
        with creator.transaction():
            creator.execute("CREATE TEMP TABLE scratch (n int) ON COMMIT DROP")
            creator.execute("INSERT INTO scratch VALUES (1), (2)")
            self.assertEqual(creator.execute("SELECT count(*) FROM scratch").fetchone()[0], 2)
        with self.assertRaises(psycopg.errors.UndefinedTable):
            other.execute("SELECT count(*) FROM scratch")


if __name__ == "__main__":
    unittest.main(verbosity=2)
