#!/usr/bin/env python3
"""State benchmarks, run by bench/run.sh on its throwaway cluster (only user API functions):

1. Snapshots: loading the state of a 10,000-event stream with amebo.load_state (a reducer
   registered by amebo.create_reducer, automatic snapshots every 10 events) against a full
   replay of the same stream (amebo.replay_state). Steady state: the snapshot exists, at the
   stream's head (nothing to fold) or 10 events behind it (the most load_state folds without
   saving a new one). Also the first load (no snapshot yet: a full replay plus saving one),
   each round on a stream of its own. Target: load_state at least 20x faster.
2. Inline projections: 100,000 appends with one inline projection whose handler upserts a
   row of a read model (INSERT ... ON CONFLICT DO UPDATE) against the same appends with the
   same upsert as a separate statement per event and no projection. Both are the same
   PL/pgSQL loop over the same pre-built input (one append_event per event; the second
   variant runs the upsert right after it), in one transaction per measurement, so that they
   differ only in who runs the upsert. Target: at most 10% slower.

Every variant runs in every round (part 1: order rotated; part 2: the two compared variants
back to back, in alternating order); ratios are medians of per-round ratios.
Writes (or replaces) the "Snapshots and inline projections" section of --out; progress goes
to stderr. Exits 0 whether the targets are met or not.
"""

import argparse
import datetime
import os
import time

from bench import Cluster, backend_cpu_seconds, env_int, library_info, log, median, ratio_cells
from report import write_section

TITLE = "Snapshots and inline projections"
STREAM_EVENTS = env_int("BENCH_STATE_EVENTS", 10_000)
SNAPSHOT_EVERY = 10
LOADS = 1000     # load_state calls per steady-state measurement (one statement)
REPLAYS = 5      # replay_state calls per measurement (one statement)
STATE_ROUNDS = env_int("BENCH_STATE_ROUNDS", 7)
PROJECTION_EVENTS = env_int("BENCH_PROJECTION_EVENTS", 100_000)
PROJECTION_ROUNDS = env_int("BENCH_PROJECTION_ROUNDS", 8)
STATE_PARTS = os.environ.get("BENCH_STATE_PARTS", "1,2").split(",")  # a subset, for development

# A bank account: deposits fold into a balance, a count and the last reference.
REDUCER_SQL = """
CREATE FUNCTION public.account_reducer(state jsonb, e amebo.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'balance', (state->>'balance')::bigint + (e.payload->>'amount')::bigint,
        'deposits', (state->>'deposits')::bigint + 1,
        'last_reference', e.payload->>'reference')
$$;
"""

DEPOSITS_SQL = """
SELECT count(amebo.append_event(%(stream)s, 'account.deposited',
                                jsonb_build_object('amount', i %% 100, 'reference', 'ref-' || i)))
  FROM generate_series(1, %(count)s) AS i
"""


# Drops and recreates amebo (amebo.events refuses TRUNCATE), then runs setup; every
# measurement of part 2 and the whole of part 1 start from this.
def recreate(cluster, setup):
    with cluster.connect() as conn:
        conn.execute("DROP EXTENSION IF EXISTS amebo CASCADE")
        conn.execute("CREATE EXTENSION amebo")
        for sql in setup:
            conn.execute(sql)


# Runs sql in conn (its server process is pid); returns its wall and server CPU seconds.
def timed(conn, pid, sql, params=None):
    cpu_start = backend_cpu_seconds(pid)
    start = time.perf_counter()
    conn.execute(sql, params)
    wall = time.perf_counter() - start
    return wall, backend_cpu_seconds(pid) - cpu_start


# ---------------------------------------------------------------------------------------------
# Part 1: snapshots.

HEAD, BEHIND = "account-head", "account-behind"

# name, statement, calls per statement. {first} is the round's stream that has no snapshot.
LOAD_VARIANTS = [
    ("replay_state (full replay)",
     f"SELECT count(amebo.replay_state('{HEAD}')) FROM generate_series(1, {REPLAYS})", REPLAYS),
    ("load_state, snapshot at the head",
     f"SELECT count(amebo.load_state('{HEAD}')) FROM generate_series(1, {LOADS})", LOADS),
    (f"load_state, snapshot {SNAPSHOT_EVERY} events behind",
     f"SELECT count(amebo.load_state('{BEHIND}')) FROM generate_series(1, {LOADS})", LOADS),
    ("load_state, first load (no snapshot yet)",
     "SELECT version FROM amebo.load_state('{first}')", 1),
]

# (numerator, denominator, kind, target, description)
LOAD_RATIOS = [
    ("replay_state (full replay)", "load_state, snapshot at the head", "min", 20,
     "replay_state / load_state, snapshot at the head (speed-up)"),
    ("replay_state (full replay)", f"load_state, snapshot {SNAPSHOT_EVERY} events behind", "min",
     20, f"replay_state / load_state, snapshot {SNAPSHOT_EVERY} events behind (speed-up)"),
    ("load_state, first load (no snapshot yet)", "replay_state (full replay)", None, None,
     "first load / replay_state (no target)"),
]


# The streams: one at its head with a snapshot there, one with a snapshot SNAPSHOT_EVERY
# events behind its head, and one per round that was never loaded.
def prepare_streams(cluster):
    recreate(cluster, [
        REDUCER_SQL,
        "SELECT amebo.create_reducer('account', 'public.account_reducer(jsonb, amebo.events)', "
        f"'{{\"balance\": 0, \"deposits\": 0}}', {SNAPSHOT_EVERY})"])
    with cluster.connect() as conn:
        conn.execute(DEPOSITS_SQL, {"stream": HEAD, "count": STREAM_EVENTS})
        conn.execute("SELECT amebo.load_state(%s)", (HEAD,))
        conn.execute(DEPOSITS_SQL, {"stream": BEHIND, "count": STREAM_EVENTS - SNAPSHOT_EVERY})
        conn.execute("SELECT amebo.load_state(%s)", (BEHIND,))
        conn.execute(DEPOSITS_SQL, {"stream": BEHIND, "count": SNAPSHOT_EVERY})
        for rnd in range(STATE_ROUNDS):
            conn.execute(DEPOSITS_SQL, {"stream": f"account-first{rnd}", "count": STREAM_EVENTS})
        conn.execute("VACUUM ANALYZE amebo.events")
        conn.execute("CHECKPOINT")


# The version of the stream's newest snapshot (None without one).
def snapshot_version(conn, stream):
    return conn.execute("SELECT version FROM amebo.load_snapshot(%s)", (stream,)).fetchone()[0]


# Fails unless the snapshots are where the measurements assume and the states agree.
def check_streams(cluster):
    with cluster.connect() as conn:
        where = {stream: snapshot_version(conn, stream)
                 for stream in (HEAD, BEHIND, "account-first0")}
        same = conn.execute("SELECT amebo.replay_state(%s) = (amebo.load_state(%s)).state",
                            (BEHIND, BEHIND)).fetchone()[0]
    expected = {HEAD: STREAM_EVENTS, BEHIND: STREAM_EVENTS - SNAPSHOT_EVERY,
                "account-first0": STREAM_EVENTS}
    if where != expected or not same:
        raise RuntimeError(f"snapshots at {where}, expected {expected}; states agree: {same}")


# Every variant once per round, in a new connection warmed up on a short replay and load.
def run_loads(cluster):
    log(f"snapshots: {2 + STATE_ROUNDS} streams of {STREAM_EVENTS:,} events")
    prepare_streams(cluster)
    times = {name: [] for name, _, _ in LOAD_VARIANTS}
    cpus = {name: [] for name, _, _ in LOAD_VARIANTS}
    for rnd in range(STATE_ROUNDS):
        shift = rnd % len(LOAD_VARIANTS)
        with cluster.connect() as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            conn.execute("SELECT amebo.replay_state(%s, 10), amebo.load_state(%s)", (HEAD, HEAD))
            for name, sql, calls in LOAD_VARIANTS[shift:] + LOAD_VARIANTS[:shift]:
                wall, cpu = timed(conn, pid, sql.replace("{first}", f"account-first{rnd}"))
                times[name].append(wall / calls)
                cpus[name].append(cpu / calls)
                log(f"snapshots round {rnd + 1}/{STATE_ROUNDS}: {name}: "
                    f"{wall / calls * 1e6:.0f} µs per call (server CPU {cpu / calls * 1e6:.0f})")
    check_streams(cluster)
    return times, cpus


# The Markdown for part 1: per-call times, then the ratios.
def report_loads(times, cpus):
    lines = [
        f"### 1. Loading the state of a {STREAM_EVENTS:,}-event stream: snapshots against a "
        "full replay",
        "",
        "A reducer registered by `amebo.create_reducer` (SQL, folds a deposit into a balance, "
        f"a count and the last reference; snapshot_every {SNAPSHOT_EVERY}, the default) for "
        f"streams of {STREAM_EVENTS:,} events. Steady state: `load_state` on a stream whose "
        f"snapshot is at its head (nothing to fold), and on one whose snapshot is "
        f"{SNAPSHOT_EVERY} events behind its head (the most `load_state` folds without "
        "saving a new snapshot; checked after the run); "
        f"{LOADS:,} calls in one statement, per call. Full replay: `replay_state` of the same "
        f"stream, {REPLAYS} calls in one statement. First load: `load_state` of a stream "
        "never loaded (a full replay through the reducer, then saving the snapshot and its "
        "commit), one call, on a stream of its own each round. "
        f"{STATE_ROUNDS} rounds, one connection per round (warmed up), order rotated each "
        "round; server CPU from /proc/PID/schedstat.",
        "",
        "| variant | µs per call (median) | min–max | server CPU µs per call | "
        "every round, µs |",
        "|---|---:|---:|---:|---|",
    ]
    for name, _, _ in LOAD_VARIANTS:
        t = times[name]
        lines.append(f"| {name} | {median(t) * 1e6:,.1f} | {min(t) * 1e6:,.1f}–"
                     f"{max(t) * 1e6:,.1f} | {median(cpus[name]) * 1e6:,.1f} | "
                     f"{', '.join(f'{x * 1e6:,.0f}' for x in t)} |")
    return lines + [""] + ratio_table(LOAD_RATIOS, times, cpus)


# The ratios of a part, wall and server CPU, with their verdicts.
def ratio_table(ratios, times, cpus):
    lines = [
        "Ratios: median of the per-round ratios (lowest–highest); the verdict is on wall "
        "time, the CPU verdict a check against noise.",
        "",
        "| ratio | wall | server CPU | target | result (wall) | result (CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for num, den, kind, target, label in ratios:
        wall, wall_result = ratio_cells(times[num], times[den], kind, target)
        cpu, cpu_result = ratio_cells(cpus[num], cpus[den], kind, target)
        goal = "–" if kind is None else f"{'≥' if kind == 'min' else '≤'} {target}x"
        lines.append(f"| {label} | {wall} | {cpu} | {goal} | {wall_result} | {cpu_result} |")
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# Part 2: inline projections.

ACCOUNTS = PROJECTION_EVENTS // 2  # two deposits per account: the upsert inserts, then updates

INPUT_SQL = f"""
DROP TABLE IF EXISTS public.bench_deposits;
CREATE TABLE public.bench_deposits AS
SELECT i, 'account-' || (i - 1) % {ACCOUNTS} AS stream,
       jsonb_build_object('amount', i % 100, 'reference', 'ref-' || i) AS payload
  FROM generate_series(1, {PROJECTION_EVENTS}) AS i
"""

# The read model, the inline projection's handler, and the loop both variants run: the
# upsert is written twice, as the handler's body and as the statement after the append.
READ_MODEL_SQL = """
DROP TABLE IF EXISTS public.balances;
CREATE TABLE public.balances (account text PRIMARY KEY, balance bigint NOT NULL,
                              deposits bigint NOT NULL);
CREATE OR REPLACE FUNCTION public.project_balance(e amebo.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.balances AS b VALUES (e.stream, (e.payload->>'amount')::bigint, 1)
    ON CONFLICT (account) DO UPDATE
        SET balance = b.balance + excluded.balance, deposits = b.deposits + 1;
END $$;
CREATE OR REPLACE PROCEDURE public.append_deposits(with_upsert boolean) LANGUAGE plpgsql AS $$
DECLARE
    d record;
BEGIN
    FOR d IN SELECT stream, payload FROM public.bench_deposits ORDER BY i LOOP
        PERFORM amebo.append_event(d.stream, 'account.deposited', d.payload);
        IF with_upsert THEN
            INSERT INTO public.balances AS b VALUES (d.stream, (d.payload->>'amount')::bigint, 1)
            ON CONFLICT (account) DO UPDATE
                SET balance = b.balance + excluded.balance, deposits = b.deposits + 1;
        END IF;
    END LOOP;
END $$;
"""

CREATE_PROJECTION_SQL = ("SELECT amebo.create_projection('balances', "
                         "'public.project_balance(amebo.events)', mode => 'inline')")

# name, extra setup, the statement, whether it keeps the read model
PROJECTION_VARIANTS = [
    ("inline projection", [CREATE_PROJECTION_SQL], "CALL public.append_deposits(false)", True),
    ("separate upsert per event", [], "CALL public.append_deposits(true)", True),
    ("appends only (no read model)", [], "CALL public.append_deposits(false)", False),
]

PROJECTION_RATIOS = [
    ("inline projection", "separate upsert per event", "max", 1.1,
     "inline projection / separate upsert"),
    ("separate upsert per event", "appends only (no read model)", None, None,
     "separate upsert / appends only (no target)"),
]


# One measurement from a new extension: the loop in a transaction; returns its wall and server
# CPU seconds and its COMMIT's wall time. Checks the events and the read model afterwards.
def measure_projection(cluster, setup, sql, keeps_read_model):
    recreate(cluster, [READ_MODEL_SQL] + setup + ["CHECKPOINT"])
    with cluster.connect() as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute("BEGIN")
        wall, cpu = timed(conn, pid, sql)
        commit, _ = timed(conn, pid, "COMMIT")
        events = conn.execute("SELECT count(*) FROM amebo.events").fetchone()[0]
        rows, deposits = conn.execute(
            "SELECT count(*), coalesce(sum(deposits), 0) FROM public.balances").fetchone()
    expected = (ACCOUNTS, PROJECTION_EVENTS) if keeps_read_model else (0, 0)
    if events != PROJECTION_EVENTS or (rows, deposits) != expected:
        raise RuntimeError(f"{sql}: {events} events, read model {rows} rows {deposits} deposits")
    return wall, cpu, commit


# The variants in round rnd's order: the two compared ones back to back (so that load from
# elsewhere on the machine hits both alike), first one then the other leading, and the
# appends-only run after them or before them, every other pair of rounds.
def projection_order(rnd):
    compared, scale = PROJECTION_VARIANTS[:2], PROJECTION_VARIANTS[2:]
    pair = compared if rnd % 2 == 0 else compared[::-1]
    return pair + scale if rnd % 4 < 2 else scale + pair


# Every variant once per round, each from a new extension and read model.
def run_projections(cluster):
    log(f"inline projections: {PROJECTION_EVENTS:,} appends, {PROJECTION_ROUNDS} rounds")
    with cluster.connect() as conn:
        conn.execute(INPUT_SQL)
        conn.execute("VACUUM ANALYZE public.bench_deposits")
    times = {name: [] for name, _, _, _ in PROJECTION_VARIANTS}
    cpus = {name: [] for name, _, _, _ in PROJECTION_VARIANTS}
    commits = {name: [] for name, _, _, _ in PROJECTION_VARIANTS}
    for rnd in range(PROJECTION_ROUNDS):
        for name, setup, sql, keeps in projection_order(rnd):
            wall, cpu, commit = measure_projection(cluster, setup, sql, keeps)
            times[name].append(wall)
            cpus[name].append(cpu)
            commits[name].append(commit)
            log(f"projections round {rnd + 1}/{PROJECTION_ROUNDS}: {name}: {wall * 1e3:.0f} ms "
                f"(server CPU {cpu * 1e3:.0f} ms)")
    with cluster.connect() as conn:
        conn.execute("DROP TABLE public.bench_deposits, public.balances")
    return times, cpus, commits


# The Markdown for part 2: times per variant, the ratios, and the cost per event.
def report_projections(times, cpus, commits):
    per_event = [(a - b) * 1e6 / PROJECTION_EVENTS for a, b in
                 zip(cpus["inline projection"], cpus["separate upsert per event"])]
    lines = [
        f"### 2. {PROJECTION_EVENTS:,} appends with an inline projection against a separate "
        "upsert",
        "",
        f"{PROJECTION_EVENTS:,} deposits to {ACCOUNTS:,} account streams (two each: the "
        "upsert inserts the account's row, then updates it), read from a pre-built table by "
        "one PL/pgSQL loop (`public.append_deposits`) calling `amebo.append_event` once per "
        "event, the whole loop in one transaction. Inline projection: `create_projection(..., "
        "mode => 'inline')` whose PL/pgSQL handler runs `INSERT INTO balances ... ON CONFLICT "
        "(account) DO UPDATE` (balance and count). Separate upsert: no projection; the loop "
        "runs the same `INSERT ... ON CONFLICT` right after each append. Appends only: the "
        "loop without a read model, for scale. Both compared variants do the same appends "
        "and the same upserts in the same transaction, so only who issues the upsert differs "
        "(amebo, through the handler's call, or the loop). Each measurement from a new "
        f"extension and read model (CHECKPOINT first), in a new connection; {PROJECTION_ROUNDS} "
        "rounds, the two compared variants back to back in alternating order. Wall = the CALL (its COMMIT apart); server CPU from "
        "/proc/PID/schedstat.",
        "",
        "| variant | wall ms (median) | wall µs/event | min–max ms | server CPU ms (median) "
        "| commit ms | every round, wall ms |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, _, _, _ in PROJECTION_VARIANTS:
        t = times[name]
        lines.append(f"| {name} | {median(t) * 1e3:.0f} | "
                     f"{median(t) * 1e6 / PROJECTION_EVENTS:.2f} | "
                     f"{min(t) * 1e3:.0f}–{max(t) * 1e3:.0f} | {median(cpus[name]) * 1e3:.0f} | "
                     f"{median(commits[name]) * 1e3:.0f} | "
                     f"{', '.join(f'{x * 1e3:.0f}' for x in t)} |")
    lines += [""] + ratio_table(PROJECTION_RATIOS, times, cpus)
    lines += [f"The inline projection costs {median(per_event):+.2f} µs of server CPU per event "
              "against the separate upsert (median of the per-round differences).", ""]
    return lines


# ---------------------------------------------------------------------------------------------


# Runs the parts (BENCH_STATE_PARTS) and writes the section.
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
    parts = []
    if "1" in STATE_PARTS:
        parts += report_loads(*run_loads(cluster))
    if "2" in STATE_PARTS:
        parts += report_projections(*run_projections(cluster))
    minutes = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 60
    load_end = os.getloadavg()
    lines = [
        f"## {TITLE} (bench/state.py)",
        "",
        f"- date: {started:%Y-%m-%d %H:%M:%S %Z}, took {minutes:.1f} min; {os.cpu_count()} CPUs "
        f"(nproc); load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/"
        f"{load_start[2]:.2f}, at end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}",
        f"- amebo: source {os.environ.get('BENCH_SOURCE', 'unknown')}; installed library "
        f"{library}",
        "- cluster: bench/run.sh's (fsync on, synchronous_commit on, JIT off, no autovacuum)",
        "",
    ] + parts
    write_section(args.out, TITLE, lines)
    log(f"wrote the section \"{TITLE}\" of {args.out}")


if __name__ == "__main__":
    main()
