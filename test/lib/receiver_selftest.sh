#!/usr/bin/env bash
# Self-test of test/lib/receiver.py: starts it on a free port, sends signed webhooks (signed
# here independently of the receiver's code, plus the Standard Webhooks test vector),
# exercises every behaviour mode and the control API, checks the log file and a clean exit on
# SIGTERM and SIGINT. Exits non-zero on any mismatch. RECEIVER=path overrides the receiver.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RECEIVER=${RECEIVER:-$HERE/receiver.py}
PY=${PYTHON:-python3}
export PYTHONDONTWRITEBYTECODE=1

WORK=$(mktemp -d /tmp/amebo-receiver-selftest.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# start_receiver NAME ARGS...: starts it in the background, waits for its "listening on" line;
# sets PID and PORT.
start_receiver() {
    local name=$1
    shift
    : >"$WORK/$name.out"
    "$PY" "$RECEIVER" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PID=$!
    PIDS+=("$PID")
    local i
    for i in $(seq 1 100); do
        if grep -q '^listening on ' "$WORK/$name.out"; then
            break
        fi
        kill -0 "$PID" 2>/dev/null || fail "$name exited at start: $(cat "$WORK/$name.err")"
        sleep 0.05
    done
    local line
    line=$(head -n 1 "$WORK/$name.out")
    [[ $line =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]] || fail "$name printed '$line'"
    PORT=${BASH_REMATCH[1]}
    ((PORT > 0)) || fail "$name port $PORT"
}

# stop_receiver PID SIGNAL NAME: sends the signal, expects exit status 0 within 5 s.
stop_receiver() {
    local pid=$1 sig=$2 name=$3 i rc
    kill -s "$sig" "$pid"
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        fail "$name still running 5 s after SIG$sig"
    fi
    rc=0
    wait "$pid" || rc=$?
    ((rc == 0)) || fail "$name exited with $rc after SIG$sig: $(cat "$WORK/$name.err")"
    echo "ok: $name exits 0 on SIG$sig"
}

SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
LOG=$WORK/requests.jsonl

start_receiver main --port 0 --secret "$SECRET" --log "$LOG" --seed 7
MAIN_PID=$PID
echo "ok: receiver listening on 127.0.0.1:$PORT"

# ---- the checks, in python (standard library only)
"$PY" - "$PORT" "$SECRET" "$LOG" "$(dirname "$RECEIVER")" <<'PYEOF'
import base64, hashlib, hmac, http.client, json, signal, socket, sys, threading, time

signal.alarm(90)  # watchdog: a hang anywhere below kills this check run (non-zero exit)

port, SECRET, LOG, LIBDIR = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
sys.path.insert(0, LIBDIR)
from receiver import ReceiverClient  # control API client under test too

checks = 0
def check(cond, what):
    global checks
    checks += 1
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)

def my_sign(secret, msg_id, ts, body):
    """Standard Webhooks v1, written independently of receiver.py."""
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()

def post(path, body=b"{}", msg_id=None, ts=None, sig=None, secret=SECRET, conn=None,
         timeout=5, headers=None, sign=True):
    """POSTs; returns (status, headers dict, body bytes, conn)."""
    if isinstance(body, str):
        body = body.encode()
    h = {"Content-Type": "application/json"}
    if msg_id is not None:
        h["webhook-id"] = msg_id
    if ts is not None:
        h["webhook-timestamp"] = str(ts)
    if sig is None and sign and msg_id is not None and ts is not None:
        sig = my_sign(secret, msg_id, ts, body)
    if sig is not None:
        h["webhook-signature"] = sig
    h.update(headers or {})
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    if conn is None:
        c.close()
    return r.status, hdrs, data, c

rc = ReceiverClient(f"http://127.0.0.1:{port}")
check(rc.health() == {"ok": True}, "health")

# ---- 1. the Standard Webhooks test vector
VID, VTS, VBODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b'{"test": 2432232314}'
VSIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
check(my_sign(SECRET, VID, VTS, VBODY) == VSIG, "test's own signer reproduces the vector")
st, hd, data, _ = post("/vector", VBODY, VID, VTS, sig=VSIG)
check(st == 200 and data == b"ok", f"vector answered {st} {data!r}")
check(hd.get("content-length") == "2", f"Content-Length on webhook answer: {hd}")
recs = rc.requests("/vector")
check(len(recs) == 1, f"one vector record, got {len(recs)}")
r = recs[0]
check(r["signature_valid"] is True, "test vector signature valid")
check(r["webhook_id"] == VID and r["webhook_timestamp"] == VTS and r["webhook_signature"] == VSIG,
      f"vector headers recorded: {r}")
check(r["body"] == {"test": 2432232314}, f"vector body parsed: {r['body']}")
check(r["status"] == 200 and r["attempt"] == 1 and r["path"] == "/vector", f"vector record {r}")
check(abs(r["received_at"] - time.time()) < 5, "received_at is time.time()")
# tampered body (same headers) -> invalid, still answered 200
st, *_ = post("/vector", b'{"test": 2432232315}', VID, VTS, sig=VSIG)
recs = rc.requests("/vector")
check(st == 200 and len(recs) == 2, "tampered vector answered and recorded")
check(recs[1]["signature_valid"] is False, "tampered body invalid")
check(recs[1]["attempt"] == 2, f"second (path, id) attempt is 2, got {recs[1]['attempt']}")
# tampered timestamp / id -> invalid
post("/vector", VBODY, VID, "1614265331", sig=VSIG)
post("/vector", VBODY, VID + "x", VTS, sig=VSIG)
recs = rc.requests("/vector")
check([x["signature_valid"] for x in recs[2:]] == [False, False], "tampered ts/id invalid")
check(recs[3]["attempt"] == 1, "other webhook_id starts at attempt 1")
# several signatures: valid if any v1 entry matches; non-v1 versions ignored
bogus = "v1," + base64.b64encode(b"x" * 32).decode()
post("/multi", VBODY, VID, VTS, sig=f"{bogus} {VSIG}")
post("/multi", VBODY, VID, VTS, sig=f"{VSIG} {bogus}")
post("/multi", VBODY, VID, VTS, sig=bogus)
post("/multi", VBODY, VID, VTS, sig="v2," + VSIG[3:])
post("/multi", VBODY, VID, VTS, sig=VSIG[3:])
post("/multi", VBODY)  # no webhook headers at all
recs = rc.requests("/multi")
check([x["signature_valid"] for x in recs] == [True, True, False, False, False, False],
      f"multi-signature validity {[x['signature_valid'] for x in recs]}")
check(recs[-1]["webhook_id"] is None and recs[-1]["webhook_signature"] is None,
      "missing headers recorded as null")
check([x["attempt"] for x in recs] == [1, 2, 3, 4, 5, 1], f"attempts {[x['attempt'] for x in recs]}")
# non-JSON body -> body null
post("/text", b"not json", "m1", 1)
r = rc.requests("/text")[0]
check(r["body"] is None and r["signature_valid"] is True, f"non-JSON body: {r}")

# ---- 2. per-prefix secrets
SECRET_B = "whsec_" + base64.b64encode(b"another secret, 24 bytes").decode()
rc.set_secret("/b", SECRET_B)
post("/b/hook", b'{"n":1}', "mb", 100, secret=SECRET_B)
post("/b/hook", b'{"n":1}', "mb", 100, secret=SECRET)
post("/other", b'{"n":1}', "mo", 100, secret=SECRET_B)
post("/other", b'{"n":1}', "mo", 100, secret=SECRET)
v = [x["signature_valid"] for x in rc.requests("/b/hook") + rc.requests("/other")]
check(v == [True, False, False, True], f"per-prefix secrets {v}")
try:
    rc.set_secret("/c", "whsec_***")
    check(False, "bad secret rejected")
except RuntimeError as e:
    check("400" in str(e), f"bad secret -> 400: {e}")

# ---- 3. modes
def statuses(path, n, msg_id="m"):
    out = []
    for i in range(n):
        st, hd, data, _ = post(path, b'{"i":%d}' % i, msg_id, 1)
        out.append((st, hd, data))
    return out

# fail with status and count, then back to ok; attempts counted per (path, id)
b = rc.behave("/hook-a", mode="fail", status=503, count=2)
check(b["mode"] == "fail" and b["status"] == 503 and b["remaining"] == 2, f"behave echo {b}")
rc.behave("/hook-b", mode="ok")
res = statuses("/hook-a", 3, "ma")
check([s for s, _, _ in res] == [503, 503, 200], f"fail count=2 -> {[s for s, _, _ in res]}")
check(all("content-length" in h for _, h, _ in res), "Content-Length on all answers")
check([s for s, _, _ in statuses("/hook-b", 2, "mb")] == [200, 200], "other path stays healthy")
recs = rc.requests("/hook-a")
check([x["status"] for x in recs] == [503, 503, 200], "recorded statuses")
check([x["attempt"] for x in recs] == [1, 2, 3], f"recorded attempts {[x['attempt'] for x in recs]}")
check([x["mode"] for x in recs] == ["fail", "fail", "ok"], "recorded modes")
# fail without count: default 500, persists
rc.behave("/hook-f", mode="fail")
check([s for s, _, _ in statuses("/hook-f", 3)] == [500] * 3, "fail default 500, no count")
# gone
rc.behave("/hook-g", mode="gone", count=1)
check([s for s, _, _ in statuses("/hook-g", 2)] == [410, 200], "gone count=1 -> 410 then 200")
# throttle 429 + Retry-After, and 503
rc.behave("/hook-t", mode="throttle", retry_after="2")
(st, hd, _), = statuses("/hook-t", 1)
check(st == 429 and hd.get("retry-after") == "2", f"throttle -> {st} {hd}")
rc.behave("/hook-t", mode="throttle", retry_after="7", status=503, count=1)
res = statuses("/hook-t", 2)
check(res[0][0] == 503 and res[0][1].get("retry-after") == "7", f"throttle 503 -> {res[0]}")
check(res[1][0] == 200 and "retry-after" not in res[1][1], f"after throttle count -> {res[1]}")
# hang: the client times out; recorded at once; next request (count=1) is fast
rc.behave("/hook-h", mode="hang", hang_seconds=3, count=1)
t0 = time.monotonic()
try:
    post("/hook-h", b"{}", "mh", 1, timeout=0.5)
    check(False, "hang: client should time out")
except (socket.timeout, TimeoutError):
    pass
el = time.monotonic() - t0
check(0.4 <= el < 2, f"hang timed out after {el:.2f}s")
recs = rc.requests("/hook-h")
check(len(recs) == 1 and recs[0]["mode"] == "hang" and recs[0]["status"] == 200,
      f"hang recorded at once: {recs}")
t0 = time.monotonic()
st, *_ = post("/hook-h", b"{}", "mh", 1, timeout=2)
check(st == 200 and time.monotonic() - t0 < 1, "after hang count -> fast 200")
check(rc.requests("/hook-h")[1]["attempt"] == 2, "hang attempt counted")
# delay_ms
rc.behave("/hook-d", mode="ok", delay_ms=300)
t0 = time.monotonic()
st, *_ = post("/hook-d")
el = time.monotonic() - t0
check(st == 200 and 0.3 <= el < 2, f"delay_ms=300 took {el:.2f}s")
# ratios
rc.behave("/hook-r1", fail_ratio=1.0, status=502)
check({s for s, _, _ in statuses("/hook-r1", 10)} == {502}, "fail_ratio 1 -> all fail")
rc.behave("/hook-r0", fail_ratio=0.0)
check({s for s, _, _ in statuses("/hook-r0", 10)} == {200}, "fail_ratio 0 -> all ok")
rc.behave("/hook-rh", fail_ratio=0.5)
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
n500 = sum(post("/hook-rh", conn=conn)[0] == 500 for _ in range(200))
conn.close()
check(50 <= n500 <= 150, f"fail_ratio 0.5 -> {n500}/200 failures")
rc.behave("/hook-hr", hang_ratio=1.0, hang_seconds=0.3)
t0 = time.monotonic()
st, *_ = post("/hook-hr")
el = time.monotonic() - t0
check(st == 200 and el >= 0.3 and rc.requests("/hook-hr")[0]["mode"] == "hang",
      f"hang_ratio 1 -> hung {el:.2f}s")
# bad control input
for spec in ({"path": "/x", "mode": "explode"}, {"mode": "ok"}, {"path": "/x", "count": -1},
             {"path": "/x", "fail_ratio": 2}):
    try:
        rc._call("POST", "behave", spec)
        check(False, f"bad behave {spec} rejected")
    except RuntimeError as e:
        check(" 400 " in str(e), f"bad behave {spec} -> 400: {e}")
c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
c.request("GET", "/hook-a")
r = c.getresponse(); r.read()
check(r.status == 405, f"GET on a webhook path -> {r.status}")
c.request("GET", "/_control/nope")
r = c.getresponse(); r.read()
check(r.status == 404, f"unknown control endpoint -> {r.status}")
c.close()

# ---- 4. keep-alive, exact body framing, chunked bodies
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
post("/ka", b'{"k":0}', "k0", 1, conn=conn)
sock, local = conn.sock, conn.sock.getsockname()
for i in range(1, 5):
    st, hd, data, _ = post("/ka", b'{"k":%d}' % i, "k%d" % i, 1, conn=conn)
    check(st == 200 and data == b"ok", "keep-alive answer")
    check(conn.sock is sock and conn.sock.getsockname() == local, "connection reused")
check(hd.get("connection", "").lower() != "close", "no Connection: close")
t0 = time.monotonic()
for i in range(50):
    post("/ka-speed", b'{}', conn=conn)
el = time.monotonic() - t0
check(el < 1.5 and conn.sock is sock, f"50 kept-alive requests took {el:.2f}s (Nagle stall?)")
# control requests on the same connection too
conn.request("GET", "/_control/stats"); r = conn.getresponse(); json.loads(r.read())
check(r.getheader("Content-Length") is not None and conn.sock is sock, "control keep-alive")
# two pipelined requests in one write: bodies split exactly by Content-Length
raw = socket.create_connection(("127.0.0.1", port), timeout=5)
reqs = b""
for i, body in enumerate([b'{"p":1}', b'{"p":22}']):
    reqs += (b"POST /pipe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"webhook-id: p%d\r\nwebhook-timestamp: 5\r\nwebhook-signature: %s\r\n"
             b"Content-Length: %d\r\n\r\n" % (i, my_sign(SECRET, f"p{i}", 5, body).encode(),
                                              len(body)) + body)
raw.sendall(reqs)
got = b""
deadline = time.monotonic() + 5
while got.count(b"\r\n\r\nok") < 2 and time.monotonic() < deadline:
    chunk = raw.recv(4096)
    if not chunk:
        break
    got += chunk
raw.close()
check(got.count(b"HTTP/1.1 200") == 2, f"pipelined answers {got!r}")
recs = rc.requests("/pipe")
check([x["body"] for x in recs] == [{"p": 1}, {"p": 22}], f"pipelined bodies {recs}")
check(all(x["signature_valid"] for x in recs), "pipelined signatures")
# chunked request body
body = b'{"chunked": true}'
conn.putrequest("POST", "/chunked")
for k, v in (("Transfer-Encoding", "chunked"), ("webhook-id", "c1"), ("webhook-timestamp", "9"),
             ("webhook-signature", my_sign(SECRET, "c1", 9, body))):
    conn.putheader(k, v)
conn.endheaders()
conn.send(b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (5, body[:5], len(body) - 5, body[5:]))
r = conn.getresponse(); r.read()
rec = rc.requests("/chunked")
check(r.status == 200 and rec and rec[0]["body"] == {"chunked": True}
      and rec[0]["signature_valid"], f"chunked body {rec}")
conn.close()

# ---- 5. requests filter, stats, wait_for, reset
allr = rc.requests()
st = rc.stats()
check(st["count"] == len(allr) > 0, f"stats count {st['count']} vs {len(allr)}")
by = {}
for x in allr:
    by[x["path"]] = by.get(x["path"], 0) + 1
check(st["by_path"] == by, f"stats by_path {st['by_path']}")
check(st["by_path"]["/hook-a"] == 3 and st["by_path"]["/vector"] == 4, "by_path values")
inv = sum(not x["signature_valid"] for x in allr)
check(st["invalid_signatures"] == inv and inv >= 10, f"invalid_signatures {st['invalid_signatures']} vs {inv}")
check(len(rc.requests(webhook_id=VID)) == 3 + 5, "webhook_id filter")
check(rc.requests("/nothing-here") == [], "empty filter")
t = threading.Timer(0.3, lambda: post("/late", b'{"late":1}', "l", 1))
t.start()
t0 = time.monotonic()
recs = rc.wait_for(lambda rs: len(rs) >= 1, timeout=5, path="/late")
check(recs[0]["body"] == {"late": 1} and time.monotonic() - t0 < 3, "wait_for sees late request")
t.join()
t0 = time.monotonic()
try:
    rc.wait_for_count(1, path="/never", timeout=0.3)
    check(False, "wait_for times out")
except TimeoutError:
    check(time.monotonic() - t0 < 2, "wait_for timeout is prompt")
logged_before_reset = len(allr) + 1
rc.reset()
check(rc.requests() == [] and rc.stats() == {"count": 0, "by_path": {}, "invalid_signatures": 0},
      "reset clears records and stats")
check(rc.behaviours() == [], "reset clears behaviours")
check(post("/hook-f")[0] == 200, "reset: failing path ok again")
post("/vector", VBODY, VID, VTS, sig=VSIG)
check(rc.requests("/vector")[0]["attempt"] == 1, "reset clears attempt counters")
post("/b/hook", b'{"n":1}', "mb", 100, secret=SECRET_B)
check(rc.requests("/b/hook")[0]["signature_valid"], "reset keeps secrets")
rc.reset(secrets=True)
post("/b/hook", b'{"n":1}', "mb", 100, secret=SECRET_B)
check(not rc.requests("/b/hook")[0]["signature_valid"], "reset(secrets=True) drops secrets")

# ---- 6. the log file: one JSON line per recorded request, all fields
with open(LOG) as f:
    lines = [json.loads(l) for l in f]
total = logged_before_reset + 4
check(len(lines) == total, f"log has {len(lines)} lines, expected {total}")
keys = {"path", "webhook_id", "webhook_timestamp", "webhook_signature", "signature_valid",
        "body", "received_at", "status", "attempt"}
check(all(keys <= set(l) for l in lines), "log lines carry every field")
check(lines[0]["path"] == "/vector" and lines[0]["signature_valid"] is True, "log first line")
check(lines[-1]["path"] == "/b/hook", "log last line")
print(f"ok: {checks} checks passed")
PYEOF

# ---- SIGTERM with a request hanging, SIGINT, fixed --port, binding 127.0.0.1 only
"$PY" - "$PORT" <<'PYEOF' &
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=30)
c.request("POST", "/_control/behave", json.dumps({"path": "/h", "mode": "hang"}))
c.getresponse().read()
try:
    c.request("POST", "/h", b"{}")
    c.getresponse().read()
except Exception:
    pass
PYEOF
HANGER=$!
PIDS+=("$HANGER")
sleep 0.5
stop_receiver "$MAIN_PID" TERM main
wait "$HANGER" || true

FIXED=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_receiver fixed --port "$FIXED" --secret "$SECRET" --port-file "$WORK/port"
[[ $PORT == "$FIXED" ]] || fail "--port $FIXED printed $PORT"
[[ $(cat "$WORK/port") == "$FIXED" ]] || fail "--port-file holds $(cat "$WORK/port")"
echo "ok: --port $FIXED and --port-file"
"$PY" - "$PORT" <<'PYEOF' || fail "bind address"
import socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("192.0.2.1", 9))  # no packet sent; finds a non-loopback local address, if any
addr = s.getsockname()[0]
s.close()
if addr.startswith("127.") or addr == "0.0.0.0":
    print("ok: no non-loopback address to test binding against")
    sys.exit(0)
try:
    socket.create_connection((addr, port), timeout=1).close()
    print(f"FAIL: receiver reachable on {addr}", file=sys.stderr)
    sys.exit(1)
except OSError:
    print(f"ok: not reachable on {addr}")
PYEOF
stop_receiver "$PID" INT fixed

[[ ! -s $WORK/main.err && ! -s $WORK/fixed.err ]] ||
    fail "receiver stderr: $(cat "$WORK/main.err" "$WORK/fixed.err")"
echo "ok: receiver stderr empty"
echo "PASS: receiver selftest"
