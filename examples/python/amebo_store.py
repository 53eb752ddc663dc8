"""The design guide's AmeboEventStore on amebo's SQL functions, with psycopg 3.

Streams are amebo streams (an aggregate's events); optimistic concurrency is amebo's
expected_version, checked by the server in the same step as the append (no separate
version read that a concurrent writer could slip past), and amebo's SQLSTATEs become
Python exceptions: AM001 ConcurrencyError, AM002 DuplicateEventError, AM004/AM005
SchemaRejected.
"""
import uuid

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


class ConcurrencyError(Exception):
    """The stream was not at the expected version (SQLSTATE AM001): reload and decide again."""

    def __init__(self, stream, expected_version, error):
        super().__init__(f"{error.diag.message_primary} ({error.diag.message_detail})")
        self.stream = stream
        self.expected_version = expected_version


class DuplicateEventError(Exception):
    """An event_id is stored already with other content, or a batch is partly stored (AM002)."""


class SchemaRejected(ValueError):
    """A payload fails its action's JSON Schema (AM004) or its action is unknown (AM005)."""


class AggregateNotFound(LookupError):
    """The aggregate's stream has no events."""


# Opens a connection the way the examples use it: autocommit (every amebo call is one
# statement, or an explicit transaction block), and no server-side prepared statements
# (pgbouncer 1.18 in transaction mode cannot carry them; psycopg would prepare a query after
# its 5th execution).
def connect(conninfo="", **kwargs):
    kwargs.setdefault("prepare_threshold", None)
    return psycopg.connect(conninfo, autocommit=True, **kwargs)


# Turns amebo's SQLSTATEs into this module's exceptions; None for other errors.
def translate_error(error, stream, expected_version):
    if error.sqlstate == "AM001":
        return ConcurrencyError(stream, expected_version, error)
    if error.sqlstate == "AM002":
        return DuplicateEventError(error.diag.message_primary)
    if error.sqlstate in ("AM004", "AM005"):
        return SchemaRejected(error.diag.message_primary)
    return None


# The JSON object append_events takes for one new event.
def event_for_batch(event):
    item = {"action": event["action"], "payload": event["payload"]}
    if event.get("metadata") is not None:
        item["metadata"] = event["metadata"]
    if event.get("event_id") is not None:
        item["event_id"] = str(event["event_id"])
    return item


class AmeboEventStore:
    """Saves and loads event-sourced aggregates in amebo streams."""

    def __init__(self, conn):
        self.conn = conn

    # Appends new events at expected_version (None: at any version) and returns the
    # stream's new version. Events carry action, payload, and optionally metadata and
    # event_id: resending the same events with the same ids (a retry after a lost reply)
    # returns the version they were stored at and writes nothing.
    def save_events(self, stream, events, expected_version):
        try:
            if len(events) == 1:
                return self._append_one(stream, events[0], expected_version)
            return self.conn.execute(
                "SELECT amebo.append_events(%s, %s, %s)",
                (stream, Jsonb([event_for_batch(e) for e in events]), expected_version),
            ).fetchone()[0]
        except psycopg.Error as error:
            translated = translate_error(error, stream, expected_version)
            if translated is None:
                raise
            raise translated from error

    # Appends one event with append_event.
    def _append_one(self, stream, event, expected_version):
        event_id = event.get("event_id")
        metadata = event.get("metadata")
        return self.conn.execute(
            "SELECT amebo.append_event(%s, %s, %s, %s, %s, %s)",
            (stream, event["action"], Jsonb(event["payload"]), expected_version,
             None if metadata is None else Jsonb(metadata),
             None if event_id is None else uuid.UUID(str(event_id))),
        ).fetchone()[0]

    # The stream's events after from_version, in version order, as dicts with the columns
    # of amebo.events (position, event_id, stream, version, action, payload, metadata,
    # recorded_at, schema_version).
    def get_events(self, stream, from_version=0):
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute("SELECT * FROM amebo.read_stream(%s, %s)", (stream, from_version))
            return cur.fetchall()

    # The stream's version: its number of events (0 when it has none).
    def get_current_version(self, stream):
        return self.conn.execute("SELECT amebo.stream_version(%s)", (stream,)).fetchone()[0]

    # Replays an aggregate's events into a new instance of aggregate_class; raises
    # AggregateNotFound when its stream is empty.
    def load_aggregate(self, aggregate_class, aggregate_id):
        aggregate = aggregate_class(aggregate_id)
        events = self.get_events(aggregate.stream)
        if not events:
            raise AggregateNotFound(aggregate.stream)
        for event in events:
            aggregate.apply_event(event)
        return aggregate
