#!/usr/bin/env bash
# The boundary check: every #include between the modules of src/ must follow the allowed
# edges of test/include_boundaries.txt (dependencies run one way: core, pg, settings, store,
# the domain modules, then api and worker, then amebo.cpp; core includes nothing of
# PostgreSQL's). It first proves it can fail: in a copy of the tree it plants a forbidden
# include (store -> state, also written as a relative path), PostgreSQL's header in core,
# and a cycle in the table, and expects each to be reported by file and edge. Needs only
# python3. Run from anywhere:
#   bash test/scripts/include_boundaries.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
check=$top/test/lib/check_includes.py
table=$top/test/include_boundaries.txt
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Runs the check on a tree and table; succeeds when it fails and prints the expected line.
expect_refusal() {
    local what=$1 tree=$2 table=$3 expected=$4 output
    if output=$(python3 "$check" "$table" "$tree" 2>&1); then
        echo "negative control failed: $what passed the check" >&2
        exit 1
    fi
    if ! grep -qF -- "$expected" <<<"$output"; then
        printf 'negative control failed: %s not reported as "%s"; the check said:\n%s\n' \
            "$what" "$expected" "$output" >&2
        exit 1
    fi
    echo "negative control: $what refused: $(grep -F -- "$expected" <<<"$output" | head -1)"
}

# A fresh copy of the sources (without objects) with one line added to one file.
planted_copy() {
    local name=$1 file=$2 line=$3
    mkdir -p "$scratch/$name"
    tar -C "$top/src" --exclude='*.o' -cf - . | tar -C "$scratch/$name" -xf -
    printf '%s\n' "$line" >>"$scratch/$name/$file"
    echo "$scratch/$name"
}

tree=$(planted_copy store_to_state store/scan.cpp '#include "state/rebuild.hpp"')
expect_refusal "store including state" "$tree" "$table" \
    "$tree/store/scan.cpp:$(wc -l <"$tree/store/scan.cpp"): store -> state is not allowed"

tree=$(planted_copy relative store/scan.cpp '#include "../state/spi_rows.hpp"')
expect_refusal "a relative include of state from store" "$tree" "$table" \
    "store/scan.cpp:$(wc -l <"$tree/store/scan.cpp"): store -> state is not allowed"

tree=$(planted_copy core_to_postgres core/names.cpp '#include "postgres.h"')
expect_refusal "core including PostgreSQL" "$tree" "$table" \
    "core/names.cpp:$(wc -l <"$tree/core/names.cpp"): core -> PostgreSQL"

sed 's/^pg: .*/pg: core store/' "$table" >"$scratch/cycle.txt"
expect_refusal "a table with a cycle" "$top/src" "$scratch/cycle.txt" \
    "the allowed edges form a cycle: pg -> store -> pg"

python3 "$check" "$table" "$top/src"
