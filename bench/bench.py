#!/usr/bin/env python3
"""amebo's benchmarks, run by bench/run.sh against a throwaway cluster it started.

Three parts, each interleaved over rounds (the order of variants rotates every round) on a
shared, noisy machine; every number reported is a median over rounds:

1. Server-side cost of appending 100,000 events in one statement: amebo.append_event,
   amebo.append_events (batches of 100), the plain INSERT ... SELECT (the physical limit)
   and the PL/pgSQL baselines of bench/baselines.sql. Every measurement starts from the same
   empty state (extension and baselines dropped and recreated, then CHECKPOINT), in a new
   connection; measured: the statement's wall time and its server process's CPU time.
2. Client throughput with pgbench: one event per transaction, 8 clients, distinct streams,
   synchronous_commit on and off; TPS, p50/p99 latency from pgbench's per-transaction logs,
   and the server's CPU time per transaction.
3. Contention: 8 processes appending to one stream with expected versions.

Writes a Markdown report (--out); progress goes to stderr. Targets met or not, exits 0.
"""

import argparse
import datetime
import glob
import hashlib
import multiprocessing
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import psycopg
from psycopg.types.json import Jsonb

HERE = os.path.dirname(os.path.abspath(__file__))
PG_BIN = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                        check=True).stdout.strip()


def env_int(name, default):
    return int(os.environ.get(name, default))


EVENTS = env_int("BENCH_EVENTS", 100_000)        # part 1: events per statement
BATCH = 100                                       # part 1: events per append_events call
ROUNDS = env_int("BENCH_ROUNDS", 9)               # part 1 rounds
PGBENCH_ROUNDS = env_int("BENCH_PGBENCH_ROUNDS", 4)
PGBENCH_SECONDS = env_int("BENCH_PGBENCH_SECONDS", 8)
CONTENTION_ROUNDS = env_int("BENCH_CONTENTION_ROUNDS", 3)
CONTENTION_SECONDS = env_int("BENCH_CONTENTION_SECONDS", 5)
CLIENTS = 8
PARTS = os.environ.get("BENCH_PARTS", "1,2,3").split(",")  # a subset, for development


def median(values):
    return statistics.median(values)


def join(values):
    """'12, 13, 11' from numbers."""
    return ", ".join(f"{v:.0f}" for v in values)


def log(message):
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class Cluster:
    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.conninfo = f"host={host} port={port} user=postgres dbname=postgres"
        self._postmaster = None
        self._background = None  # pids of the server's background processes

    def connect(self):
        return psycopg.connect(self.conninfo, autocommit=True)

    def reset(self):
        """Drops and recreates amebo and both baselines (empty tables, sequences at 1), then
        checkpoints, so every measurement starts from the same state. amebo.events refuses
        TRUNCATE; dropping the extension is the way to empty it."""
        with open(os.path.join(HERE, "baselines.sql")) as f:
            baselines = f.read()
        with self.connect() as conn:
            conn.execute("DROP SCHEMA IF EXISTS plain CASCADE")
            conn.execute("DROP SCHEMA IF EXISTS plstore CASCADE")
            conn.execute("DROP EXTENSION IF EXISTS amebo")
            conn.execute("CREATE EXTENSION amebo")
            conn.execute(baselines)
            conn.execute("CHECKPOINT")

    def scalar(self, sql, params=None):
        with self.connect() as conn:
            return conn.execute(sql, params).fetchone()[0]

    def postmaster_pid(self):
        if self._postmaster is None:
            datadir = self.scalar("SHOW data_directory")
            with open(os.path.join(datadir, "postmaster.pid")) as f:
                self._postmaster = int(f.readline())
        return self._postmaster

    def _client_backends_left(self):
        """True while a child of the postmaster other than its background processes exists
        (running, exiting or waiting to be reaped)."""
        postmaster = self.postmaster_pid()
        if self._background is None:
            with self.connect() as conn:
                self._background = {pid for (pid,) in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend'")}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in self._background:
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                        return True
            except (OSError, ValueError, IndexError):
                continue
        return False

    def backends_cpu_seconds(self):
        """CPU time used so far by the server's ended client backends: the postmaster's
        cutime + cstime, which grow as it reaps them. Waits (10 s at most) until no client
        backend is left, so that each has been counted."""
        deadline = time.monotonic() + 10
        while self._client_backends_left() and time.monotonic() < deadline:
            time.sleep(0.02)
        with open(f"/proc/{self.postmaster_pid()}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# Part 1: server-side cost per append.

# The input, built once: EVENTS rows with their payloads, and the same rows grouped into
# batches of BATCH for append_events. Every variant reads its payloads from these tables, so
# only the storage path differs. bench_batches.events is stored uncompressed (EXTERNAL), so
# append_events does not pay for decompressing its input.
INPUT_SQL = f"""
DROP TABLE IF EXISTS public.bench_input, public.bench_batches;
CREATE TABLE public.bench_input AS
SELECT i,
       'order-' || i AS stream,                                  -- one event per stream
       'batch-' || ((i - 1) / {BATCH}) AS batch_stream,          -- {BATCH} events per stream
       (i - 1) % {BATCH} + 1 AS batch_version,
       'OrderPlaced'::text AS action,
       jsonb_build_object('order_id', i, 'customer', 'customer-' || i % 997,
                          'amount_cents', i * 7919 % 100000, 'currency', 'EUR',
                          'lines', jsonb_build_array(jsonb_build_object(
                              'sku', 'sku-' || i % 101, 'qty', i % 5 + 1))) AS payload
  FROM generate_series(1, {EVENTS}) AS i;
CREATE TABLE public.bench_batches (stream text, events jsonb);
ALTER TABLE public.bench_batches ALTER COLUMN events SET STORAGE EXTERNAL;
INSERT INTO public.bench_batches
SELECT batch_stream,
       jsonb_agg(jsonb_build_object('action', action, 'payload', payload) ORDER BY i)
  FROM public.bench_input GROUP BY batch_stream ORDER BY min(i);
"""

# name, statement, what the time includes. Every statement also reads its input rows.
BULK_VARIANTS = [
    ("append_event",
     "SELECT count(amebo.append_event(stream, action, payload)) FROM public.bench_input",
     f"{EVENTS:,} amebo.append_event calls, one new stream each (argument checks, stream "
     "lock, head probe, generated UUIDv7 id, position, insert with 3 index entries)"),
    ("append_events",
     "SELECT count(amebo.append_events(stream, events)) FROM public.bench_batches",
     f"{EVENTS // BATCH:,} amebo.append_events calls of {BATCH} events, one new stream each "
     "(parsing the JSON array into events, then as append_event per batch)"),
    ("INSERT (1 per stream)",
     "INSERT INTO plain.events SELECT nextval('plain.events_position_seq'), "
     "amebo.new_event_id(), stream, 1, action, payload, '{}', now() FROM public.bench_input",
     "the physical limit for append_event: the same rows (stream per event, version 1) into "
     "a table with amebo.events' columns and indexes; no checks, no locks"),
    (f"INSERT ({BATCH} per stream)",
     "INSERT INTO plain.events SELECT nextval('plain.events_position_seq'), "
     "amebo.new_event_id(), batch_stream, batch_version, action, payload, '{}', now() "
     "FROM public.bench_input",
     f"the physical limit for append_events: the same rows ({BATCH} versions per stream)"),
    ("PL/pgSQL append_event",
     "SELECT count(plstore.append_event(stream, action, payload)) FROM public.bench_input",
     "bench/baselines.sql: checks, stream row created and locked (FOR UPDATE), insert, "
     "stream row updated"),
    ("PL/pgSQL append_events",
     "SELECT count(plstore.append_events(stream, events)) FROM public.bench_batches",
     "bench/baselines.sql, set-based: validation query, stream row locked, one "
     "INSERT ... SELECT from jsonb_array_elements, stream row updated"),
    ("PL/pgSQL append_events (loop)",
     "SELECT count(plstore.append_events_loop(stream, events)) FROM public.bench_batches",
     "bench/baselines.sql, the same written as loops: one INSERT per event"),
]

# (numerator, denominator, kind, target, description)
#   kind "max": numerator/denominator must be at most target; "min": at least target.
BULK_RATIOS = [
    ("append_event", "INSERT (1 per stream)", "max", 1.5, "append_event / INSERT"),
    ("append_events", f"INSERT ({BATCH} per stream)", "max", 1.2, "append_events / INSERT"),
    ("PL/pgSQL append_event", "append_event", "min", 2.0,
     "PL/pgSQL append_event / append_event (speed-up)"),
    ("PL/pgSQL append_events", "append_events", "min", 2.0,
     "PL/pgSQL append_events (set-based) / append_events (speed-up)"),
    ("PL/pgSQL append_events (loop)", "append_events", "min", 2.0,
     "PL/pgSQL append_events (loop) / append_events (speed-up)"),
    # No target: how far the set-based baseline is from the physical limit.
    ("PL/pgSQL append_events", f"INSERT ({BATCH} per stream)", None, None,
     "PL/pgSQL append_events (set-based) / INSERT (no target)"),
]


def stored_table(name):
    """The table a part 1 variant writes to."""
    if name.startswith("PL/pgSQL"):
        return "plstore.events"
    if name.startswith("INSERT"):
        return "plain.events"
    return "amebo.events"


def backend_cpu_seconds(pid):
    """CPU time the server process pid has used so far (it runs on this machine, as us)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_statement(cluster, name, sql):
    """Runs sql in its own transaction in a new connection. Returns the statement's wall time,
    the CPU time its server process used for it, and its COMMIT's wall time (seconds).
    Checks afterwards (untimed) that it stored every event."""
    with cluster.connect() as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute("BEGIN")
        cpu_start = backend_cpu_seconds(pid)
        start = time.perf_counter()
        conn.execute(sql)
        middle = time.perf_counter()
        cpu = backend_cpu_seconds(pid) - cpu_start
        conn.execute("COMMIT")
        end = time.perf_counter()
        stored = conn.execute(f"SELECT count(*) FROM {stored_table(name)}").fetchone()[0]
    if stored != EVENTS:
        raise RuntimeError(f"{name} stored {stored} events, not {EVENTS}")
    return middle - start, cpu, end - middle


def run_bulk(cluster):
    log(f"part 1: building the input ({EVENTS:,} events)")
    with cluster.connect() as conn:
        conn.execute(INPUT_SQL)
        conn.execute("VACUUM ANALYZE public.bench_input, public.bench_batches")
    times = {name: [] for name, _, _ in BULK_VARIANTS}
    cpus = {name: [] for name, _, _ in BULK_VARIANTS}
    commits = {name: [] for name, _, _ in BULK_VARIANTS}
    for rnd in range(ROUNDS):
        shift = rnd % len(BULK_VARIANTS)
        order = BULK_VARIANTS[shift:] + BULK_VARIANTS[:shift]
        for name, sql, _ in order:
            cluster.reset()
            statement, cpu, commit = time_statement(cluster, name, sql)
            times[name].append(statement)
            cpus[name].append(cpu)
            commits[name].append(commit)
            log(f"part 1 round {rnd + 1}/{ROUNDS}: {name}: {statement * 1000:.0f} ms "
                f"(server CPU {cpu * 1000:.0f} ms)")
    return times, cpus, commits


def judge(value, kind, target):
    ok = value <= target if kind == "max" else value >= target
    return "PASS" if ok else "MISS"


def ratio_text(ratio):
    """'1.37', or '1,204' for a ratio of 100 or more (speed-ups)."""
    return f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.2f}"


def ratio_cells(num, den, kind, target):
    """'median (range)' and the verdict for per-round ratios num[i]/den[i]."""
    ratios = [a / b for a, b in zip(num, den)]
    value = median(ratios)
    cell = f"{ratio_text(value)}x ({ratio_text(min(ratios))}–{ratio_text(max(ratios))})"
    return cell, ("–" if kind is None else judge(value, kind, target))


def report_bulk(times, cpus, commits):
    lines = [
        f"## 1. Server-side cost of {EVENTS:,} appends in one statement",
        "",
        f"{ROUNDS} rounds, variants interleaved (order rotated each round); each measurement "
        "from the same empty state (extension and baselines recreated, CHECKPOINT) in a new "
        "connection. Wall = the statement's elapsed time as the client sees it (its COMMIT is "
        "shown apart); server CPU = the CPU time the server process spent on the statement "
        "(/proc/PID/schedstat), which other load on the machine disturbs much less. Payloads "
        "come from the same pre-built input table for every variant (append_events: the same "
        f"rows pre-aggregated into {EVENTS // BATCH:,} JSON arrays of {BATCH}).",
        "",
        "| variant | wall ms (median) | wall µs/event | wall min–max ms "
        "| server CPU ms (median) | CPU µs/event | commit ms | every round, wall ms "
        "| every round, CPU ms | what it includes |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for name, _, what in BULK_VARIANTS:
        t, c = times[name], cpus[name]
        lines.append(
            f"| {name} | {median(t) * 1e3:.0f} | {median(t) * 1e6 / EVENTS:.2f} | "
            f"{min(t) * 1e3:.0f}–{max(t) * 1e3:.0f} | {median(c) * 1e3:.0f} | "
            f"{median(c) * 1e6 / EVENTS:.2f} | {median(commits[name]) * 1e3:.0f} | "
            f"{join(x * 1e3 for x in t)} | {join(x * 1e3 for x in c)} | {what} |")
    lines += [
        "",
        "Ratios: the median of the per-round ratios (both variants of a ratio ran in the same "
        "round, a few seconds apart), with the lowest and highest per-round ratio. The "
        "verdict is on wall time, as the target is stated; the CPU verdict is a check "
        "against noise.",
        "",
        "| ratio | wall | server CPU | target | result (wall) | result (CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for num, den, kind, target, label in BULK_RATIOS:
        wall, wall_result = ratio_cells(times[num], times[den], kind, target)
        cpu, cpu_result = ratio_cells(cpus[num], cpus[den], kind, target)
        goal = "–" if kind is None else f"{'≤' if kind == 'max' else '≥'} {target}x"
        lines.append(f"| {label} | {wall} | {cpu} | {goal} | {wall_result} | {cpu_result} |")
    return lines


# ---------------------------------------------------------------------------------------------
# Part 2: client throughput with pgbench.

PGBENCH_VARIANTS = [
    ("append_event", "append_event.sql"),
    ("INSERT", "insert.sql"),
    ("PL/pgSQL append_event", "plpgsql_append_event.sql"),
]


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-p * len(sorted_values) // 100)))  # ceil(p/100 * n)
    return sorted_values[rank - 1]


def run_pgbench_once(cluster, script, sync, logdir, tag):
    prefix = os.path.join(logdir, tag)
    cmd = [os.path.join(PG_BIN, "pgbench"), "-h", cluster.host, "-p", str(cluster.port),
           "-U", "postgres", "-n", "-M", "prepared", "-c", str(CLIENTS), "-j", "2",
           "-T", str(PGBENCH_SECONDS), "-f", os.path.join(HERE, "pgbench", script),
           "--log", f"--log-prefix={prefix}", "postgres"]
    env = dict(os.environ, PGOPTIONS=f"-c synchronous_commit={sync}")
    cpu_before = cluster.backends_cpu_seconds()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=logdir,
                          timeout=PGBENCH_SECONDS + 120)
    cpu = cluster.backends_cpu_seconds() - cpu_before
    match = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", proc.stdout,
                      re.M)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"pgbench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    latencies = []
    for path in glob.glob(prefix + ".*"):
        with open(path) as f:
            for line in f:
                fields = line.split()
                # client_id transaction_no time(µs) script_no time_epoch time_us
                latencies.append(int(fields[2]))
        os.remove(path)
    latencies.sort()
    return {
        "tps": float(match.group(1)),
        "transactions": len(latencies),
        "p50": percentile(latencies, 50) / 1000.0,
        "p99": percentile(latencies, 99) / 1000.0,
        "cpu_us": cpu * 1e6 / max(1, len(latencies)),
    }


def run_pgbench(cluster, logdir):
    results = {(name, sync): [] for name, _ in PGBENCH_VARIANTS for sync in ("on", "off")}
    configs = [(name, script, sync) for sync in ("on", "off") for name, script in PGBENCH_VARIANTS]
    for rnd in range(PGBENCH_ROUNDS):
        shift = rnd % len(configs)
        for name, script, sync in configs[shift:] + configs[:shift]:
            cluster.reset()
            tag = re.sub(r"[^a-z0-9]+", "_", f"{name}_{sync}_{rnd}".lower())
            r = run_pgbench_once(cluster, script, sync, logdir, tag)
            results[(name, sync)].append(r)
            log(f"part 2 round {rnd + 1}/{PGBENCH_ROUNDS}: {name} synchronous_commit={sync}: "
                f"{r['tps']:.0f} tps, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
                f"server CPU {r['cpu_us']:.1f} µs/transaction")
    return results


def report_pgbench(results):
    lines = [
        "## 2. Client throughput (pgbench)",
        "",
        f"pgbench -M prepared -c {CLIENTS} -j 2 -T {PGBENCH_SECONDS}, {PGBENCH_ROUNDS} rounds "
        "interleaved, each run from the same empty state. One event per transaction, each to "
        "a new stream (client id and a random number); the payload is built by the same "
        "expression in every script (bench/pgbench/). TPS from pgbench (without connection "
        "time); p50/p99 per-transaction latency from pgbench --log, per run, then the median "
        "over runs. Server CPU/transaction: CPU time of the run's server backends (counted by "
        "the postmaster as it reaps them) over the transactions, which other load disturbs "
        "less than TPS does; pgbench itself shares the 2 CPUs with the server.",
        "",
        "| variant | synchronous_commit | median TPS | p50 ms | p99 ms | server CPU µs/txn "
        "| every round (TPS) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for sync in ("on", "off"):
        for name, _ in PGBENCH_VARIANTS:
            rs = results[(name, sync)]
            lines.append(
                f"| {name} | {sync} | {median([r['tps'] for r in rs]):.0f} | "
                f"{median([r['p50'] for r in rs]):.3f} | {median([r['p99'] for r in rs]):.3f} | "
                f"{median([r['cpu_us'] for r in rs]):.1f} | {join(r['tps'] for r in rs)} |")
    lines += [
        "",
        "Ratios: the median of the per-round ratios, with the lowest and highest.",
        "",
        "| ratio | median | range | target | result |",
        "|---|---:|---|---|---|",
    ]

    def ratio_line(label, num, den, key, target=None):
        ratios = [a[key] / b[key] for a, b in zip(num, den)]
        value = median(ratios)
        goal, result = ("–", "–") if target is None else (
            f"≥ {target}x", judge(value, "min", target))
        lines.append(f"| {label} | {value:.2f}x | {min(ratios):.2f}–{max(ratios):.2f} | "
                     f"{goal} | {result} |")

    for sync in ("on", "off"):
        ratio_line(f"append_event TPS / INSERT TPS, synchronous_commit={sync}",
                   results[("append_event", sync)], results[("INSERT", sync)], "tps", 0.95)
    for sync in ("on", "off"):
        ratio_line(f"append_event server CPU / INSERT server CPU per transaction, "
                   f"synchronous_commit={sync} (no target)",
                   results[("append_event", sync)], results[("INSERT", sync)], "cpu_us")
    for sync in ("on", "off"):
        ratio_line(f"append_event TPS / PL/pgSQL TPS, synchronous_commit={sync} (no target)",
                   results[("append_event", sync)], results[("PL/pgSQL append_event", sync)],
                   "tps")
    return lines


# ---------------------------------------------------------------------------------------------
# Part 3: contention on one stream.
#
# pgbench cannot count a custom SQLSTATE as a conflict (an error other than a serialization
# failure or deadlock aborts its client), and catching the error in a PL/pgSQL wrapper would
# move the read-then-append loop into one statement, hiding the client round trip between
# the read and the append that makes conflicts happen in real applications. So: 8 processes
# (not threads: no shared interpreter lock between clients), each with its own connection,
# loop: read stream_version, then append_event with that expected version; AM001 counts as a
# conflict, anything else is a failure.

CONTENTION_VARIANTS = [
    ("append_event", "SELECT amebo.stream_version(%s)",
     "SELECT amebo.append_event(%s, 'Incremented', %s, %s)"),
    ("PL/pgSQL append_event", "SELECT plstore.stream_version(%s)",
     "SELECT plstore.append_event(%s, 'Incremented', %s, %s)"),
]
MAX_ATTEMPTS = 1_000_000  # per client; bounds the loop besides the deadline


def contention_client(conninfo, read_sql, append_sql, stream, seconds, barrier, queue):
    ok = conflicts = 0
    latencies = []
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            payload = Jsonb({"by": os.getpid()})
            barrier.wait(timeout=60)
            deadline = time.monotonic() + seconds
            attempts = 0
            while time.monotonic() < deadline and attempts < MAX_ATTEMPTS:
                attempts += 1
                start = time.perf_counter()
                version = conn.execute(read_sql, (stream,)).fetchone()[0]
                try:
                    conn.execute(append_sql, (stream, payload, version))
                    ok += 1
                    latencies.append(time.perf_counter() - start)
                except psycopg.Error as e:
                    if e.sqlstate != "AM001":
                        raise
                    conflicts += 1
        queue.put(("ok", ok, conflicts, latencies))
    except Exception as e:  # reported by the parent
        queue.put(("error", repr(e), 0, []))


def run_contention_once(cluster, read_sql, append_sql, sync, stream):
    options = f"-c synchronous_commit={sync}"
    conninfo = cluster.conninfo + f" options='{options}'"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(CLIENTS)
    queue = ctx.Queue()
    procs = [ctx.Process(target=contention_client,
                         args=(conninfo, read_sql, append_sql, stream, CONTENTION_SECONDS,
                               barrier, queue)) for _ in range(CLIENTS)]
    for p in procs:
        p.start()
    outcomes = [queue.get(timeout=CONTENTION_SECONDS + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    errors = [o[1] for o in outcomes if o[0] == "error"]
    if errors:
        raise RuntimeError(f"contention client failed: {errors[0]}")
    ok = sum(o[1] for o in outcomes)
    conflicts = sum(o[2] for o in outcomes)
    latencies = sorted(x for o in outcomes for x in o[3])
    final = cluster.scalar(read_sql, (stream,))
    return {
        "ok_per_s": ok / CONTENTION_SECONDS,
        "conflicts_per_s": conflicts / CONTENTION_SECONDS,
        "conflict_share": conflicts / max(1, ok + conflicts),
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "consistent": final == ok,
    }


def run_contention(cluster):
    results = {(name, sync): [] for name, _, _ in CONTENTION_VARIANTS for sync in ("on", "off")}
    configs = [(v, sync) for sync in ("on", "off") for v in CONTENTION_VARIANTS]
    for rnd in range(CONTENTION_ROUNDS):
        shift = rnd % len(configs)
        for (name, read_sql, append_sql), sync in configs[shift:] + configs[:shift]:
            cluster.reset()
            r = run_contention_once(cluster, read_sql, append_sql, sync, "hot-stream")
            results[(name, sync)].append(r)
            log(f"part 3 round {rnd + 1}/{CONTENTION_ROUNDS}: {name} synchronous_commit={sync}: "
                f"{r['ok_per_s']:.0f} appends/s, {r['conflicts_per_s']:.0f} conflicts/s")
    return results


def report_contention(results):
    lines = [
        "## 3. Contention: 8 clients, one stream, expected versions",
        "",
        f"{CLIENTS} processes (Python, psycopg, autocommit), {CONTENTION_SECONDS} s per run, "
        f"{CONTENTION_ROUNDS} rounds interleaved. Each loops: read the stream's version, then "
        "append one event with it as expected_version; SQLSTATE AM001 counts as a conflict "
        "(no retry delay), any other error fails the run. Latency = read plus successful "
        "append, as the client sees it. 'consistent': the stream's final version equals the "
        "number of successful appends in every run (no lost or duplicated append).",
        "",
        "| variant | synchronous_commit | appends/s | conflicts/s | conflict share | "
        "p50 ms | p99 ms | consistent | every round (appends/s) |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for sync in ("on", "off"):
        for name, _, _ in CONTENTION_VARIANTS:
            rs = results[(name, sync)]
            lines.append(
                f"| {name} | {sync} | {median([r['ok_per_s'] for r in rs]):.0f} | "
                f"{median([r['conflicts_per_s'] for r in rs]):.0f} | "
                f"{median([r['conflict_share'] for r in rs]) * 100:.0f}% | "
                f"{median([r['p50'] for r in rs]):.2f} | {median([r['p99'] for r in rs]):.2f} | "
                f"{'yes' if all(r['consistent'] for r in rs) else 'NO'} | "
                f"{join(r['ok_per_s'] for r in rs)} |")
    return lines


# ---------------------------------------------------------------------------------------------


def library_info(cluster):
    """The installed amebo.so: path, modification time, sha256 prefix."""
    path = os.path.join(
        cluster.scalar("SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'"), "amebo.so")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    built = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    return f"{path} built {built:%Y-%m-%d %H:%M:%S %Z}, sha256 {digest}…"


def machine_lines(cluster, started, load_start, library_start):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    server = cluster.scalar("SELECT version()")
    collation = cluster.scalar(
        "SELECT datcollate FROM pg_database WHERE datname = current_database()")
    settings = cluster.scalar(
        "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name) "
        "FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', "
        "'max_wal_size', 'checkpoint_timeout', 'autovacuum', 'jit', 'wal_level', "
        "'full_page_writes', 'shared_preload_libraries')")
    load_end = os.getloadavg()
    library_end = library_info(cluster)
    replaced = "" if library_end == library_start else (
        f" (replaced during the run by {library_end}; the server kept running the one it "
        "loaded at start, but CREATE EXTENSION read the SQL script installed at the time)")
    return [
        "# amebo benchmark results",
        "",
        "Written by `bench/run.sh`: the lines below describe the run of the append benchmark "
        "(sections 1-3); every other section says when it ran (BENCH_SUITES runs some alone).",
        "",
        f"- date: {started:%Y-%m-%d %H:%M:%S %Z} (took "
        f"{(datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 60:.1f} min)",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu}, {mem_gib:.0f} GiB, "
        f"{platform.system()} {platform.release()}",
        f"- load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/"
        f"{load_start[2]:.2f}, at end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f} "
        "(other work on the machine skews results)",
        f"- server: {server}",
        f"- amebo: source {os.environ.get('BENCH_SOURCE', 'unknown')} (git describe of the "
        f"tree bench/run.sh ran from); installed library at start: {library_start}{replaced}",
        f"- cluster settings: {settings}, database collation {collation}",
        "- client, server and pgbench share the same CPUs; connections over a unix socket",
        "",
    ]


def other_sections(path):
    """The sections of the report at path that other benchmarks wrote (not this one's parts,
    not the summary), so that running this one alone keeps them."""
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        sections = re.findall(r"^## .*?(?=^## |\Z)", f.read(), re.M | re.S)
    return "".join("\n" + s.rstrip("\n") + "\n" for s in sections
                   if not re.match(r"## (Summary|[0-9]+\. )", s))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True, help="the cluster's unix socket directory")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--out", required=True, help="the Markdown report to write")
    parser.add_argument("--logdir", required=True, help="scratch directory for pgbench logs")
    args = parser.parse_args()

    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()
    cluster = Cluster(args.host, args.port)
    library_start = library_info(cluster)
    os.makedirs(args.logdir, exist_ok=True)

    lines = []
    if "1" in PARTS:
        lines += report_bulk(*run_bulk(cluster)) + [""]
    if "2" in PARTS:
        lines += report_pgbench(run_pgbench(cluster, args.logdir)) + [""]
    if "3" in PARTS:
        lines += report_contention(run_contention(cluster)) + [""]
    lines = machine_lines(cluster, started, load_start, library_start) + lines
    text = "\n".join(lines) + other_sections(args.out)
    with open(args.out, "w") as f:
        f.write(text)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
