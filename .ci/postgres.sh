#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the distributed tests.
#
#   .ci/postgres.sh start [DIR]   install Debian's postgresql if missing, start a fresh cluster
#                                 in DIR, create a test role and database; prints the URL on
#                                 stdout and writes it to DIR/url
#   .ci/postgres.sh stop [DIR]    stop that server and remove DIR
#
# DIR defaults to $OPTTUNE_PG_DIR or /tmp/opttune-pg; the port to $OPTTUNE_PG_PORT or 55432.
# The server listens on loopback only, never on the machine's other addresses. Tests read the
# URL from $OPTTUNE_TEST_POSTGRES_URL. OPTTUNE_PG_NO_INSTALL=1 skips the package install.
set -euo pipefail

action=${1:-}
dir=${2:-${OPTTUNE_PG_DIR:-/tmp/opttune-pg}}
port=${OPTTUNE_PG_PORT:-55432}

# initdb and the server refuse to run as root: run them as the postgres user then.
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$found" ] && [ "${OPTTUNE_PG_NO_INSTALL:-0}" != 1 ] && [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq postgresql >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
        found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    fi
    if [ -z "$found" ]; then
        echo "postgres.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
        exit 1
    fi
    echo "$found"
}

case "$action" in
start)
    bin=$(pg_bin)
    if [ -f "$dir/data/postmaster.pid" ]; then
        "$0" stop "$dir" >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=off" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    as_owner "$bin/psql" -h "$dir" -p "$port" -U postgres -q -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE opttune LOGIN CREATEDB CREATEROLE PASSWORD 'opttune'" \
        -c "CREATE DATABASE opttune_test OWNER opttune" >/dev/null
    url="postgresql://opttune:opttune@127.0.0.1:$port/opttune_test"
    echo "$url" >"$dir/url"
    echo "$url"
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        bin=$(OPTTUNE_PG_NO_INSTALL=1 pg_bin)
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop [DIR]" >&2
    exit 2
    ;;
esac
