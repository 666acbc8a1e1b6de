#!/usr/bin/env bash
# Remove VitalWatch but keep its state and configuration.
#
#   sudo scripts/uninstall.sh                    # the real thing
#   scripts/uninstall.sh --destdir /tmp/root     # a staged install
#
# Removed: PREFIX (program, venv, fail-safe script), both units, the modules-load file, and the udev
# rules if they are still the shipped example. Kept: /etc/vitalwatch (configuration, credentials),
# /var/lib/vitalwatch (alarm audit trail, outbox), and udev rules you edited.
set -euo pipefail

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/vitalwatch}
while [ $# -gt 0 ]; do
    case "$1" in
        --destdir) DESTDIR=$2; shift 2 ;;
        --prefix) PREFIX=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
case "$PREFIX" in
    /?*) ;;
    *) echo "uninstall.sh: --prefix must be an absolute path other than / (got $PREFIX)" >&2; exit 2 ;;
esac
DESTDIR=${DESTDIR%/}
P="$DESTDIR$PREFIX"
UNITDIR="$DESTDIR/etc/systemd/system"
RULES="$DESTDIR/etc/udev/rules.d/99-vitalwatch-serial.rules"

say() { printf 'uninstall: %s\n' "$*"; }

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now vitalwatch.service || true
    systemctl stop vitalwatch-failsafe.service || true
fi

rm -f "$UNITDIR/vitalwatch.service" "$UNITDIR/vitalwatch-failsafe.service"
rm -f "$DESTDIR/etc/modules-load.d/vitalwatch.conf"
if [ -e "$RULES" ]; then
    if [ -e "$P/share/99-vitalwatch-serial.rules" ] && cmp -s "$RULES" "$P/share/99-vitalwatch-serial.rules"; then
        rm -f "$RULES"
    else
        say "keeping $RULES (edited: it names your adapters)"
    fi
fi
# Only remove a directory that looks like ours: a wrong --prefix must not delete something else.
if [ -d "$P" ]; then
    if [ -e "$P/libexec/vitalwatch-failsafe" ] || [ -e "$P/venv/bin/vitalwatch" ]; then
        rm -rf "$P"
    else
        say "not removing $P: it does not look like a VitalWatch installation"
        exit 1
    fi
fi

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl reset-failed vitalwatch.service vitalwatch-failsafe.service 2>/dev/null || true
    udevadm control --reload || true
fi
say "kept /etc/vitalwatch and /var/lib/vitalwatch (remove them by hand to erase configuration and audit trail)"
