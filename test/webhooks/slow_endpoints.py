#!/usr/bin/env python3
"""Slow endpoints beside fast ones, run by test/scripts/webhook_slow_endpoints.sh.

200 subscriptions to handlers that answer after 50 ms (nginx with echo_sleep, each on a loopback
address of its own) and 3 to handlers that answer at once, all with the server's default
delivery settings. Events are appended in a few transactions; then:
- every event reaches each subscription's handler exactly once (nginx's access log: path and
  webhook-id), and every webhook-id is the event's;
- the fast handlers are not held back: they have received all their events long before the
  slow ones have (a generous margin, not a timed target);
- the worker's memory (VmRSS) is printed;
- with thousands of requests in flight, the worker ends within a few seconds of SIGTERM
  (pg_terminate_backend).
Exits non-zero on the first failure.
"""

import argparse
import collections
import os
import sys
import time

import psycopg

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from slow_nginx import SlowNginx  # noqa: E402

ACTION = "order.placed"


# Prints a failure and exits.
def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


# The worker's resident memory in kB (VmRSS), or 0 when it cannot be read.
def resident_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# Appends events one transaction of batch events after another; returns their event ids.
def append(conn, events, batch, tag):
    ids = []
    for first in range(0, events, batch):
        count = min(batch, events - first)
        stream = f"{tag}-{first}"
        conn.execute(
            "SELECT amebo.append_events(%s, (SELECT jsonb_agg("
            "jsonb_build_object('action', %s::text, 'payload', jsonb_build_object('n', g))) "
            "FROM generate_series(%s::int, %s::int) g))",
            (stream, ACTION, first, first + count - 1))
        ids += [row[0] for row in conn.execute(
            "SELECT event_id::text FROM amebo.read_stream(%s)", (stream,))]
    return ids


# Waits until delivered() reaches expected or timeout seconds pass; returns the last count.
def wait_for(delivered, expected, timeout):
    deadline = time.monotonic() + timeout
    count = delivered()
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        count = delivered()
    return count


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--fast", type=int, default=3)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--timeout", type=int, default=120)
    args = parser.parse_args()

    nginx = SlowNginx(args.workdir, args.slow, 0.05).start()
    try:
        run(args, nginx)
    finally:
        nginx.stop()


# The test proper, against a running nginx.
def run(args, nginx):
    conn = psycopg.connect(f"host={args.host} port={args.port} user=postgres dbname=postgres",
                           autocommit=True)
    conn.execute("SELECT amebo.create_application('app')")
    conn.execute("SELECT amebo.create_action(%s, 'app')", (ACTION,))
    paths = {}
    for i in range(args.slow):
        conn.execute("SELECT amebo.create_subscription('app', %s, %s, %s)",
                     (f"slow-{i}", ACTION, nginx.slow_url(i)))
        paths[f"/slow-{i}"] = "slow"
    for i in range(args.fast):
        conn.execute("SELECT amebo.create_subscription('app', %s, %s, %s)",
                     (f"fast-{i}", ACTION, nginx.fast_url(i)))
        paths[f"/fast-{i}"] = "fast"
    if not conn.execute("SELECT amebo.wait_for_worker(30)").fetchone()[0]:
        fail("the worker is not running")
    pid = conn.execute("SELECT pid FROM amebo.worker_status()").fetchone()[0]
    subscriptions = args.slow + args.fast

    # Every event once to each handler; the fast ones done long before the slow ones.
    start = time.time()
    event_ids = append(conn, args.events, 20, "slow-endpoints")
    expected = args.events * subscriptions
    delivered = wait_for(lambda: conn.execute(
        "SELECT coalesce(sum(delivered), 0) FROM amebo.subscription_progress").fetchone()[0],
        expected, args.timeout)
    rss_kb = resident_kb(pid)
    if delivered != expected:
        for row in conn.execute("SELECT status, left(error, 120), count(*) FROM "
                                "amebo.delivery_log GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5"):
            print(f"delivery log: status {row[0]}, error {row[1]}: {row[2]} attempts",
                  file=sys.stderr)
        fail(f"{delivered} of {expected} deliveries recorded within {args.timeout} s")
    hits = nginx.hits()
    webhook_ids = {"msg_" + event_id.replace("-", "") for event_id in event_ids}
    per_path = collections.Counter(path for path, _, _ in hits)
    pairs = collections.Counter((path, webhook_id) for path, webhook_id, _ in hits)
    duplicates = sum(n - 1 for n in pairs.values() if n > 1)
    if duplicates:
        fail(f"{duplicates} duplicate deliveries")
    if set(per_path) != set(paths) or any(n != args.events for n in per_path.values()):
        short = {p: n for p, n in per_path.items() if n != args.events}
        fail(f"not every handler got {args.events} requests: {len(per_path)} paths, "
             f"short ones: {dict(list(short.items())[:5])}")
    if {webhook_id for _, webhook_id, _ in hits} != webhook_ids:
        fail("the webhook-ids received are not the events' ids")
    last = {"slow": 0.0, "fast": 0.0}
    for path, _, at in hits:
        kind = paths[path]
        last[kind] = max(last[kind], at)
    fast_s, slow_s = last["fast"] - start, last["slow"] - start
    print(f"{expected:,} deliveries to {args.slow} slow (50 ms) and {args.fast} fast handlers: "
          f"fast ones done after {fast_s:.2f} s, slow ones after {slow_s:.2f} s "
          f"({expected / slow_s:,.0f} deliveries/s); worker RSS {rss_kb / 1024:.1f} MB")
    # Held back, the fast handlers would wait for their turn among the slow ones and finish
    # with them (about 1x). Not held back, they finish after a small fraction of the slow
    # ones' time on an idle machine; on a loaded one each request also waits for the worker's
    # next turn, which shows in both (measured up to about half).
    if fast_s > slow_s * 0.6:
        fail(f"the fast handlers were held back: done after {fast_s:.2f} s, "
             f"the slow ones after {slow_s:.2f} s (expected at most 0.6 times that)")

    # SIGTERM with thousands of requests in flight: the worker ends promptly.
    append(conn, args.events * 5, 100, "in-flight")
    time.sleep(0.5)
    in_flight = conn.execute("SELECT coalesce(sum(in_flight), 0) "
                             "FROM amebo_internal.delivery_worker_stats()").fetchone()[0]
    began = time.monotonic()
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    while os.path.exists(f"/proc/{pid}") and time.monotonic() - began < 10:
        time.sleep(0.02)
    took = time.monotonic() - began
    if os.path.exists(f"/proc/{pid}"):
        fail("the worker did not end within 10 s of SIGTERM")
    print(f"worker ended {took:.2f} s after SIGTERM with {in_flight} requests in flight")
    if took > 5:
        fail(f"the worker took {took:.2f} s to end after SIGTERM (at most 5 s)")


if __name__ == "__main__":
    main()
