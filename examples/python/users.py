"""The design guide's user example on amebo: UserAggregate, UserCommandHandler,
UserProjection (the read model readmodel.users, see setup.sql) and rebuild_projection.

A user's stream is user-<user_id>. New events carry a client-made event_id, so sending a
command's events again after a lost reply stores nothing twice. An event's version is
amebo's stream version (not a payload field).
"""
import uuid
from datetime import datetime, timezone

from psycopg.rows import dict_row

from amebo_store import AggregateNotFound

USER_ACTIONS = ["user.created", "user.email_verified", "user.updated"]


class UserAggregate:
    """A user: created pending, then active once the email is verified."""

    def __init__(self, user_id):
        self.user_id = user_id
        self.version = 0
        self.email = None
        self.name = None
        self.status = "pending"

    @property
    def stream(self):
        return f"user-{self.user_id}"

    # Decides to create the user: returns the user.created event, already applied.
    def create(self, email, name):
        return self._record("user.created",
                            {"user_id": self.user_id, "email": email, "name": name})

    # Decides to mark the email verified: returns the user.email_verified event, applied.
    def verify_email(self):
        if self.status != "pending":
            raise ValueError("User already verified")
        return self._record("user.email_verified", {
            "user_id": self.user_id,
            "verified_at": datetime.now(timezone.utc).isoformat(),
        })

    # Builds a new event at the next version and applies it.
    def _record(self, action, payload):
        event = {"event_id": uuid.uuid4(), "action": action, "payload": payload,
                 "version": self.version + 1}
        self.apply_event(event)
        return event

    # Folds one event (stored or new) into the state.
    def apply_event(self, event):
        payload = event["payload"]
        if event["action"] == "user.created":
            self.email = payload["email"]
            self.name = payload["name"]
            self.status = "pending"
        elif event["action"] == "user.email_verified":
            self.status = "active"
        self.version = event["version"]


class UserCommandHandler:
    """Runs user commands: load, decide, save with the version that was loaded."""

    def __init__(self, event_store):
        self.event_store = event_store

    # Creates a user; the append expects an empty stream, so two concurrent creates of one
    # user_id cannot both succeed (the loser gets ConcurrencyError).
    def handle_create_user(self, command):
        user_id = command["user_id"]
        try:
            self.event_store.load_aggregate(UserAggregate, user_id)
            raise ValueError("User already exists")
        except AggregateNotFound:
            pass
        user = UserAggregate(user_id)
        event = user.create(command["email"], command["name"])
        self.event_store.save_events(user.stream, [event], 0)
        return user

    # Verifies a user's email; a concurrent change since the load raises ConcurrencyError.
    def handle_verify_email(self, command):
        user = self.event_store.load_aggregate(UserAggregate, command["user_id"])
        expected_version = user.version
        event = user.verify_email()
        self.event_store.save_events(user.stream, [event], expected_version)
        return user


class UserProjection:
    """The users read model (table readmodel.users), fed from amebo.read_all, which never
    skips an event that commits late. Its checkpoint (readmodel.checkpoints) is updated in
    the same transaction as the rows, so every event is applied exactly once."""

    name = "users"

    def __init__(self, conn):
        self.conn = conn

    # Applies one event to the read model.
    def handle_event(self, event):
        handlers = {"user.created": self.handle_user_created,
                    "user.email_verified": self.handle_user_email_verified}
        handler = handlers.get(event["action"])
        if handler:
            handler(event)

    # Inserts the new user's row.
    def handle_user_created(self, event):
        payload = event["payload"]
        self.conn.execute(
            "INSERT INTO readmodel.users (user_id, email, name, status, created_at, version)"
            " VALUES (%s, %s, %s, 'pending', %s, %s)",
            (payload["user_id"], payload["email"], payload["name"], event["recorded_at"],
             event["version"]))

    # Marks the user active.
    def handle_user_email_verified(self, event):
        payload = event["payload"]
        self.conn.execute(
            "UPDATE readmodel.users SET status = 'active', verified_at = %s, version = %s"
            " WHERE user_id = %s",
            (payload["verified_at"], event["version"], payload["user_id"]))

    # Empties the read model (for a rebuild).
    def clear(self):
        self.conn.execute("TRUNCATE readmodel.users")

    # Locks the checkpoint row for this transaction (so catch-ups run one at a time) and
    # returns the last position applied.
    def lock_checkpoint(self):
        return self.conn.execute(
            "SELECT position FROM readmodel.checkpoints WHERE projection = %s FOR UPDATE",
            (self.name,)).fetchone()[0]

    # Applies the user events after a position (recorded at or after since, if given) in
    # pages, records the new checkpoint, and returns how many events were applied.
    def apply_events_after(self, position, since=None, page_size=500):
        applied = 0
        while True:
            with self.conn.cursor(row_factory=dict_row) as cur:
                cur.execute("SELECT * FROM amebo.read_all(%s, %s, %s, %s)",
                            (position, page_size, USER_ACTIONS, since))
                events = cur.fetchall()
            for event in events:
                self.handle_event(event)
                position = event["position"]
            applied += len(events)
            if len(events) < page_size:
                break
        self.conn.execute("UPDATE readmodel.checkpoints SET position = %s WHERE projection = %s",
                          (position, self.name))
        return applied

    # Brings the read model up to date; returns how many events it applied.
    def catch_up(self):
        with self.conn.transaction():
            return self.apply_events_after(self.lock_checkpoint())

    # The read model's row for a user as a JSON-ready dict, or None.
    def get_user(self, user_id):
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute("SELECT user_id, email, name, status, created_at, verified_at, version"
                        " FROM readmodel.users WHERE user_id = %s", (user_id,))
            row = cur.fetchone()
        if row is None:
            return None
        for key in ("created_at", "verified_at"):
            row[key] = row[key].isoformat() if row[key] else None
        return row


# The guide's rebuild_projection: empties the read model and replays the user events
# (recorded at or after from_date, if given) in one transaction; returns the count.
def rebuild_projection(projection, from_date=None):
    with projection.conn.transaction():
        projection.lock_checkpoint()
        projection.clear()
        count = projection.apply_events_after(0, since=from_date)
    print(f"Rebuilt {projection.name} with {count} events")
    return count


# The same done by amebo itself, for a projection registered with amebo.create_projection
# (examples/users/users.sql registers "users", an inline projection into public.users):
# resets it and replays the matching events in the server; returns the count.
def rebuild_registered_projection(conn, name, from_date=None):
    return conn.execute("SELECT amebo.rebuild_projection(%s, %s)", (name, from_date)).fetchone()[0]
