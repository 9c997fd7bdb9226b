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

log() { echo "ci_redis: $*" >&2; }

install_redis() {
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "redis-server is not installed and cannot be installed here (needs root and apt-get)"
        return 1
    fi
    log "installing redis-server (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq redis-server >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get install -y -qq redis-server >/dev/null
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

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
    command -v redis-server >/dev/null 2>&1 || install_redis
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

in_ci() {
    case "${CI:-}" in "" | 0 | false | no) return 1 ;; *) return 0 ;; esac
}

run_with() {
    if [ "$#" -eq 0 ]; then
        echo "usage: $0 run COMMAND [ARGS...]" >&2
        exit 2
    fi
    if [ -n "${FUSIONGRAPH_TEST_REDIS_URL:-}" ]; then
        exec "$@"
    fi
    local url started=""
    if is_running; then
        url="$(cat "$STATE/url")"
    elif url="$("$BASH" "$0" start)"; then
        started=1
    elif in_ci; then
        log "Redis did not start; CI needs it"
        exit 1
    else
        export FUSIONGRAPH_TEST_REDIS_ERROR="scripts/ci_redis.sh start failed (see its output)"
        exec "$@"
    fi
    export FUSIONGRAPH_TEST_REDIS_URL="$url"
    if [ -n "$started" ]; then
        trap 'stop_quietly; log "stopped"' EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
    fi
    set +e
    "$@"
    local rc=$?
    set -e
    exit "$rc"
}

case "${1:-}" in
    start)
        trap 'rc=$?; [ "$rc" -eq 0 ] || stop_quietly' EXIT
        start
        ;;
    stop)
        stop_quietly
        log "stopped"
        ;;
    url)
        is_running || { log "not running"; exit 1; }
        cat "$STATE/url"
        ;;
    run)
        shift
        run_with "$@"
        ;;
    *)
        echo "usage: $0 start|stop|url|run COMMAND..." >&2
        exit 2
        ;;
esac
