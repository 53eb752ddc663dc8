#!/usr/bin/env bash
# The upgrade comparison: a fresh install of the current version (sql/amebo.sql) and version
# 1.0 updated step by step through every delta script must have the same catalogs, object by
# object and by name: each function's definition and attributes (volatility, strictness,
# SECURITY DEFINER, settings, parallel safety) and privileges, each table's, view's and
# sequence's columns, defaults, constraints, indexes, triggers, privileges and comments, the
# views' definitions, the sequences' parameters, the extension's members, the tables pg_dump
# keeps and the initial privileges it compares with (test/upgrade/catalog.sql lists them),
# and the output of pg_dump --schema-only. Negative controls prove the comparison can fail:
# a fresh install with one object changed must differ from the fresh one in exactly that
# object's attributes. Run from the tree root as an unprivileged user:
#   bash test/scripts/upgrade_compare.sh
# Environment: AMEBO_UPGRADE_PORT (first port to try, default 55641).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/test/lib/script_test.sh"
start_test_cluster upgrade_compare "${AMEBO_UPGRADE_PORT:-55641}"
failures=0

# Runs psql on database $1 with the remaining arguments, stopping at the first error.
sql() {
    local database=$1
    shift
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$TEST_CLUSTER" -p "$TEST_PORT" -U postgres \
        -d "$database" "$@"
}

# Writes the catalog listing of database $1 to $TEST_WORK/$1.catalog.
list_catalog() {
    sql "$1" -At -F $'\t' -f "$top/test/upgrade/catalog.sql" >"$TEST_WORK/$1.catalog"
}

# Prints the (object, attribute) pairs whose values differ between two catalog listings.
differing_attributes() {
    diff "$1" "$2" | sed -n 's/^[<>] //p' | cut -f1,2 | sort -u || true
}

# Records a failed check with its message.
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# The versions of the update chain, from the delta scripts' names, oldest first.
chain=$(ls "$top"/sql/amebo--*--*.sql | sed 's/.*--\(.*\)\.sql/\1/' | sort -V)
current=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$top/amebo.control")
[ "$(echo "$chain" | tail -n 1)" = "$current" ] ||
    fail "the last delta script leads to $(echo "$chain" | tail -n 1), not to $current"

# Database postgres holds the fresh install (start_test_cluster created it); "updated" goes
# from 1.0 through every delta script.
sql postgres -c "CREATE DATABASE updated"
sql updated -c "CREATE EXTENSION amebo VERSION '1.0'"
for version in $chain; do
    sql updated -c "ALTER EXTENSION amebo UPDATE TO '$version'"
done
echo "updated 1.0 -> $(echo $chain | sed 's/ / -> /g')"
list_catalog postgres
list_catalog updated
echo "catalog listing: $(wc -l <"$TEST_WORK/postgres.catalog") attributes of" \
    "$(cut -f1 "$TEST_WORK/postgres.catalog" | sort -u | wc -l) objects"
if differences=$(diff "$TEST_WORK/postgres.catalog" "$TEST_WORK/updated.catalog"); then
    echo "ok: the fresh install and the updated 1.0 have the same catalogs"
else
    echo "$differences" | cut -c1-400
    fail "the fresh install ('<') and the updated 1.0 ('>') differ"
fi

# pg_dump --schema-only of both (without the random \restrict key of newer pg_dumps).
for database in postgres updated; do
    "$PG_BIN/pg_dump" -h "$TEST_CLUSTER" -p "$TEST_PORT" -U postgres --schema-only "$database" |
        grep -v -E '^\\(un)?restrict ' >"$TEST_WORK/$database.dump"
done
if differences=$(diff "$TEST_WORK/postgres.dump" "$TEST_WORK/updated.dump"); then
    echo "ok: pg_dump --schema-only prints the same for both ($(wc -l <"$TEST_WORK/postgres.dump") lines)"
else
    echo "$differences" | cut -c1-400
    fail "pg_dump --schema-only differs between the fresh install and the updated 1.0"
fi

# Negative controls: a fresh install with one object changed; the comparison must report
# exactly the attributes listed (object<TAB>attribute, one per line).
plant() {
    local number=$1 change=$2 expected=$3 found
    sql postgres -c "CREATE DATABASE planted_$number"
    sql "planted_$number" -c "CREATE EXTENSION amebo" -c "$change"
    list_catalog "planted_$number"
    found=$(differing_attributes "$TEST_WORK/postgres.catalog" "$TEST_WORK/planted_$number.catalog")
    if [ "$found" = "$(printf '%b' "$expected" | sort -u)" ]; then
        echo "ok: negative control: after \"$change\" the comparison reports exactly:"
        echo "$found" | sed 's/^/      /'
    else
        fail "negative control: after \"$change\" expected the differences" \
            "$(printf '%b' "$expected" | tr '\n\t' '; ')" "but found: $(echo "$found" | tr '\n\t' '; ')"
    fi
}
plant 1 "ALTER FUNCTION amebo.stream_version(text) VOLATILE" \
    'function amebo.stream_version(text)\tdefinition\nfunction amebo.stream_version(text)\tvolatility'
plant 2 "ALTER TABLE amebo.subscriptions ALTER COLUMN max_retries SET DEFAULT 6" \
    'table amebo.subscriptions\tcolumn 6 max_retries'
plant 3 "GRANT EXECUTE ON FUNCTION amebo_internal.record_deliveries(jsonb, bigint, text) TO amebo_reader" \
    'function amebo_internal.record_deliveries(jsonb,bigint,text)\tacl'
plant 4 "ALTER FUNCTION amebo.create_action(text, text, jsonb, text) RESET search_path" \
    'function amebo.create_action(text,text,jsonb,text)\tconfig\nfunction amebo.create_action(text,text,jsonb,text)\tdefinition'

if [ "$failures" -eq 0 ]; then
    echo "upgrade comparison passed"
else
    echo "upgrade comparison: $failures check(s) failed"
    exit 1
fi
