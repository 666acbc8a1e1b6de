"""``vitalwatch tail``: subscribe like a nurse station and print active alarms, then each transition.

Exit codes: 0 after Ctrl-C / SIGTERM, 1 when the broker cannot be reached or refuses us at the
start (the reason on stderr; once connected, a lost broker is said on stdout and retried until it
is back), 2 for a bad option (broker URL, unreadable password or certificate file).
The password comes from ``--password-file`` or the systemd credential ``mqtt-password``, never
from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
from typing import Any

import aiomqtt

from vitalwatch.cli.broker_args import add_broker_arguments, broker_from_args
from vitalwatch.cli.signals import cancel_on_stop_signals
from vitalwatch.station.tail_view import TailOptions, tail

__all__ = ["build_options", "register", "run"]

EXIT_OK = 0
EXIT_BROKER = 1
EXIT_USAGE = 2


def register(sub: Any) -> None:
    """Add ``tail`` to the ``vitalwatch`` command line."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "tail", help="print active alarms and then every alert transition, as a nurse station gets them"
    )
    add_broker_arguments(parser)
    parser.add_argument("--site", default="+", help="site id (default: every site you may read)")
    parser.add_argument("--bed", default="+", help="bed id (default: every bed)")
    parser.add_argument("--prefix", default="vitalwatch/v1", help="topic prefix (default vitalwatch/v1)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--silent-after",
        type=float,
        default=15.0,
        help="seconds without status = gateway silent (15)",
    )
    parser.set_defaults(func=run)


def build_options(args: argparse.Namespace) -> TailOptions:
    """The options from the command line; ValueError or OSError name what is wrong."""
    broker = broker_from_args(args)
    for name in ("site", "bed"):
        value = getattr(args, name)
        if value != "+" and (not value or any(c in value for c in "/+#")):
            raise ValueError(f"--{name} must be one topic level (no '/', '+', '#'), got {value!r}")
    return TailOptions(
        host=broker.host,
        port=broker.port,
        site=args.site,
        bed=args.bed,
        prefix=args.prefix,
        username=broker.username,
        password=broker.password,
        tls=broker.tls,
        json_lines=args.json,
        silent_after_s=args.silent_after,
    )


async def _main(opts: TailOptions) -> int:
    """Run until SIGINT/SIGTERM cancels us; both end with exit code 0."""
    try:
        with cancel_on_stop_signals():
            await tail(opts, sys.stdout)
    except asyncio.CancelledError:
        return EXIT_OK
    except aiomqtt.MqttError as exc:
        print(f"vitalwatch tail: broker {opts.host}:{opts.port}: {exc}", file=sys.stderr)
        return EXIT_BROKER
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Entry point of ``vitalwatch tail``."""
    try:
        opts = build_options(args)
    except (ValueError, OSError, ssl.SSLError) as exc:
        print(f"vitalwatch tail: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_main(opts))
    return EXIT_OK
