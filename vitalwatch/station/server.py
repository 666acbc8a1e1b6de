"""The nurse station's web server: the static page plus ``config.json``, nothing else.

The page talks to Mosquitto's WebSocket listener directly (MQTT.js in the browser); this
server only hands out the files and tells the page where the broker is. So it is a minimal
HTTP/1.1 ``GET``/``HEAD`` server on :func:`asyncio.start_server` (no framework, no new
dependency): one request per connection, bounded request head, a read deadline, no
directory listings, and no path outside the static directory.

Why not ``http.server``: it is a thread per request and its ``SimpleHTTPRequestHandler``
lists directories and follows symlinks; this is fewer lines than locking it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from vitalwatch import strict_json

__all__ = ["STATIC_DIR", "StationConfig", "StationServer", "serve_station", "station_url"]

log = structlog.get_logger("vitalwatch.station")

STATIC_DIR = Path(__file__).parent / "static"

# A browser's GET with cookies is well under 4 KiB; 16 KiB refuses abuse before it costs memory.
MAX_REQUEST_HEAD = 16 * 1024
# A client that has not sent its request line and headers by then is dropped (slowloris).
READ_TIMEOUT_S = 10.0

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".md": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


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


def _response(status: str, body: bytes, content_type: str, *, head: bool = False) -> bytes:
    headers = [
        f"HTTP/1.1 {status}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        # Always fresh: after an upgrade a tablet must not run old JS against a new contract.
        "Cache-Control: no-cache",
        "X-Content-Type-Options: nosniff",
        "Referrer-Policy: no-referrer",
        # Scripts only from here; the page may open WebSockets to the broker. MQTT.js runs its
        # keepalive timer in a blob: worker (worker-timers), which background tabs do not throttle.
        "Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "worker-src 'self' blob:",
        "Connection: close",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + (b"" if head else body)


class StationServer:
    """Serves ``static_dir`` and ``/config.json`` on one listening socket."""

    def __init__(self, config: StationConfig, static_dir: Path = STATIC_DIR) -> None:
        self.config = config
        self.static_dir = static_dir.resolve()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST_HEAD)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def resolve(self, target: str) -> tuple[str, bytes, str]:
        """(status, body, content type) for a request target; never reads outside the static dir."""
        path = target.split("?", 1)[0].split("#", 1)[0]
        if path == "/config.json":
            return "200 OK", self.config.as_json(), "application/json"
        if path == "/":
            path = "/index.html"
        if not path.startswith("/") or "\\" in path or "\x00" in path:
            return "400 Bad Request", b"bad path\n", "text/plain"
        candidate = (self.static_dir / path.lstrip("/")).resolve()
        if not candidate.is_relative_to(self.static_dir) or not candidate.is_file():
            return "404 Not Found", b"not found\n", "text/plain"
        ctype = (
            _TYPES.get(candidate.suffix)
            or mimetypes.guess_type(candidate.name)[0]
            or "application/octet-stream"
        )
        return "200 OK", candidate.read_bytes(), ctype

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            words = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(words) != 3 or not words[2].startswith("HTTP/1."):
                reply = _response("400 Bad Request", b"bad request\n", "text/plain")
            elif words[0] not in ("GET", "HEAD"):
                reply = _response("405 Method Not Allowed", b"GET only\n", "text/plain")
            else:
                status, body, ctype = self.resolve(words[1])
                reply = _response(status, body, ctype, head=words[0] == "HEAD")
            writer.write(reply)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            log.debug("station.http_dropped", error=type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


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
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"
