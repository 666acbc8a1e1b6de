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
from pathlib import Path
from typing import Any

import aiomqtt

from vitalwatch.cli.signals import cancel_on_stop_signals
from vitalwatch.config import MqttConfig, TlsConfig
from vitalwatch.delivery.broker import read_password, tls_context
from vitalwatch.station.tail_view import TailOptions, parse_broker_url, tail

__all__ = ["build_options", "register", "run"]

EXIT_OK = 0
EXIT_BROKER = 1
EXIT_USAGE = 2


def register(sub: Any) -> None:
    """Add ``tail`` to the ``vitalwatch`` command line."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "tail", help="print active alarms and then every alert transition, as a nurse station gets them"
    )
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt[s]://HOST:PORT")
    parser.add_argument("--site", default="+", help="site id (default: every site you may read)")
    parser.add_argument("--bed", default="+", help="bed id (default: every bed)")
    parser.add_argument("--prefix", default="vitalwatch/v1", help="topic prefix (default vitalwatch/v1)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--username", help="MQTT user name (e.g. station-clinic-a)")
    parser.add_argument("--password-file", type=Path, help="file whose first line is the password")
    parser.add_argument("--cafile", type=Path, help="CA certificate to verify the broker (implies TLS)")
    parser.add_argument("--cert", type=Path, help="client certificate (implies TLS)")
    parser.add_argument("--key", type=Path, help="client private key")
    parser.add_argument(
        "--no-verify-hostname",
        action="store_true",
        help="do not check the broker's certificate names this host (testing only)",
    )
    parser.add_argument(
        "--silent-after",
        type=float,
        default=15.0,
        help="seconds without status = gateway silent (15)",
    )
    parser.set_defaults(func=run)


def build_options(args: argparse.Namespace) -> TailOptions:
    """The options from the command line; ValueError or OSError name what is wrong."""
    host, port, tls = parse_broker_url(args.broker)
    for name in ("site", "bed"):
        value = getattr(args, name)
        if value != "+" and (not value or any(c in value for c in "/+#")):
            raise ValueError(f"--{name} must be one topic level (no '/', '+', '#'), got {value!r}")
    if (args.cert is None) != (args.key is None):
        raise ValueError("--cert and --key go together")
    context: ssl.SSLContext | None = None
    if tls or args.cafile or args.cert:
        cfg = MqttConfig(
            tls=TlsConfig(
                ca_file=args.cafile,
                cert_file=args.cert,
                key_file=args.key,
                verify_hostname=not args.no_verify_hostname,
            )
        )
        context = tls_context(cfg)
    return TailOptions(
        host=host,
        port=port,
        site=args.site,
        bed=args.bed,
        prefix=args.prefix,
        username=args.username,
        password=read_password(args.password_file),
        tls=context,
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
