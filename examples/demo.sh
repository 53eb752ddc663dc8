#!/usr/bin/env bash
# The demonstration: on a fresh Debian 12 machine (as root, or a user who may sudo) it
# installs what is missing, builds and installs amebo, starts a throwaway cluster, walks the
# design guide's user story through the SQL API, then stops the cluster and removes it.
# Usage: bash examples/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source test/lib/prepare.sh

echo "== building and installing amebo"
amebo_prepare >/dev/null
echo "== starting a throwaway cluster"
as_test_user '
    set -e
    source test/lib/cluster.sh
    dir=$(mktemp -d /tmp/amebo-demo.XXXXXX)
    trap "cluster_stop $dir; rm -rf $dir" EXIT
    cluster_start "$dir" 55399
    psql -X -h "$dir" -p 55399 -U postgres -d postgres -f examples/demo.sql
    echo
    echo "== stopping the cluster"
'
echo "== done: nothing left running"
