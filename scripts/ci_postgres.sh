#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the tests of durable runs.
#
#   scripts/ci_postgres.sh start    install PostgreSQL if missing (apt, as root), create a cluster
#                                   in a temp dir, start it on a free loopback port, create the
#                                   database; print its URL (also written to .pg/url)
#   scripts/ci_postgres.sh stop     stop the server and delete the cluster (idempotent)
#   scripts/ci_postgres.sh url      print the URL of the running server
#   scripts/ci_postgres.sh run CMD  run CMD with FUSIONGRAPH_TEST_POSTGRES_URL set: uses the server
#                                   given or running, else starts one and stops it when CMD ends
#                                   (`make test` and .ci/run go through this). When none starts:
#                                   under CI=true fail; elsewhere run CMD anyway (its PostgreSQL
#                                   tests then skip, told why by FUSIONGRAPH_TEST_POSTGRES_ERROR)
#
# Nothing is touched outside the temp dir and .pg/: the distribution's own cluster stays as it
# is. PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
# The tests read FUSIONGRAPH_TEST_POSTGRES_URL, else .pg/url.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${FUSIONGRAPH_PG_STATE:-$ROOT/.pg}"
DB_NAME="fusiongraph_test"
CI_NAME=ci_postgres CI_WHAT=PostgreSQL CI_ENV=FUSIONGRAPH_TEST_POSTGRES
# shellcheck source=scripts/ci_lib.sh
source "$ROOT/scripts/ci_lib.sh"

find_bindir() {
    local dir
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null || true)"
        if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    fi
    # Debian keeps the server binaries off PATH, one directory per major version: take the newest.
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
        echo "$dir"
        return 0
    fi
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

# Run a server-side command as the cluster's owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

is_running() {
    [ -f "$STATE/url" ] && [ -f "$STATE/dir" ] || return 1
    local dir bindir
    dir="$(cat "$STATE/dir")"
    bindir="$(cat "$STATE/bindir" 2>/dev/null || true)"
    [ -n "$bindir" ] && [ -d "$dir/data" ] || return 1
    as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

start() {
    if is_running; then
        cat "$STATE/url"
        return 0
    fi
    stop_quietly
    local bindir
    if ! bindir="$(find_bindir)"; then
        apt_install postgresql
        bindir="$(find_bindir)" || { log "initdb not found after installing"; return 1; }
    fi
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        log "running as root but there is no postgres user to run the server as"
        return 1
    fi

    local dir port password url
    dir="$(mktemp -d "${TMPDIR:-/tmp}/fusiongraph-pg.XXXXXX")"
    mkdir -p "$STATE"
    echo '*' >"$STATE/.gitignore"
    echo "$dir" >"$STATE/dir"
    echo "$bindir" >"$STATE/bindir"
    password="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
    echo "$password" >"$dir/pwfile"
    chmod 700 "$dir"
    chmod 600 "$dir/pwfile"
    if [ "$(id -u)" -eq 0 ]; then
        chown -R postgres: "$dir"
    fi

    # C collation with UTF-8 text: needs no system locale to be generated.
    as_owner "$bindir/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pwfile" \
        --auth=scram-sha-256 -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 ||
        { log "initdb failed:"; cat "$dir/initdb.log" >&2; return 1; }

    # Loopback only, a socket in the temp dir; durability of a throwaway cluster does not matter.
    port="$(free_port)"
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
        start >/dev/null ||
        { log "the server did not start:"; tail -n 20 "$dir/server.log" >&2; return 1; }

    PGPASSWORD="$password" "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB_NAME"
    url="postgresql://postgres:${password}@127.0.0.1:${port}/${DB_NAME}"
    (umask 077 && echo "$url" >"$STATE/url")
    log "$("$bindir/postgres" --version) on 127.0.0.1:$port (data in $dir)"
    echo "$url"
}

stop_quietly() {
    [ -f "$STATE/dir" ] || { rm -f "$STATE/url" "$STATE/bindir"; return 0; }
    local dir bindir
    dir="$(cat "$STATE/dir")"
    bindir="$(cat "$STATE/bindir" 2>/dev/null || true)"
    if [ -n "$bindir" ] && [ -d "$dir/data" ]; then
        as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    case "$dir" in
        */fusiongraph-pg.*) rm -rf "$dir" ;;
    esac
    rm -f "$STATE/url" "$STATE/dir" "$STATE/bindir"
}

server_main "$@"
