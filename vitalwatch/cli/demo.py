"""``vitalwatch demo``: a simulated monitor, a broker, the daemon and alerts as a nurse reads them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from vitalwatch.demo_stack import run_demo
from vitalwatch.ops.logconfig import configure_logging


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("demo", help="run the whole chain on simulated monitors")
    parser.add_argument("--duration", type=float, default=240.0, help="wall seconds to run (default 240)")
    parser.add_argument("--speed", type=float, default=1.0, help="scenario time per wall second (default 1)")
    parser.add_argument("--broker", help="mqtt://HOST:PORT of a broker to use instead of the embedded one")
    parser.add_argument(
        "--scenario", default="desaturation", help="simulator scenario (default desaturation)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.duration <= 0 or args.speed <= 0:
        print("vitalwatch demo: --duration and --speed must be positive", file=sys.stderr)
        return 2
    configure_logging("warning", "console", stream=sys.stderr)
    try:
        return asyncio.run(
            run_demo(duration=args.duration, speed=args.speed, broker=args.broker, scenario=args.scenario)
        )
    except ValueError as exc:
        print(f"vitalwatch demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            print("demo interrupted", file=sys.stderr)
        return 0
