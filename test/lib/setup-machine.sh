#!/usr/bin/env bash
# Installs the Debian packages amebo's build, tests, demonstration and benchmarks need.
# As root it installs what is missing; otherwise it only reports what is missing.
set -euo pipefail

packages=(
    build-essential
    postgresql-15
    postgresql-server-dev-15
    postgresql-contrib
    python3
    python3-psycopg
    nlohmann-json3-dev
    json-schema-test-suite
    clang-format
    libcurl4-openssl-dev
    libssl-dev
    libipc-run-perl
    nginx
    procps
    python3-flask
    pgbouncer
    nodejs
    npm
    clang
    libclang-rt-14-dev
    prometheus-postgres-exporter
)

# valijson is header-only, but Debian's libvalijson-dev depends on the libraries of every
# JSON adapter it ships (Qt and Poco among them). amebo uses only the nlohmann adapter, so
# it unpacks the package's headers into .deps/ instead of installing it and its dependencies.
fetch_valijson_headers() {
    local top deps
    top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    deps=$top/.deps
    [ -f "$deps/valijson/usr/include/valijson/validator.hpp" ] && return 0
    mkdir -p "$deps/download"
    (cd "$deps/download" && apt-get download libvalijson-dev >/dev/null 2>&1) || {
        [ "$(id -u)" -eq 0 ] && apt-get update -qq && (cd "$deps/download" && apt-get download libvalijson-dev >/dev/null)
    }
    dpkg-deb -x "$deps"/download/libvalijson-dev_*.deb "$deps/valijson"
}

# Whether a package, or an installed package that provides it, is installed (some nodejs
# builds provide npm and conflict with Debian's npm package). grep reads all its input:
# with -q it could exit early and fail the pipeline (pipefail) through SIGPIPE.
is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" ||
        dpkg-query -W -f='${Provides}\n' 2>/dev/null | tr ',' '\n' | sed 's/ *(.*//; s/^ *//' |
        grep -x -- "$1" >/dev/null
}

missing=()
for p in "${packages[@]}"; do
    is_installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    fetch_valijson_headers
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fetch_valijson_headers
