#!/usr/bin/env bash
# A throwaway Redis server on 127.0.0.1 for the tests of the shared panel cache.
#
#   scripts/ci_redis.sh start    install Debian's redis-server if missing (apt, as root), start a
#                                private instance (no persistence) on a free loopback port; print
#                                its URL (also written to .redis/url)
#   scripts/ci_redis.sh stop     stop it and delete its temp dir (idempotent)
#   scripts/ci_redis.sh url      print the URL of the running instance
#   scripts/ci_redis.sh run CMD  run CMD with FUSIONGRAPH_TEST_REDIS_URL set: uses the server given
#                                or running, else starts one and stops it when CMD ends. When none
#                                starts: under CI=true fail; elsewhere run CMD anyway (the Redis
#                                tests then skip, told why by FUSIONGRAPH_TEST_REDIS_ERROR)
#
# The distribution's own redis service is never started or touched: the instance runs from a temp
# dir with its own config on the command line.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${FUSIONGRAPH_REDIS_STATE:-$ROOT/.redis}"
CI_NAME=ci_redis CI_WHAT=Redis CI_ENV=FUSIONGRAPH_TEST_REDIS
# shellcheck source=scripts/ci_lib.sh
source "$ROOT/scripts/ci_lib.sh"

is_running() {
    [ -f "$STATE/url" ] && [ -f "$STATE/port" ] || return 1
    redis-cli -h 127.0.0.1 -p "$(cat "$STATE/port")" ping >/dev/null 2>&1
}

start() {
    if is_running; then
        cat "$STATE/url"
        return 0
    fi
    stop_quietly
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    command -v redis-server >/dev/null 2>&1 || { log "redis-server not found after installing"; return 1; }

    local dir port url
    dir="$(mktemp -d "${TMPDIR:-/tmp}/fusiongraph-redis.XXXXXX")"
    mkdir -p "$STATE"
    echo '*' >"$STATE/.gitignore"
    echo "$dir" >"$STATE/dir"
    port="$(free_port)"
    # Loopback only, no snapshots or AOF: a cache for one test session.
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" ||
        { log "redis-server did not start"; return 1; }
    local i
    for i in $(seq 1 100); do
        redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 ||
        { log "redis-server is not answering:"; tail -n 20 "$dir/redis.log" >&2; return 1; }
    echo "$port" >"$STATE/port"
    url="redis://127.0.0.1:${port}/0"
    echo "$url" >"$STATE/url"
    log "$(redis-server --version | cut -d' ' -f1-3) on 127.0.0.1:$port (temp dir $dir)"
    echo "$url"
}

stop_quietly() {
    if [ -f "$STATE/port" ]; then
        redis-cli -h 127.0.0.1 -p "$(cat "$STATE/port")" shutdown nosave >/dev/null 2>&1 || true
    fi
    if [ -f "$STATE/dir" ]; then
        local dir
        dir="$(cat "$STATE/dir")"
        case "$dir" in
            */fusiongraph-redis.*) rm -rf "$dir" ;;
        esac
    fi
    rm -f "$STATE/url" "$STATE/port" "$STATE/dir"
}

server_main "$@"
