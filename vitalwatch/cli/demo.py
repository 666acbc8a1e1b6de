"""``vitalwatch demo``: a simulated monitor, a broker, the daemon and alerts as a nurse reads them."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from vitalwatch.cli.signals import cancel_on_stop_signals
from vitalwatch.demo_session import DemoTimings
from vitalwatch.demo_stack import DemoError, run_demo
from vitalwatch.ops.logconfig import configure_logging


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run the whole chain on simulated monitors",
        description="Simulated monitors, an embedded broker, the daemon, the nurse station page and"
        " alerts printed as a nurse reads them. By default a scripted nurse runs a whole chairside"
        " session over MQTT (start, readiness check, infusion with a dose, a prompt, pause/resume,"
        " pump stop, discharge readiness, end) with SHORTENED timings, printed at the start.",
    )
    parser.add_argument(
        "--duration",
        type=float,
        help="wall seconds to run (default: until the scripted session is complete; 240 with --no-session)",
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="scenario time per wall second of the monitors (default 1)"
    )
    parser.add_argument(
        "--no-session",
        dest="session",
        action="store_false",
        help="no scripted nurse: one chair follows the scenario's own phase times (default timings)",
    )
    parser.add_argument(
        "--session-step",
        type=float,
        default=DemoTimings().step_s,
        metavar="S",
        help=f"seconds between the scripted nurse's steps; the demo's session timings scale with it"
        f" (default {DemoTimings().step_s:g}: a session of about three minutes)",
    )
    parser.add_argument("--broker", help="mqtt://HOST:PORT of a broker to use instead of the embedded one")
    parser.add_argument(
        "--scenario", default="desaturation", help="simulator scenario (default desaturation)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where the daemon keeps its state (default: a new vitalwatch-demo-* temporary folder); kept",
    )
    parser.add_argument(
        "--alarm-manager",
        action="store_true",
        help="also report every alert as IHE PCD-04 to an alarm-manager double in-process and print it",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the demo ran (or was stopped by Ctrl-C or SIGTERM), 1 if it failed, 2 for bad options."""
    if (args.duration is not None and args.duration <= 0) or args.speed <= 0 or args.session_step <= 0:
        print("vitalwatch demo: --duration, --speed and --session-step must be positive", file=sys.stderr)
        return 2
    configure_logging("warning", "console", stream=sys.stderr)
    try:
        return asyncio.run(_main(args))
    except ValueError as exc:
        print(f"vitalwatch demo: {exc}", file=sys.stderr)
        return 2
    except DemoError as exc:
        print(f"vitalwatch demo: {exc}", file=sys.stderr)
        return 1


async def _main(args: argparse.Namespace) -> int:
    """SIGINT and SIGTERM both stop the demo the same way: every part cleaned up, the state kept."""
    try:
        with cancel_on_stop_signals():
            return await run_demo(
                duration=args.duration,
                speed=args.speed,
                broker=args.broker,
                scenario=args.scenario,
                state_dir=args.state_dir,
                alarm_manager=args.alarm_manager,
                session=DemoTimings(args.session_step) if args.session else None,
            )
    except asyncio.CancelledError:
        print("demo interrupted", file=sys.stderr)
        return 0
