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

CI_NAME=ci_chromium CI_WHAT=chromium CI_ENV=FUSIONGRAPH_TEST_CHROMIUM
# shellcheck source=scripts/ci_lib.sh
source "$(dirname "$0")/ci_lib.sh"

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

install() {
    find_chromium || { apt_install chromium --no-install-recommends && find_chromium; }
}

tool_main "$@"
