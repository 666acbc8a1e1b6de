"""The demo: a simulated Rad-8 on a pseudo-terminal, a broker, the daemon, and a nurse's view.

Everything runs in one process so ``make demo`` needs nothing but the Python packages: an
embedded amqtt broker stands in for Mosquitto unless ``--broker`` names a real one. The
subscriber is an ordinary MQTT client, so what it prints is exactly what a nurse's phone
would receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiomqtt

from vitalwatch.config import Config, parse_config
from vitalwatch.ops.daemon import Daemon
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.station.embedded_ws import amqtt_ws_listener, demo_station
from vitalwatch.station.nurse_view import format_alert
from vitalwatch.testing import free_port

__all__ = ["demo_config", "run_demo"]

SITE = "demo-clinic"
BED = "chair-1"


def parse_broker(url: str) -> tuple[str, int]:
    """``mqtt://HOST:PORT`` -> (host, port); ValueError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"--broker must look like mqtt://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port or 1883


def _port_free(port: int) -> bool:
    """The station's well-known port, unless something else already listens there."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def demo_config(host: str, port: int, device_url: str, state_dir: Path) -> Config:
    """The daemon's configuration for the demo: one chair with one Masimo Rad-8."""
    return parse_config(
        {
            "site": SITE,
            "mqtt": {"host": host, "port": port, "heartbeat_s": 5.0},
            "logging": {"level": "warning"},
            "state": {"directory": str(state_dir)},
            "beds": [{"id": BED, "devices": [{"id": "oximeter", "driver": "masimo", "url": device_url}]}],
        }
    )


@contextlib.asynccontextmanager
async def embedded_broker(port: int, ws_port: int) -> AsyncIterator[None]:
    """An amqtt broker on loopback for the demo only (tests use a real Mosquitto)."""
    from amqtt.broker import Broker

    broker = Broker(
        {
            "listeners": {
                "default": {"type": "tcp", "bind": f"127.0.0.1:{port}"},
                "ws": amqtt_ws_listener(ws_port),  # the nurse station page speaks MQTT over WebSockets
            },
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    try:
        yield
    finally:
        await broker.shutdown()


async def nurse_view(host: str, port: int, out: TextIO, ready: asyncio.Event) -> None:
    """Print every alert transition as a nurse reads it."""
    async with aiomqtt.Client(host, port, identifier=None) as client:
        await client.subscribe(f"vitalwatch/v1/{SITE}/+/alerts", qos=1)
        ready.set()
        async for message in client.messages:
            payload: dict[str, Any] = json.loads(bytes(message.payload))
            print(format_alert(payload), file=out, flush=True)


async def _follow_phases(daemon: Daemon, phases: tuple[tuple[float, str], ...], speed: float) -> None:
    """Enter the scenario's phase changes as a nurse would, at scenario time."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    session = daemon.beds[BED]
    for at, phase in phases:
        await asyncio.sleep(max(0.0, start + at / speed - loop.time()))
        if phase != session.engine.phase:
            session.set_phase(phase, loop.time())
            print(f"-- nurse sets phase: {phase}", flush=True)


async def run_demo(
    *,
    duration: float,
    speed: float,
    broker: str | None,
    scenario: str = "desaturation",
    station_port: int = 8080,
    out: TextIO = sys.stdout,
) -> int:
    """Run the whole chain for ``duration`` wall seconds."""
    station_port = station_port if _port_free(station_port) else 0
    host, port = parse_broker(broker) if broker else ("127.0.0.1", free_port())
    story = get_scenario(scenario)
    sim = make_simulator("masimo", story)
    with tempfile.TemporaryDirectory(prefix="vitalwatch-demo-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            if broker is None:
                ws_port = free_port()
                await stack.enter_async_context(embedded_broker(port, ws_port))
                print(
                    f"embedded MQTT broker on mqtt://{host}:{port} (WebSockets on {ws_port})",
                    file=out,
                    flush=True,
                )
                await stack.enter_async_context(
                    demo_station(site=SITE, ws_url=f"ws://127.0.0.1:{ws_port}/", out=out, port=station_port)
                )
            endpoint = await stack.enter_async_context(serve_pty(sim, speed=speed))
            print(f"simulated Masimo Rad-8 ({scenario}) on {endpoint.url}", file=out, flush=True)
            daemon = Daemon(demo_config(host, port, endpoint.url, Path(tmp)))
            ready = asyncio.Event()
            tasks = [
                asyncio.create_task(nurse_view(host, port, out, ready), name="nurse-view"),
            ]
            await asyncio.wait_for(ready.wait(), 10)
            tasks.append(asyncio.create_task(daemon.run(), name="daemon"))
            tasks.append(asyncio.create_task(_follow_phases(daemon, story.phases, speed), name="phases"))
            print(f"daemon running; alerts for site {SITE} follow (demo ends after {duration:g} s)", file=out)
            try:
                await asyncio.sleep(duration)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    print("demo finished", file=out, flush=True)
    return 0
