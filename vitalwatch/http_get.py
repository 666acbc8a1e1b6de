"""A minimal read-only HTTP/1.1 server (``GET``/``HEAD``) for VitalWatch's own web pages.

The nurse station (static files and a config document) and the registry page (HTML and JSON
built from database queries) need nothing more than answering ``GET``. So this is a small server
on :func:`asyncio.start_server` (no framework, no new dependency): one request per connection, a
bounded request head, a read deadline, no directory listings, and no path outside a static
directory (:func:`static_file`). What each page serves is its own ``resolve`` coroutine.

Why not ``http.server``: it is a thread per request and its ``SimpleHTTPRequestHandler`` lists
directories and follows symlinks; this is fewer lines than locking it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

__all__ = [
    "MAX_REQUEST_HEAD",
    "READ_TIMEOUT_S",
    "GetServer",
    "Reply",
    "listen_url",
    "not_found",
    "static_file",
]

log = structlog.get_logger("vitalwatch.http")

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


@dataclass(frozen=True, slots=True)
class Reply:
    """What one request gets: status line text (``200 OK``), body and content type."""

    status: str
    body: bytes
    content_type: str


def not_found() -> Reply:
    return Reply("404 Not Found", b"not found\n", "text/plain")


def static_file(static_dir: Path, path: str) -> Reply:
    """The file ``path`` (URL path, ``/`` is ``/index.html``) of ``static_dir``; never one outside it.

    ``static_dir`` must be resolved already (symlinks followed once, at start).
    """
    if path == "/":
        path = "/index.html"
    if not path.startswith("/") or "\\" in path or "\x00" in path:
        return Reply("400 Bad Request", b"bad path\n", "text/plain")
    candidate = (static_dir / path.lstrip("/")).resolve()
    if not candidate.is_relative_to(static_dir) or not candidate.is_file():
        return not_found()
    ctype = (
        _TYPES.get(candidate.suffix) or mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
    )
    return Reply("200 OK", candidate.read_bytes(), ctype)


def _response(reply: Reply, csp: str, *, head: bool = False) -> bytes:
    headers = [
        f"HTTP/1.1 {reply.status}",
        f"Content-Type: {reply.content_type}",
        f"Content-Length: {len(reply.body)}",
        # Always fresh: after an upgrade a browser must not run old JS against a new contract,
        # and a page of figures must not show yesterday's.
        "Cache-Control: no-cache",
        "X-Content-Type-Options: nosniff",
        "Referrer-Policy: no-referrer",
        f"Content-Security-Policy: {csp}",
        "Connection: close",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + (b"" if head else reply.body)


Resolver = Callable[[str], Awaitable[Reply]]


class GetServer:
    """Answers ``GET``/``HEAD`` on one listening socket with ``resolve(request target)``.

    ``csp`` is the page's Content-Security-Policy. A ``resolve`` that raises gets a 500 (logged
    with the exception's type only), never a dropped server.
    """

    def __init__(self, resolve: Resolver, *, csp: str, name: str) -> None:
        self._resolve = resolve
        self._csp = csp
        self._log = log.bind(server=name)
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST_HEAD)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _reply(self, method: str, target: str) -> Reply:
        if method not in ("GET", "HEAD"):
            return Reply("405 Method Not Allowed", b"GET only\n", "text/plain")
        try:
            return await self._resolve(target)
        except Exception as exc:  # one bad request costs that request, not the server
            self._log.error("http.resolve_failed", error=type(exc).__name__)
            return Reply("500 Internal Server Error", b"internal error\n", "text/plain")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            words = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(words) != 3 or not words[2].startswith("HTTP/1."):
                reply, method = Reply("400 Bad Request", b"bad request\n", "text/plain"), "GET"
            else:
                method = words[0]
                reply = await self._reply(method, words[1])
            writer.write(_response(reply, self._csp, head=method == "HEAD"))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            self._log.debug("http.dropped", error=type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def listen_url(host: str, port: int) -> str:
    """The address a person opens (IPv6 literals in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"
