"""A sensor-off from a driver that was replaced must not keep the oximeter's SpO2 invalid for good.

Real daemon, real Mosquitto, a simulated Masimo on a real pty running the ``probe_off`` scenario
(probe off 400-460 s). The Masimo driver here has a bug that fires on every frame while the probe
is off, once it has reported the probe off: the link's guard drops it, raises ``driver_fault``
and keeps building fresh drivers. The first one that survives starts after the probe is back on,
so it never reports ``sensor_off`` (on or off): it only sends values. The engine must carry the
old driver's ``sensor_off`` over, drop it once the fresh driver has sent its data for a few
seconds without it, and count SpO2 valid again; a nurse's station sees that in the vitals topic.
Before the fix the status stayed on, and the vitals stayed invalid, until the probe came off again.
"""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any, ClassVar

import aiomqtt
import pytest

from vitalwatch.config import parse_config
from vitalwatch.drivers import Event, make_driver
from vitalwatch.drivers.events import DeviceStatus
from vitalwatch.drivers.masimo import MasimoDriver
from vitalwatch.link import device_link, guarded
from vitalwatch.link.driver_guard import DriverGuard
from vitalwatch.ops.daemon import Daemon
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto

pytestmark = pytest.mark.mqtt

SITE = "clinic-restart"
SPEED = 10.0  # scenario seconds per second: the probe is off for 6 s of the test
START = 396.0  # scenario time at the start: probe off 0.4 s in, back on 6.4 s in


class FaultsWhileProbeOff(MasimoDriver):
    """Reports the probe off once, then raises on every frame while the probe stays off."""

    armed: ClassVar[bool] = False
    faults: ClassVar[int] = 0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.probe_off = False

    def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
        events = super().feed(data, now)
        for event in events:
            if isinstance(event, DeviceStatus) and event.code == "sensor_off":
                self.probe_off = event.active
        if self.probe_off and FaultsWhileProbeOff.armed:
            FaultsWhileProbeOff.faults += 1
            raise IndexError("a bug that fires while the probe is off")
        if self.probe_off:
            FaultsWhileProbeOff.armed = True  # the engine hears "sensor_off" from this one
        return events


@pytest.mark.asyncio
async def test_a_sensor_off_from_a_replaced_driver_ends_when_the_fresh_driver_sends_values(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        device_link,
        "make_driver",
        lambda name, **options: FaultsWhileProbeOff(**options) if name == "masimo" else make_driver(name),
    )
    # Restart a faulted driver after 0.2 s, not 1 s doubling to 60 s, so the test takes seconds.
    monkeypatch.setattr(
        guarded, "DriverGuard", functools.partial(DriverGuard, first_backoff_s=0.2, max_backoff_s=0.2)
    )
    FaultsWhileProbeOff.armed = False
    FaultsWhileProbeOff.faults = 0
    async with serve_pty(
        make_simulator("masimo", get_scenario("probe_off")), speed=SPEED, start_at=START
    ) as oximeter:
        config = parse_config(
            {
                "site": SITE,
                "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "heartbeat_s": 1.0, "keepalive_s": 5},
                "state": {"directory": str(tmp_path)},
                "beds": [
                    {
                        "id": "chair-1",
                        "devices": [{"id": "oximeter", "driver": "masimo", "url": oximeter.url}],
                    }
                ],
            }
        )
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="station") as station:
            await station.subscribe(f"vitalwatch/v1/{SITE}/chair-1/vitals/spo2", qos=0)
            await station.subscribe(f"vitalwatch/v1/{SITE}/chair-1/alerts", qos=1)
            daemon = Daemon(config)
            runner = asyncio.create_task(daemon.run())
            qualities: list[str] = []
            fault_cleared = False
            try:
                async with asyncio.timeout(30):
                    async for message in station.messages:
                        payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                        if message.topic.matches("+/+/+/+/alerts"):
                            if payload["condition"] == "driver_fault" and payload["state"] == "cleared":
                                fault_cleared = True
                            continue
                        qualities.append(payload["quality"])
                        if fault_cleared and payload["quality"] == "valid" and payload["value"] is not None:
                            break
            finally:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
    assert FaultsWhileProbeOff.faults >= 2, "the bug never fired: nothing was tested"
    assert "invalid" in qualities, "the probe-off spell never showed as invalid"
