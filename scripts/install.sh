#!/usr/bin/env bash
# Install VitalWatch on a Raspberry Pi (Debian / Raspberry Pi OS), or into a staging root.
#
#   sudo scripts/install.sh                      # the real thing; then edit /etc/vitalwatch/vitalwatch.toml
#   scripts/install.sh --destdir /tmp/root       # staging (packaging, tests): nothing outside it is touched
#
# Layout (PREFIX defaults to /opt/vitalwatch):
#   PREFIX/venv/                        own virtual environment: requirements.lock (hash-checked), then VitalWatch
#   PREFIX/libexec/vitalwatch-failsafe  the fail-safe alarm script (stdlib only, run by /usr/bin/python3)
#   PREFIX/share/                       shipped copies: example config, udev rules, requirements.lock
#   PREFIX/docs/operations.md           what the units' Documentation= points at
#   /etc/vitalwatch/vitalwatch.toml     configuration: created from the example ONLY if absent
#   /etc/vitalwatch/credentials/        mqtt-password (empty placeholder, 0600) for LoadCredential=
#   /etc/systemd/system/vitalwatch{,-failsafe}.service
#   /etc/udev/rules.d/99-vitalwatch-serial.rules   created only if absent (it holds your adapters)
#   /etc/modules-load.d/vitalwatch.conf            USB serial drivers loaded at boot
#   /var/lib/vitalwatch                 state: created by systemd (StateDirectory=), never by this script
#
# Options (or environment DESTDIR / PREFIX / PYTHON):
#   --destdir DIR    stage into DIR; systemctl and udevadm are then never called
#   --prefix DIR     installation directory (default /opt/vitalwatch)
#   --wheel FILE     install this VitalWatch wheel instead of building the source tree
#   --skip-venv      do not create the virtual environment (tests; everything else is installed)
#   --no-enable      do not run `systemctl enable`
set -euo pipefail

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/vitalwatch}
PYTHON=${PYTHON:-python3}
WHEEL=""
SKIP_VENV=0
ENABLE=1
SRC=$(cd "$(dirname "$0")/.." && pwd)

while [ $# -gt 0 ]; do
    case "$1" in
        --destdir) DESTDIR=$2; shift 2 ;;
        --prefix) PREFIX=$2; shift 2 ;;
        --wheel) WHEEL=$2; shift 2 ;;
        --skip-venv) SKIP_VENV=1; shift ;;
        --no-enable) ENABLE=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

case "$PREFIX" in
    /*) ;;
    *) echo "install.sh: --prefix must be absolute (got $PREFIX)" >&2; exit 2 ;;
esac
DESTDIR=${DESTDIR%/}
ROOT="$DESTDIR"
P="$ROOT$PREFIX"
ETC="$ROOT/etc/vitalwatch"
UNITDIR="$ROOT/etc/systemd/system"
RULESDIR="$ROOT/etc/udev/rules.d"
MODDIR="$ROOT/etc/modules-load.d"

say() { printf 'install: %s\n' "$*"; }

# Only a real install on a running systemd touches the live system.
live_systemd() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; }

install -d -m 0755 "$P" "$P/libexec" "$P/share" "$P/docs" "$UNITDIR" "$RULESDIR" "$MODDIR"

# --- the program ----------------------------------------------------------------------------------
if [ "$SKIP_VENV" = 0 ]; then
    say "creating $PREFIX/venv"
    # A venv is relocatable only with care; build it where it will run (DESTDIR staging is for tests
    # and packaging, where the venv is usually skipped or rebuilt on the target).
    "$PYTHON" -m venv --clear "$P/venv"
    "$P/venv/bin/python" -m pip install --quiet --upgrade pip
    # Every runtime dependency pinned and hash-checked: what was audited is what runs.
    "$P/venv/bin/python" -m pip install --quiet --require-hashes --only-binary=:none: \
        -r "$SRC/requirements.lock"
    if [ -n "$WHEEL" ]; then
        "$P/venv/bin/python" -m pip install --quiet --no-deps "$WHEEL"
    else
        "$P/venv/bin/python" -m pip install --quiet --no-deps "$SRC"
    fi
    # /opt is read-only for the service (ProtectSystem=strict): compile now, not at first import.
    "$P/venv/bin/python" -m compileall -q "$P/venv/lib" >/dev/null || true
else
    say "skipping the virtual environment (--skip-venv)"
fi

install -m 0755 "$SRC/vitalwatch/ops/failsafe.py" "$P/libexec/vitalwatch-failsafe"
install -m 0644 "$SRC/config/example.toml" "$P/share/vitalwatch.toml.example"
install -m 0644 "$SRC/systemd/99-vitalwatch-serial.rules" "$P/share/99-vitalwatch-serial.rules"
install -m 0644 "$SRC/requirements.lock" "$P/share/requirements.lock"
install -m 0644 "$SRC/docs/operations.md" "$P/docs/operations.md"

# --- configuration: never overwritten -------------------------------------------------------------
install -d -m 0755 "$ETC"
if [ -e "$ETC/vitalwatch.toml" ]; then
    say "keeping /etc/vitalwatch/vitalwatch.toml (the new example is in $PREFIX/share/)"
else
    # 0644: the service's dynamic user must read it; it holds no secret (passwords are credentials).
    install -m 0644 "$SRC/config/example.toml" "$ETC/vitalwatch.toml"
    say "created /etc/vitalwatch/vitalwatch.toml from the example: edit it"
fi
install -d -m 0700 "$ETC/credentials"
if [ ! -e "$ETC/credentials/mqtt-password" ]; then
    # LoadCredential= fails the unit when the source is missing; empty means "no password".
    install -m 0600 /dev/null "$ETC/credentials/mqtt-password"
fi

# --- units, udev rules, kernel modules ------------------------------------------------------------
for unit in vitalwatch.service vitalwatch-failsafe.service; do
    # The shipped units say /opt/vitalwatch; follow --prefix.
    sed "s#/opt/vitalwatch#$PREFIX#g" "$SRC/systemd/$unit" > "$UNITDIR/$unit.tmp"
    chmod 0644 "$UNITDIR/$unit.tmp"
    mv -f "$UNITDIR/$unit.tmp" "$UNITDIR/$unit"
done
if [ -e "$RULESDIR/99-vitalwatch-serial.rules" ]; then
    say "keeping /etc/udev/rules.d/99-vitalwatch-serial.rules (your adapters)"
else
    install -m 0644 "$SRC/systemd/99-vitalwatch-serial.rules" "$RULESDIR/99-vitalwatch-serial.rules"
fi
# Loaded at boot so the tty nodes (and their group) exist before the first adapter is plugged in.
printf '%s\n' "# VitalWatch: USB serial adapters of the monitors" usbserial ftdi_sio cp210x pl2303 ch341 cdc_acm \
    > "$MODDIR/vitalwatch.conf"
chmod 0644 "$MODDIR/vitalwatch.conf"

if live_systemd; then
    systemctl daemon-reload
    udevadm control --reload || true
    udevadm trigger --subsystem-match=tty || true
    if [ "$ENABLE" = 1 ]; then
        systemctl enable vitalwatch.service
        say "enabled; start with: systemctl start vitalwatch   (after editing /etc/vitalwatch/vitalwatch.toml)"
    fi
else
    if [ -n "$DESTDIR" ]; then say "not enabling: staged into $DESTDIR"; else say "not enabling: systemd is not running"; fi
fi
say "done"
