#!/usr/bin/env bash
# Debian's Chromium for the Playwright browser test (Playwright's own download fails offline).
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
