#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for shared Optuna studies (tests, local trials).
#
#   scripts/start-postgres.sh [PORT] [DIR]   -> prints postgresql+psycopg2://postgres@127.0.0.1:PORT/bertfit
#   stop it with: pg_ctl -D DIR/data stop  (the command is also printed on stderr)
#
# Installs the Debian package postgresql when no initdb is found (needs root and a package mirror).
# The cluster runs as the postgres user when started by root (initdb refuses root), with trust
# authentication on loopback only: for tests and single-user machines, not for a shared server.
set -euo pipefail

PORT="${1:-55432}"
DIR="${2:-$(mktemp -d /tmp/bertfit-pg.XXXXXX)}"

find_bin() {
    command -v "$1" 2>/dev/null || ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1
}

if [ -z "$(find_bin initdb)" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "start-postgres: initdb not found and not root; install postgresql (apt-get install -y postgresql)" >&2
        exit 1
    fi
    echo "start-postgres: installing postgresql" >&2
    (apt-get install -y postgresql || (apt-get update && apt-get install -y postgresql)) >&2
fi
INITDB="$(find_bin initdb)"
PG_CTL="$(find_bin pg_ctl)"
CREATEDB="$(find_bin createdb)"
if [ -z "$INITDB" ] || [ -z "$PG_CTL" ] || [ -z "$CREATEDB" ]; then
    echo "start-postgres: PostgreSQL binaries (initdb, pg_ctl, createdb) not found" >&2
    exit 1
fi

AS=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "start-postgres: no postgres user to run the server as" >&2; exit 1; }
    chown postgres "$DIR"
    chmod 700 "$DIR"
    AS=(runuser -u postgres --)
fi

"${AS[@]}" "$INITDB" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; exit 1; }
"${AS[@]}" "$PG_CTL" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR" start >&2 \
    || { cat "$DIR/server.log" >&2; exit 1; }
"${AS[@]}" "$CREATEDB" -h 127.0.0.1 -p "$PORT" -U postgres bertfit

echo "start-postgres: running; stop with: ${AS[*]} $PG_CTL -D $DIR/data stop -m fast" >&2
echo "postgresql+psycopg2://postgres@127.0.0.1:$PORT/bertfit"
