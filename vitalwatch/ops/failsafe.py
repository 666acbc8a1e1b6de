#!/usr/bin/python3 -I
"""Fail-safe technical alarm for when systemd gives up restarting the daemon (``OnFailure=``).

``vitalwatch-failsafe.service`` runs this when ``vitalwatch.service`` enters ``failed`` (the start
limit was hit: a crash loop, a broken configuration, a broken install). Nurses then get no alerts
from VitalWatch at all, so the Pi must say so locally, with the same signal the daemon uses for
"broker unreachable": the configured ``local_alarm_command`` run with::

    VITALWATCH_ALARM=daemon_failed  VITALWATCH_ALARM_STATE=raised|cleared  VITALWATCH_BED=*

Deliberately standalone: stdlib only, no import of the rest of VitalWatch, run by the system's
``/usr/bin/python3 -I`` from a copy in /opt/vitalwatch/libexec/, because the failure may be a
broken virtual environment or package. The configuration may be what crashed the daemon, so a file
``tomllib`` rejects is scanned line by line for ``local_alarm_command = [...]``. Messages go to
stderr with a ``<N>`` syslog priority prefix, which journald turns into the entry's priority.

Clearing: ``vitalwatch.service`` runs ``vitalwatch-failsafe clear`` (privileged, ``ExecStartPre=-+``)
before every start; it only runs the command when a marker in /run says the alarm is raised.

Since systemd 254 ``OnFailure=`` fires on every crash, even when ``Restart=`` will start the daemon
again (252, Debian 12, fires only once the start limit is hit). ``raise`` therefore asks systemctl
for the unit's state and stays quiet while a restart is pending: only a daemon that systemd gave up
on is an alarm.

systemd (>= 251) passes the failed unit's ``MONITOR_SERVICE_RESULT``, ``MONITOR_EXIT_CODE`` and
``MONITOR_EXIT_STATUS``; they are logged so the engineer sees why without digging.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["find_alarm_command", "main"]

DEFAULT_CONFIG = Path("/etc/vitalwatch/vitalwatch.toml")
# Exists while the alarm is raised, so `clear` (run before every daemon start) is silent otherwise.
# /run is a tmpfs: a reboot forgets it, as it resets a buzzer.
DEFAULT_MARKER = Path("/run/vitalwatch-failsafe.raised")
DAEMON_UNIT = "vitalwatch.service"
# SubStates in which systemd will not start the daemon again by itself.
GIVEN_UP = frozenset({"failed", "dead"})
ALARM_NAME = "daemon_failed"
# A buzzer or mosquitto_pub returns in well under this; a hung one must not hold the unit forever.
COMMAND_TIMEOUT_S = 30.0
# syslog priorities for the journald prefix
CRIT, ERR, NOTICE = 2, 3, 5

_SCAN = re.compile(r"^\s*local_alarm_command\s*=\s*(\[.*?\])", re.MULTILINE | re.DOTALL)


def log(priority: int, event: str, **fields: Any) -> None:
    """One JSON line like the daemon's, prefixed ``<priority>`` for journald."""
    record = {"event": event, "level": {CRIT: "critical", ERR: "error"}.get(priority, "info"), **fields}
    print(f"<{priority}>{json.dumps(record, sort_keys=True)}", file=sys.stderr, flush=True)


def _valid(value: object) -> list[str] | None:
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    return None


def find_alarm_command(text: str) -> tuple[list[str] | None, str]:
    """The configured command (under [mqtt] or top level) and how it was found.

    Returns ``(command, how)`` where ``how`` is "toml", "scan" (the file is not valid TOML but the
    line could be read) or "none".
    """
    try:
        import tomllib

        data = tomllib.loads(text)
    except Exception:  # broken TOML (or no tomllib): fall back to a scan, never give up the alarm
        data = None
    if isinstance(data, dict):
        mqtt = data.get("mqtt")
        for section in (mqtt if isinstance(mqtt, dict) else {}, data):
            command = _valid(section.get("local_alarm_command"))
            if command:
                return command, "toml"
    for match in _SCAN.finditer(text):
        # A TOML array of basic strings reads as a Python list literal; comments would not.
        literal = re.sub(r"#[^\n]*", "", match.group(1))
        try:
            command = _valid(ast.literal_eval(literal))
        except (ValueError, SyntaxError):
            continue
        if command:
            return command, "scan"
    return None, "none"


def run_alarm(command: Sequence[str], state: str, environ: Mapping[str, str]) -> int:
    """Run the alarm command; its exit code, or 127 when it could not start / 124 on timeout."""
    env = {**environ, "VITALWATCH_ALARM": ALARM_NAME, "VITALWATCH_ALARM_STATE": state, "VITALWATCH_BED": "*"}
    try:
        done = subprocess.run(list(command), env=env, timeout=COMMAND_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return 124
    except OSError as exc:
        log(ERR, "failsafe.command_failed", error=str(exc))
        return 127
    return done.returncode


def unit_substate(systemctl: str, unit: str) -> str | None:
    """The unit's SubState (``failed``, ``auto-restart``, ``running``...), or None if unknown."""
    try:
        done = subprocess.run(
            [systemctl, "show", "-p", "SubState", "--value", unit],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """``vitalwatch-failsafe [--config PATH] raise|clear``; non-zero when the alarm could not sound."""
    env = dict(os.environ if environ is None else environ)
    parser = argparse.ArgumentParser(prog="vitalwatch-failsafe", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--marker", type=Path, default=DEFAULT_MARKER, help="exists while raised")
    parser.add_argument("--systemctl", default="systemctl", help="program asked for the unit's state")
    parser.add_argument("state", choices=("raise", "clear"))
    args = parser.parse_args(argv)
    state = "raised" if args.state == "raise" else "cleared"
    failed = {
        k.lower(): env[k]
        for k in ("MONITOR_UNIT", "MONITOR_SERVICE_RESULT", "MONITOR_EXIT_CODE", "MONITOR_EXIT_STATUS")
        if k in env
    }
    if state == "raised":
        # systemd >= 254 runs OnFailure= on every crash, also when Restart= will start the daemon
        # again in 2 s; only a unit that stays failed (start limit hit) is an alarm.
        substate = unit_substate(args.systemctl, env.get("MONITOR_UNIT", DAEMON_UNIT))
        if substate is not None and substate not in GIVEN_UP:
            log(NOTICE, "failsafe.restart_pending", substate=substate, **failed)
            return 0
        log(CRIT, "failsafe.daemon_failed", detail="vitalwatch stopped; no alerts reach nurses", **failed)
    elif not args.marker.exists():
        return 0  # nothing raised: a normal (re)start of the daemon
    else:
        log(NOTICE, "failsafe.cleared", detail="vitalwatch is being started again")
    try:
        text = args.config.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        log(ERR, "failsafe.config_unreadable", path=str(args.config), error=exc.strerror or str(exc))
        text = ""
    command, how = find_alarm_command(text)
    if state == "raised":
        _touch(args.marker)
    else:
        args.marker.unlink(missing_ok=True)
    if command is None:
        log(
            CRIT if state == "raised" else NOTICE,
            "failsafe.no_alarm_command",
            path=str(args.config),
            detail="set local_alarm_command so a failure is signalled at the bedside",
        )
        return 1 if state == "raised" else 0
    if how == "scan":
        log(ERR, "failsafe.config_invalid", path=str(args.config), detail="command read by line scan")
    code = run_alarm(command, state, env)
    if code != 0:
        log(ERR, "failsafe.command_failed", exit_code=code, program=command[0])
        return 1
    log(NOTICE, f"failsafe.alarm_{state}", program=command[0])
    return 0


def _touch(marker: Path) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError as exc:  # the alarm matters more than remembering it
        log(ERR, "failsafe.marker_unwritable", path=str(marker), error=exc.strerror or str(exc))


if __name__ == "__main__":
    sys.exit(main())
