#!/usr/bin/env bash
# Debian's chromium for the browser tests (tests/browser/), which Playwright for Python drives
# through `executable_path`: Playwright's own browser download is never used.
#
#   scripts/ci_chromium.sh install    install chromium with apt-get when it is missing (needs root
#                                     and the Debian mirror); print the binary's path
#   scripts/ci_chromium.sh run CMD    install it if missing, then run CMD with
#                                     FUSIONGRAPH_TEST_CHROMIUM set to the binary. When it cannot be
#                                     installed: under CI=true fail; elsewhere run CMD anyway (the
#                                     browser tests then skip, told why by
#                                     FUSIONGRAPH_TEST_CHROMIUM_ERROR)
set -euo pipefail

log() { echo "ci_chromium: $*" >&2; }

find_chromium() {
    local candidate
    for candidate in "${FUSIONGRAPH_TEST_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

install_chromium() {
    if find_chromium; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "chromium is not installed and cannot be installed here (needs root and apt-get)"
        return 1
    fi
    log "installing chromium (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
    fi
    find_chromium
}

in_ci() {
    case "${CI:-}" in "" | 0 | false | no) return 1 ;; *) return 0 ;; esac
}

run_with() {
    if [ "$#" -eq 0 ]; then
        echo "usage: $0 run COMMAND [ARGS...]" >&2
        exit 2
    fi
    local path
    # A separate process, so that `set -e` holds inside the install.
    if path="$("$BASH" "$0" install)"; then
        export FUSIONGRAPH_TEST_CHROMIUM="$path"
    elif in_ci; then
        log "chromium could not be installed; CI needs it"
        exit 1
    else
        export FUSIONGRAPH_TEST_CHROMIUM_ERROR="scripts/ci_chromium.sh install failed (see its output)"
    fi
    exec "$@"
}

case "${1:-}" in
    install)
        install_chromium
        ;;
    run)
        shift
        run_with "$@"
        ;;
    *)
        echo "usage: $0 install|run COMMAND..." >&2
        exit 2
        ;;
esac
