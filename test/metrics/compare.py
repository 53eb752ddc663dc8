#!/usr/bin/env python3
"""Compares a scrape of prometheus-postgres-exporter running contrib/prometheus/amebo_queries.yaml
with what SQL says, for test/scripts/metrics.sh.

Usage: PGHOST=... PGPORT=... compare.py METRICS_FILE
Exits 1 when a value differs (or is missing); prints each check.
"""
import re
import sys

import psycopg

LINE = re.compile(r'^(?P<name>[a-z_]+)(\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')
LABEL = re.compile(r'(\w+)="([^"]*)"')

failures = 0


def check(passed, what):
    """Records one check."""
    global failures
    print(("ok: " if passed else "FAILED: ") + what)
    if not passed:
        failures += 1


def parse(path):
    """{(metric name, frozenset of labels): value} of a Prometheus text exposition."""
    samples = {}
    with open(path) as text:
        for line in text:
            match = LINE.match(line.strip())
            if match:
                labels = frozenset(LABEL.findall(match.group("labels") or ""))
                samples[(match.group("name"), labels)] = float(match.group("value"))
    return samples


def subscription_value(samples, metric, name):
    """The value of amebo_subscription_<metric> for subscription name, or None."""
    for (sample, labels), value in samples.items():
        if sample == "amebo_subscription_" + metric and ("subscription", name) in labels:
            return value
    return None


def queue_value(samples, metric):
    """The value of amebo_delivery_queue_<metric>, or None."""
    for (sample, _labels), value in samples.items():
        if sample == "amebo_delivery_queue_" + metric:
            return value
    return None


def main():
    samples = parse(sys.argv[1])
    check(samples.get(("pg_up", frozenset())) == 1.0, "pg_up is 1")
    load_errors = [v for (name, _), v in samples.items()
                   if name == "pg_exporter_user_queries_load_error"]
    check(load_errors and all(v == 0 for v in load_errors), "the query file loaded without error")
    with psycopg.connect(dbname="postgres", user="postgres") as conn:
        rows = conn.execute("""
            SELECT st.name, st.pending, st.dead, st.delivered, st.in_flight, st.queued,
                   (st.state = 'active')::int,
                   (SELECT count(*) FROM amebo.delivery_log l WHERE l.subscription_id = s.id),
                   (SELECT count(*) FROM amebo.delivery_log l
                    WHERE l.subscription_id = s.id AND coalesce(l.status, 0) NOT BETWEEN 200 AND 299),
                   st.lag_seconds
            FROM amebo.subscription_status st
            JOIN amebo.subscriptions s ON s.application = st.application AND s.name = st.name
            ORDER BY st.name""").fetchall()
        queue = conn.execute("""
            SELECT active::int, retained_wal_bytes, events_behind, checkpoint_position
            FROM amebo.delivery_queue""").fetchone()
    metrics = ("pending", "dead", "delivered", "in_flight", "queued", "active", "attempts",
               "failed_attempts")
    for row in rows:
        name = row[0]
        for metric, expected in zip(metrics, row[1:9]):
            actual = subscription_value(samples, metric, name)
            check(actual == float(expected), f"{name} {metric}: scraped {actual}, SQL {expected}")
        lag = subscription_value(samples, "lag_seconds", name)
        check(lag is not None and abs(lag - float(row[9])) < 30,
              f"{name} lag_seconds: scraped {lag}, SQL {float(row[9]):.1f}")
    by_name = {row[0]: row for row in rows}
    check(by_name["good"][3] == 25 and by_name["bad"][2] == 25 and by_name["held"][1] == 25,
          "the figures are the scenario's (25 delivered, 25 dead, 25 pending)")
    check(by_name["bad"][8] == 75, f"bad failed 75 attempts (3 per message): {by_name['bad'][8]}")
    check(queue_value(samples, "slot_active") == float(queue[0]), "slot_active")
    retained = queue_value(samples, "retained_wal_bytes")
    check(retained is not None and retained > 0 and abs(retained - float(queue[1])) < 16 << 20,
          f"retained_wal_bytes: scraped {retained}, SQL {queue[1]}")
    check(queue_value(samples, "events_behind") == float(queue[2]), "events_behind")
    check(queue_value(samples, "checkpoint_position") == float(queue[3]), "checkpoint_position")
    print(f"metrics: {failures} check(s) failed" if failures else "metrics: all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
