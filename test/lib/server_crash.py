"""Killing a test cluster the hard way and starting it again, for the crash tests
(test/stress/crash.py, test/webhooks/crash.py)."""

import os
import signal
import subprocess
import time


# The state letter of a process, or None when it is gone.
def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


# The pids whose parent is pid.
def children_of(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass
    return out


# SIGKILLs the postmaster of the cluster in data_dir and all its children, all stopped first
# so that none runs on; returns how many children there were once all are dead (zombies
# count as dead). socket_dir and port name the socket lock file a dead postmaster leaves.
def kill_server(data_dir, socket_dir, port):
    with open(os.path.join(data_dir, "postmaster.pid")) as f:
        pm = int(f.readline())
    os.kill(pm, signal.SIGSTOP)  # no new children from here on
    children = children_of(pm)
    for pid in children:
        os.kill(pid, signal.SIGSTOP)
    for pid in children + [pm]:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(proc_state(p) not in (None, "Z") for p in children + [pm]):
        if time.monotonic() > deadline:
            raise RuntimeError("killed server processes did not exit")
        time.sleep(0.02)
    # Until its parent reaps it, the new postmaster takes the dead one for a running server.
    deadline = time.monotonic() + 10
    while proc_state(pm) == "Z" and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc_state(pm) == "Z":
        print(f"postmaster {pm} is dead but not reaped: removing its lock files", flush=True)
        os.unlink(os.path.join(data_dir, "postmaster.pid"))
        lock = os.path.join(socket_dir, f".s.PGSQL.{port}.lock")
        if os.path.exists(lock):
            os.unlink(lock)
    return len(children)


# Starts the cluster in data_dir with pg_ctl (crash recovery runs first), logging to log.
def start_server(pg_bin, data_dir, log):
    done = subprocess.run([os.path.join(pg_bin, "pg_ctl"), "-D", data_dir, "-l", log, "-w",
                           "-t", "120", "start"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed: {done.stdout}")
