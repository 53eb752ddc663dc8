#!/usr/bin/env python3
"""The cost of JSON Schema validation on append, measured in one run on one cluster.

Server side: one statement appending 100,000 events (payloads of 10 properties: types,
required, formats, a pattern, an enum) to distinct streams, with the action registered
with a matching schema versus an unregistered action (amebo.unknown_actions = allow, no
validation). Payloads come pre-built from the same table; variants alternate over rounds;
medians are reported. Client side: pgbench, 8 clients, one append per transaction, with and
without the schema. Target: validation adds at most 30% to the server-side time.

Writes (or replaces) the "Validation on append" section of --out. Exits 0 whether the target
is met or not.
"""

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time

import psycopg

from report import write_section

EVENTS = int(os.environ.get("BENCH_EVENTS", 100_000))
ROUNDS = int(os.environ.get("BENCH_VALIDATION_ROUNDS", 5))
PGBENCH_SECONDS = int(os.environ.get("BENCH_PGBENCH_SECONDS", 8))
PG_BIN = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                        check=True).stdout.strip()

SCHEMA = """{
  "type": "object",
  "required": ["user_id", "email", "name", "status", "created_at", "age", "plan", "tags",
               "referrer", "score"],
  "properties": {
    "user_id": {"type": "string", "format": "uuid"},
    "email": {"type": "string", "format": "email"},
    "name": {"type": "string", "minLength": 1, "maxLength": 100},
    "status": {"type": "string", "enum": ["pending", "active", "closed"]},
    "created_at": {"type": "string", "format": "date-time"},
    "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "plan": {"type": "string", "pattern": "^(free|pro|team)-[0-9]{2}$"},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
    "referrer": {"type": ["string", "null"]},
    "score": {"type": "number"}
  },
  "additionalProperties": false
}"""

PAYLOAD_SQL = """jsonb_build_object(
    'user_id', gen_random_uuid()::text, 'email', 'user' || g || '@example.com',
    'name', 'User ' || g, 'status', (ARRAY['pending', 'active', 'closed'])[1 + g % 3],
    'created_at', '2026-11-27T10:00:00Z', 'age', g % 90, 'plan', 'pro-' || lpad((g % 100)::text, 2, '0'),
    'tags', jsonb_build_array('a', 'b'), 'referrer', NULL, 'score', g * 1.5)"""


def setup(conn):
    conn.execute("DROP EXTENSION IF EXISTS amebo CASCADE")
    conn.execute("CREATE EXTENSION amebo")
    conn.execute("SELECT amebo.create_application('bench')")
    conn.execute("SELECT amebo.create_action('bench.validated', 'bench', %s::jsonb)", (SCHEMA,))
    conn.execute("DROP TABLE IF EXISTS bench_payloads")
    conn.execute(f"CREATE UNLOGGED TABLE bench_payloads AS SELECT g, {PAYLOAD_SQL} AS payload "
                 f"FROM generate_series(1, {EVENTS}) g")
    bad = conn.execute("SELECT count(*) FROM bench_payloads p, "
                       "LATERAL amebo.schema_violations(%s::jsonb, p.payload) v "
                       "WHERE p.g <= 100", (SCHEMA,)).fetchone()[0]
    assert bad == 0, f"the benchmark's payloads fail their schema ({bad} violations)"
    conn.execute("VACUUM ANALYZE bench_payloads")
    conn.execute("CHECKPOINT")


def timed_append(conn, action, round_no):
    prefix = f"{action}-{round_no}-"
    start = time.perf_counter()
    conn.execute(f"SELECT count(amebo.append_event(%s || g, %s, payload)) FROM bench_payloads",
                 (prefix, action))
    return time.perf_counter() - start


def pgbench_tps(host, port, action, logdir):
    script = os.path.join(logdir, f"{action}.sql")
    with open(script, "w") as f:
        f.write(f"\\set n random(1, 1000000000)\n"
                f"SELECT amebo.append_event('pgb-' || :client_id || '-' || :n, '{action}', "
                f"jsonb_build_object('user_id', gen_random_uuid()::text, 'email', 'u@example.com', "
                f"'name', 'U', 'status', 'active', 'created_at', '2026-11-27T10:00:00Z', 'age', 30, "
                f"'plan', 'pro-01', 'tags', jsonb_build_array('a'), 'referrer', NULL, 'score', 1.5));\n")
    out = subprocess.run([f"{PG_BIN}/pgbench", "-h", host, "-p", str(port), "-U", "postgres",
                          "-n", "-c", "8", "-j", "2", "-T", str(PGBENCH_SECONDS), "-f", script,
                          "postgres"], capture_output=True, text=True, check=True).stdout
    return float(re.search(r"tps = ([0-9.]+)", out).group(1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    conninfo = f"host={args.host} port={args.port} user=postgres dbname=postgres"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        setup(conn)
    validated, unvalidated, ratios = [], [], []
    for round_no in range(ROUNDS):
        order = ["bench.validated", "bench.unregistered"]
        if round_no % 2:
            order.reverse()
        times = {}
        for action in order:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute("CHECKPOINT")
                times[action] = timed_append(conn, action, round_no)
        validated.append(times["bench.validated"])
        unvalidated.append(times["bench.unregistered"])
        ratios.append(times["bench.validated"] / times["bench.unregistered"])
        print(f"validation round {round_no + 1}/{ROUNDS}: with schema {times['bench.validated']:.3f} s, "
              f"without {times['bench.unregistered']:.3f} s", flush=True)
    with tempfile.TemporaryDirectory() as logdir:
        tps = {}
        for action in ["bench.validated", "bench.unregistered", "bench.validated", "bench.unregistered"]:
            tps.setdefault(action, []).append(pgbench_tps(args.host, args.port, action, logdir))
    ratio = statistics.median(ratios)
    with_ms = statistics.median(validated) * 1000
    without_ms = statistics.median(unvalidated) * 1000
    # The added cost per event, from the per-round ratio (rounds are paired; medians of the
    # two variants taken apart can come from different rounds).
    per_event_us = (ratio - 1) * without_ms * 1000 / EVENTS
    tps_with = statistics.median(tps["bench.validated"])
    tps_without = statistics.median(tps["bench.unregistered"])
    lines = [
        "",
        "## Validation on append (JSON Schema, draft 7)",
        "",
        f"{EVENTS:,} appends in one statement of a payload of 10 properties (types, required, formats "
        "uuid/email/date-time, a pattern, an enum, bounds, an array, additionalProperties false), "
        f"with its action registered with the matching schema versus unregistered (no validation). "
        f"{ROUNDS} rounds, alternating; medians.",
        "",
        "| variant | server ms (median) | every round, ms |",
        "|---|---:|---|",
        f"| with schema | {with_ms:.0f} | {', '.join(f'{t * 1000:.0f}' for t in validated)} |",
        f"| without schema | {without_ms:.0f} | {', '.join(f'{t * 1000:.0f}' for t in unvalidated)} |",
        "",
        f"- validation / no validation: **{ratio:.2f}x** (per round: {', '.join(f'{r:.2f}' for r in ratios)}); "
        f"target ≤ 1.30x: **{'PASS' if ratio <= 1.30 else 'MISS'}**; about {per_event_us:.1f} µs per event",
        f"- client throughput (pgbench, 8 clients, one append per transaction, {PGBENCH_SECONDS} s x 2 each): "
        f"with schema {tps_with:.0f} tps, without {tps_without:.0f} tps, ratio {tps_with / tps_without:.2f}",
        "",
    ]
    write_section(args.out, "Validation on append", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
