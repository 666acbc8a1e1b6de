"""``vitalwatch replay``: run a bed session in virtual time and print every output as a JSON line.

Why: the alarm table decides what a nurse is told, so an engineer or a clinic reviewing a
change needs to see, deterministically and in seconds, what a given session would raise.

.. code-block:: text

    vitalwatch replay [--config PATH] --observations FILE.csv
    vitalwatch replay [--config PATH] --scenario NAME [--seed N] [--devices masimo,suntech]

Without ``--config``: the shipped default table and one bed ``bed-1`` with devices
``oximeter`` (spo2) and ``nibp``. With ``--config``: only the ``[alarms]`` table and the first
``[[beds]]`` entry (its id and devices, roles from their drivers) are read. The CSV format
and output lines are documented in :mod:`vitalwatch.engine.replay` and docs/alarms.md.
Exit 0 on success, 2 on bad input (one line on stderr naming the line number or key).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

from vitalwatch import strict_json
from vitalwatch.continuity.replay import replay_rows, run_scenario
from vitalwatch.engine.replay import (
    DEFAULT_DEVICES,
    ReplayInputError,
    output_to_json,
    parse_observations,
)
from vitalwatch.engine.roles import role_for_driver
from vitalwatch.engine.table import AlarmTable, load_alarm_table
from vitalwatch.errors import ConfigError

__all__ = ["register", "run"]

EXIT_OK = 0
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``replay`` to the ``vitalwatch`` command line."""
    parser = subparsers.add_parser(
        "replay",
        help="replay observations or a simulated scenario through the alarm engine (JSON lines)",
        description="Run the alarm engine in virtual time and print each output as one JSON object.",
    )
    parser.add_argument("--config", metavar="PATH", help="daemon config: its [alarms] table and first bed")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--observations", metavar="FILE.csv", help="CSV with header t,event,name,value")
    source.add_argument("--scenario", metavar="NAME", help="a simulator scenario (normal, desaturation, ...)")
    source.add_argument(
        "--recording", metavar="DIR", help="a directory written by `vitalwatch run --record DIR` (every bed)"
    )
    parser.add_argument("--seed", type=int, default=0, help="scenario seed (default 0)")
    parser.add_argument(
        "--devices",
        default="masimo,suntech",
        metavar="A,B",
        help="simulated devices for --scenario, by driver name (default masimo,suntech)",
    )
    parser.set_defaults(func=run)


def _load_config(path: str) -> tuple[AlarmTable, str, dict[str, str]]:
    """The alarm table, the first bed's id and its devices (id -> role) from a daemon config."""
    data: dict[str, Any] = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    table = load_alarm_table(data.get("alarms"))
    beds = data.get("beds") or []
    if not beds or not isinstance(beds, list) or not isinstance(beds[0], dict):
        return table, "bed-1", dict(DEFAULT_DEVICES)
    bed = beds[0]
    devices: dict[str, str] = {}
    for dev in bed.get("devices") or []:
        if isinstance(dev, dict) and isinstance(dev.get("id"), str):
            devices[dev["id"]] = str(dev.get("role") or role_for_driver(str(dev.get("driver", ""))))
    return table, str(bed.get("id", "bed-1")), devices or dict(DEFAULT_DEVICES)


def _replay_recording(directory: Path, table: AlarmTable | None) -> int:
    """Raw bytes of a live run back through fresh drivers and engines: the same alerts."""
    from vitalwatch.continuity.recording import replay_recording

    try:
        results = replay_recording(directory, table=table)
    except (OSError, ValueError, KeyError) as exc:
        print(f"vitalwatch replay: cannot replay {directory}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for outputs in results.values():
        for out in outputs:
            print(strict_json.dumps(output_to_json(out), what="replay"))
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Replay and print JSON lines; 2 with one stderr line on bad input."""
    try:
        if args.config:
            table, bed, devices = _load_config(args.config)
        else:
            table, bed, devices = load_alarm_table(None), "bed-1", dict(DEFAULT_DEVICES)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"vitalwatch replay: {args.config}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, tomllib.TOMLDecodeError) as exc:
        print(f"vitalwatch replay: cannot read {args.config}: {exc}", file=sys.stderr)
        return EXIT_USAGE

    if args.recording:
        return _replay_recording(Path(args.recording), table if args.config else None)
    if args.observations:
        try:
            with open(args.observations, encoding="utf-8", newline="") as fh:
                rows = parse_observations(fh.read().splitlines(), devices)
        except OSError as exc:
            print(f"vitalwatch replay: cannot read {args.observations}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
        except ReplayInputError as exc:
            print(f"vitalwatch replay: {args.observations}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        outputs = replay_rows(table, bed, devices, rows)
    else:
        try:
            from vitalwatch.simulators.scenarios import get_scenario

            scenario = get_scenario(args.scenario, args.seed)
        except (KeyError, ValueError) as exc:
            print(f"vitalwatch replay: {exc}", file=sys.stderr)
            return EXIT_USAGE
        names = [n.strip() for n in args.devices.split(",") if n.strip()]
        try:
            outputs = run_scenario(scenario, names, table=table, seed=args.seed, bed=bed)
            first = next(outputs, None)
        except KeyError as exc:
            print(f"vitalwatch replay: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return EXIT_USAGE
        if first is not None:
            print(strict_json.dumps(output_to_json(first), what="replay"))
    for out in outputs:
        print(strict_json.dumps(output_to_json(out), what="replay"))
    return EXIT_OK
