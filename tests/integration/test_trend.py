"""The retained trend with a real Mosquitto: a subscriber that arrives late gets it at once.

The daemon reads a simulated Rad-8 on a pty; once data has flowed, a subscriber connects and the
broker hands it the retained ``.../trend`` (latest SpO2 and pulse, a line of points). The daemon
stops, the broker's copy is emptied (a broker restarted without persistence), and a new daemon
starts on the same state directory with the monitor silent: what a second late subscriber gets
can only come from the session record the first daemon wrote (``device`` null).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.helpers import wait_until
from vitalwatch.config import Config, parse_config
from vitalwatch.ops.daemon import Daemon
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto

pytestmark = pytest.mark.mqtt

SITE, BED = "clinic-t", "chair-1"
TOPIC = f"vitalwatch/v1/{SITE}/{BED}/trend"


async def late_subscriber(port: int, name: str, within_s: float = 5.0) -> tuple[bool, dict[str, Any]]:
    """Connect now, subscribe, and return the first trend message: (retain flag, document)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=name) as client:
        await client.subscribe(TOPIC, qos=1)
        async with asyncio.timeout(within_s):
            async for message in client.messages:
                body = bytes(message.payload)  # type: ignore[arg-type]
                if body:
                    return bool(message.retain), json.loads(body)
    raise AssertionError("no trend")


async def retained_trend(port: int) -> bool:
    """Whether the broker holds a non-empty retained trend for the bed right now."""
    try:
        retain, _ = await late_subscriber(port, "probe", within_s=0.5)  # a stored copy comes at once
    except TimeoutError:
        return False
    return retain


async def late_subscriber_while_running(config: Config, port: int, name: str) -> tuple[bool, dict[str, Any]]:
    """Run a daemon until the broker holds its retained trend, then subscribe late (as ``name``)."""
    runner = asyncio.create_task(Daemon(config).run())
    try:
        await wait_until(lambda: retained_trend(port), 10, "a retained trend on the broker")
        return await late_subscriber(port, name)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


@pytest.mark.asyncio
async def test_a_late_subscriber_gets_the_retained_trend_live_and_after_a_restart(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with serve_pty(make_simulator("masimo", get_scenario("normal")), speed=1.0) as endpoint:
        config = parse_config({
            "site": SITE,
            "mqtt": {"port": mosquitto.port, "heartbeat_s": 0.5, "keepalive_s": 5, "client_id": "vw"},
            "logging": {"level": "warning"},
            "state": {"directory": str(tmp_path / "state")},
            "beds": [{"id": BED, "devices": [{"id": "oximeter", "driver": "masimo", "url": endpoint.url}]}],
        })  # fmt: skip
        # The data has flowed; then a station arrives.
        retain, live = await late_subscriber_while_running(config, mosquitto.port, "station-1")
    assert retain  # the broker's stored copy, delivered at subscribe
    assert {"spo2", "pulse_rate"} <= set(live["latest"]) and live["series"]["spo2"]
    assert "oximeter" == live["latest"]["spo2"]["device"] and 90 <= live["latest"]["spo2"]["value"] <= 100
    assert (SITE, BED) == (live["site"], live["bed"])

    # A broker that lost its retained store; then a new daemon with the monitor silent.
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="admin") as admin:
        await admin.publish(TOPIC, b"", qos=1, retain=True)
    assert not await retained_trend(mosquitto.port)
    retain, seeded = await late_subscriber_while_running(config, mosquitto.port, "station-2")
    assert retain
    assert {"spo2", "pulse_rate"} <= set(seeded["latest"]) and seeded["series"]["spo2"]
    assert seeded["latest"]["spo2"]["device"] is None  # read back from the session record
    assert 90 <= seeded["latest"]["spo2"]["value"] <= 100
