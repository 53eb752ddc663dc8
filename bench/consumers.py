#!/usr/bin/env python3
"""Pull consumers (amebo.poll and amebo.ack) against paging amebo.read_all, in one run.

Throughput: EVENTS events on 1,000 streams are consumed (a) by paging read_all 100 at a
time, (b) by one member polling 100 and acking them in one transaction per batch, (c) by
four members doing the same in four sessions at once, (d) and (e) as (b) and (c) with
synchronous_commit off in the consumers' sessions; rounds rotate the order, medians are
reported. Target: each consumer rate at least 50% of read_all's.
Latency: one session appends LATENCY_RATE events/s (one per transaction) for LATENCY_SECONDS;
a worker blocked on LISTEN amebo_consumer polls and acks when woken; the latency of an event
is from its append's COMMIT returning to the poll returning it. Targets: p50 at most 5 ms,
p99 at most 50 ms.
Caught up: the cost of a poll that finds nothing, against a read_all that finds nothing, in
client round-trip time and in buffers touched (EXPLAIN (ANALYZE, BUFFERS)).

Appends a Markdown section to --out. Exits 0 whether the targets are met or not.
"""

import argparse
import os
import select
import statistics
import threading
import time
import uuid

import psycopg

EVENTS = int(os.environ.get("BENCH_CONSUMER_EVENTS", 100_000))
ROUNDS = int(os.environ.get("BENCH_CONSUMER_ROUNDS", 3))
LATENCY_RATE = int(os.environ.get("BENCH_CONSUMER_LATENCY_RATE", 500))
LATENCY_SECONDS = int(os.environ.get("BENCH_CONSUMER_LATENCY_SECONDS", 10))
BATCH = 100


# The machine's load average (1, 5, 15 minutes): other work skews the results.
def load_average():
    with open("/proc/loadavg") as f:
        return "/".join(f.read().split()[:3])


LOAD_AT_START = load_average()


def setup(conn):
    conn.execute("DROP EXTENSION IF EXISTS amebo CASCADE")
    conn.execute("CREATE EXTENSION amebo")
    conn.execute("SELECT count(amebo.append_event('order-' || g %% 1000, 'order.placed', "
                 "jsonb_build_object('n', g, 'sku', 'sku-' || g %% 97, 'amount', g * 1.5))) "
                 "FROM generate_series(1, %s) g", (EVENTS,))
    conn.execute("VACUUM ANALYZE amebo.events")
    conn.execute("CHECKPOINT")


def page_read_all(conninfo):
    with psycopg.connect(conninfo, autocommit=True) as conn:
        last, seen = 0, 0
        start = time.perf_counter()
        while True:
            rows = conn.execute("SELECT * FROM amebo.read_all(%s, %s)", (last, BATCH)).fetchall()
            if not rows:
                break
            seen += len(rows)
            last = rows[-1][0]
        elapsed = time.perf_counter() - start
    assert seen == EVENTS, f"read_all returned {seen} events"
    return EVENTS / elapsed


def consume_member(conninfo, consumer, member, counts, synchronous_commit):
    with psycopg.connect(conninfo) as conn:
        conn.execute("SELECT set_config('synchronous_commit', %s, false)", (synchronous_commit,))
        conn.commit()
        seen = 0
        while True:
            with conn.transaction():
                rows = conn.execute("SELECT * FROM amebo.poll(%s, %s, %s)",
                                    (consumer, member, BATCH)).fetchall()
                if rows:
                    conn.execute("SELECT amebo.ack(%s, %s, %s)",
                                 (consumer, member, [r[1] for r in rows]))
            if not rows:
                break
            seen += len(rows)
        counts[member] = seen


def consume(conninfo, consumer, members, synchronous_commit="on"):
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT amebo.drop_consumer(name) FROM amebo.consumers WHERE name = %s", (consumer,))
        conn.execute("SELECT amebo.create_consumer(%s, NULL, %s)", (consumer, members))
        conn.execute("CHECKPOINT")
    counts = {}
    threads = [threading.Thread(target=consume_member,
                                args=(conninfo, consumer, m, counts, synchronous_commit))
               for m in range(members)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    assert sum(counts.values()) == EVENTS, f"{consumer} consumed {counts}"
    return EVENTS / elapsed


def throughput(conninfo):
    variants = [("read_all", lambda: page_read_all(conninfo)),
                ("1 member", lambda: consume(conninfo, "bench_one", 1)),
                ("4 members", lambda: consume(conninfo, "bench_four", 4)),
                ("1 member, synchronous_commit off",
                 lambda: consume(conninfo, "bench_one_async", 1, "off")),
                ("4 members, synchronous_commit off",
                 lambda: consume(conninfo, "bench_four_async", 4, "off"))]
    rates = {name: [] for name, _ in variants}
    for round_no in range(ROUNDS):
        shift = round_no % len(variants)
        order = variants[shift:] + variants[:shift]
        for name, run in order:
            rates[name].append(run())
        print(f"consumers round {round_no + 1}/{ROUNDS}: " +
              ", ".join(f"{n} {rates[n][-1]:,.0f} events/s" for n in rates), flush=True)
    return rates


def latency(conninfo):
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT amebo.create_consumer('bench_latency', ARRAY['latency.probe'])")
    committed, received = {}, []
    done = threading.Event()
    ready = threading.Event()

    def worker():
        with psycopg.connect(conninfo) as conn:
            conn.execute("LISTEN amebo_consumer")
            conn.commit()
            ready.set()
            while True:
                with conn.transaction():
                    rows = conn.execute("SELECT event_id::text FROM amebo.poll('bench_latency', 0, 100)").fetchall()
                    now = time.perf_counter()
                    if rows:
                        conn.execute("SELECT amebo.ack('bench_latency', 0, %s::uuid[])", ([r[0] for r in rows],))
                # The appender notes the commit time after COMMIT returns: match them up later.
                received.extend((event_id, now) for (event_id,) in rows)
                if not rows:
                    if done.is_set() and len(received) == len(committed):
                        return
                    # Block until a NOTIFY arrives (the next query reads it).
                    select.select([conn.fileno()], [], [], 0.5)

    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        interval = 1 / LATENCY_RATE
        start = time.perf_counter()
        for i in range(LATENCY_RATE * LATENCY_SECONDS):
            target = start + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            event_id = str(uuid.uuid4())
            conn.execute("SELECT amebo.append_event('probe-' || %s, 'latency.probe', '{}', NULL, NULL, %s)",
                         (i % 50, event_id))
            committed[event_id] = time.perf_counter()
        achieved = len(committed) / (time.perf_counter() - start)
    done.set()
    thread.join()
    latencies = sorted(at - committed[event_id] for event_id, at in received)
    ms = [x * 1000 for x in latencies]
    return achieved, ms[len(ms) // 2], ms[int(len(ms) * 0.99)], ms[-1], len(ms)


def caught_up(conninfo):
    calls = 2000
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT amebo.create_consumer('bench_idle', ARRAY['order.placed'])")
        conn.execute("SELECT amebo.reset_consumer('bench_idle', (SELECT max(position) FROM amebo.events))")
        last = conn.execute("SELECT max(position) FROM amebo.events").fetchone()[0]
        statements = {
            "poll": ("SELECT * FROM amebo.poll('bench_idle', 0, 100)", ()),
            "read_all": ("SELECT * FROM amebo.read_all(%s, 100)", (last,)),
            "SELECT 1": ("SELECT 1", ()),
        }
        out = {}
        for name, (sql, params) in statements.items():
            for _ in range(100):
                conn.execute(sql, params).fetchall()
            start = time.perf_counter()
            for _ in range(calls):
                conn.execute(sql, params).fetchall()
            out[name] = (time.perf_counter() - start) / calls * 1e6
        plans = {}
        for name in ("poll", "read_all"):
            sql, params = statements[name]
            plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).fetchone()[0][0]
            top = plan["Plan"]
            plans[name] = (top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
                           top.get("Shared Dirtied Blocks", 0), plan["Execution Time"])
    return out, plans


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    conninfo = f"host={args.host} port={args.port} user=postgres dbname=postgres"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        setup(conn)
    rates = throughput(conninfo)
    achieved, p50, p99, worst, n = latency(conninfo)
    round_trip, plans = caught_up(conninfo)
    # Each ratio is the median of the per-round ratios: both variants of a round ran a few
    # seconds apart, under the same load from other work on the machine.
    verdicts = []
    for name in rates:
        if name == "read_all":
            continue
        ratios = [r / base for r, base in zip(rates[name], rates["read_all"])]
        ratio = statistics.median(ratios)
        verdicts.append(f"- {name} / read_all: **{ratio:.2f}x** (per round: "
                        f"{', '.join(f'{r:.2f}' for r in ratios)}); target ≥ 0.50x: "
                        f"**{'PASS' if ratio >= 0.5 else 'MISS'}**")
    lines = [
        "",
        "## Pull consumers (bench/consumers.py)",
        "",
        f"{EVENTS:,} events on 1,000 streams, consumed {BATCH} at a time: by paging `read_all`, by one "
        f"member (`poll` and `ack` in one transaction per batch), and by four members in four "
        f"sessions at once (each stream hashed to one member); the consumers again with "
        "`synchronous_commit = off` in their sessions (their commits do not wait for the WAL "
        "flush; a crash then loses the last acks together with the writes made with them, and "
        "those events are handed out again: still exactly once for those writes). "
        f"{ROUNDS} rounds, the order rotated each round; medians. fsync is on. Client and "
        "server share the machine's CPUs. Load average (1/5/15 min) at the start "
        f"{LOAD_AT_START}, at the end {load_average()}.",
        "",
        "| variant | events/s (median) | every round |",
        "|---|---:|---|",
    ] + [f"| {name} | {statistics.median(r):,.0f} | {', '.join(f'{x:,.0f}' for x in r)} |"
         for name, r in rates.items()] + [
        "",
    ] + verdicts + [
        "",
        f"Latency from COMMIT to poll with LISTEN: one session appends {LATENCY_RATE} events/s (one "
        f"per transaction, paced; achieved {achieved:.0f}/s: on a loaded machine the appender "
        f"falls behind) for {LATENCY_SECONDS} s; a worker blocked on "
        "`LISTEN amebo_consumer` polls and acks in one transaction when woken. "
        f"{n:,} events; the worst took {worst:.1f} ms.",
        "",
        f"- LISTEN latency p50: **{p50:.2f} ms**; target ≤ 5 ms: **{'PASS' if p50 <= 5 else 'MISS'}**",
        f"- LISTEN latency p99: **{p99:.2f} ms**; target ≤ 50 ms: **{'PASS' if p99 <= 50 else 'MISS'}**",
        "",
        "A poll that finds nothing (the member caught up, nothing in flight), against a `read_all` "
        "that finds nothing and `SELECT 1`: client round trip, mean of 2,000 calls; buffers "
        "touched and dirtied by one call (EXPLAIN ANALYZE BUFFERS).",
        "",
        "| statement | µs per call | buffers touched | buffers dirtied | server ms |",
        "|---|---:|---:|---:|---:|",
    ] + [f"| {name} | {us:.0f} | {plans[name][0] if name in plans else '–'} | "
         f"{plans[name][1] if name in plans else '–'} | "
         f"{f'{plans[name][2]:.3f}' if name in plans else '–'} |"
         for name, us in round_trip.items()] + [""]
    with open(args.out, "a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
