"""Many webhook handlers on loopback for the slow-endpoints test and benchmark: one nginx
(Debian's nginx with libnginx-mod-http-echo) listening on `count` distinct loopback addresses
(127.1.x.y, all of 127.0.0.0/8 is loopback), so that each is a host of its own to the HTTP
client, each answering 200 after `delay` seconds (echo_sleep: a waiting request costs nginx
almost no CPU), plus `fast` handlers on 127.0.0.1 that answer at once. Every request is logged
with its address, path, webhook-id and the time it was answered.
"""

import os
import socket
import subprocess
import time

NGINX = os.environ.get("AMEBO_NGINX", "/usr/sbin/nginx")
ECHO_MODULE = os.environ.get("AMEBO_NGINX_ECHO_MODULE",
                             "/usr/lib/nginx/modules/ngx_http_echo_module.so")


# The whole reply of address:port to a small POST, or b"" when it cannot be reached.
def post_reply(address, port, timeout=2):
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.sendall(b"POST /probe HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                      b"Connection: close\r\n\r\n{}")
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        return reply
    except OSError:
        return b""


# The pid of a child process of parent (nginx's worker under its master), or None.
def child_pid(parent):
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                        return int(entry)
            except (OSError, ValueError, IndexError):
                continue
    return None

CONF = """load_module {module};
worker_processes 1;
worker_rlimit_nofile {files};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    log_format hits '$server_addr $uri $http_webhook_id $msec';
    access_log {dir}/access.log hits buffer=256k flush=1s;
    default_type text/plain;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
{slow_listen}
        location / {{ echo_read_request_body; echo_sleep {delay}; echo ok; }}
    }}
    server {{
        listen 127.0.0.1:{fast_port};
        location / {{ return 200 "ok"; }}
    }}
}}
"""


# The i-th slow handler's address (0-based): 127.1.0.1, 127.1.0.2, ... 127.1.3.232, ...
def slow_address(i):
    return f"127.1.{(i + 1) // 250}.{(i + 1) % 250 + 1}"


# A TCP port free on 127.0.0.1 right now.
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlowNginx:
    """nginx with count slow handlers and fast ones; start(), urls, hits(), stop()."""

    def __init__(self, workdir, count, delay=0.05):
        self.dir = os.path.join(workdir, "slow-nginx")
        os.makedirs(self.dir, exist_ok=True)
        self.count = count
        self.delay = delay
        self.port = None
        self.fast_port = None
        self.proc = None

    # Starts nginx (a few tries for free ports) and waits until every address answers.
    def start(self):
        for _ in range(5):
            self.port, self.fast_port = free_port(), free_port()
            listen = "\n".join(f"        listen {slow_address(i)}:{self.port};"
                               for i in range(self.count))
            conf = os.path.join(self.dir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(CONF.format(module=ECHO_MODULE, dir=self.dir, delay=self.delay,
                                    files=4 * self.count + 4096,
                                    connections=2 * self.count + 2048,
                                    slow_listen=listen, fast_port=self.fast_port))
            self.proc = subprocess.Popen(
                [NGINX, "-p", self.dir + "/", "-c", conf, "-e",
                 os.path.join(self.dir, "error.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._answers(slow_address(self.count - 1), self.port) and \
                        self._answers("127.0.0.1", self.fast_port):
                    return self
                time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"nginx did not start (see {self.dir}/error.log)")

    # True when address:port answers a POST with 200.
    @staticmethod
    def _answers(address, port):
        return post_reply(address, port).startswith(b"HTTP/1.1 200")

    # The URL of the i-th slow handler, with its own path.
    def slow_url(self, i):
        return f"http://{slow_address(i)}:{self.port}/slow-{i}"

    # The URL of the i-th fast handler.
    def fast_url(self, i):
        return f"http://127.0.0.1:{self.fast_port}/fast-{i}"

    # The nginx worker process (the master's child), or None.
    def worker_pid(self):
        return child_pid(self.proc.pid)

    # Requests answered so far, as (path, webhook_id, unix time answered); flushes the log
    # first (nginx reopens its logs on SIGUSR1, writing out the buffer).
    def hits(self):
        self.proc.send_signal(10)
        time.sleep(0.5)
        hits = []
        path = os.path.join(self.dir, "access.log")
        if not os.path.exists(path):
            return hits
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 4 and parts[1] != "/probe":
                    hits.append((parts[1], parts[2], float(parts[3])))
        return hits

    # Stops nginx if it runs.
    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
