"""The registry page's web server: ``/`` (HTML), ``/summary.json`` (the same numbers) and its CSS.

Served by ``vitalwatch registry`` itself (or by ``vitalwatch registry page`` alone, e.g. against
a read replica) on the minimal ``GET`` server of :mod:`vitalwatch.http_get`, on loopback unless
told otherwise: it has no login of its own, so anything beyond the server itself goes through a
reverse proxy with TLS and authentication (docs/registry.md). The page reads the database on its
own connection, one query set at a time in a worker thread, so the registry's ingest and its
receipts never wait for a page.

Query: ``site`` (one clinic; ``*`` or ``by=site``: every clinic side by side; none: the region
as a whole), ``since`` and ``until`` (YYYY-MM). Anything else in them is a 400 naming the
parameter, never a guess.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from vitalwatch import strict_json
from vitalwatch.http_get import GetServer, Reply, not_found, static_file
from vitalwatch.registry.database import RegistryDb, open_registry
from vitalwatch.registry.figures import THRESHOLDS, Scope, figures, sites
from vitalwatch.registry.page import render_page

__all__ = ["FIGURES_SCHEMA", "RegistryPage", "parse_scope", "serve_registry_page"]

FIGURES_SCHEMA = "vitalwatch.registry_figures/1"
STATIC_DIR = Path(__file__).parent / "static"
# No script at all; styles from here; the form submits to this server only.
_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none';"
    " frame-ancestors 'none'"
)


def _bad(text: str) -> Reply:
    return Reply("400 Bad Request", (text + "\n").encode(), "text/plain; charset=utf-8")


def parse_scope(query: str) -> Scope:
    """The scope a query string asks for; ValueError naming the parameter that does not hold."""
    params = parse_qs(query, keep_blank_values=True)
    for name, values in params.items():
        if name not in ("site", "by", "since", "until"):
            raise ValueError(f"unknown parameter {name!r}")
        if len(values) > 1:
            raise ValueError(f"parameter {name!r} given more than once")
    one = {k: v[0] for k, v in params.items()}
    site = one.get("site") or None
    by = one.get("by") or None
    if by not in (None, "site"):
        raise ValueError("by must be 'site'")
    by_site = site == "*" or by == "site"
    return Scope(
        site=None if site == "*" else site,
        by_site=by_site and site in (None, "*"),
        since=one.get("since") or None,
        until=one.get("until") or None,
    )


class RegistryPage:
    """Serves the registry page from the database at ``url``, on a connection of its own (not the
    ingest's), opened at the first request and opened again after one that failed (a PostgreSQL
    restart, a dropped idle connection): that request gets a 500, the next one a fresh connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._db: RegistryDb | None = None
        self.static_dir = STATIC_DIR.resolve()
        self._lock = asyncio.Lock()  # one query set at a time on the page's connection
        self._http = GetServer(self._resolve, csp=_CSP, name="registry")

    @property
    def port(self) -> int:
        return self._http.port

    async def start(self, host: str = "127.0.0.1", port: int = 8090) -> None:
        await self._http.start(host, port)

    async def close(self) -> None:
        await self._http.close()
        async with self._lock:
            self._forget()

    def _forget(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None

    def _read(self, scope: Scope, as_json: bool) -> bytes:
        if self._db is None:
            self._db = open_registry(self.url)
        try:
            rows = figures(self._db, scope)
            known = sites(self._db)
        except Exception:
            self._forget()
            raise
        if not as_json:
            return render_page(scope, rows, known).encode()
        doc = {
            "schema": FIGURES_SCHEMA,
            "scope": {
                "site": scope.site,
                "by_site": scope.by_site,
                "since": scope.since,
                "until": scope.until,
            },
            "thresholds": THRESHOLDS,
            "sites": known,
            "rows": [r.as_json() for r in rows],
        }
        return strict_json.dumps(doc, what="registry_figures", separators=(",", ":")).encode()

    async def _resolve(self, target: str) -> Reply:
        parts = urlsplit(target)
        if parts.path == "/registry.css":
            return static_file(self.static_dir, parts.path)
        if parts.path not in ("/", "/index.html", "/summary.json"):
            return not_found()
        try:
            scope = parse_scope(parts.query)
        except ValueError as exc:
            return _bad(str(exc))
        as_json = parts.path == "/summary.json"
        async with self._lock:
            body = await asyncio.to_thread(self._read, scope, as_json)
        return Reply("200 OK", body, "application/json" if as_json else "text/html; charset=utf-8")


@contextlib.asynccontextmanager
async def serve_registry_page(
    url: str, host: str = "127.0.0.1", port: int = 8090
) -> AsyncIterator[RegistryPage]:
    """Serve the page of the database at ``url`` for the duration of the block (``port=0``: any
    free port)."""
    page = RegistryPage(url)
    await page.start(host, port)
    try:
        yield page
    finally:
        await page.close()
