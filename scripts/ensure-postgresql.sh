#!/usr/bin/env bash
# The registry's tests start a real PostgreSQL server (as an unprivileged user, in a temporary
# directory). Install it from Debian's packages when we may, as ensure-mosquitto.sh does.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing postgresql from Debian's packages..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    # The tests run their own server; the package's own cluster is not needed.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
        systemctl disable --now postgresql >/dev/null 2>&1 || true
    fi
    exit 0
fi
echo "postgresql is missing: run 'sudo apt-get install postgresql' and try again." >&2
exit 1
