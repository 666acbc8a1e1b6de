"""Networked monitors end to end: simulated PCD-01 monitors connect to the daemon's MLLP listener over
loopback TCP, the daemon routes them to their beds, a nurse client on a real Mosquitto sees their
vitals (respiratory rate included), their link state in the status, and ``link_lost`` when one stops.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from vitalwatch.config import parse_config
from vitalwatch.continuity.recording import replay_recording
from vitalwatch.engine.outputs import AlertTransition
from vitalwatch.ops.daemon import Daemon
from vitalwatch.simulators.endpoint import connect_tcp
from vitalwatch.simulators.hl7 import Hl7Simulator
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto, free_port

pytestmark = pytest.mark.mqtt

SITE = "clinic-net"
EUI_CHAIR_1 = "00A0C9FFFE0000A1"
LINK_LOST_AFTER_S = 2.0


def config_for(broker: Mosquitto, port: int, state: Path) -> dict[str, Any]:
    url = f"mllp://127.0.0.1:{port}"
    return {
        "site": SITE,
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "heartbeat_s": 0.5, "keepalive_s": 5},
        "state": {"directory": str(state)},
        "alarms": {"table": "default", "rules": {"link_lost": {"after_s": LINK_LOST_AFTER_S}}},
        "beds": [
            {
                "id": "chair-1",
                "devices": [{"id": "monitor", "driver": "hl7", "url": url, "eui64": EUI_CHAIR_1}],
            },
            {
                "id": "chair-2",
                "devices": [{"id": "monitor", "driver": "hl7", "url": url, "location": "CHAIRS^^2"}],
            },
        ],
    }


def monitor(eui64: str, location: str, seed: int) -> Hl7Simulator:
    return Hl7Simulator(
        get_scenario("normal", seed), seed=seed, eui64=eui64, location=location, resp_rate=True
    )


class Nurse:
    """Everything the nurse client received, by topic suffix (alerts, status, vitals/<kind>)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []  # (bed, what, payload)
        self.changed = asyncio.Event()

    async def listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            body = bytes(message.payload)  # type: ignore[arg-type]
            if not body:
                continue
            levels = str(message.topic).split("/")  # vitalwatch/v1/site/bed/what...
            self.seen.append((levels[3], "/".join(levels[4:]), json.loads(body)))
            self.changed.set()

    async def wait_for(self, what: str, within_s: float, test: Any) -> dict[str, Any]:
        async with asyncio.timeout(within_s):
            while True:
                for _bed, kind, payload in self.seen:
                    if kind == what and test(_bed, payload):
                        return payload
                self.changed.clear()
                await self.changed.wait()


@pytest.mark.asyncio
async def test_networked_monitors_are_routed_and_a_stopped_one_raises_link_lost(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    port = free_port()
    config = parse_config(config_for(mosquitto, port, tmp_path))
    nurse = Nurse()
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="nurse-station") as client:
        await client.subscribe(f"vitalwatch/v1/{SITE}/+/alerts", qos=1)
        await client.subscribe(f"vitalwatch/v1/{SITE}/+/status", qos=1)
        await client.subscribe(f"vitalwatch/v1/{SITE}/+/vitals/+", qos=0)
        listening = asyncio.create_task(nurse.listen(client))
        record = tmp_path / "recording"
        daemon = Daemon(config, record_dir=record)
        runner = asyncio.create_task(daemon.run())
        loop = asyncio.get_running_loop()
        stranger = monitor("00A0C9FFFE0000FF", "ELSEWHERE^^9", seed=3)
        try:
            async with (
                connect_tcp(monitor("00A0C9FFFE0000B2", "CHAIRS^^2", seed=2), host="127.0.0.1", port=port),
                connect_tcp(stranger, host="127.0.0.1", port=port),
            ):
                async with connect_tcp(
                    monitor(EUI_CHAIR_1, "CHAIRS^^1", seed=1), host="127.0.0.1", port=port
                ):
                    rr = await nurse.wait_for(
                        "vitals/resp_rate", 20, lambda bed, p: bed == "chair-1" and p["quality"] == "valid"
                    )
                    assert rr["value"] == 14 and rr["unit"] == "/min"
                    await nurse.wait_for(
                        "vitals/spo2", 20, lambda bed, p: bed == "chair-2" and p["quality"] == "valid"
                    )
                    up = await nurse.wait_for(
                        "status", 10, lambda bed, p: bed == "chair-1" and p["links"] == {"monitor": "up"}
                    )
                    assert up["state"] == "online"
                    # Both monitors are sending: now the infusion starts (link_lost is an
                    # infusion/recovery alarm), and nothing is silent.
                    for bed in ("chair-1", "chair-2"):
                        daemon.beds[bed].set_phase("infusion", loop.time())
                    await asyncio.sleep(0)
                    assert not [
                        p for _, kind, p in nurse.seen if kind == "alerts" and p["condition"] == "link_lost"
                    ]
                # chair-1's monitor has stopped (disconnected); chair-2's goes on.
                lost = await nurse.wait_for(
                    "alerts", 30, lambda bed, p: p["condition"] == "link_lost" and p["state"] == "raised"
                )
                await nurse.wait_for(
                    "status", 10, lambda bed, p: bed == "chair-1" and p["links"] == {"monitor": "down"}
                )
                assert stranger.errors >= 1 and stranger.acked == 0  # AE, never routed
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
    assert lost["bed"] == "chair-1" and lost["priority"] == "high"
    assert not [
        p
        for bed, kind, p in nurse.seen
        if kind == "alerts" and bed == "chair-2" and p["condition"] == "link_lost"
    ]
    assert not [p for bed, kind, p in nurse.seen if kind == "vitals/resp_rate" and p["value"] != 14]
    # Respiratory rate is in the session record too (the per-minute summary).
    with sqlite3.connect(tmp_path / "sessions.sqlite3") as db:
        stats = [json.loads(row[0]) for row in db.execute("SELECT stats FROM minutes")]
    rates = [s["resp_rate"] for s in stats if "resp_rate" in s]
    assert rates and all(r["mean"] == 14.0 for r in rates if r["n"])
    # The recording replays through fresh drivers to exactly the alerts the nurse received.
    replayed = replay_recording(record, table=config.alarms)
    for bed in ("chair-1", "chair-2"):
        live = [
            (p["alert_id"], p["seq"], p["state"], p["condition"])
            for b, kind, p in nurse.seen
            if kind == "alerts" and b == bed
        ]
        again = [
            (o.alert_id, o.seq, o.state.value, o.condition)
            for o in replayed[bed]
            if isinstance(o, AlertTransition)
        ]
        assert live and live == again[: len(live)], (bed, live, again)
