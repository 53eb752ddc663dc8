#!/usr/bin/env bash
# Runs the pg_regress suite and the isolation specs against amebo built with AddressSanitizer
# and UndefinedBehaviorSanitizer (g++ -fsanitize=address,undefined, UB reports fatal). Proves
# that the extension, its background worker and its output plugin make no invalid memory
# access and no undefined behaviour on the paths those suites exercise.
# How: the tree is copied to a temporary folder and built there (the worktree keeps no
# sanitized object); PostgreSQL 15 (whatever pg_config is first on PATH) is copied there too
# and amebo installed into that copy only; the servers that pg_regress starts run with gcc's
# libasan preloaded (PostgreSQL itself is not instrumented; test/lib/asan_first.c lets it start), leak detection off (PostgreSQL
# frees memory by context) and every report written under the folder's sanitizer-logs/. The
# run fails when a suite fails or any sanitizer report was written. Nothing global changes.
# Usage (as root, or as a user who may sudo; needs the packages of test/lib/setup-machine.sh):
#   bash test/sanitize.sh            AMEBO_SANITIZE_KEEP=1 keeps the folder for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."
source test/lib/prepare.sh

work=$(mktemp -d /tmp/amebo-sanitize.XXXXXX)
[ "${AMEBO_SANITIZE_KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
started=$(date +%s)

# Copies the PostgreSQL installation that pg_config names into $work/pg (it is relocatable).
copy_postgres() {
    local bindir sharedir
    bindir=$(pg_config --bindir)
    sharedir=$(pg_config --sharedir)
    mkdir -p "$work/pg/lib/postgresql" "$work/pg/share/postgresql" "$work/pg/include"
    cp -a "$(dirname "$bindir")" "$work/pg/lib/postgresql/"
    cp -a "$sharedir" "$work/pg/share/postgresql/"
    ln -s "$(pg_config --includedir-server)/../.." "$work/pg/include/postgresql"
    echo "$work/pg/lib/postgresql/$(basename "$(dirname "$bindir")")/bin"
}

bash test/lib/setup-machine.sh
pg_bin=$(copy_postgres)
export PATH=$pg_bin:$PATH PG_CONFIG=$pg_bin/pg_config
echo "== PostgreSQL copy: $(pg_config --bindir)"
[ "$(pg_config --pkglibdir)" != "$(/usr/bin/pg_config --pkglibdir 2>/dev/null)" ] || {
    echo "pg_config still names the system's PostgreSQL; refusing to install there" >&2
    exit 1
}

tree=$work/tree
mkdir -p "$tree"
tar --exclude=./.git --exclude=./build --exclude='*.o' --exclude='*.so' --exclude=./tmp_check --exclude=./tmp_check_iso --exclude=./results -cf - . | tar -C "$tree" -xf -
# (-Wno-maybe-uninitialized: g++ warns falsely inside <regex> when sanitizing.)
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
sanitize+=" -Wno-maybe-uninitialized"
echo "== building amebo with $sanitize"
make -s -C "$tree" clean >/dev/null
make -s -C "$tree" -j2 AMEBO_SANITIZE="$sanitize"
make -s -C "$tree" AMEBO_SANITIZE="$sanitize" install
built=$(date +%s)

logs=$work/sanitizer-logs
mkdir -p "$logs"
# gcc's ASan runtime, and the shim that initializes it before glibc's locale lock is taken
# (test/lib/asan_first.c says why: without it postgres hangs at start on Debian 12).
gcc -shared -fPIC -O1 -Wall -Werror -o "$work/libasan_first.so" test/lib/asan_first.c -ldl
preload="$(g++ -print-file-name=libasan.so):$work/libasan_first.so"
run_as=""
if [ "$(id -u)" -eq 0 ]; then
    id "$AMEBO_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$AMEBO_USER"
    chmod 755 "$work"
    chown -R "$AMEBO_USER" "$tree" "$logs"
    run_as=$AMEBO_USER
fi
# The environment every process of the suites inherits, postgres included; set inside the
# command because su (set-user-id) drops LD_PRELOAD from the environment it is given.
environment="export PATH='$PATH' PG_CONFIG='$PG_CONFIG' LD_PRELOAD='$preload'"
environment+=" ASAN_OPTIONS='detect_leaks=0:abort_on_error=1:log_path=$logs/asan'"
environment+=" UBSAN_OPTIONS='print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan'"
# The run must be able to fail: amebo.so must carry ASan's checks, and a program with a heap
# overflow, run with the same settings, must leave a report where the scan below looks.
nm -D "$(pg_config --pkglibdir)/amebo.so" >"$work/amebo.symbols"
grep -q __asan_report_load "$work/amebo.symbols" || {
    echo "amebo.so is not instrumented" >&2
    exit 1
}
printf '#include <cstdlib>\nint main(int c, char **) { char *p = (char *)malloc(4); return p[c + 3]; }\n' |
    g++ -fsanitize=address -x c++ -o "$work/canary" -
(eval "$environment" && ASAN_OPTIONS="log_path=$work/canary-report" "$work/canary") || true
ls "$work"/canary-report.* >/dev/null 2>&1 || {
    echo "the sanitizer canary left no report: reports would be missed" >&2
    exit 1
}
suites="cd '$tree' && $environment && make -s installcheck"
echo "== pg_regress and isolation under ASan and UBSan"
status=0
if [ -n "$run_as" ]; then su "$run_as" -c "$suites" || status=1; else bash -c "$suites" || status=1; fi
if [ $status -ne 0 ]; then
    cat "$tree/regression.diffs" "$tree/test/isolation/regression.diffs" 2>/dev/null | head -200 || true
    echo "FAILED: a suite failed"
fi
finished=$(date +%s)

reports=$(find "$logs" -type f | sort)
if [ -n "$reports" ]; then
    for report in $reports; do
        echo "== sanitizer report $report"
        head -60 "$report"
    done
    echo "FAILED: $(echo "$reports" | wc -l) sanitizer report(s)"
    status=1
fi
# Server logs may hold reports too when a process wrote to stderr before log_path applied.
if grep -l -E "ERROR: AddressSanitizer|runtime error:" -r "$tree/tmp_check" "$tree/tmp_check_iso" \
    2>/dev/null; then
    echo "FAILED: sanitizer output in the server logs"
    status=1
fi
echo "== build $((built - started)) s, suites $((finished - built)) s, sanitizer reports: $(echo -n "$reports" | grep -c . || true)"
[ $status -eq 0 ] && echo "== sanitizer run clean"
exit $status
