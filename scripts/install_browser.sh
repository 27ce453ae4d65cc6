#!/usr/bin/env bash
# Install Debian's headless-capable Chromium and its matching chromedriver for the console's
# browser tests (tests/integration/test_console.py). Idempotent: does nothing when both exist.
#
#   scripts/install_browser.sh          # as root, or with sudo available
#
# Only Debian's own packages are used (no browser downloads from anywhere else); on other
# distributions install `chromium` + `chromedriver` by hand and point CHROMIUM_BIN /
# CHROMEDRIVER_BIN at them.
set -euo pipefail

have() { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }

if have; then
    echo "chromium and chromedriver already installed:"
else
    SUDO=""
    if [ "$(id -u)" != "0" ]; then
        if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
            echo "error: need root (or sudo) to apt-get install chromium chromium-driver" >&2
            exit 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: apt-get not found; install chromium + chromedriver with your package manager" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the index only when the packages are not known to apt yet (keeps re-runs fast).
    if ! apt-cache show chromium-driver >/dev/null 2>&1; then
        $SUDO apt-get update -q
    fi
    $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-liberation
fi
/usr/bin/chromium --version || true
/usr/bin/chromedriver --version || true
have
