# Shared by the scripts/ci_*.sh that give the tests a Debian package (PostgreSQL, Redis, chromium,
# bubblewrap): install it when missing, and the `run CMD` wrapper that hands CMD what it needs or,
# outside CI, says why its tests will skip. Sourced, never run.
#
# The sourcing script sets, before sourcing:
#   CI_NAME  its own name, for logs and messages (ci_postgres)
#   CI_WHAT  what it provides, in words (PostgreSQL)
#   CI_ENV   the prefix of what the tests read (FUSIONGRAPH_TEST_POSTGRES): $CI_ENV (a tool's
#            path) or ${CI_ENV}_URL (a server's URL), and ${CI_ENV}_ERROR when there is none
# and ends with `server_main "$@"` (defining is_running, start, stop_quietly; state in $STATE) or
# `tool_main "$@"` (defining install, which prints the tool's path).

log() { echo "$CI_NAME: $*" >&2; }

in_ci() {
    case "${CI:-}" in "" | 0 | false | no) return 1 ;; *) return 0 ;; esac
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# apt_install PACKAGE [APT-GET OPTIONS...]: needs root and apt-get; updates the lists only when
# the install fails without.
apt_install() {
    local package="$1"
    shift
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "$package is not installed and cannot be installed here (needs root and apt-get)"
        return 1
    fi
    log "installing $package (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq "$@" "$package" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get install -y -qq "$@" "$package" >/dev/null
    fi
}

need_command() {
    if [ "$#" -eq 0 ]; then
        echo "usage: $0 run COMMAND [ARGS...]" >&2
        exit 2
    fi
}

# Without one, CMD runs anyway outside CI, with ${CI_ENV}_ERROR telling its tests why they skip.
no_dependency() {
    if in_ci; then
        log "$CI_WHAT is not available; CI needs it"
        exit 1
    fi
    export "${CI_ENV}_ERROR=scripts/$CI_NAME.sh $1 failed (see its output)"
}

# run CMD with ${CI_ENV}_URL set: the server given, else the running one, else one started now
# and stopped when CMD ends.
run_server() {
    need_command "$@"
    local url_env="${CI_ENV}_URL"
    if [ -n "${!url_env:-}" ]; then
        exec "$@"
    fi
    local url started=""
    if is_running; then
        url="$(cat "$STATE/url")"
    # A separate process, so that `set -e` holds inside `start`.
    elif url="$("$BASH" "$0" start)"; then
        started=1
    else
        no_dependency start
        exec "$@"
    fi
    export "$url_env=$url"
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

server_main() {
    case "${1:-}" in
        start)
            # A start that fails halfway leaves nothing behind.
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
            run_server "$@"
            ;;
        *)
            echo "usage: $0 start|stop|url|run COMMAND..." >&2
            exit 2
            ;;
    esac
}

# run CMD with $CI_ENV set to the tool's path, installing it first when missing.
run_tool() {
    need_command "$@"
    local path
    # A separate process, so that `set -e` holds inside the install.
    if path="$("$BASH" "$0" install)"; then
        export "$CI_ENV=$path"
    else
        no_dependency install
    fi
    exec "$@"
}

tool_main() {
    case "${1:-}" in
        install)
            install
            ;;
        run)
            shift
            run_tool "$@"
            ;;
        *)
            echo "usage: $0 install|run COMMAND..." >&2
            exit 2
            ;;
    esac
}
