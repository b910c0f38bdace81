#!/usr/bin/env bash
# What the browser test (tests/e2e/browser.rs, tests/browser/dashboard.py) needs: Debian's chromium,
# and Playwright for Python in ${TETHER_BROWSER_VENV:-target/browser-venv}. Chromium is installed
# with apt-get when it is missing and this runs as root; otherwise the test says what is missing (and
# is skipped loudly outside CI, fails in CI).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chromium="${TETHER_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        echo "installing Debian's chromium"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium > /dev/null \
            || { apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium > /dev/null; }
    else
        echo "browser test: no chromium at $chromium (apt-get install chromium, or set TETHER_CHROMIUM)" >&2
    fi
fi
exec "$here/../pyvenv.sh" "${TETHER_BROWSER_VENV:-target/browser-venv}" "$here/requirements.txt" playwright
