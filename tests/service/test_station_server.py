"""The station's web server: serves its static files and config.json, and nothing else."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import http_request as request
from vitalwatch.engine.outputs import Priority
from vitalwatch.station import StationConfig, serve_station
from vitalwatch.station.server import STATIC_DIR


@pytest.mark.asyncio
async def test_serves_page_and_config_but_not_outside_the_static_dir() -> None:
    """index.html and config.json are served; traversal, other methods and garbage are refused."""
    cfg = StationConfig(site="clinic-a", broker_ws="wss://broker.example:8885/", username="station-web")
    async with serve_station(cfg, port=0) as server:
        status, headers, body = await request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert "HTTP/1.1 200 OK" == status and b"station.js" in body
        assert headers["Content-Type"].startswith("text/html") and "no-cache" == headers["Cache-Control"]
        status, _, body = await request(server.port, b"GET /config.json HTTP/1.1\r\n\r\n")
        config = json.loads(body)
        assert ("clinic-a", "wss://broker.example:8885/", "station-web") == (
            config["site"], config["broker_ws"], config["username"]
        )  # fmt: skip
        assert "password" not in config
        for target in (b"/../server.py", b"/%2e%2e/server.py", b"/vendor/../../server.py", b"/nope.js"):
            status, _, _ = await request(server.port, b"GET " + target + b" HTTP/1.1\r\n\r\n")
            assert status in ("HTTP/1.1 404 Not Found", "HTTP/1.1 400 Bad Request"), target
        status, _, body = await request(server.port, b"HEAD /station.js HTTP/1.1\r\n\r\n")
        assert "HTTP/1.1 200 OK" == status and b"" == body
        status, _, _ = await request(server.port, b"POST / HTTP/1.1\r\n\r\n")
        assert "HTTP/1.1 405 Method Not Allowed" == status
        status, _, _ = await request(server.port, b"garbage\r\n\r\n")
        assert "HTTP/1.1 400 Bad Request" == status


def test_config_refuses_what_the_page_could_not_use() -> None:
    """A site that is not one topic level, or a non-WebSocket broker URL, is a ValueError."""
    for bad in (
        {"site": "a/b"},
        {"site": "a", "broker_ws": "mqtt://x:1883"},
        {"site": "a", "heartbeat_s": 0},
    ):
        with pytest.raises(ValueError):
            StationConfig(**bad)  # type: ignore[arg-type]


def test_station_page_ranks_priorities_like_the_gateway() -> None:
    """station.js keeps a copy of the priority ranks (to sort alarms): they must equal Priority.rank."""
    source = (STATIC_DIR / "station.js").read_text(encoding="utf-8")
    table = re.search(r"const RANK = \{([^}]*)\};", source)
    assert table is not None, "station.js no longer declares its RANK table"
    ranks = {name: int(rank) for name, rank in re.findall(r"(\w+):\s*(-?\d+)", table.group(1))}
    assert {p.value: p.rank for p in Priority} == ranks
