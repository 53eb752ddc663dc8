#!/usr/bin/env python3
"""Webhook delivery benchmark, run by bench/webhooks.sh. Every run gets a new throwaway
cluster (--fresh-cluster: wal_level = logical, amebo.allow_private_targets = on,
test/amebo.conf's settings), so that the backlog an overloaded run leaves does not skew the
next one.

Handlers on loopback: nginx (Debian's /usr/sbin/nginx, one worker process, `return 200 "ok"`,
no access log) for throughput, and a small asyncio HTTP server in this file, which notes the
time each request arrives, for latency. Four parts, in one run:

1. Drain: 50,000 events committed quickly (transactions of one append_events call of 100
   events) while 1 (then 10) subscriptions exist and the worker runs; deliveries per second
   from the start of the first append until the last request finished (delivery log).
   Targets: at least 5,000 deliveries/s (40,000 with 10 subscriptions), worker CPU per
   delivery at most 15 µs.
2. Sustained: pgbench appending one event per transaction while delivering to 1 (then 10)
   subscriptions, unthrottled for 20 s, then for 15 s at the rate that owes 5,000
   deliveries/s: achieved append and delivery rates, and the backlog when the appends stop.
3. Latency: one subscription to the asyncio receiver, 500 appends/s for 20 s from one
   client; latency = receipt time minus the time the append's autocommit returned.
   Targets: p50 at most 5 ms, p99 at most 50 ms.
4. The append path's share: pgbench at a fixed rate of half the saturation TPS without
   subscriptions, with none and with 10 subscriptions delivering everything to nginx
   (also with amebo.worker_cpu_limit = 25); then none and 10 subscriptions at 500 appends/s,
   a rate whose deliveries the worker keeps up with.
   Targets: append latency p50 and p99 at most 1.2x, backend CPU per append transaction at
   most 1.10x; TPS at saturation reported without a target.
5. 1,000 subscriptions to slow handlers (50 ms, nginx echo_sleep on 1,000 loopback
   addresses) and 3 fast ones, default settings. Target: at least 10,000 deliveries/s,
   worker memory reported, the fast handlers not held back.

Along the way: CPU time of the amebo worker, nginx and the whole machine, and samples of the
worker's pg_stat_activity row (which statement it runs), to show where the time goes.

Writes (or replaces) the "Webhook delivery" section of --out; progress goes to stderr.
Exits 0 whether the targets are met or not.
"""

import argparse
import datetime
import hashlib
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

import psycopg

from report import write_section

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "lib"))
from slow_nginx import SlowNginx, child_pid, post_reply  # noqa: E402

PG_BIN = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                        check=True).stdout.strip()
NGINX = os.environ.get("BENCH_NGINX", "/usr/sbin/nginx")


# An integer from the environment, or default.
def env_int(name, default):
    return int(os.environ.get(name, default))


DRAIN_EVENTS = env_int("BENCH_WEBHOOK_EVENTS", 50_000)      # part 1: events in the backlog
DRAIN_BATCH = 100                                           # part 1: events per transaction
TARGET_RATE = 5000                                          # deliveries per second
SUSTAINED_SECONDS = env_int("BENCH_WEBHOOK_SUSTAINED_SECONDS", 20)  # part 2, unthrottled
FIXED_SECONDS = env_int("BENCH_WEBHOOK_FIXED_SECONDS", 15)  # part 2, at the target rate
CATCH_UP_WAIT = 15                                          # part 2: seconds at most
LATENCY_RATE = env_int("BENCH_WEBHOOK_LATENCY_RATE", 500)   # part 3: appends per second
LATENCY_SECONDS = env_int("BENCH_WEBHOOK_LATENCY_SECONDS", 20)
SATURATION_SECONDS = env_int("BENCH_WEBHOOK_SATURATION_SECONDS", 10)  # part 4, unthrottled
FIXED_RATE_SECONDS = env_int("BENCH_WEBHOOK_FIXED_RATE_SECONDS", 20)  # part 4, fixed rate
APPEND_ROUNDS = env_int("BENCH_WEBHOOK_APPEND_ROUNDS", 2)    # part 4: rounds of all variants
# part 4: appends/s of the variants the worker can keep up with (x 10 subscriptions)
DELIVERABLE_RATE = env_int("BENCH_WEBHOOK_DELIVERABLE_RATE", 500)
SLOW_ENDPOINTS = env_int("BENCH_WEBHOOK_SLOW_ENDPOINTS", 1000)  # part 5: slow handlers
SLOW_EVENTS = env_int("BENCH_WEBHOOK_SLOW_EVENTS", 200)     # part 5: events to each
DRAIN_TARGET_10 = 40000       # part 1: deliveries/s with 10 subscriptions
CPU_TARGET_US = 15            # part 1: worker CPU per delivery
SLOW_TARGET = 10000           # part 5: deliveries/s
CPU_LIMIT = env_int("BENCH_WEBHOOK_CPU_LIMIT", 25)  # part 4: amebo.worker_cpu_limit variant
# part 4: fsync on, so that synchronous_commit = on means what it says (durable commits)
APPEND_FSYNC = os.environ.get("BENCH_WEBHOOK_APPEND_FSYNC", "on")
CLIENTS = 8
PARTS = os.environ.get("BENCH_WEBHOOK_PARTS", "1,2,3,4,5").split(",")
ACTION = "order.placed"
TICK = os.sysconf("SC_CLK_TCK")

# The payload of every benchmark event (as bench/pgbench/append_event.sql builds it), from an
# integer expression r; "%%" is the modulo operator in psycopg's query syntax.
PAYLOAD_SQL = ("jsonb_build_object('order_id', {r}, 'customer', 'customer-' || {r} %% 997, "
               "'amount_cents', {r} %% 100000, 'currency', 'EUR', 'lines', jsonb_build_array("
               "jsonb_build_object('sku', 'sku-' || {r} %% 101, 'qty', {r} %% 5 + 1)))")

PGBENCH_SCRIPT = ("\\set r random(1, 1000000000000000)\n"
                  "SELECT amebo.append_event('order-' || :client_id || '-' || :r, "
                  f"'{ACTION}', " + PAYLOAD_SQL.format(r="(:r)::bigint").replace("%%", "%")
                  + ");\n")


# Prints a progress line on stderr.
def log(message):
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# Nearest-rank percentile of an ascending list.
def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-p * len(sorted_values) // 100)))
    return sorted_values[rank - 1]


# A TCP port on 127.0.0.1 that nothing listens on right now.
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# CPU seconds (user + system) a process has used so far; 0 once it is gone.
def process_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, ValueError, IndexError):
        return 0.0


# Busy and total CPU seconds of the whole machine so far (/proc/stat).
def machine_cpu():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICK, sum(fields[:8]) / TICK


# ---------------------------------------------------------------------------------------------
# Handlers: nginx and the timestamping receiver.

NGINX_CONF = """worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok"; }}
    }}
}}
"""


# nginx in the foreground on a free loopback port, with its own configuration in a temp dir.
class Nginx:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "nginx")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.port = None

    # Starts nginx and waits until it answers a POST.
    def start(self):
        for _ in range(5):
            self.port = free_port()
            conf = os.path.join(self.dir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(dir=self.dir, port=self.port))
            self.proc = subprocess.Popen(
                [NGINX, "-p", self.dir + "/", "-c", conf,
                 "-e", os.path.join(self.dir, "error.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._answers():
                    return
                time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"nginx did not start (see {self.dir}/error.log)")

    # True when a POST to / gets 200 "ok".
    def _answers(self):
        reply = post_reply("127.0.0.1", self.port, timeout=1)
        return reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok")

    # The nginx worker process (the master's child).
    def worker_pid(self):
        return child_pid(self.proc.pid)

    # Stops nginx (fast shutdown) if it runs.
    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # The handler URL for path.
    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"


# The receiver process: a keep-alive HTTP/1.1 server answering 200 "ok" to every POST and
# noting (stream, time.time()) when a request's body has been read. Sends its port through
# conn, then, when conn receives anything, sends back the list and exits.
def receiver_main(conn):
    import asyncio

    received = []

    # Serves one connection: requests one after another until the client closes.
    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                expect = False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"expect" and value.strip().lower() == b"100-continue":
                        expect = True
                if expect:
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await reader.readexactly(length) if length else b""
                now = time.time()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 2\r\n\r\nok")
                match = re.search(rb'"stream"\s*:\s*"([^"]*)"', body)
                received.append((match.group(1).decode() if match else "", now))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    # Listens on a free port until the parent asks for the results.
    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        conn.send(server.sockets[0].getsockname()[1])
        stop = asyncio.Event()
        asyncio.get_running_loop().add_reader(conn.fileno(), stop.set)
        await stop.wait()
        server.close()

    asyncio.run(main())
    conn.recv()
    conn.send(received)


# Starts the timestamping receiver in its own process; returns (process, conn, port).
def start_receiver():
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=receiver_main, args=(child,), daemon=True)
    proc.start()
    if not parent.poll(10):
        proc.kill()
        raise RuntimeError("the latency receiver did not start")
    return proc, parent, parent.recv()


# Stops the receiver; returns what it received.
def stop_receiver(proc, conn):
    conn.send("stop")
    received = conn.recv() if conn.poll(30) else []
    proc.join(timeout=10)
    if proc.is_alive():
        proc.kill()
    return received


# ---------------------------------------------------------------------------------------------
# The cluster and amebo.


# The benchmark's connection to the cluster, its pgbench script and its subscriptions.
class Bench:
    def __init__(self, host, port, workdir, nginx, fresh_command):
        self.host = host
        self.port = port
        self.conninfo = f"host={host} port={port} user=postgres dbname=postgres"
        self.workdir = workdir
        self.nginx = nginx
        self.fresh_command = fresh_command
        self.conn = None
        self.run = None  # what the current cluster is for
        self.script = os.path.join(workdir, "append_event.sql")
        with open(self.script, "w") as f:
            f.write(PGBENCH_SCRIPT)
        self.subscription_count = 0
        self.notes = []  # anomalies to report
        self.settings = self.library = None  # read from the first cluster

    # One value from a query.
    def scalar(self, sql, params=None):
        return self.conn.execute(sql, params).fetchone()[0]

    # A new cluster (fresh_command) for run, with amebo, one application and the benchmark's
    # action; waits for the worker. Every run gets its own cluster: an overloaded run leaves
    # a backlog of WAL to decode behind it, which would skew the next run.
    def fresh(self, run):
        self.close()
        log(f"{run}: new cluster")
        subprocess.run(["bash", "-c", self.fresh_command], check=True, timeout=300)
        self.run = run
        self.conn = psycopg.connect(self.conninfo, autocommit=True)
        self.conn.execute("CREATE EXTENSION amebo")
        self.conn.execute("SELECT amebo.create_application('bench')")
        self.conn.execute("SELECT amebo.create_action(%s, 'bench')", (ACTION,))
        if not self.scalar("SELECT amebo.wait_for_worker(30)"):
            raise RuntimeError("amebo's worker is not running")
        self.conn.execute("CHECKPOINT")
        if self.settings is None:
            self.library = library_info(self)
            self.settings = self.scalar(
                "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' "
                "ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', "
                "'wal_level', 'shared_buffers', 'max_wal_size', 'jit', 'autovacuum', "
                "'shared_preload_libraries', 'amebo.allow_private_targets', "
                "'amebo.max_concurrent_requests', 'amebo.max_requests_per_subscription', "
                "'amebo.worker_naptime', 'logical_decoding_work_mem')")

    # Closes the connection; notes the errors and warnings in the cluster's server log.
    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            self.notes += [f"{self.run}: {note}" for note in server_log_notes(self.host)]

    # The amebo worker's process id.
    def worker_pid(self):
        return self.scalar("SELECT pid FROM amebo.worker_status()")

    # Creates subscriptions to the given handler URLs (one path each, batch_size events per
    # request at most); returns their ids,
    # once one warm-up event has been delivered to each (subscriptions loaded, connections
    # open).
    def subscribe(self, urls, batch_size=1):
        ids = []
        for url in urls:
            self.subscription_count += 1
            ids.append(self.scalar(
                "SELECT amebo.create_subscription('bench', %s, %s, %s, batch_size => %s)",
                (f"sub-{self.subscription_count}", ACTION, url, batch_size)))
        self.conn.execute("SELECT amebo.append_event('warm-up', %s, '{}')", (ACTION,))
        if not self.scalar("SELECT amebo.wait_for_deliveries(30)"):
            raise RuntimeError("the warm-up event was not delivered within 30 s")
        return ids

    # Successful deliveries recorded so far for the subscriptions ids.
    def delivered(self, ids):
        return self.scalar("SELECT coalesce(sum(delivered), 0)::bigint "
                           "FROM amebo.subscription_progress WHERE subscription_id = ANY(%s)",
                           (ids,))

    # Events delivered (successful requests times the events each carried) so far for the
    # subscriptions ids, from the delivery log.
    def events_delivered(self, ids):
        return self.scalar("SELECT coalesce(sum(cardinality(positions)), 0)::bigint "
                           "FROM amebo.delivery_log WHERE subscription_id = ANY(%s) "
                           "AND status BETWEEN 200 AND 299", (ids,))

    # Attempts in the delivery log for ids: total, successful, and the end of the last
    # request (Unix time).
    def log_figures(self, ids):
        return self.conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status BETWEEN 200 AND 299), "
            "extract(epoch FROM max(attempted_at + duration_ms * interval '1 ms'))::float8 "
            "FROM amebo.delivery_log WHERE subscription_id = ANY(%s)", (ids,)).fetchone()

    # Runs pgbench (one append per transaction), at rate transactions/s if given; returns
    # (tps, transactions), and with latencies=True also the transactions' latencies in ms
    # (pgbench -l; with -R measured from the scheduled start), sorted.
    def pgbench(self, seconds, rate=None, latencies=False):
        cmd = [os.path.join(PG_BIN, "pgbench"), "-h", self.host, "-p", str(self.port),
               "-U", "postgres", "-n", "-M", "prepared", "-c", str(CLIENTS), "-j", "2",
               "-T", str(seconds), "-f", self.script, "postgres"]
        if rate:
            cmd += ["-R", str(rate)]
        log_dir = tempfile.mkdtemp(prefix="pgbench-log.", dir=self.workdir)
        if latencies:
            cmd += ["-l", "--log-prefix", os.path.join(log_dir, "txn")]
        env = dict(os.environ, PGOPTIONS="-c synchronous_commit=on")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=seconds + 120)
        tps = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", proc.stdout,
                        re.M)
        done = re.search(r"^number of transactions actually processed: (\d+)", proc.stdout,
                         re.M)
        if proc.returncode != 0 or not tps or not done:
            raise RuntimeError(f"pgbench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        if not latencies:
            shutil.rmtree(log_dir, ignore_errors=True)
            return float(tps.group(1)), int(done.group(1))
        times = []
        for name in os.listdir(log_dir):
            with open(os.path.join(log_dir, name)) as f:
                times += [int(line.split()[2]) / 1000 for line in f if line.strip()]
        shutil.rmtree(log_dir, ignore_errors=True)
        return float(tps.group(1)), int(done.group(1)), sorted(times)


# CPU use of the worker, nginx and the machine between start() and stop(), plus samples of
# the worker's pg_stat_activity row (every 10 ms, from its own connection) in a thread.
class Meter:
    def __init__(self, bench, sample=True):
        self.bench = bench
        self.sample = sample
        self.samples = Counter()
        self._stop = threading.Event()
        self._thread = None

    # Notes the CPU counters and starts sampling.
    def start(self):
        self.worker = self.bench.worker_pid()
        self.nginx = self.bench.nginx.worker_pid()
        self.t0 = time.monotonic()
        self.cpu0 = (process_cpu(self.worker), process_cpu(self.nginx) if self.nginx else 0.0,
                     machine_cpu())
        if self.sample:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    # Samples what the worker does, as pg_stat_activity shows it.
    def _sample(self):
        with psycopg.connect(self.bench.conninfo, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT state, query, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE pid = %s", (self.worker,)).fetchone()
                if row:
                    state, text, wtype, wevent = row
                    if state == "active":
                        key = "SQL: " + describe_statement(text)
                        if wevent:
                            key += f" (waiting: {wtype}/{wevent})"
                    else:
                        key = "outside SQL" + (f" (waiting: {wtype}/{wevent})" if wevent else "")
                    self.samples[key] += 1
                time.sleep(0.01)

    # Stops sampling; computes the interval's CPU shares.
    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join()
        elapsed = time.monotonic() - self.t0
        busy1, total1 = machine_cpu()
        busy0, total0 = self.cpu0[2]
        self.elapsed = elapsed
        self.worker_cpu = process_cpu(self.worker) - self.cpu0[0]
        self.nginx_cpu = (process_cpu(self.nginx) - self.cpu0[1]) if self.nginx else 0.0
        self.machine_busy = (busy1 - busy0) / max(1e-9, total1 - total0)
        return self

    # "worker 93%, nginx 20%, machine 98% busy" for the interval.
    def summary(self):
        return (f"worker {self.worker_cpu / self.elapsed * 100:.0f}% of a CPU, nginx "
                f"{self.nginx_cpu / self.elapsed * 100:.0f}%, machine "
                f"{self.machine_busy * 100:.0f}% busy")


# The installed amebo.so: path, modification time, sha256 prefix.
def library_info(bench):
    path = os.path.join(
        bench.scalar("SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'"), "amebo.so")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    built = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    return f"{path} built {built:%Y-%m-%d %H:%M:%S %Z}, sha256 {digest}…"


# Errors and warnings in the server log (bench/webhooks.sh puts it next to the socket):
# how many, and the first few distinct messages.
def server_log_notes(host):
    path = os.path.join(host, "server.log")
    if not os.path.exists(path):
        return []
    found = Counter()
    with open(path, errors="replace") as f:
        for line in f:
            match = re.search(r"\] (ERROR|WARNING|FATAL|PANIC):\s+(.*)", line)
            if match:
                found[f"{match.group(1)}: {match.group(2)[:200]}"] += 1
    if not found:
        return []
    return [f"server log: {sum(found.values())} error/warning lines; "
            + "; ".join(f"{count} x `{text}`" for text, count in found.most_common(5))]


# A short name for a statement the worker runs.
def describe_statement(text):
    text = " ".join((text or "").split())
    for marker in ("record_deliveries", "due_deliveries", "blocked_subscriptions",
                   "prune_delivery_log", "run_projection", "amebo.subscriptions s JOIN",
                   "settled_position", "pg_replication_slots", "amebo.projections"):
        if marker in text:
            return marker
    return text[:50]


# ---------------------------------------------------------------------------------------------
# Part 1: drain a backlog.

# The statement appending one transaction's batch of events to a new stream.
DRAIN_SQL = ("SELECT amebo.append_events(%s, (SELECT jsonb_agg(jsonb_build_object("
             f"'action', '{ACTION}', 'payload', " + PAYLOAD_SQL.format(r="g") + ")) "
             "FROM generate_series(%s::bigint, %s::bigint) g))")


# Commits DRAIN_EVENTS events while subscriptions exist; times until all are delivered.
def run_drain(bench, subscriptions, tag):
    bench.fresh(f"part 1, {subscriptions} subscription(s)")
    urls = [bench.nginx.url(f"/drain-{tag}-{i}") for i in range(subscriptions)]
    ids = bench.subscribe(urls)
    before = bench.delivered(ids)
    expected = DRAIN_EVENTS * subscriptions
    meter = Meter(bench).start()
    start = time.time()
    for first in range(1, DRAIN_EVENTS + 1, DRAIN_BATCH):
        bench.conn.execute(DRAIN_SQL, (f"drain-{tag}-{first}", first, first + DRAIN_BATCH - 1))
    appended = time.time()
    # Given up after 1.5 times the time the target rate needs (plus 10 s), or after 20 s
    # when less than half the target rate has been reached by then.
    deadline = time.monotonic() + expected / TARGET_RATE * 1.5 + 10
    delivered = 0
    while time.monotonic() < deadline:
        delivered = bench.delivered(ids) - before
        so_far = time.time() - start
        if delivered >= expected or (so_far > 20 and delivered / so_far < TARGET_RATE / 2):
            break
        time.sleep(0.05)
    seen = time.time()
    meter.stop()
    finished = delivered >= expected
    attempts, successes, last_end = bench.log_figures(ids)
    # The warm-up event: one attempt per subscription before the backlog.
    attempts -= subscriptions
    successes -= subscriptions
    elapsed = (last_end - start) if finished else (seen - start)
    result = {
        "subscriptions": subscriptions, "events": DRAIN_EVENTS, "expected": expected,
        "delivered": delivered, "finished": finished, "append_s": appended - start,
        "elapsed_s": elapsed, "seen_s": seen - start,
        "rate": (expected if finished else delivered) / elapsed,
        "append_rate": DRAIN_EVENTS / (appended - start),
        "attempts": attempts, "failed": attempts - successes, "meter": meter,
    }
    log(f"part 1, {subscriptions} subscription(s): appended {DRAIN_EVENTS:,} events in "
        f"{result['append_s']:.2f} s; {'delivered' if finished else 'NOT finished:'} "
        f"{delivered:,}/{expected:,} in {elapsed:.2f} s = {result['rate']:,.0f} deliveries/s; "
        f"{meter.summary()}")
    return result


# ---------------------------------------------------------------------------------------------
# Part 2: sustained appends.


# Appends with pgbench for seconds (unthrottled, or at rate appends/s) while delivering to
# subscriptions; then waits a while for the backlog.
def run_sustained(bench, subscriptions, rate, seconds, tag):
    bench.fresh(f"part 2, {subscriptions} subscription(s), "
                + (f"{rate:,} appends/s" if rate else "unthrottled"))
    urls = [bench.nginx.url(f"/sustained-{tag}-{i}") for i in range(subscriptions)]
    ids = bench.subscribe(urls)
    before = bench.delivered(ids)
    meter = Meter(bench).start()
    tps, transactions = bench.pgbench(seconds, rate)
    at_end = bench.delivered(ids) - before
    meter.stop()
    # Then: how long until the backlog is delivered (at most CATCH_UP_WAIT s of waiting).
    expected = transactions * subscriptions
    deadline = time.monotonic() + CATCH_UP_WAIT
    end = time.monotonic()
    delivered = at_end
    while delivered < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        delivered = bench.delivered(ids) - before
    caught_up = delivered >= expected
    catch_up_s = time.monotonic() - end
    result = {
        "subscriptions": subscriptions, "rate": rate, "seconds": seconds, "tps": tps,
        "transactions": transactions,
        "expected": expected, "delivered_in_window": at_end,
        "delivery_rate": at_end / meter.elapsed, "backlog": expected - at_end,
        "backlog_s": (expected - at_end) / max(1, expected / meter.elapsed),
        "caught_up": caught_up, "catch_up_s": catch_up_s,
        "after_wait": expected - delivered, "meter": meter,
    }
    log(f"part 2, {subscriptions} subscription(s), {f'{rate}/s' if rate else 'unthrottled'}: "
        f"{tps:.0f} appends/s, "
        f"{result['delivery_rate']:,.0f} deliveries/s during the run; backlog at the end "
        f"{result['backlog']:,} deliveries; "
        + (f"caught up {catch_up_s:.1f} s later" if caught_up else
           f"{result['after_wait']:,} still undelivered after {CATCH_UP_WAIT} s")
        + f"; {meter.summary()}")
    return result


# ---------------------------------------------------------------------------------------------
# Part 3: latency from commit to receipt.


# Appends at LATENCY_RATE/s from one client; commit-to-receipt latency per event.
def run_latency(bench):
    bench.fresh("part 3")
    proc, conn, port = start_receiver()
    try:
        bench.subscribe([f"http://127.0.0.1:{port}/latency"])
        committed = {}
        durations = []
        interval = 1.0 / LATENCY_RATE
        count = LATENCY_RATE * LATENCY_SECONDS
        meter = Meter(bench, sample=False).start()
        sql = (f"SELECT amebo.append_event(%(stream)s, '{ACTION}', "
               + PAYLOAD_SQL.format(r="%(r)s::bigint") + ")")
        with psycopg.connect(bench.conninfo, autocommit=True) as client:
            cursor = client.cursor()
            cursor.execute("SELECT 1")
            t0 = time.monotonic()
            late = 0
            for i in range(count):
                due = t0 + i * interval
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                elif now - due > 0.1:
                    late += 1
                stream = f"lat-{i}"
                before = time.time()
                cursor.execute(sql, {"stream": stream, "r": i}, prepare=True)
                after = time.time()
                committed[stream] = after
                durations.append(after - before)
            sent_s = time.monotonic() - t0
        bench.scalar("SELECT amebo.wait_for_deliveries(30)")
        meter.stop()
    finally:
        received = stop_receiver(proc, conn)
    first = {}
    for stream, at in received:
        if stream in committed and stream not in first:
            first[stream] = at
    latencies = sorted((first[s] - committed[s]) * 1000 for s in first)
    durations.sort()
    result = {
        "count": count, "received": len(first), "requests": len(received),
        "rate": count / sent_s, "late": late,
        "p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99), "max": latencies[-1] if latencies else float("nan"),
        "min": latencies[0] if latencies else float("nan"),
        "append_p50": percentile(durations, 50) * 1000,
        "append_p99": percentile(durations, 99) * 1000,
        "meter": meter,
    }
    log(f"part 3: {count:,} appends at {result['rate']:.0f}/s, {len(first):,} received; "
        f"latency p50 {result['p50']:.2f} ms, p90 {result['p90']:.2f}, p99 {result['p99']:.2f}, "
        f"max {result['max']:.2f}; {meter.summary()}")
    return result


# ---------------------------------------------------------------------------------------------
# Part 4: append throughput with and without subscriptions.


# Part 4's variants, run in this order in every round: (label, subscriptions, batch_size,
# amebo.worker_nice). Batched subscriptions carry up to 100 events per request.
# CPU seconds of the postmaster's reaped children: the backends of finished connections.
def reaped_children_cpu(postmaster_pid):
    try:
        with open(f"/proc/{postmaster_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / TICK
    except (OSError, ValueError, IndexError):
        return 0.0


# The parent process (the postmaster, for a backend or the worker).
def parent_pid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


# One part 4 run at a fixed rate on the current cluster: append latencies and the CPU of
# pgbench's backends per transaction (reaped by the postmaster when pgbench ends).
def fixed_rate_run(bench, rate, ids):
    before = bench.events_delivered(ids) if ids else 0
    postmaster = parent_pid(bench.worker_pid())
    backends_before = reaped_children_cpu(postmaster)
    meter = Meter(bench, sample=False).start()
    tps, transactions, latencies = bench.pgbench(FIXED_RATE_SECONDS, rate, latencies=True)
    meter.stop()
    time.sleep(0.3)  # the postmaster reaps pgbench's backends
    backend_cpu = reaped_children_cpu(postmaster) - backends_before
    delivered = (bench.events_delivered(ids) - before) if ids else 0
    return {"tps": tps, "transactions": transactions, "delivered": delivered,
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "backend_us": backend_cpu * 1e6 / max(transactions, 1), "meter": meter}


# Part 4's variants: label, subscriptions, amebo.worker_cpu_limit, and the rate: "half" (of
# the saturation TPS without subscriptions) or "deliverable" (DELIVERABLE_RATE: 10
# subscriptions then owe the worker a delivery rate it sustains on this machine).
APPEND_VARIANTS = (("none", 0, 0, "half"), ("10 subscriptions", 10, 0, "half"),
                   (f"10 subscriptions, worker_cpu_limit {CPU_LIMIT}", 10, CPU_LIMIT, "half"),
                   (f"none at {DELIVERABLE_RATE}/s", 0, 0, "deliverable"),
                   (f"10 subscriptions at {DELIVERABLE_RATE}/s", 10, 0, "deliverable"))


# Part 4, in rounds, each variant on a new cluster (fsync on): with no subscription, append
# TPS at saturation, then (the rate set by the first round) a run at half that rate; with 10
# subscriptions delivering everything to nginx (without and with a cap on the worker's CPU),
# a run at the same rate, then saturation. Then the same without and with 10 subscriptions
# at DELIVERABLE_RATE (no saturation runs).
def run_append(bench):
    runs = []
    half = None
    for rnd in range(APPEND_ROUNDS):
        for label, subscriptions, cpu_limit, rate_kind in APPEND_VARIANTS:
            deliverable = rate_kind == "deliverable"
            bench.fresh(f"part 4 round {rnd + 1}, {label}")
            bench.conn.execute(f"ALTER SYSTEM SET fsync = {APPEND_FSYNC}")
            bench.conn.execute(f"ALTER SYSTEM SET amebo.worker_cpu_limit = {cpu_limit}")
            bench.conn.execute("SELECT pg_reload_conf()")
            time.sleep(0.5)
            ids = []
            if subscriptions:
                ids = bench.subscribe([bench.nginx.url(f"/append-{rnd}-{i}")
                                       for i in range(subscriptions)])
            saturated = None
            if not subscriptions and not deliverable:
                saturated, _ = bench.pgbench(SATURATION_SECONDS)
                half = half or max(100, int(saturated / 2))
            rate = DELIVERABLE_RATE if deliverable else half
            run = fixed_rate_run(bench, rate, ids)
            if subscriptions and not deliverable:
                saturated, _ = bench.pgbench(SATURATION_SECONDS)
            run.update({"round": rnd, "label": label, "subscriptions": subscriptions,
                        "rate": rate, "rate_kind": rate_kind, "saturated": saturated})
            runs.append(run)
            log(f"part 4 round {rnd + 1}/{APPEND_ROUNDS}, {label}: at {rate:,}/s achieved "
                f"{run['tps']:,.0f} tps, latency p50 {run['p50']:.2f} ms p99 {run['p99']:.2f} ms, "
                f"backends {run['backend_us']:.0f} µs CPU/transaction, "
                f"{run['delivered'] / run['meter'].elapsed:,.0f} events delivered/s"
                + (f"; saturation {saturated:,.0f} tps" if saturated else "")
                + f"; {run['meter'].summary()}")
    return runs


# For each variant with subscriptions: its label and the ratios of its runs to the run with
# none in the same round, medians over rounds of (p50, p99, backend CPU per transaction,
# saturation TPS), with the per-round lists.
def append_ratios(runs):
    none = {(r["round"], r["rate_kind"]): r for r in runs if r["subscriptions"] == 0}
    out = []
    for label, subscriptions, _, rate_kind in APPEND_VARIANTS:
        same = [r for r in runs if r["label"] == label and (r["round"], rate_kind) in none]
        if not subscriptions or not same:
            continue
        ratios = {}
        for key in ("p50", "p99", "backend_us", "saturated"):
            if any(r[key] is None for r in same):
                continue
            per_round = [r[key] / none[(r["round"], rate_kind)][key] for r in same]
            ratios[key] = (statistics.median(per_round), per_round)
        out.append((label, rate_kind, ratios))
    return out


# ---------------------------------------------------------------------------------------------
# Part 5: a thousand slow endpoints.


# The worker's peak and current resident memory in MB (VmHWM, VmRSS).
def worker_memory(pid):
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    values[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return values.get("VmHWM", 0.0), values.get("VmRSS", 0.0)


# SLOW_ENDPOINTS subscriptions to handlers that answer after 50 ms, each on a loopback address
# of its own (test/lib/slow_nginx.py), plus 3 fast ones, with the default settings; a backlog of
# SLOW_EVENTS events delivered to each: deliveries/s, worker CPU and memory, and when the fast
# handlers were done.
def run_slow_endpoints(bench):
    bench.fresh(f"part 5, {SLOW_ENDPOINTS} slow endpoints")
    slow = SlowNginx(bench.workdir, SLOW_ENDPOINTS, 0.05).start()
    try:
        ids, kinds = [], {}
        urls = [(slow.slow_url(i), "slow") for i in range(SLOW_ENDPOINTS)]
        urls += [(slow.fast_url(i), "fast") for i in range(3)]
        for url, kind in urls:
            bench.subscription_count += 1
            sub = bench.scalar("SELECT amebo.create_subscription('bench', %s, %s, %s)",
                               (f"sub-{bench.subscription_count}", ACTION, url))
            ids.append(sub)
            kinds[sub] = kind
        pid = bench.worker_pid()
        expected = SLOW_EVENTS * len(ids)
        cpu0 = process_cpu(pid)
        nginx_pid = slow.worker_pid()
        nginx_cpu0 = process_cpu(nginx_pid) if nginx_pid else 0.0
        start = time.time()
        for first in range(1, SLOW_EVENTS + 1, DRAIN_BATCH):
            last = min(SLOW_EVENTS, first + DRAIN_BATCH - 1)
            bench.conn.execute(DRAIN_SQL, (f"slow-{first}", first, last))
        deadline = time.monotonic() + expected / 2000 + 30
        delivered, peak_rss = 0, 0.0
        while time.monotonic() < deadline:
            delivered = bench.delivered(ids)
            peak_rss = max(peak_rss, worker_memory(pid)[1])
            if delivered >= expected:
                break
            time.sleep(0.2)
        worker_cpu = process_cpu(pid) - cpu0
        nginx_cpu = (process_cpu(nginx_pid) - nginx_cpu0) if nginx_pid else 0.0
        hwm, _ = worker_memory(pid)
        ends = dict(bench.conn.execute(
            "SELECT subscription_id, extract(epoch FROM max(attempted_at + duration_ms * "
            "interval '1 ms'))::float8 FROM amebo.delivery_log WHERE subscription_id = ANY(%s) "
            "GROUP BY 1", (ids,)).fetchall())
        slow_end = max((t for sub, t in ends.items() if kinds[sub] == "slow"), default=start)
        fast_end = max((t for sub, t in ends.items() if kinds[sub] == "fast"), default=start)
        durations = bench.conn.execute(
            "SELECT percentile_disc(array[0.5, 0.99]) WITHIN GROUP (ORDER BY duration_ms) "
            "FROM amebo.delivery_log WHERE subscription_id = ANY(%s)",
            ([s for s in ids if kinds[s] == "slow"],)).fetchone()[0]
        elapsed = max(1e-9, slow_end - start)
        result = {"endpoints": SLOW_ENDPOINTS, "events": SLOW_EVENTS, "expected": expected,
                  "delivered": delivered, "finished": delivered >= expected,
                  "elapsed": elapsed, "rate": delivered / elapsed,
                  "fast_s": fast_end - start, "slow_s": slow_end - start,
                  "worker_cpu_us": worker_cpu * 1e6 / max(1, delivered),
                  "worker_share": worker_cpu / elapsed, "nginx_share": nginx_cpu / elapsed,
                  "rss_peak": max(peak_rss, 0.0), "hwm": hwm,
                  "slow_p50": durations[0] if durations else float("nan"),
                  "slow_p99": durations[1] if durations else float("nan")}
        log(f"part 5: {delivered:,}/{expected:,} deliveries in {elapsed:.1f} s = "
            f"{result['rate']:,.0f}/s; fast handlers done after {result['fast_s']:.2f} s, slow "
            f"after {result['slow_s']:.2f} s; worker {result['worker_cpu_us']:.0f} µs CPU per "
            f"delivery, RSS peak {hwm:.0f} MB")
        return result
    finally:
        slow.stop()


# ---------------------------------------------------------------------------------------------
# The report.


# "5,000 appends/s" or "unthrottled" for a part 2 run.
def rate_label(run):
    return f"{run['rate']:,} appends/s" if run["rate"] else "unthrottled"


# The drain target of a part 1 run: issue 16's for 10 subscriptions, 5,000/s otherwise.
def drain_target(run):
    return DRAIN_TARGET_10 if run["subscriptions"] == 10 else TARGET_RATE


# PASS or MISS.
def verdict(ok):
    return "PASS" if ok else "MISS"


# Lines of "share of samples" for the worker's activity during a run.
def activity_cell(meter):
    total = sum(meter.samples.values())
    if not total:
        return "–"
    return "; ".join(f"{key} {count * 100 / total:.0f}%"
                     for key, count in meter.samples.most_common(4))


# The Markdown section for the results.
def report(results, info):
    lines = [
        "## Webhook delivery (bench/webhooks.py)",
        "",
        f"- date: {info['date']}, took {info['minutes']:.1f} min; {os.cpu_count()} CPUs "
        f"(nproc); load average (1/5/15 min) at start {info['load_start']}, at end "
        f"{info['load_end']} (other work on the machine skews results)",
        f"- amebo: source {os.environ.get('BENCH_SOURCE', 'unknown')}; installed library "
        f"{info['library']}",
        "- cluster: a new one for every run (bench/webhooks.sh --fresh-cluster), with "
        "test/amebo.conf (**fsync = off**: commits do not wait for the disk, so append rates "
        f"are higher than in the sections above) and: {info['settings']}",
        f"- handler for throughput: nginx {info['nginx']} on 127.0.0.1 (1 worker process, "
        "`return 200 \"ok\"`, access_log off, keep-alive); for latency: an asyncio HTTP server "
        "in bench/webhooks.py noting time.time() when a request's body is read. Every "
        "subscription has its own path; batch_size 1, unordered. Client, server, worker and "
        "handler share the machine's CPUs.",
        "- CPU columns: CPU time of the amebo worker process and of the nginx worker over "
        "the run's wall time (100% = one CPU), and the machine's busy share (all CPUs). "
        "Worker activity: share of 10 ms samples of the worker's pg_stat_activity row: "
        "inside one of its SQL statements (by name), or outside SQL (decoding WAL, "
        "dispatching, HTTP, waiting).",
        "",
    ]
    if "1" in results:
        lines += [
            "### 1. Draining a backlog",
            "",
            f"{DRAIN_EVENTS:,} events appended as fast as one client can "
            f"({DRAIN_EVENTS // DRAIN_BATCH:,} transactions of one append_events call of "
            f"{DRAIN_BATCH} events) while the subscriptions exist and the worker runs. Time: "
            "from the start of the first append until the last request finished (delivery "
            "log: attempted_at + duration_ms), so delivery overlaps the appends; deliveries/s "
            "= events x subscriptions / time. A run is given up after 1.5 times the time the "
            "target needs plus 10 s, or after 20 s if it has not reached half the target "
            "rate by then; its rate is then what was delivered so far. Targets: ≥ 5,000 "
            f"deliveries/s with 1 subscription, ≥ {DRAIN_TARGET_10:,} with 10, and a worker "
            f"CPU per delivery of at most {CPU_TARGET_US} µs with 10.",
            "",
            "| subscriptions | deliveries | append time s | appends/s | time s "
            "| deliveries/s | target | attempts (failed) | worker CPU | nginx CPU | machine busy "
            "| worker activity |",
            "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
        ]
        for r in results["1"]:
            m = r["meter"]
            lines.append(
                f"| {r['subscriptions']} | {r['delivered']:,} of {r['expected']:,}"
                f"{'' if r['finished'] else ' (given up)'} | {r['append_s']:.2f} | "
                f"{r['append_rate']:,.0f} | {r['elapsed_s']:.2f} | **{r['rate']:,.0f}** | "
                f"≥ {drain_target(r):,}: "
                f"{verdict(r['rate'] >= drain_target(r) and r['finished'])} | "
                f"{r['attempts']:,} ({r['failed']:,}) | "
                f"{m.worker_cpu / m.elapsed * 100:.0f}% | {m.nginx_cpu / m.elapsed * 100:.0f}% | "
                f"{m.machine_busy * 100:.0f}% | {activity_cell(m)} |")
        for r in results["1"]:
            m = r["meter"]
            if r["delivered"]:
                lines.append("")
                lines.append(
                    f"- {r['subscriptions']} subscription(s): worker CPU per delivery "
                    f"{m.worker_cpu * 1e6 / r['delivered']:.0f} µs, nginx CPU per request "
                    f"{m.nginx_cpu * 1e6 / r['delivered']:.0f} µs")
        lines.append("")
    if "2" in results:
        lines += [
            "### 2. Sustained appends",
            "",
            f"pgbench -M prepared -c {CLIENTS} -j 2, one append_event per transaction (new "
            "stream each), while delivering to the subscriptions: unthrottled for "
            f"{SUSTAINED_SECONDS} s, then for {FIXED_SECONDS} s at the rate that owes the "
            f"target of {TARGET_RATE:,} deliveries/s (pgbench -R). Deliveries/s counted during "
            "the pgbench run (amebo.subscription_progress); backlog = deliveries owed when "
            "pgbench ended (in seconds of appending at the achieved rate); then up to "
            f"{CATCH_UP_WAIT} s of waiting for it to be delivered.",
            "",
            "| subscriptions | append rate | appends/s | deliveries owed/s "
            "| deliveries/s during the run "
            "| kept up | backlog at end | caught up after | worker CPU | nginx CPU | "
            "machine busy | worker activity |",
            "|---:|---|---:|---:|---:|---|---:|---|---:|---:|---:|---|",
        ]
        for r in results["2"]:
            m = r["meter"]
            owed = r["expected"] / m.elapsed
            kept = r["backlog_s"] <= 1.0
            lines.append(
                f"| {r['subscriptions']} | "
                f"{rate_label(r)} | "
                f"{r['tps']:,.0f} | {owed:,.0f} | "
                f"**{r['delivery_rate']:,.0f}** | {'yes' if kept else 'no'} | "
                f"{r['backlog']:,} ({r['backlog_s']:.1f} s) | "
                + (f"{r['catch_up_s']:.1f} s" if r["caught_up"] else
                   f"not within {CATCH_UP_WAIT} s ({r['after_wait']:,} left)")
                + f" | {m.worker_cpu / m.elapsed * 100:.0f}% | "
                f"{m.nginx_cpu / m.elapsed * 100:.0f}% | {m.machine_busy * 100:.0f}% | "
                f"{activity_cell(m)} |")
        lines += ["", "'kept up': the backlog at the end is at most 1 s of appends.", ""]
    if "3" in results:
        r = results["3"]
        m = r["meter"]
        lines += [
            "### 3. Latency from commit to receipt",
            "",
            f"One client appends one event per autocommit transaction at {LATENCY_RATE}/s for "
            f"{LATENCY_SECONDS} s (achieved {r['rate']:.0f}/s; {r['late']} appends more than "
            "100 ms behind schedule), each to its own stream; one subscription to the asyncio "
            "receiver. Latency = time.time() when the receiver has read the request minus "
            "time.time() right after the append's execute returned (its commit done). The "
            f"append itself took p50 {r['append_p50']:.2f} ms, p99 {r['append_p99']:.2f} ms "
            "(measured from before the call, latencies would be that much higher). "
            f"Received {r['received']:,} of {r['count']:,} events ({r['requests']:,} "
            f"requests); worker CPU {m.worker_cpu / m.elapsed * 100:.0f}%, machine "
            f"{m.machine_busy * 100:.0f}% busy.",
            "",
            "| min ms | p50 ms | p90 ms | p99 ms | max ms | p50 target | p99 target |",
            "|---:|---:|---:|---:|---:|---|---|",
            f"| {r['min']:.2f} | **{r['p50']:.2f}** | {r['p90']:.2f} | **{r['p99']:.2f}** | "
            f"{r['max']:.2f} | ≤ 5 ms: {verdict(r['p50'] <= 5 and r['received'] == r['count'])} "
            f"| ≤ 50 ms: {verdict(r['p99'] <= 50 and r['received'] == r['count'])} |",
            "",
        ]
    if "4" in results:
        runs = results["4"]
        lines += [
            "### 4. The append path's share at a fixed rate",
            "",
            f"pgbench -M prepared -c {CLIENTS} -j 2, synchronous_commit on, fsync {APPEND_FSYNC} "
            "(for this part), one append_event per transaction (new stream each), each run on "
            "a new cluster, in rounds. With no subscription: TPS at saturation "
            f"({SATURATION_SECONDS} s), then {FIXED_RATE_SECONDS} s at a fixed rate of half the "
            "first round's saturation (pgbench -R); with 10 subscriptions delivering every "
            "event to nginx (one request per event), without and with amebo.worker_cpu_limit = "
            f"{CPU_LIMIT} (percent of a CPU): the same fixed rate, then saturation. At half "
            "saturation 10 subscriptions owe the worker ten times that rate in deliveries, more "
            "than it sustains on this machine, so appends and the worker compete for the CPU; "
            f"the last two variants run at {DELIVERABLE_RATE} appends/s (10 x that in "
            "deliveries, which the worker keeps up with) to show the append path's own share. "
            "Latency: pgbench's per-transaction log (-l), from the scheduled start. Backend "
            "CPU/transaction: CPU time of pgbench's server backends (reaped by the postmaster) "
            "over the fixed-rate run's transactions. Ratios: median over rounds of (with "
            "subscriptions / none in the same round). Targets: latency p50 and p99 at most "
            "1.2x, backend CPU per transaction at most 1.10x; saturation TPS is reported "
            "without a target.",
            "",
            "| round | variant | fixed rate/s | achieved TPS | p50 ms | p99 ms "
            "| backend µs CPU/txn | events delivered/s | worker CPU | machine busy "
            "| saturation TPS |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in runs:
            m = r["meter"]
            lines.append(
                f"| {r['round'] + 1} | {r['label']} | {r['rate']:,} | {r['tps']:,.0f} | "
                f"{r['p50']:.2f} | {r['p99']:.2f} | {r['backend_us']:.0f} | "
                f"{r['delivered'] / m.elapsed:,.0f} | {m.worker_cpu / m.elapsed * 100:.0f}% | "
                f"{m.machine_busy * 100:.0f}% | "
                f"{'–' if r['saturated'] is None else format(r['saturated'], ',.0f')} |")
        lines.append("")
        for label, _, ratios in append_ratios(runs):
            for key, name, target in (("p50", "latency p50", 1.2), ("p99", "latency p99", 1.2),
                                      ("backend_us", "backend CPU per transaction", 1.10)):
                value, per_round = ratios[key]
                lines.append(f"- {label} / none, {name}: **{value:.2f}x** (per round: "
                             f"{', '.join(f'{p:.2f}' for p in per_round)}), target ≤ "
                             f"{target:.2f}x: **{verdict(value <= target)}**")
            if "saturated" in ratios:
                value, per_round = ratios["saturated"]
                lines.append(f"- {label} / none, TPS at saturation: {value:.2f}x (per "
                             f"round: {', '.join(f'{p:.2f}' for p in per_round)}), no target")
        lines.append("")
    if "5" in results:
        r = results["5"]
        lines += [
            f"### 5. {r['endpoints']:,} slow endpoints",
            "",
            f"{r['endpoints']:,} subscriptions to handlers that answer after 50 ms (one nginx "
            "worker with libnginx-mod-http-echo's echo_sleep, each handler on a loopback "
            "address of its own, 127.1.x.y: a distinct host for the HTTP client) and 3 to "
            "handlers on 127.0.0.1 that answer at once, with the default settings "
            "(amebo.max_concurrent_requests, amebo.max_requests_per_subscription). "
            f"{r['events']:,} events appended at once (transactions of {DRAIN_BATCH}); time "
            "from the first append to the end of the last request (delivery log). Target: ≥ "
            f"{SLOW_TARGET:,} deliveries/s, worker memory bounded, the fast handlers not held "
            "back.",
            "",
            "| deliveries | time s | deliveries/s | target | slow request p50 / p99 ms "
            "| fast handlers done after s | worker µs CPU/delivery | worker CPU | nginx CPU "
            "| worker RSS peak MB |",
            "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
            f"| {r['delivered']:,} of {r['expected']:,} | {r['elapsed']:.1f} | "
            f"**{r['rate']:,.0f}** | ≥ {SLOW_TARGET:,}: "
            f"{verdict(r['rate'] >= SLOW_TARGET and r['finished'])} | "
            f"{r['slow_p50']:.0f} / {r['slow_p99']:.0f} | {r['fast_s']:.2f} (slow: "
            f"{r['slow_s']:.2f}) | {r['worker_cpu_us']:.0f} | {r['worker_share'] * 100:.0f}% | "
            f"{r['nginx_share'] * 100:.0f}% | {r['hwm']:.0f} |",
            "",
        ]
    lines += summary_lines(results)
    if info["notes"]:
        lines += ["### Anomalies", ""] + [f"- {note}" for note in info["notes"]] + [""]
    return lines


# The results against the targets, in one table.
def summary_lines(results):
    rows = []
    for r in results.get("1", []):
        target = drain_target(r)
        rows.append((f"drain, {r['subscriptions']} subscription(s), deliveries/s",
                     f"{r['rate']:,.0f}", f"≥ {target:,}", f"{r['rate'] / target:.2f}x of target",
                     verdict(r["rate"] >= target and r["finished"])))
        if r["subscriptions"] == 10 and r["delivered"]:
            cpu_us = r["meter"].worker_cpu * 1e6 / r["delivered"]
            rows.append(("drain, 10 subscriptions, worker CPU per delivery µs", f"{cpu_us:.0f}",
                         f"≤ {CPU_TARGET_US}", f"{cpu_us / CPU_TARGET_US:.2f}x of target",
                         verdict(cpu_us <= CPU_TARGET_US)))
    for r in results.get("2", []):
        rows.append((f"sustained, {r['subscriptions']} subscription(s), "
                     f"{rate_label(r)}, deliveries/s "
                     f"(owed {r['expected'] / r['meter'].elapsed:,.0f}/s)",
                     f"{r['delivery_rate']:,.0f}", "keep up" if r["rate"] else "– (keep up?)",
                     f"{r['delivery_rate'] / (r['expected'] / r['meter'].elapsed):.2f}x of owed",
                     verdict(r["backlog_s"] <= 1.0) if r["rate"] else
                     ("kept up" if r["backlog_s"] <= 1.0 else "fell behind")))
    if "3" in results:
        r = results["3"]
        complete = r["received"] == r["count"]
        rows.append(("latency p50 ms", f"{r['p50']:.2f}", "≤ 5", f"{r['p50'] / 5:.2f}x of target",
                     verdict(r["p50"] <= 5 and complete)))
        rows.append(("latency p99 ms", f"{r['p99']:.2f}", "≤ 50",
                     f"{r['p99'] / 50:.2f}x of target", verdict(r["p99"] <= 50 and complete)))
    for label, rate_kind, ratios in append_ratios(results.get("4", [])):
        at = "half saturation" if rate_kind == "half" else "a deliverable rate"
        for key, name, target in (("p50", "latency p50", 1.2), ("p99", "latency p99", 1.2),
                                  ("backend_us", "backend CPU per transaction", 1.10)):
            value = ratios[key][0]
            rows.append((f"append at {at}, {name}, {label} / none",
                         f"{value:.2f}x", f"≤ {target:.2f}x", f"{(value - 1) * 100:+.0f}%",
                         verdict(value <= target)))
        if "saturated" in ratios:
            value = ratios["saturated"][0]
            rows.append((f"append TPS at saturation, {label} / none (no target)",
                         f"{value:.2f}x", "–", f"{(value - 1) * 100:+.0f}%", "–"))
    if "5" in results:
        r = results["5"]
        rows.append((f"{r['endpoints']:,} slow (50 ms) endpoints, deliveries/s",
                     f"{r['rate']:,.0f}", f"≥ {SLOW_TARGET:,}",
                     f"{r['rate'] / SLOW_TARGET:.2f}x of target",
                     verdict(r["rate"] >= SLOW_TARGET and r["finished"])))
    if not rows:
        return []
    lines = ["### Against the targets", "", "| measure | value | target | ratio | result |",
             "|---|---:|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    return lines + [""]


# Starts nginx, runs the parts, writes the report.
def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True, help="the cluster's unix socket directory")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--out", required=True, help="the Markdown report to update")
    parser.add_argument("--fresh-cluster", required=True,
                        help="a shell command that replaces the cluster at --host/--port by a "
                        "new one (bench/webhooks.sh --fresh-cluster DIR PORT)")
    args = parser.parse_args()

    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = "/".join(f"{x:.2f}" for x in os.getloadavg())
    workdir = tempfile.mkdtemp(prefix="amebo-webhooks.")
    nginx = Nginx(workdir)
    results = {}
    # A SIGTERM ends the run through the finally below, so that nginx is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        nginx.start()
        log(f"nginx listening on 127.0.0.1:{nginx.port}")
        bench = Bench(args.host, args.port, workdir, nginx, args.fresh_cluster)
        if "1" in PARTS:
            results["1"] = [run_drain(bench, n, f"d{n}") for n in (1, 10)]
        if "2" in PARTS:
            results["2"] = [
                run_sustained(bench, 1, None, SUSTAINED_SECONDS, "s1"),
                run_sustained(bench, 10, None, SUSTAINED_SECONDS, "s10"),
                run_sustained(bench, 1, TARGET_RATE, FIXED_SECONDS, "f1"),
                run_sustained(bench, 10, TARGET_RATE // 10, FIXED_SECONDS, "f10"),
            ]
        if "3" in PARTS:
            results["3"] = run_latency(bench)
        if "4" in PARTS:
            results["4"] = run_append(bench)
        if "5" in PARTS:
            results["5"] = run_slow_endpoints(bench)
        bench.close()
    finally:
        nginx.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    nginx_version = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    info = {
        "date": f"{started:%Y-%m-%d %H:%M:%S %Z}",
        "minutes": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 60,
        "load_start": load_start,
        "load_end": "/".join(f"{x:.2f}" for x in os.getloadavg()),
        "settings": bench.settings,
        "nginx": nginx_version.split("/")[-1],
        "library": bench.library,
        "notes": bench.notes,
    }
    lines = report(results, info)
    write_section(args.out, "Webhook delivery", lines)
    print("\n".join(lines))
    log(f"updated {args.out}")


if __name__ == "__main__":
    main()
