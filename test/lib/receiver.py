#!/usr/bin/env python3
"""A webhook receiver for amebo's tests (Python 3 standard library only).

Command line:

    python3 test/lib/receiver.py --port PORT --secret whsec_... [--log FILE]
                                 [--port-file FILE] [--seed N] [--no-records] [--verbose]

It binds 127.0.0.1 only (--port 0 picks a free port), prints
"listening on 127.0.0.1:PORT" once bound and exits with status 0 on SIGTERM or SIGINT.

Every POST outside /_control/ is answered according to the behaviour set for its path
(default: 200 "ok") and recorded, in memory and as one JSON line in --log, as
    {"path", "query", "method", "webhook_id", "webhook_timestamp", "webhook_signature",
     "signature_valid", "body", "body_size", "headers", "received_at", "mode", "status",
     "attempt"}
where signature_valid follows Standard Webhooks (v1, HMAC-SHA256) and attempt counts how
many times this (path, webhook_id) has been seen, this request included. With --no-records
requests are only logged (for long runs: memory stays flat; /_control/requests is empty and
/_control/stats counts them all the same).

Control API (JSON in, JSON out):
    POST /_control/behave    {"path": "/hook-a", "mode": "ok"|"fail"|"hang"|"gone"|"throttle",
                              "status", "count", "retry_after", "hang_seconds",
                              "fail_ratio", "hang_ratio", "delay_ms"}
    POST /_control/secret    {"path_prefix": "/b", "secret": "whsec_..."}
    POST /_control/reset     clears records, attempt counters and behaviours
                             ({"secrets": true} also drops the /_control/secret ones)
    GET  /_control/requests  [?path=/hook-a][&webhook_id=msg_...]
    GET  /_control/stats     {"count", "by_path", "invalid_signatures"}
    GET  /_control/behaviours, GET /_control/health

Python use (add test/lib to sys.path):

    from receiver import Receiver, ReceiverClient, sign
    with Receiver(secret="whsec_...") as rcv:      # starts this file on a free port
        rcv.client.behave("/hook-a", mode="fail", status=503, count=2)
        rcv.client.wait_for(lambda reqs: len(reqs) >= 3, timeout=10, path="/hook-a")
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTROL_PREFIX = "/_control/"
MODES = ("ok", "fail", "hang", "gone", "throttle")
DEFAULT_HANG_SECONDS = 60.0


# --------------------------------------------------------------------------------------
# Standard Webhooks signatures


def secret_key(secret):
    """The HMAC key of a "whsec_..." secret (the prefix is optional)."""
    if secret.startswith("whsec_"):
        secret = secret[len("whsec_"):]
    return base64.b64decode(secret, validate=True)


def sign(secret, msg_id, timestamp, body):
    """The "v1,<base64>" signature of body (bytes or str) under secret."""
    if isinstance(body, str):
        body = body.encode()
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(key, msg_id, timestamp, body, header):
    """True if any "v1,<sig>" entry of the space-separated header matches."""
    if not key or msg_id is None or timestamp is None or not header:
        return False
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    valid = False
    for entry in header.split():
        version, _, sig = entry.partition(",")
        if version != "v1":
            continue
        # no early exit: compare every entry
        if hmac.compare_digest(expected, sig.encode("utf-8", "replace")):
            valid = True
    return valid


# --------------------------------------------------------------------------------------
# Server state


class BadRequest(Exception):
    pass


def _number(spec, name, default, minimum=0.0, maximum=None):
    value = spec.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{name} must be a number")
    if value < minimum or (maximum is not None and value > maximum):
        raise BadRequest(f"{name} out of range")
    return value


class State:
    def __init__(self, default_secret, log_path=None, seed=None, keep_records=True):
        self.lock = threading.Lock()
        self.keep_records = keep_records
        self.count = 0
        self.by_path = {}
        self.invalid_signatures = 0
        self.default_key = secret_key(default_secret) if default_secret else None
        self.secrets = {}  # path prefix -> key
        self.behaviours = {}  # path -> dict
        self.records = []
        self.attempts = {}  # (path, webhook_id) -> count
        self.random = random.Random(seed)
        self.log = open(log_path, "a", encoding="utf-8") if log_path else None
        self.stop = threading.Event()

    # -- configuration

    def set_behaviour(self, spec):
        path = spec.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise BadRequest("path must be a string starting with /")
        mode = spec.get("mode", "ok")
        if mode not in MODES:
            raise BadRequest(f"mode must be one of {', '.join(MODES)}")
        count = spec.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 0):
            raise BadRequest("count must be a non-negative integer")
        default_status = {"fail": 500, "throttle": 429, "gone": 410}.get(mode, 500)
        status = int(_number(spec, "status", default_status, 100, 599))
        retry_after = spec.get("retry_after", "1")
        if retry_after is not None:
            retry_after = str(retry_after)
        behaviour = {
            "path": path,
            "mode": mode,
            "status": status,
            "remaining": count,
            "retry_after": retry_after,
            "hang_seconds": float(_number(spec, "hang_seconds", DEFAULT_HANG_SECONDS)),
            "fail_ratio": float(_number(spec, "fail_ratio", 0.0, 0.0, 1.0)),
            "hang_ratio": float(_number(spec, "hang_ratio", 0.0, 0.0, 1.0)),
            "delay_ms": float(_number(spec, "delay_ms", 0.0)),
        }
        with self.lock:
            self.behaviours[path] = behaviour
            return dict(behaviour)

    def set_secret(self, spec):
        prefix, secret = spec.get("path_prefix"), spec.get("secret")
        if not isinstance(prefix, str) or not isinstance(secret, str):
            raise BadRequest("path_prefix and secret must be strings")
        try:
            key = secret_key(secret)
        except (ValueError, TypeError) as e:
            raise BadRequest(f"secret is not base64: {e}")
        if not key:
            raise BadRequest("secret is empty")
        with self.lock:
            self.secrets[prefix] = key

    def reset(self, spec):
        with self.lock:
            self.records.clear()
            self.attempts.clear()
            self.count, self.by_path, self.invalid_signatures = 0, {}, 0
            self.behaviours.clear()
            if spec.get("secrets"):
                self.secrets.clear()

    # -- requests

    def key_for(self, path):
        best, key = -1, self.default_key
        for prefix, k in self.secrets.items():
            if path.startswith(prefix) and len(prefix) > best:
                best, key = len(prefix), k
        return key

    def decide(self, path):
        """(mode, behaviour copy) for the next request on path; consumes count."""
        b = self.behaviours.get(path)
        if b is None:
            return "ok", None
        mode = "ok"
        if b["mode"] != "ok" and (b["remaining"] is None or b["remaining"] > 0):
            mode = b["mode"]
            if b["remaining"] is not None:
                b["remaining"] -= 1
        if mode == "ok":
            if b["hang_ratio"] and self.random.random() < b["hang_ratio"]:
                mode = "hang"
            elif b["fail_ratio"] and self.random.random() < b["fail_ratio"]:
                mode = "fail"
        return mode, dict(b)

    def record(self, rec_fields, path, webhook_id):
        with self.lock:
            k = (path, webhook_id)
            self.attempts[k] = self.attempts.get(k, 0) + 1
            rec_fields["attempt"] = self.attempts[k]
            self.count += 1
            self.by_path[path] = self.by_path.get(path, 0) + 1
            self.invalid_signatures += 0 if rec_fields["signature_valid"] else 1
            if self.keep_records:
                self.records.append(rec_fields)
            if self.log:
                self.log.write(json.dumps(rec_fields) + "\n")
                self.log.flush()

    def query(self, path=None, webhook_id=None):
        with self.lock:
            return [r for r in self.records
                    if (path is None or r["path"] == path)
                    and (webhook_id is None or r["webhook_id"] == webhook_id)]

    def stats(self):
        with self.lock:
            return {
                "count": self.count,
                "by_path": dict(self.by_path),
                "invalid_signatures": self.invalid_signatures,
            }


# --------------------------------------------------------------------------------------
# HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "amebo-test-receiver"
    sys_version = ""

    @property
    def state(self):
        return self.server.state

    def log_message(self, format, *args):
        if self.server.verbose:
            sys.stderr.write("receiver: %s - %s\n" % (self.address_string(), format % args))

    # -- body and response helpers

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after the chunk
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def reply(self, status, body, content_type="text/plain", headers=None):
        if isinstance(body, str):
            body = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers_and_body(body)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def end_headers_and_body(self, body):
        # one write for headers and body: no Nagle / delayed-ACK stall on kept-alive
        # connections
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()

    def reply_json(self, status, obj):
        self.reply(status, json.dumps(obj), "application/json")

    # -- methods

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        self.read_body()
        if not url.path.startswith(CONTROL_PREFIX):
            return self.reply(405, "method not allowed", headers={"Allow": "POST"})
        params = dict(urllib.parse.parse_qsl(url.query))
        what = url.path[len(CONTROL_PREFIX):]
        if what == "requests":
            return self.reply_json(200, self.state.query(params.get("path"),
                                                         params.get("webhook_id")))
        if what == "stats":
            return self.reply_json(200, self.state.stats())
        if what == "behaviours":
            with self.state.lock:
                return self.reply_json(200, list(self.state.behaviours.values()))
        if what == "health":
            return self.reply_json(200, {"ok": True})
        return self.reply_json(404, {"error": f"unknown control endpoint {url.path}"})

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        body = self.read_body()
        if url.path.startswith(CONTROL_PREFIX):
            return self.control(url.path[len(CONTROL_PREFIX):], body)
        return self.webhook(url, body)

    def do_PUT(self):
        self.read_body()
        self.reply(405, "method not allowed", headers={"Allow": "POST"})

    do_DELETE = do_PATCH = do_PUT

    def control(self, what, body):
        try:
            spec = json.loads(body) if body.strip() else {}
            if not isinstance(spec, dict):
                raise BadRequest("body must be a JSON object")
            if what == "behave":
                return self.reply_json(200, self.state.set_behaviour(spec))
            if what == "secret":
                self.state.set_secret(spec)
                return self.reply_json(200, {"ok": True})
            if what == "reset":
                self.state.reset(spec)
                return self.reply_json(200, {"ok": True})
        except (BadRequest, ValueError) as e:
            return self.reply_json(400, {"error": str(e)})
        return self.reply_json(404, {"error": f"unknown control endpoint {what}"})

    def webhook(self, url, body):
        received_at = time.time()
        state = self.state
        path = url.path
        h = self.headers
        webhook_id = h.get("webhook-id")
        timestamp = h.get("webhook-timestamp")
        signature = h.get("webhook-signature")
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        with state.lock:
            key = state.key_for(path)
            mode, b = state.decide(path)
        b = b or {}
        status, headers, text, wait = 200, {}, "ok", 0.0
        if mode == "fail":
            status, text = b.get("status", 500), "fail"
        elif mode == "gone":
            status, text = 410, "gone"
        elif mode == "throttle":
            status, text = b.get("status", 429), "throttled"
            if b.get("retry_after") is not None:
                headers["Retry-After"] = b["retry_after"]
        elif mode == "hang":
            wait = b.get("hang_seconds", DEFAULT_HANG_SECONDS)
        else:
            wait = b.get("delay_ms", 0.0) / 1000.0
        rec = {
            "path": path,
            "query": url.query,
            "method": self.command,
            "webhook_id": webhook_id,
            "webhook_timestamp": timestamp,
            "webhook_signature": signature,
            "signature_valid": verify(key, webhook_id, timestamp, body, signature),
            "body": parsed,
            "body_size": len(body),
            "headers": {k.lower(): v for k, v in h.items()},
            "received_at": received_at,
            "mode": mode,
            "status": status,
        }
        # recorded before any hang or delay, so tests see the attempt at once
        state.record(rec, path, webhook_id)
        if wait > 0:
            state.stop.wait(wait)
        self.reply(status, text, headers=headers)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


def main(argv=None):
    ap = argparse.ArgumentParser(description="webhook receiver for amebo's tests")
    ap.add_argument("--port", type=int, required=True, help="0 picks a free port")
    ap.add_argument("--secret", default=None, help="default whsec_... secret")
    ap.add_argument("--log", default=None, help="append one JSON line per request")
    ap.add_argument("--port-file", default=None, help="write the bound port here")
    ap.add_argument("--seed", type=int, default=None, help="seed for fail/hang ratios")
    ap.add_argument("--no-records", action="store_true",
                    help="keep no records in memory (only --log has them)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    state = State(args.secret, args.log, args.seed, keep_records=not args.no_records)
    server = Server(("127.0.0.1", args.port), Handler)
    server.state = state
    server.verbose = args.verbose
    port = server.server_address[1]

    stopping = threading.Event()

    def on_signal(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"listening on 127.0.0.1:{port}", flush=True)

    while not stopping.wait(0.2):
        pass
    state.stop.set()  # release hanging handlers
    server.shutdown()
    server.server_close()
    if state.log:
        state.log.close()
    return 0


# --------------------------------------------------------------------------------------
# Python client for test scripts


class ReceiverClient:
    """Talks to a running receiver's control API; base_url like "http://127.0.0.1:8080"."""

    def __init__(self, base_url, timeout=10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def url(self, path):
        """The receiver URL of a webhook path, e.g. url("/hook-a")."""
        return self.base_url + path

    def _call(self, method, endpoint, payload=None, params=None):
        url = self.base_url + CONTROL_PREFIX + endpoint
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"receiver {method} {endpoint}: {e.code} {e.read()!r}") from None

    def behave(self, path, mode="ok", **kw):
        """Sets path's behaviour; kw: status, count, retry_after, hang_seconds, fail_ratio,
        hang_ratio, delay_ms. Returns the behaviour as stored."""
        return self._call("POST", "behave", dict(kw, path=path, mode=mode))

    def set_secret(self, path_prefix, secret):
        return self._call("POST", "secret", {"path_prefix": path_prefix, "secret": secret})

    def requests(self, path=None, webhook_id=None):
        params = {k: v for k, v in (("path", path), ("webhook_id", webhook_id)) if v is not None}
        return self._call("GET", "requests", params=params)

    def stats(self):
        return self._call("GET", "stats")

    def behaviours(self):
        return self._call("GET", "behaviours")

    def reset(self, secrets=False):
        return self._call("POST", "reset", {"secrets": True} if secrets else {})

    def health(self):
        return self._call("GET", "health")

    def wait_for(self, predicate, timeout=10.0, path=None, interval=0.05):
        """Polls requests(path) until predicate(records) is truthy; returns the records.
        Raises TimeoutError (with the last records' count) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.requests(path)
            if predicate(records):
                return records
            if time.monotonic() >= deadline:
                raise TimeoutError(f"receiver: condition not met in {timeout}s "
                                   f"({len(records)} requests recorded for {path or 'all paths'})")
            time.sleep(interval)

    def wait_for_count(self, n, path=None, timeout=10.0):
        """Waits until at least n requests are recorded (for path); returns them."""
        return self.wait_for(lambda r: len(r) >= n, timeout=timeout, path=path)


class Receiver:
    """Runs this file as a subprocess on a free port; a context manager.
    Attributes: port, base_url, client (a ReceiverClient), proc."""

    def __init__(self, secret=None, log=None, port=0, verbose=False, seed=None,
                 python=sys.executable, keep_records=True):
        cmd = [python, os.path.abspath(__file__), "--port", str(port)]
        if secret:
            cmd += ["--secret", secret]
        if log:
            cmd += ["--log", log]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        if not keep_records:
            cmd.append("--no-records")
        if verbose:
            cmd.append("--verbose")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on 127.0.0.1:"):
            self.proc.kill()
            raise RuntimeError(f"receiver did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.client = ReceiverClient(self.base_url)

    def url(self, path):
        return self.base_url + path

    def stop(self, timeout=5.0):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
