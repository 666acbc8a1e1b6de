"""The registry page's web server: the query it accepts, what it refuses, and what it never echoes raw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import http_request
from vitalwatch.record.export import SCHEMA
from vitalwatch.registry.database import RegistryDb, open_registry
from vitalwatch.registry.figures import Scope
from vitalwatch.registry.web import parse_scope, serve_registry_page
from vitalwatch.registry.wire import RecordMessage
from vitalwatch.testing import PostgreSQL


async def get(port: int, target: str, method: str = "GET") -> tuple[str, dict[str, str], bytes]:
    return await http_request(port, f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def store_one(registry: RegistryDb) -> None:
    """One record of clinic-a, March, whose alarm conditions are markup."""
    registry.migrate()
    hostile = '<script>alert("x")</script>'
    row = {
        "schema": SCHEMA, "record_id": "r1", "dose_mg_per_kg": 0.5, "min_spo2": 88,
        "alarms": {hostile: {"high": 1, "<b>odd</b>": 2}, "spo2_low": {"high": 1}},
    }  # fmt: skip
    registry.add_batch([RecordMessage("r1", "clinic-a", "chair-1", "2026-03", row)])


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = str(tmp_path / "registry.sqlite3")
    registry = open_registry(url)
    try:
        store_one(registry)
    finally:
        registry.close()
    return url


def test_the_query_names_a_clinic_every_clinic_or_the_region() -> None:
    assert Scope() == parse_scope("")
    assert Scope(site="clinic-a", since="2026-01") == parse_scope("site=clinic-a&since=2026-01&until=")
    assert Scope(by_site=True) == parse_scope("site=*") == parse_scope("by=site")
    for bad in ("site=a/b", "since=2026-1", "until=soon", "by=bed", "x=1", "site=a&site=b"):
        with pytest.raises(ValueError):
            parse_scope(bad)


@pytest.mark.asyncio
async def test_page_json_and_css_are_served_and_nothing_else(db: str) -> None:
    async with serve_registry_page(db, port=0) as page:
        status, headers, body = await get(page.port, "/?site=clinic-a")
        assert "HTTP/1.1 200 OK" == status and headers["Content-Type"].startswith("text/html")
        assert "script-src" not in headers["Content-Security-Policy"]
        assert b'id="plot-sessions"' in body and b'data-col="spo2">100.0 % (1/1)' in body
        status, headers, body = await get(page.port, "/summary.json?site=clinic-a")
        doc = json.loads(body)
        assert ("vitalwatch.registry_figures/1", ["clinic-a"]) == (doc["schema"], doc["sites"])
        assert [("clinic-a", "2026-03", 1)] == [(r["site"], r["month"], r["sessions"]) for r in doc["rows"]]
        status, headers, _ = await get(page.port, "/registry.css")
        assert "HTTP/1.1 200 OK" == status and headers["Content-Type"].startswith("text/css")
        sql = "/migrations/sqlite/0001_session_records.sql"
        for target in ("/../database.py", "/static/registry.css", sql):
            assert "HTTP/1.1 404 Not Found" == (await get(page.port, target))[0], target
        status, _, body = await get(page.port, "/summary.json?site=../../etc")
        assert "HTTP/1.1 400 Bad Request" == status and b"site" in body
        assert "HTTP/1.1 405 Method Not Allowed" == (await get(page.port, "/", "POST"))[0]
        status, _, body = await get(page.port, "/", "HEAD")
        assert "HTTP/1.1 200 OK" == status and b"" == body


@pytest.mark.asyncio
async def test_a_hostile_condition_name_from_a_record_is_shown_as_text(db: str) -> None:
    async with serve_registry_page(db, port=0) as page:
        _, _, body = await get(page.port, "/?site=clinic-a")
    assert b"<script>" not in body and b"<b>odd</b>" not in body
    assert b"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body


def test_registry_page_refuses_a_database_it_cannot_serve(tmp_path: Path) -> None:
    def page(url: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "vitalwatch", "registry", "page", "--db", url]
        argv += ["--listen", "127.0.0.1:0"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    missing = page(str(tmp_path / "none.sqlite3"))
    assert 2 == missing.returncode and "no database at" in missing.stderr
    assert not (tmp_path / "none.sqlite3").exists()
    old = open_registry(str(tmp_path / "old.sqlite3"))
    old.close()  # schema version 0: never migrated
    stale = page(str(tmp_path / "old.sqlite3"))
    assert 2 == stale.returncode and "schema version 0" in stale.stderr


@pytest.mark.asyncio
async def test_the_page_opens_its_database_again_after_losing_it(postgresql: PostgreSQL) -> None:
    """A dropped connection (here: terminated by the server) costs one request a 500, not the page."""
    url = postgresql.create_database("registry_page_reconnect")
    admin = open_registry(url)
    try:
        store_one(admin)
        async with serve_registry_page(url, port=0) as page:
            assert "HTTP/1.1 200 OK" == (await get(page.port, "/summary.json"))[0]
            admin.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            statuses = [(await get(page.port, "/summary.json"))[0] for _ in range(2)]
    finally:
        admin.close()
    assert ["HTTP/1.1 500 Internal Server Error", "HTTP/1.1 200 OK"] == statuses
