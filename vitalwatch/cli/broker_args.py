"""Broker options shared by the commands that talk MQTT like a station (``tail``, ``session``).

One place for ``--broker``, the account, the password file and TLS, so every such command is
given a broker the same way. The password comes from ``--password-file`` (or the systemd
credential ``mqtt-password``), never from the command line.
"""

from __future__ import annotations

import argparse
import ssl
from dataclasses import dataclass
from pathlib import Path

from vitalwatch.config import MqttConfig, TlsConfig
from vitalwatch.delivery.broker import read_password, tls_context
from vitalwatch.station.tail_view import parse_broker_url

__all__ = ["Broker", "add_broker_arguments", "broker_from_args"]


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """``--broker``, ``--username``, ``--password-file``, ``--cafile``, ``--cert``, ``--key``."""
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt[s]://HOST:PORT")
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


def broker_from_args(args: argparse.Namespace) -> Broker:
    """The broker from the command line; ValueError, OSError or ssl.SSLError name what is wrong."""
    host, port, tls = parse_broker_url(args.broker)
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
    return Broker(host, port, args.username, read_password(args.password_file), context)
