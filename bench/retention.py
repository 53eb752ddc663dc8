#!/usr/bin/env python3
"""Retention benchmarks, run by bench/run.sh on its throwaway cluster (the background worker
enforces the policies, as in production):

1. Removal rate: a backlog of old events in one category (BENCH_RETENTION_BACKLOG, in streams
   of 100 events), a policy of max_age 1 ms, and the time until the worker's pass has removed
   them all, with nothing else running. Events removed per second.
2. Append throughput while a pass runs: pgbench (bench/pgbench/append_event.sql, 8 clients,
   synchronous_commit on) against the same backlog, with the policy set so that the worker
   removes it during the run, and without a policy. Rounds alternate the two; the ratio is the
   median of per-round ratios. Target: at most 10% lower with the pass running.
3. Space: a steady pgbench load at a fixed rate (-R) with a policy of max_age a few seconds
   on its category, and a VACUUM of amebo.events every few seconds (bench/run.sh's cluster
   runs no autovacuum; this stands in for it); the size of amebo.events with its indexes
   (pg_total_relation_size), sampled every half second: its peak, and at the end.

Writes (or replaces) the "Retention" section of --out; progress goes to stderr. Exits 0
whether the target is met or not.
"""

import argparse
import datetime
import os
import re
import subprocess
import threading
import time

from bench import CLIENTS, HERE, PG_BIN, Cluster, env_int, library_info, log, median, ratio_cells
from report import write_section

TITLE = "Retention"
BACKLOG = env_int("BENCH_RETENTION_BACKLOG", 200_000)
ROUNDS = env_int("BENCH_RETENTION_ROUNDS", 5)
SECONDS = env_int("BENCH_RETENTION_SECONDS", 8)
STEADY_SECONDS = env_int("BENCH_RETENTION_STEADY_SECONDS", 40)
STEADY_RATE = env_int("BENCH_RETENTION_STEADY_RATE", 1000)  # appends per second
STEADY_MAX_AGE = 5  # seconds
VACUUM_EVERY = 2.0  # seconds
STREAM_EVENTS = 100

BACKLOG_SQL = """
SELECT count(amebo.append_events('old-' || s, (SELECT jsonb_agg(jsonb_build_object(
    'action', 'old.logged', 'payload', jsonb_build_object('n', v, 'text', repeat('x', 100))))
    FROM generate_series(1, %(per_stream)s::integer) v)))
FROM generate_series(1, %(streams)s::integer) s
"""


# Drops and recreates amebo (amebo.events refuses TRUNCATE) and appends the backlog.
def recreate_with_backlog(cluster, backlog):
    with cluster.connect() as conn:
        conn.execute("DROP EXTENSION IF EXISTS amebo CASCADE")
        conn.execute("CREATE EXTENSION amebo")
        if backlog:
            conn.execute(BACKLOG_SQL, {"per_stream": STREAM_EVENTS,
                                       "streams": backlog // STREAM_EVENTS})
        conn.execute("VACUUM ANALYZE amebo.events")
        conn.execute("CHECKPOINT")


def removed(conn):
    row = conn.execute("SELECT removed FROM amebo.retention_policies "
                       "WHERE category = 'old'").fetchone()
    return row[0] if row else 0


# Sets the policy on the backlog and waits until the worker has started removing it.
def start_pass(conn):
    conn.execute("SELECT amebo.set_retention('old', max_age => '1 millisecond')")
    deadline = time.monotonic() + 30
    while removed(conn) == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not start the retention pass")
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# Part 1: removal rate.

def run_removal(cluster):
    rates = []
    for rnd in range(ROUNDS):
        recreate_with_backlog(cluster, BACKLOG)
        with cluster.connect() as conn:
            time.sleep(0.01)
            started = time.perf_counter()
            conn.execute("SELECT amebo.set_retention('old', max_age => '1 millisecond')")
            while removed(conn) < BACKLOG:
                time.sleep(0.05)
            seconds = time.perf_counter() - started
        rates.append(BACKLOG / seconds)
        log(f"part 1 round {rnd + 1}/{ROUNDS}: {BACKLOG} events removed in {seconds:.2f} s "
            f"({BACKLOG / seconds:,.0f}/s)")
    return rates


def report_removal(rates):
    return [
        "### 1. Removal rate of a retention pass",
        "",
        f"{BACKLOG:,} events of one category ({STREAM_EVENTS} per stream, payload about 130 "
        f"bytes), max_age 1 ms set at the start; time until the worker's batches (1,000 "
        f"events looked at per transaction, 100 ms apart) had removed them all, nothing else "
        f"running. "
        f"{ROUNDS} rounds.",
        "",
        "| measure | median | range |",
        "|---|---:|---:|",
        f"| events removed per second | {median(rates):,.0f} | {min(rates):,.0f}–"
        f"{max(rates):,.0f} |",
        "",
    ]


# ---------------------------------------------------------------------------------------------
# Part 2: append throughput while a pass runs.

def pgbench(cluster, seconds, rate=None):
    cmd = [os.path.join(PG_BIN, "pgbench"), "-h", cluster.host, "-p", str(cluster.port),
           "-U", "postgres", "-n", "-M", "prepared", "-c", str(CLIENTS), "-j", "2",
           "-T", str(seconds), "-f", os.path.join(HERE, "pgbench", "append_event.sql")]
    if rate:
        cmd += ["-R", str(rate)]
    proc = subprocess.run(cmd + ["postgres"], capture_output=True, text=True,
                          timeout=seconds + 120)
    match = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", proc.stdout,
                      re.M)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"pgbench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return float(match.group(1))


def run_throughput(cluster):
    without, during, removed_during, outlasted = [], [], [], []
    for rnd in range(ROUNDS):
        order = ("without", "during") if rnd % 2 == 0 else ("during", "without")
        for variant in order:
            recreate_with_backlog(cluster, BACKLOG)
            with cluster.connect() as conn:
                if variant == "during":
                    start_pass(conn)
                    before = removed(conn)
                tps = pgbench(cluster, SECONDS)
                if variant == "during":
                    count = removed(conn) - before
                    removed_during.append(count)
                    during.append(tps)
                    outlasted.append(count < BACKLOG - before)
                    if not outlasted[-1]:
                        log("part 2: the pass ended before pgbench did (raise the backlog)")
                else:
                    without.append(tps)
            log(f"part 2 round {rnd + 1}/{ROUNDS}: {variant}: {tps:.0f} tps")
    return without, during, removed_during, outlasted


def report_throughput(without, during, removed_during, outlasted):
    cell, verdict = ratio_cells(during, without, "min", 0.90)
    return [
        "### 2. Append throughput while a pass runs",
        "",
        f"pgbench -M prepared -c {CLIENTS} -j 2 -T {SECONDS}, bench/pgbench/append_event.sql "
        f"(one event per transaction, new streams of another category), synchronous_commit "
        f"on, on top of a backlog of {BACKLOG:,} old events: with the backlog's policy set "
        f"just before (the worker removing it during the whole run) and without a policy. "
        f"{ROUNDS} rounds, the order alternating; the ratio is the median of per-round "
        f"ratios. The worker, pgbench and the server share the 2 CPUs.",
        "",
        "| measure | value | target | result |",
        "|---|---:|---|---|",
        f"| TPS without a pass (median) | {median(without):,.0f} | | |",
        f"| TPS with a pass running (median) | {median(during):,.0f} | | |",
        f"| with / without | {cell} | ≥ 0.90x (at most 10% lower) | {verdict} |",
        f"| events removed during a run (median) | {median(removed_during):,.0f} | | |",
        f"| runs during which the pass never ran out of work | {sum(outlasted)} of "
        f"{len(outlasted)} | | |",
        "",
    ]


# ---------------------------------------------------------------------------------------------
# Part 3: space under a steady load.

def run_steady(cluster):
    recreate_with_backlog(cluster, 0)
    samples = []
    stop = threading.Event()

    def sample_and_vacuum():
        with cluster.connect() as conn:
            next_vacuum = time.monotonic() + VACUUM_EVERY
            while not stop.is_set():
                size = conn.execute(
                    "SELECT pg_total_relation_size('amebo.events'), "
                    "(SELECT count(*) FROM amebo.events)").fetchone()
                samples.append((time.monotonic(), size[0], size[1]))
                if time.monotonic() >= next_vacuum:
                    conn.execute("VACUUM amebo.events")
                    next_vacuum = time.monotonic() + VACUUM_EVERY
                stop.wait(0.5)

    with cluster.connect() as conn:
        conn.execute("SELECT amebo.set_retention('order', max_age => %s::interval)",
                     (f"{STEADY_MAX_AGE} seconds",))
    thread = threading.Thread(target=sample_and_vacuum)
    started = time.monotonic()
    thread.start()
    tps = pgbench(cluster, STEADY_SECONDS, STEADY_RATE)
    stop.set()
    thread.join()
    with cluster.connect() as conn:
        removed_total = conn.execute("SELECT removed FROM amebo.retention_policies").fetchone()[0]
    points = [(t - started, size, rows) for t, size, rows in samples]
    log(f"part 3: {tps:.0f} tps, peak {max(s for _, s, _ in points) / 2**20:.1f} MiB, end "
        f"{points[-1][1] / 2**20:.1f} MiB, {removed_total} removed")
    return tps, points, removed_total


def report_steady(tps, points, removed_total):
    peak = max(size for _, size, _ in points)
    end = points[-1][1]

    def at(fraction):
        target = STEADY_SECONDS * fraction
        return min(points, key=lambda p: abs(p[0] - target))

    quarters = [at(f) for f in (0.25, 0.5, 0.75, 1.0)]
    rows = [f"| {t:.0f} s | {size / 2**20:.1f} MiB | {count:,} |" for t, size, count in quarters]
    return [
        "### 3. Space under a steady load",
        "",
        f"pgbench at {STEADY_RATE} appends/s (-R) for {STEADY_SECONDS} s with a policy of "
        f"max_age {STEADY_MAX_AGE} s on its category, and VACUUM amebo.events every "
        f"{VACUUM_EVERY:.0f} s (the cluster runs no autovacuum; in production autovacuum "
        f"does this, see docs/operations.md). Size of amebo.events with its indexes and TOAST "
        f"(pg_total_relation_size), sampled every 0.5 s; {tps:,.0f} tps reached, "
        f"{removed_total:,} events removed.",
        "",
        "| time | size | events stored |",
        "|---:|---:|---:|",
    ] + rows + [
        "",
        f"Peak {peak / 2**20:.1f} MiB, at the end {end / 2**20:.1f} MiB "
        f"({end / peak:.2f}x the peak); from half-way to the end the size changed by "
        f"{(end / quarters[1][1] - 1) * 100:+.0f}% while {STEADY_RATE * STEADY_SECONDS // 2:,} "
        f"more events were appended (without retention it grows in proportion: removed rows' "
        f"space is reused once VACUUM has seen them).",
        "",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True, help="the cluster's unix socket directory")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--out", required=True, help="the Markdown report to update")
    args = parser.parse_args()

    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()
    cluster = Cluster(args.host, args.port)
    library = library_info(cluster)
    parts = report_removal(run_removal(cluster))
    parts += report_throughput(*run_throughput(cluster))
    parts += report_steady(*run_steady(cluster))
    minutes = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 60
    load_end = os.getloadavg()
    lines = [
        f"## {TITLE} (bench/retention.py)",
        "",
        f"- date: {started:%Y-%m-%d %H:%M:%S %Z}, took {minutes:.1f} min; {os.cpu_count()} CPUs "
        f"(nproc); load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/"
        f"{load_start[2]:.2f}, at end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}",
        f"- amebo: source {os.environ.get('BENCH_SOURCE', 'unknown')}; installed library "
        f"{library}",
        "- cluster: bench/run.sh's (fsync on, synchronous_commit on, JIT off, no autovacuum); "
        "the background worker runs the passes (amebo.worker_naptime 1 s)",
        "",
    ] + parts
    write_section(args.out, TITLE, lines)
    log(f"wrote the section \"{TITLE}\" of {args.out}")


if __name__ == "__main__":
    main()
