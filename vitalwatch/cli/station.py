"""``vitalwatch station``: serve the nurse station page and tell it where the broker's WebSocket is."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from vitalwatch.ops.logconfig import configure_logging
from vitalwatch.station import StationConfig, serve_station, station_url


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port); ValueError names what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen must look like HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "station", help="serve the nurse station web page (it connects to the broker's WebSocket listener)"
    )
    parser.add_argument("--site", required=True, help="the site whose beds the page shows")
    parser.add_argument(
        "--listen", default="127.0.0.1:8080", help="HOST:PORT to serve on (default 127.0.0.1:8080)"
    )
    parser.add_argument(
        "--broker-ws",
        help="ws:// or wss:// URL of the broker's WebSocket listener as the browser reaches it "
        "(default: wss://<the page's host>:8885/, config/mosquitto/station-websockets.conf)",
    )
    parser.add_argument("--username", help="broker user of the station; the page asks for its password")
    parser.add_argument("--topic-prefix", default="vitalwatch/v1", help="as mqtt.topic_prefix of the daemons")
    parser.add_argument(
        "--heartbeat-s", type=float, default=5.0, help="the daemons' mqtt.heartbeat_s (default 5)"
    )
    parser.add_argument(
        "--silent-after",
        type=int,
        default=3,
        help="heartbeats missed before 'bed gateway silent' (default 3)",
    )
    parser.set_defaults(func=run)


async def serve(config: StationConfig, host: str, port: int, *, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled, printing the address a person opens."""
    async with serve_station(config, host, port) as server:
        print(f"nurse station on {station_url(host, server.port)} (site {config.site})", flush=True)
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()


def run(args: argparse.Namespace) -> int:
    configure_logging("warning", "console", stream=sys.stderr)
    try:
        host, port = parse_listen(args.listen)
        config = StationConfig(
            site=args.site,
            broker_ws=args.broker_ws,
            username=args.username,
            topic_prefix=args.topic_prefix,
            heartbeat_s=args.heartbeat_s,
            silent_after=args.silent_after,
        )
    except ValueError as exc:
        print(f"vitalwatch station: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config, host, port))
    except OSError as exc:
        print(f"vitalwatch station: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            print("station stopped", file=sys.stderr)
    return 0
