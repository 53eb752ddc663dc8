#!/usr/bin/env bash
# A throwaway pgbouncer (Debian's package) in transaction pooling mode in front of a test
# cluster, listening on 127.0.0.1 only, with trust authentication for user postgres.
# Source it, then: pgbouncer_start DIR PORT "name = host=127.0.0.1 port=... dbname=..."...
# (one [databases] line per argument; add pool_size=N to a line for its own pool size);
# pgbouncer_stop DIR. Must run as an unprivileged user (pgbouncer refuses root).

PGBOUNCER_BIN=${PGBOUNCER_BIN:-$(command -v pgbouncer || echo /usr/sbin/pgbouncer)}

# Writes DIR/pgbouncer.ini and DIR/userlist.txt, starts pgbouncer on PORT and waits until
# it accepts connections (at most 20 s).
pgbouncer_start() {
    local dir=$1 port=$2 line
    shift 2
    mkdir -p "$dir"
    echo '"postgres" ""' >"$dir/userlist.txt"
    {
        echo "[databases]"
        for line in "$@"; do echo "$line"; done
        cat <<EOF
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 200
logfile = $dir/pgbouncer.log
EOF
    } >"$dir/pgbouncer.ini"
    "$PGBOUNCER_BIN" "$dir/pgbouncer.ini" >>"$dir/pgbouncer.out" 2>&1 &
    echo $! >"$dir/pid"
    local tries=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        tries=$((tries + 1))
        if [ $tries -ge 200 ] || ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
            echo "pgbouncer did not start:" >&2
            cat "$dir/pgbouncer.out" "$dir/pgbouncer.log" >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.1
    done
}

# Stops the pgbouncer started in DIR (if it runs) and waits for it to exit (at most 10 s).
pgbouncer_stop() {
    local dir=$1 pid tries=0
    [ -f "$dir/pid" ] || return 0
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && [ $tries -lt 100 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    kill -9 "$pid" 2>/dev/null || true
}
