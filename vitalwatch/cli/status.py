"""``vitalwatch status``: ask the running daemon how it is; exit 1 when anything is unhealthy.

Reads one JSON snapshot from the daemon's status socket (``{state.directory}/status.sock``)
and prints each bed's phase, each device's link and last reading age, active alarms, broker
connection and outbox depth. Exit codes serve monitoring scripts: 0 healthy, 1 unhealthy,
2 the daemon cannot be asked (not running, or no permission).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from vitalwatch import strict_json
from vitalwatch.config import load_config
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


def run(args: argparse.Namespace) -> int:
    path: Path | None = args.socket
    if path is None:
        try:
            path = load_config(args.config).state.directory / STATUS_SOCKET
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
    if args.json:
        print(strict_json.dumps(answer, what="status_cli", indent=2))
    else:
        print(format_report(snapshot, health))
    return EXIT_HEALTHY if health.healthy else EXIT_UNHEALTHY
