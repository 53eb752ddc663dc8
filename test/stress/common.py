"""Helpers shared by the stress and crash tests (test/scripts/stress.sh, crash.sh)."""
import re
import threading

import psycopg

# The positions of read_all's result columns we use (amebo.events column order).
EVENT_COLUMNS = "position, event_id::text, stream, version, action, payload->>'tag'"

CONFLICT_RE = re.compile(r"expected version (\d+), actual version (\d+)")


def connect(host, port, **kwargs):
    """An autocommit connection to the test cluster; statement_timeout keeps a hang finite."""
    return psycopg.connect(host=host, port=port, dbname="postgres", user="postgres",
                           autocommit=True, options="-c statement_timeout=60000", **kwargs)


def sqlstate(exc):
    return getattr(exc, "sqlstate", None)


def conflict_versions(exc):
    """(expected, actual) parsed from an AM001 error, or None if the message does not say."""
    m = CONFLICT_RE.search(str(exc.diag.message_primary or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


class Failures:
    """Thread-safe list of check failures; prints the first few as they come."""

    def __init__(self, show=20):
        self.lock = threading.Lock()
        self.items = []
        self.show = show

    def add(self, message):
        with self.lock:
            self.items.append(message)
            if len(self.items) <= self.show:
                print(f"FAIL: {message}", flush=True)
            elif len(self.items) == self.show + 1:
                print("FAIL: (further failures not shown)", flush=True)

    def __bool__(self):
        return bool(self.items)

    def __len__(self):
        return len(self.items)


def table_rows(conn):
    """Every stored event as (position, event_id, stream, version, action, tag), by position."""
    return conn.execute(f"SELECT {EVENT_COLUMNS} FROM amebo.events ORDER BY position").fetchall()


def read_all_everything(conn, max_count=1000):
    """Pages read_all from position 0 until it returns nothing."""
    out, last = [], 0
    while True:
        rows = conn.execute(f"SELECT {EVENT_COLUMNS} FROM amebo.read_all(%s, %s)",
                            (last, max_count)).fetchall()
        if not rows:
            return out
        out.extend(rows)
        last = rows[-1][0]


def check_store(conn, fail):
    """Checks invariants that hold for any quiescent store; returns the table's rows.

    Every stream's versions are exactly 1..n, stream_version and read_stream agree, a stream's
    positions grow with its versions, no open append is left, and read_all from 0 returns the
    table exactly, in position order."""
    inflight = conn.execute("SELECT pid, first_position FROM amebo.inflight_appends()").fetchall()
    if inflight:
        fail.add(f"inflight_appends() is not empty when no append is open: {inflight}")
    rows = table_rows(conn)
    by_stream = {}
    for position, _event_id, stream, version, _action, _tag in rows:
        by_stream.setdefault(stream, []).append((version, position))
    for stream, entries in sorted(by_stream.items()):
        versions = sorted(v for v, _ in entries)
        if versions != list(range(1, len(versions) + 1)):
            missing = sorted(set(range(1, max(versions) + 1)) - set(versions))
            dups = sorted({v for v in versions if versions.count(v) > 1})
            fail.add(f"stream {stream}: versions are not 1..n (n={len(versions)}, "
                     f"max={max(versions)}, missing={missing[:10]}, duplicated={dups[:10]})")
        by_version = sorted(entries)
        if any(a[1] >= b[1] for a, b in zip(by_version, by_version[1:])):
            fail.add(f"stream {stream}: positions do not increase with versions")
    counts = dict(conn.execute(
        "SELECT s, amebo.stream_version(s) FROM unnest(%s::text[]) AS s",
        (list(by_stream),)).fetchall())
    for stream, entries in by_stream.items():
        if counts.get(stream) != len(entries):
            fail.add(f"stream {stream}: stream_version is {counts.get(stream)}, "
                     f"the table holds {len(entries)} events")
        via_read_stream = conn.execute(
            "SELECT version FROM amebo.read_stream(%s)", (stream,)).fetchall()
        if [v for (v,) in via_read_stream] != list(range(1, len(entries) + 1)):
            fail.add(f"stream {stream}: read_stream does not return versions 1..n")
    everything = read_all_everything(conn)
    if everything != rows:
        first = next((i for i, (a, b) in enumerate(zip(everything, rows)) if a != b),
                     min(len(everything), len(rows)))
        fail.add(f"read_all from 0 returned {len(everything)} events, the table holds "
                 f"{len(rows)} (first difference at index {first})")
    return rows
