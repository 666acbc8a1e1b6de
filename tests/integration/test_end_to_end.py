"""The walking skeleton end to end: simulated Rad-8 on a pty, the daemon, real Mosquitto, a nurse client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.helpers import start_daemon_process as start_daemon
from tests.helpers import write_daemon_toml as write_config
from vitalwatch.config import Config, parse_config
from vitalwatch.ops.daemon import Daemon
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto

pytestmark = pytest.mark.mqtt

SITE = "clinic-e2e"
BED = "chair-7"
# The scenario runs 4x faster than the wall clock; the SpO2 sustain is shortened to match,
# so the alarm path is exercised in seconds instead of a minute.
SPEED = 4.0


def config_for(broker: Mosquitto, device_url: str, state: Path) -> dict[str, Any]:
    return {
        "site": SITE,
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "heartbeat_s": 1.0, "keepalive_s": 5},
        "state": {"directory": str(state)},
        "alarms": {"table": "default", "rules": {"spo2_low_high": {"sustain_s": 2.0}}},
        "beds": [{"id": BED, "devices": [{"id": "oximeter", "driver": "masimo", "url": device_url}]}],
    }


@pytest.mark.asyncio
async def test_desaturation_reaches_a_nurse_as_a_high_alert(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """SpO2 falling below 90 % on the simulated monitor arrives as a HIGH spo2_low alert with its fields."""
    story = get_scenario("desaturation")
    async with serve_pty(make_simulator("masimo", story), speed=SPEED) as endpoint:
        config: Config = parse_config(config_for(mosquitto, endpoint.url, tmp_path))
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="nurse-phone") as nurse:
            await nurse.subscribe(f"vitalwatch/v1/{SITE}/{BED}/alerts", qos=1)
            daemon = Daemon(config)
            runner = asyncio.create_task(daemon.run())
            loop = asyncio.get_running_loop()
            daemon.beds[BED].set_phase("infusion", loop.time())  # the scenario's desaturation is mid-infusion
            try:
                alert: dict[str, Any] | None = None
                async with asyncio.timeout(60):
                    async for message in nurse.messages:
                        payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                        if payload["condition"] == "spo2_low" and payload["state"] == "raised":
                            alert = payload
                            break
            finally:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
    assert alert is not None
    assert alert["schema"] == "vitalwatch.alert/1"
    assert alert["bed"] == BED and alert["site"] == SITE
    assert alert["priority"] == "high"
    assert alert["category"] == "physiological"
    assert alert["parameter"] == {"name": "spo2", "mdc": 150456}
    assert alert["unit"] == "%"
    assert alert["limit"] == 90
    assert alert["value"] < 90
    assert alert["phase"] == "infusion"
    assert alert["alert_id"] and alert["seq"] >= 1
    assert alert["onset_utc"].endswith("Z") and alert["sent_utc"].endswith("Z")
    assert "SpO2" in alert["message"]


async def wait_status(client: aiomqtt.Client, state: str, within_s: float) -> dict[str, Any]:
    async with asyncio.timeout(within_s):
        async for message in client.messages:
            body = bytes(message.payload)  # type: ignore[arg-type]
            if body:
                payload: dict[str, Any] = json.loads(body)
                if payload.get("state") == state:
                    return payload
    raise AssertionError("unreachable")


@pytest.mark.asyncio
async def test_run_sigterm_exits_cleanly_and_says_offline(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """`vitalwatch run` publishes a retained online status, and on SIGTERM says offline and exits 0."""
    story = get_scenario("normal")
    async with serve_pty(make_simulator("masimo", story), speed=1.0) as endpoint:
        config = write_config(tmp_path / "vw.toml", config_for(mosquitto, endpoint.url, tmp_path))
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="station") as station:
            await station.subscribe(f"vitalwatch/v1/{SITE}/{BED}/status", qos=1)
            proc = await start_daemon(config)
            try:
                online = await wait_status(station, "online", 20)
                assert online["bed"] == BED and online["version"]
                # The link to the simulated monitor comes up and is reported in the heartbeat.
                async with asyncio.timeout(15):
                    while (await wait_status(station, "online", 5))["links"].get("oximeter") != "up":
                        pass
                proc.send_signal(signal.SIGTERM)
                offline = await wait_status(station, "offline", 15)
                assert offline["bed"] == BED
                assert await asyncio.wait_for(proc.wait(), 15) == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    _, stderr = await proc.communicate()
    assert b"Traceback" not in stderr


@pytest.mark.asyncio
async def test_killed_daemon_is_announced_offline_by_its_will(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """SIGKILL gives no chance to say goodbye: the broker publishes the retained last will `offline`."""
    story = get_scenario("normal")
    async with serve_pty(make_simulator("masimo", story), speed=1.0) as endpoint:
        config = write_config(tmp_path / "vw.toml", config_for(mosquitto, endpoint.url, tmp_path))
        proc = await start_daemon(config)
        try:
            async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="station") as station:
                await station.subscribe(f"vitalwatch/v1/{SITE}/{BED}/status", qos=1)
                await wait_status(station, "online", 20)
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
                # The will fires after about 1.5 x keepalive (5 s here).
                offline = await wait_status(station, "offline", 20)
                assert offline["bed"] == BED
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
