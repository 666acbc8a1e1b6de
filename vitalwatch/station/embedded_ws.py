"""The station in `vitalwatch demo`: a WebSocket listener for the embedded broker and the page's address.

Kept here so the demo (vitalwatch/demo_stack.py) needs three lines: add :func:`amqtt_ws_listener` to the
embedded amqtt broker's listeners, enter :func:`demo_station`, and the address is printed for a new
user to open. amqtt 0.12's ``ws`` listener speaks MQTT over WebSockets to the page's MQTT.js.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TextIO

from vitalwatch.station.server import StationConfig, serve_station, station_url

__all__ = ["amqtt_ws_listener", "demo_station"]


def amqtt_ws_listener(port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """The amqtt broker's listener entry for the page (``listeners["ws"] = ...``)."""
    return {"type": "ws", "bind": f"{host}:{port}"}


@contextlib.asynccontextmanager
async def demo_station(
    *, site: str, ws_url: str, out: TextIO, heartbeat_s: float = 5.0, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve the station for ``site`` against the broker at ``ws_url``; prints and yields the page's URL."""
    config = StationConfig(site=site, broker_ws=ws_url, heartbeat_s=heartbeat_s)
    async with serve_station(config, host, port) as server:
        url = station_url(host, server.port)
        hint = "(tap 'Sound off' to hear HIGH alarms)"
        print(f"nurse station: open {url} in a browser {hint}", file=out, flush=True)
        yield url
