"""The nurse station's web server: the static page plus ``config.json``, nothing else.

The page talks to Mosquitto's WebSocket listener directly (MQTT.js in the browser); this
server only hands out the files and tells the page where the broker is, on the minimal
``GET`` server of :mod:`vitalwatch.http_get` (bounded request head, read deadline, no path
outside the static directory).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

from vitalwatch import strict_json
from vitalwatch.http_get import GetServer, Reply, listen_url, static_file

__all__ = ["STATIC_DIR", "StationConfig", "StationServer", "serve_station", "station_url"]

STATIC_DIR = Path(__file__).parent / "static"

# Scripts only from here; the page may open WebSockets to the broker. MQTT.js runs its keepalive
# timer in a blob: worker (worker-timers), which background tabs do not throttle.
_CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; worker-src 'self' blob:"


@dataclass(frozen=True, slots=True, kw_only=True)
class StationConfig:
    """What the page needs to know, served as ``/config.json``.

    ``broker_ws`` is the URL of the broker's WebSocket listener as the *browser* must reach it
    (``wss://broker.clinic.local:8885/``); ``None`` lets the page use its own host name with
    ``default_ws_port`` over ``wss`` (or ``ws`` when the page itself came over plain http).
    ``silent_after`` is the k of the heartbeat rule in docs/mqtt.md: a bed whose status has
    not arrived for k x ``heartbeat_s`` is shown as "bed gateway silent".
    The password is never served: the page asks for it when ``username`` is set.
    """

    site: str
    broker_ws: str | None = None
    default_ws_port: int = 8885
    username: str | None = None
    topic_prefix: str = "vitalwatch/v1"
    heartbeat_s: float = 5.0
    silent_after: int = 3
    trend_minutes: float = 10.0
    title: str = "VitalWatch nurse station"

    def __post_init__(self) -> None:
        if not self.site or any(c in self.site for c in "/+#"):
            raise ValueError(f"site must be one topic level, got {self.site!r}")
        if self.heartbeat_s <= 0 or self.silent_after < 1:
            raise ValueError("heartbeat_s must be > 0 and silent_after >= 1")
        if self.broker_ws is not None and not self.broker_ws.startswith(("ws://", "wss://")):
            raise ValueError(f"broker_ws must be a ws:// or wss:// URL, got {self.broker_ws!r}")

    def as_json(self) -> bytes:
        return strict_json.dumps(asdict(self), what="station_config", sort_keys=True).encode()


class StationServer:
    """Serves ``static_dir`` and ``/config.json`` on one listening socket."""

    def __init__(self, config: StationConfig, static_dir: Path = STATIC_DIR) -> None:
        self.config = config
        self.static_dir = static_dir.resolve()
        self._http = GetServer(self._resolve, csp=_CSP, name="station")

    @property
    def port(self) -> int:
        return self._http.port

    async def start(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        await self._http.start(host, port)

    async def close(self) -> None:
        await self._http.close()

    def resolve(self, target: str) -> Reply:
        """What a request target gets; never a file outside the static dir."""
        path = target.split("?", 1)[0].split("#", 1)[0]
        if path == "/config.json":
            return Reply("200 OK", self.config.as_json(), "application/json")
        return static_file(self.static_dir, path)

    async def _resolve(self, target: str) -> Reply:
        return self.resolve(target)


@contextlib.asynccontextmanager
async def serve_station(
    config: StationConfig, host: str = "127.0.0.1", port: int = 8080, static_dir: Path = STATIC_DIR
) -> AsyncIterator[StationServer]:
    """Run the station's web server for the duration of the block (``port=0``: any free port)."""
    server = StationServer(config, static_dir)
    await server.start(host, port)
    try:
        yield server
    finally:
        await server.close()


def station_url(host: str, port: int) -> str:
    """The address a person opens (IPv6 literals in brackets)."""
    return listen_url(host, port)
