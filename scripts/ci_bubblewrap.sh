#!/usr/bin/env bash
# Debian's bubblewrap for the code sandbox (fusiongraph.tools.sandbox) and its tests
# (tests/unit/test_sandbox_escapes.py, test_eval_sandbox.py, and every test that scores code).
#
#   scripts/ci_bubblewrap.sh install    install bubblewrap with apt-get when it is missing (needs
#                                       root and the Debian mirror), then check that it can make
#                                       a sandbox here (namespaces may be forbidden in a
#                                       container); print the binary's path
#   scripts/ci_bubblewrap.sh run CMD    install it if missing, then run CMD. When it cannot be
#                                       installed or cannot run: under CI=true fail; elsewhere
#                                       run CMD anyway with FUSIONGRAPH_TEST_BWRAP_ERROR set (the
#                                       sandbox tests then skip, told why; the sandbox itself
#                                       refuses to run code, it never falls back)
set -euo pipefail

log() { echo "ci_bubblewrap: $*" >&2; }

install_bubblewrap() {
    if ! command -v bwrap >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
            log "bubblewrap is not installed and cannot be installed here (needs root and apt-get)"
            return 1
        fi
        log "installing bubblewrap (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null 2>&1; then
            apt-get update -qq >/dev/null
            apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null
        fi
    fi
    # The namespaces the sandbox asks for; a container may forbid them.
    if ! bwrap --unshare-all --unshare-user --die-with-parent --ro-bind /usr /usr \
        --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
        --proc /proc --dev /dev --tmpfs /tmp /usr/bin/true; then
        log "bwrap is installed but cannot make a sandbox here (see above)"
        return 1
    fi
    command -v bwrap
}

in_ci() {
    case "${CI:-}" in "" | 0 | false | no) return 1 ;; *) return 0 ;; esac
}

run_with() {
    if [ "$#" -eq 0 ]; then
        echo "usage: $0 run COMMAND [ARGS...]" >&2
        exit 2
    fi
    # A separate process, so that `set -e` holds inside the install.
    if "$BASH" "$0" install >/dev/null; then
        :
    elif in_ci; then
        log "bubblewrap could not be installed or cannot run; CI needs it"
        exit 1
    else
        export FUSIONGRAPH_TEST_BWRAP_ERROR="scripts/ci_bubblewrap.sh install failed (see its output)"
    fi
    exec "$@"
}

case "${1:-}" in
    install)
        install_bubblewrap
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
