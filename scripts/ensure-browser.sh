#!/usr/bin/env bash
# The nurse station's browser test drives Debian's chromium with playwright-core (npm).
# Install what is missing when we may (root with apt-get, npm on PATH); say what to do otherwise.
# playwright-core never downloads a browser of its own: it is pointed at /usr/bin/chromium.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
browser_dir="$top/tests/integration/browser"
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing chromium from Debian's packages..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "chromium is missing: run 'sudo apt-get install chromium' and try again." >&2
        exit 1
    fi
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing nodejs and npm from Debian's packages..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "node and npm are missing: run 'sudo apt-get install nodejs npm' and try again." >&2
        exit 1
    fi
fi
# npm ci only when the lock file changed since the last install (it is the slow part).
stamp="$browser_dir/node_modules/.vitalwatch-lock"
if ! cmp -s "$browser_dir/package-lock.json" "$stamp" 2>/dev/null; then
    (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$browser_dir/package-lock.json" "$stamp"
fi
