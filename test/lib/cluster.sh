#!/usr/bin/env bash
# Throwaway PostgreSQL clusters for tests, the demonstration and benchmarks.
# Source it, then: cluster_start DIR PORT [extra postgresql.conf lines...]; cluster_stop DIR;
# free_port FIRST.
# Must run as an unprivileged user (initdb refuses root); see as_test_user in run-all.sh.

PG_BIN=${PG_BIN:-$(pg_config --bindir)}
AMEBO_TEST_CONF=${AMEBO_TEST_CONF:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/amebo.conf}

# Prints the first TCP port from $1 on that a server can listen on at 127.0.0.1. It binds the
# port as PostgreSQL does (SO_REUSEADDR): a port nothing listens on may still be taken as the
# local end of a connection (ports from 32768 up are the kernel's ephemeral ones).
free_port() {
    python3 -c '
import socket, sys
port = int(sys.argv[1])
while True:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            break
        except OSError:
            port += 1
print(port)' "$1"
}

# Creates and starts a cluster in DIR listening on a unix socket in DIR and on PORT; when it
# does not start, prints the end of its server log.
cluster_start() {
    local dir=$1 port=$2
    shift 2
    rm -rf "$dir"
    mkdir -p "$dir"
    "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1
    {
        cat "$AMEBO_TEST_CONF"
        echo "port = $port"
        echo "unix_socket_directories = '$dir'"
        echo "listen_addresses = '127.0.0.1'"
        for line in "$@"; do echo "$line"; done
    } >>"$dir/data/postgresql.conf"
    if ! "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; then
        tail -n 20 "$dir/server.log" >&2
        return 1
    fi
}

# Stops the cluster in DIR (fast shutdown) if it runs.
cluster_stop() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] && "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    return 0
}
