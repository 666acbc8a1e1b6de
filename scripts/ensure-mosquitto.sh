#!/usr/bin/env bash
# The integration tests start a real Mosquitto. Install it from Debian's packages when we may.
set -euo pipefail
if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing mosquitto from Debian's packages..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
    exit 0
fi
echo "mosquitto is missing: run 'sudo apt-get install mosquitto' and try again." >&2
exit 1
