#!/usr/bin/env bash
# Debian's Chromium for the Playwright browser test (Playwright's own browser download fails
# offline; tests/widgets/test_browser.py uses /usr/bin/chromium and skips, saying why, without it).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_chromium.sh: no apt-get here; install Chromium as /usr/bin/chromium by hand" >&2
    exit 0
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version 2>/dev/null || true
