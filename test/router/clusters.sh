#!/usr/bin/env bash
# Shards and a router on loopback for the router's test, demonstration and benchmark (source
# it after test/lib/cluster.sh). router_clusters_start WORK FIRST_PORT SHARDS starts SHARDS
# clusters with amebo (database amebo, role amebo_app with amebo_admin) and one router cluster
# (database router: plproxy, amebo_router, the server amebo_shards with a user mapping for
# amebo_app, setup_shards() run). It sets ROUTER_PORT and SHARD_PORTS (an array);
# router_clusters_stop WORK stops them all. Run as an unprivileged user.

# The role applications log in as, on the router and on every shard.
ROUTER_APP_ROLE=amebo_app

# Runs psql as postgres on database $3 of the cluster in folder $1 at port $2.
router_psql() {
    local dir=$1 port=$2 database=$3
    shift 3
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d "$database" "$@"
}

# Starts shard $2 (folder WORK/shard$2) on a free port from $3; prints the port.
router_start_shard() {
    local work=$1 shard=$2 port
    port=$(free_port "$3")
    cluster_start "$work/shard$shard" "$port" "wal_level = logical" >&2
    router_psql "$work/shard$shard" "$port" postgres -c "CREATE DATABASE amebo" >&2
    router_psql "$work/shard$shard" "$port" amebo >&2 <<SQL
CREATE EXTENSION amebo;
CREATE ROLE $ROUTER_APP_ROLE LOGIN IN ROLE amebo_admin;
ALTER DATABASE amebo SET amebo.snapshots_to_keep = 3;
SQL
    echo "$port"
}

# The PL/Proxy connection string of a shard at port $1 (PL/Proxy appends the user).
router_shard_connstr() {
    echo "host=127.0.0.1 port=$1 dbname=amebo"
}

# Starts the shards and the router, creates the cluster amebo_shards and sets it up.
router_clusters_start() {
    local work=$1 next_port=$2 shards=$3 shard options=""
    SHARD_PORTS=()
    for ((shard = 0; shard < shards; shard++)); do
        SHARD_PORTS[$shard]=$(router_start_shard "$work" "$shard" "$next_port")
        next_port=$((SHARD_PORTS[shard] + 1))
        options+="${options:+, }p$shard '$(router_shard_connstr "${SHARD_PORTS[$shard]}")'"
    done
    ROUTER_PORT=$(free_port "$next_port")
    cluster_start "$work/router" "$ROUTER_PORT" "shared_preload_libraries = ''" >&2
    router_psql "$work/router" "$ROUTER_PORT" postgres -c "CREATE DATABASE router" >&2
    router_psql "$work/router" "$ROUTER_PORT" router >&2 <<SQL
CREATE EXTENSION amebo_router CASCADE;
CREATE ROLE $ROUTER_APP_ROLE LOGIN;
CREATE SERVER amebo_shards FOREIGN DATA WRAPPER plproxy OPTIONS ($options);
CREATE USER MAPPING FOR PUBLIC SERVER amebo_shards OPTIONS (user '$ROUTER_APP_ROLE');
GRANT USAGE ON FOREIGN SERVER amebo_shards TO $ROUTER_APP_ROLE;
SET ROLE $ROUTER_APP_ROLE;
SELECT amebo.setup_shards() \\g /dev/null
SQL
}

# Stops the router and every shard under WORK.
router_clusters_stop() {
    local work=$1 dir
    for dir in "$work"/router "$work"/shard*; do
        [ -d "$dir" ] && cluster_stop "$dir"
    done
    return 0
}
