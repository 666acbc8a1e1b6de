"""What the nurse station's browser tests share: Chromium and playwright-core, Mosquitto with a
WebSockets listener, where screenshots go, and running a Node script of browser/ that drives the page.

The fixtures are registered for tests/integration by its conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from vitalwatch.config import Config, parse_config
from vitalwatch.station import StationConfig, serve_station
from vitalwatch.station.server import StationServer
from vitalwatch.testing import Mosquitto, free_port

__all__ = [
    "browser_setup",
    "daemon_config",
    "drive",
    "open_station",
    "screenshot_dir",
    "start_watching",
    "ws_mosquitto",
]

HERE = Path(__file__).parent
BROWSER = HERE / "browser"
ENSURE = HERE.parents[1] / "scripts" / "ensure-browser.sh"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_ready() -> bool:
    return bool(
        chromium_path() and shutil.which("node") and (BROWSER / "node_modules" / "playwright-core").is_dir()
    )


@pytest.fixture(scope="module")
def browser_setup() -> str:
    """Chromium and playwright-core, installed by scripts/ensure-browser.sh when missing (as root)."""
    if not browser_ready():
        done = subprocess.run([str(ENSURE)], check=False, capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not browser_ready():
            # A failure, not a skip: the station's browser test must run to count.
            pytest.fail(f"no browser for the station test: {done.stderr.strip()[-300:]}")
    path = chromium_path()
    assert path is not None
    return path


@pytest.fixture
def ws_mosquitto(tmp_path: Path) -> Any:
    """Mosquitto with a plain MQTT listener and a WebSockets one on loopback.

    Mosquitto 2.0.x hands a websockets listener's address to libwebsockets as an interface name
    (an IP address binds every interface), so loopback is ``lo``; and it will not start with only a
    websockets listener, which the plain one also covers.
    """
    ws_port = free_port()
    broker = Mosquitto(workdir=tmp_path, extra_config=f"listener {ws_port} lo\nprotocol websockets\n")
    broker.start()
    try:
        yield broker, ws_port
    finally:
        broker.stop()


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    """docs/img when VITALWATCH_SCREENSHOTS says so (absolute: drive.mjs runs in browser/), else tmp."""
    shots = Path(os.environ.get("VITALWATCH_SCREENSHOTS") or tmp_path).absolute()
    shots.mkdir(parents=True, exist_ok=True)
    return shots


async def drive(
    options: dict[str, Any], on_event: Any = None, *, script: str = "drive.mjs", timeout_s: float = 75
) -> tuple[int, dict[str, dict[str, Any]], str]:
    """Run a script of browser/ with Node; its events by name, and stderr for the failure message."""
    proc = await asyncio.create_subprocess_exec(
        "node", str(BROWSER / script), json.dumps(options),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=BROWSER,
    )  # fmt: skip
    events: dict[str, dict[str, Any]] = {}
    try:
        async with asyncio.timeout(timeout_s):
            assert proc.stdout is not None
            async for line in proc.stdout:
                event = json.loads(line)
                events[event["event"]] = event
                if on_event is not None:
                    on_event(event)
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    return proc.returncode or 0, events, stderr


def daemon_config(
    site: str, broker_port: int, state: Path, *, alarms: dict[str, Any], beds: list[dict[str, Any]]
) -> Config:
    """A daemon on the test broker with 1 s heartbeats, so "gateway silent" comes within seconds."""
    return parse_config({
        "site": site,
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "heartbeat_s": 1.0, "keepalive_s": 5},
        "state": {"directory": str(state)},
        "alarms": alarms,
        "beds": beds,
    })  # fmt: skip


async def open_station(stack: contextlib.AsyncExitStack, site: str, ws_port: int) -> StationServer:
    """The station's web server for ``site``, pointing the page at the broker's WebSockets listener."""
    config = StationConfig(site=site, broker_ws=f"ws://127.0.0.1:{ws_port}/", heartbeat_s=1.0)
    return await stack.enter_async_context(serve_station(config, port=0))


Watcher = Callable[[int, list[dict[str, Any]], asyncio.Event], Coroutine[Any, Any, None]]


async def start_watching(
    watcher: Watcher, broker_port: int, seen: list[dict[str, Any]]
) -> asyncio.Task[None]:
    """Run a test's MQTT subscriber; return once it has subscribed, so it misses nothing the page sends."""
    ready = asyncio.Event()
    task = asyncio.create_task(watcher(broker_port, seen, ready))
    await asyncio.wait_for(ready.wait(), 10)
    return task
