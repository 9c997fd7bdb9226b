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

CI_NAME=ci_bubblewrap CI_WHAT=bubblewrap CI_ENV=FUSIONGRAPH_TEST_BWRAP
# shellcheck source=scripts/ci_lib.sh
source "$(dirname "$0")/ci_lib.sh"

install() {
    command -v bwrap >/dev/null 2>&1 || apt_install bubblewrap --no-install-recommends
    # The namespaces the sandbox asks for; a container may forbid them.
    if ! bwrap --unshare-all --unshare-user --die-with-parent --ro-bind /usr /usr \
        --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
        --proc /proc --dev /dev --tmpfs /tmp /usr/bin/true; then
        log "bwrap is installed but cannot make a sandbox here (see above)"
        return 1
    fi
    command -v bwrap
}

tool_main "$@"
