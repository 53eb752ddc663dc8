"""A pull-consumer worker: readmodel.user_directory (email -> user) kept from amebo's
consumer "user-directory" (see setup.sql).

Each batch is one transaction: poll leases the next events of the worker's member, the
read model is written, and ack removes the events from the consumer's bookkeeping. They
commit together or not at all, so every event's effect lands exactly once: if the worker
dies, its transaction rolls back and the events come back when their lease ends; if it was
too slow and another session of the member got the events, ack raises AM009 and this
worker's writes roll back. Between batches the worker blocks on LISTEN amebo_consumer, which
every commit that adds an event for the consumer wakes (LISTEN needs a session of its own:
through pgbouncer in transaction mode, notifications never arrive, so the loop also polls
every idle_timeout seconds).

Run (connection from the PG* environment variables):
  python3 examples/python/worker.py --member 0
"""
import argparse
import select

import psycopg

CONSUMER = "user-directory"


class UserDirectoryWorker:
    """One member of the user-directory consumer, on its own connection."""

    def __init__(self, conn, member=0, lease="30 seconds"):
        self.conn = conn
        self.member = member
        self.lease = lease

    # Polls one batch, applies it to the read model and acks it in one transaction;
    # returns how many events it applied (0: nothing due).
    def run_once(self, max_count=100):
        try:
            with self.conn.transaction():
                events = self.conn.execute(
                    "SELECT event_id, action, payload, version FROM amebo.poll(%s, %s, %s, %s)",
                    (CONSUMER, self.member, max_count, self.lease)).fetchall()
                for _event_id, action, payload, version in events:
                    self.apply(action, payload, version)
                if events:
                    self.conn.execute("SELECT amebo.ack(%s, %s, %s)",
                                      (CONSUMER, self.member, [e[0] for e in events]))
        except psycopg.Error as error:
            if error.sqlstate != "AM009":
                raise
            return 0  # another session handled these events: our writes rolled back
        return len(events)

    # Writes one event into the read model.
    def apply(self, action, payload, version):
        if action == "user.created":
            self.conn.execute(
                "INSERT INTO readmodel.user_directory (email, user_id, verified, version) "
                "VALUES (%s, %s, false, %s) ON CONFLICT (email) DO UPDATE "
                "SET user_id = excluded.user_id, version = excluded.version",
                (payload["email"], payload["user_id"], version))
        elif action == "user.email_verified":
            self.conn.execute(
                "UPDATE readmodel.user_directory SET verified = true, version = %s "
                "WHERE user_id = %s", (version, payload["user_id"]))

    # Processes batches until stop() returns true, sleeping on LISTEN while caught up.
    def run(self, stop=lambda: False, idle_timeout=5.0):
        self.conn.execute("LISTEN amebo_consumer")
        if not self.conn.autocommit:
            self.conn.commit()
        while not stop():
            if self.run_once() == 0:
                self.wait(idle_timeout)

    # Waits until a notification arrives or timeout seconds pass (the next query reads it).
    def wait(self, timeout):
        select.select([self.conn.fileno()], [], [], timeout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--member", type=int, default=0)
    args = parser.parse_args()
    with psycopg.connect(autocommit=True) as conn:
        UserDirectoryWorker(conn, args.member).run()


if __name__ == "__main__":
    main()
