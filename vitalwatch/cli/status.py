"""``vitalwatch status``: ask the running daemon how it is; exit 1 when anything is unhealthy.

Reads one JSON snapshot from the daemon's status socket (``{state.directory}/status.sock``)
and prints each bed's phase, each device's link and last reading age, active alarms, broker
connection and outbox depth. With ``[registry] receipts`` on, it also says how many ended
sessions' records the registry has not receipted yet (read from the session record itself; a
record waiting is not a health problem of the bedside, so it does not change the exit code).
With ``[registry] alert_receipts`` on, the daemon's answer says how many alert transitions wait
for a downstream receipt and how old the oldest is (``receipts.alerts`` in ``--json``); the
same rule: it does not change the exit code.
Exit codes serve monitoring scripts: 0 healthy, 1 unhealthy, 2 the daemon cannot be asked (not
running, or no permission).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from vitalwatch import strict_json
from vitalwatch.config import Config, load_config
from vitalwatch.errors import ConfigError
from vitalwatch.ops.daemon import STATUS_SOCKET
from vitalwatch.ops.health import DaemonSnapshot, assess, format_report

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_UNREACHABLE = 0, 1, 2


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "status", help="health of the running daemon", description=__doc__
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--config", type=Path, default=Path("/etc/vitalwatch/vitalwatch.toml"), help="its config"
    )
    where.add_argument(
        "--socket", type=Path, help="the status socket (default: in the config's state directory)"
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON snapshot")
    parser.set_defaults(func=run)


async def _ask(path: Path) -> dict[str, Any]:
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 5.0)
    try:
        data = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
    answer: dict[str, Any] = json.loads(data)
    return answer


def _registry(config: Config | None) -> dict[str, Any] | None:
    """Unreceipted session records, when this daemon offers them to a registry."""
    if config is None or not config.registry.receipts:
        return None
    from vitalwatch.record.sessionlog import SESSIONS_DB_NAME, connect_readonly
    from vitalwatch.registry.offer import unreceipted_in
    from vitalwatch.registry.receipting import describe

    try:
        conn = connect_readonly(config.state.directory / SESSIONS_DB_NAME)
        try:
            return describe(unreceipted_in(conn, time.time()))
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return {"error": f"cannot read the session record: {exc}"}


def run(args: argparse.Namespace) -> int:
    path: Path | None = args.socket
    config: Config | None = None
    if path is None:
        try:
            config = load_config(args.config)
            path = config.state.directory / STATUS_SOCKET
        except ConfigError as exc:
            print(f"vitalwatch status: {exc.problems[0]}", file=sys.stderr)
            return EXIT_UNREACHABLE
    try:
        answer = asyncio.run(_ask(path))
        snapshot = DaemonSnapshot.from_dict(answer["snapshot"])
    except (OSError, TimeoutError, ValueError, KeyError, TypeError) as exc:
        print(f"vitalwatch status: cannot ask the daemon at {path}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    health = assess(snapshot)
    alerts = answer.get("receipts", {}).get("alerts")  # the running daemon's own count
    registry = _registry(config)
    if registry is not None:
        answer["registry"] = registry
    if args.json:
        print(strict_json.dumps(answer, what="status_cli", indent=2))
    else:
        print(format_report(snapshot, health))
        if registry is not None:
            print(_registry_line(registry))
        if alerts is not None:
            print(_alerts_line(alerts))
    return EXIT_HEALTHY if health.healthy else EXIT_UNHEALTHY


def _registry_line(registry: dict[str, Any]) -> str:
    if "error" in registry:
        return f"registry: {registry['error']}"
    if not registry["unreceipted"]:
        return "registry: every ended session's record is receipted"
    return (
        f"registry: {registry['unreceipted']} session record(s) awaiting the registry's receipt"
        f" ({registry['offered_unreceipted']} offered), oldest ended"
        f" {registry['oldest_unreceipted_age_s'] / 60:.0f} min ago"
    )


def _alerts_line(alerts: dict[str, Any]) -> str:
    if not alerts["unreceipted"]:
        return "alert receipts: every alert transition is receipted"
    return (
        f"alert receipts: {alerts['unreceipted']} alert transition(s) awaiting a receipt"
        f" ({alerts['offered_unreceipted']} acknowledged by the broker), oldest"
        f" {alerts['oldest_unreceipted_age_s']:.0f} s old"
    )
