#!/usr/bin/env bash
# Shell helpers for test/scripts/stress.sh and crash.sh (source it).

# Prints the first TCP port from $1 on that nothing listens on at 127.0.0.1.
free_port() {
    local port=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((port + 1))
    done
    echo "$port"
}

# Prints a python3 that can import psycopg (3): $PYTHON, python3 on the PATH, or the system's.
python_with_psycopg() {
    local candidate
    for candidate in ${PYTHON:-} python3 /usr/bin/python3; do
        if "$candidate" -c "import psycopg" 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "no python3 with psycopg 3 (install python3-psycopg)" >&2
    return 1
}
