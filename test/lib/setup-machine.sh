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
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
