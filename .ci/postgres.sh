#!/usr/bin/env bash
# Start a throwaway PostgreSQL (Debian's package) on a local port for the tests and print its
# admin URL. The tests create and drop their own databases in it.
set -euo pipefail
port=${1:-$((50000 + $$ % 10000))}
if ! ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq > /dev/null
  apt-get install -y -qq postgresql > /dev/null
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
dir=$(mktemp -d /tmp/kubeharden-pg.XXXXXX)
chown postgres "$dir"
run() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
run "$bin/initdb -D $dir/data -A trust -U postgres" > /dev/null
run "$bin/pg_ctl -D $dir/data -o '-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200' -l $dir/log -w start" > /dev/null
echo "postgres://postgres@127.0.0.1:$port/postgres"
