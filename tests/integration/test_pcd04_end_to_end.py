"""The daemon with a real Mosquitto and the alarm-manager double: every alert, both destinations.

The alerts are the engine's own (starting the infusion raises baseline_incomplete and, since the
oximeter's port never opened, link_lost), so each goes bed session -> publisher -> journal ->
MQTT, and from the same journal transaction to the PCD-04 reporter -> the double. An outage of
the double raises the gateway's ``alarm_manager_unreachable`` technical alarm (in the bed's MQTT
status too); it clears once the backlog is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.helpers import wait_until
from vitalwatch.config import Config, parse_config
from vitalwatch.delivery.alarm_manager import UNREACHABLE_ALARM
from vitalwatch.ops.daemon import Daemon
from vitalwatch.simulators.alarm_manager import AlarmManagerDouble
from vitalwatch.testing import Mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.asyncio, pytest.mark.timeout(90)]

SITE, BED = "test-site", "chair-1"
BASE = f"vitalwatch/v1/{SITE}/{BED}"
KINDS = {"physiological": "SP", "technical": "ST", "advisory": "SA"}
PRIORITIES = {"high": "PH", "medium": "PM", "low": "PL"}
PHASES = {
    "raised": "start",
    "renotified": "continue",
    "escalated": "escalate",
    "acknowledged": "update",
    "cleared": "end",
}
Seen = list[tuple[str, dict[str, Any]]]


def make_config(mqtt_port: int, manager_port: int, state_dir: Path) -> Config:
    return parse_config(
        {
            "site": SITE,
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "heartbeat_s": 0.5, "publish_timeout_s": 1.0},
            "logging": {"level": "warning"},
            "state": {"directory": str(state_dir)},
            "beds": [
                {"id": BED, "devices": [{"id": "oximeter", "driver": "masimo", "url": "/nonexistent/vw-tty"}]}
            ],
            "alert_reporters": [
                {
                    "id": "am",
                    "host": "127.0.0.1",
                    "port": manager_port,
                    "point_of_care": "ONC",
                    "ack_timeout_s": 1.0,
                    "unreachable_alarm_s": 1.0,
                }
            ],
        }
    )


def mqtt_alerts(seen: Seen) -> dict[tuple[str, int], dict[str, Any]]:
    """The station's alerts de-duplicated on (alert_id, seq), keyed (alert_id, n-th transition)."""
    unique: dict[tuple[str, int], dict[str, Any]] = {}
    for topic, payload in seen:
        if topic == "alerts":
            unique.setdefault((payload["alert_id"], payload["seq"]), payload)
    counters: dict[str, int] = {}
    numbered: dict[tuple[str, int], dict[str, Any]] = {}
    for (alert_id, _seq), payload in sorted(unique.items(), key=lambda kv: kv[0][1]):
        n = counters.get(alert_id, 0)
        counters[alert_id] = n + 1
        numbered[(alert_id, n)] = payload
    return numbered


@contextlib.asynccontextmanager
async def nurse_station(port: int, seen: Seen) -> AsyncIterator[None]:
    """Every alert and status message of the bed, as a station receives it."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"{BASE}/alerts", qos=1)
        await client.subscribe(f"{BASE}/status", qos=1)

        async def listen() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                if message.payload:
                    seen.append((str(message.topic).rsplit("/", 1)[1], json.loads(message.payload)))

        listener = asyncio.create_task(listen())
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


async def test_alerts_reach_mqtt_and_the_alarm_manager(mosquitto: Mosquitto, tmp_path: Path) -> None:
    seen: Seen = []
    async with AlarmManagerDouble() as manager, nurse_station(mosquitto.port, seen):
        daemon = Daemon(make_config(mosquitto.port, manager.port, tmp_path / "state"))
        running = asyncio.create_task(daemon.run())
        try:
            reporter = daemon.reporters.reporters["am"]
            await wait_until(lambda: daemon.publishers[BED].connected and reporter.connected, 10, "connected")
            session = daemon.beds[BED]
            session.set_phase("infusion", asyncio.get_running_loop().time())
            await manager.wait_for(lambda: len(manager.accepted) >= 2, what="the PCD-04 reports")
            await wait_until(lambda: len(mqtt_alerts(seen)) >= 2, 10, "the MQTT alerts")
            for report in manager.accepted:
                alert = mqtt_alerts(seen)[(report.alert_id, 0)]
                assert report.counter == 0 and alert["state"] == "raised"
                assert report.field("OBX1.F5.R1.C4") == alert["condition"]
                assert report.facet("MDC_ATTR_EVENT_PHASE") == "start"
                assert report.facet("MDC_ATTR_ALERT_TYPE") == KINDS[alert["category"]]
                assert report.facet("MDC_ATTR_ALARM_PRIORITY") == PRIORITIES[alert["priority"]]
                assert (report.field("PV1.F3.R1.C1"), report.field("PV1.F3.R1.C3")) == ("ONC", BED)
                assert report.field("PID.F3") == ""  # no patient identifier mapped, none sent
            conditions = {r.field("OBX1.F5.R1.C4") for r in manager.accepted}
            assert conditions == {"baseline_incomplete", "link_lost"}

            # The manager goes away: the gateway's technical alarm, in the MQTT status too.
            await manager.outage()
            session.set_phase("ended", asyncio.get_running_loop().time())
            await wait_until(lambda: reporter.pending > 0, 5, "a report waiting for the manager")
            await wait_until(
                lambda: (UNREACHABLE_ALARM, "*") in daemon.local_alarms.active,
                10,
                "alarm_manager_unreachable",
            )
            await wait_until(
                lambda: any(t == "status" and UNREACHABLE_ALARM in p["technical"] for t, p in seen),
                10,
                "the alarm in the bed's status",
            )
            await manager.start()
            await wait_until(lambda: reporter.pending == 0, 10, "the backlog delivered")
            await wait_until(
                lambda: (UNREACHABLE_ALARM, "*") not in daemon.local_alarms.active, 10, "the alarm cleared"
            )
            await wait_until(lambda: daemon.publishers[BED].pending == 0, 10, "MQTT delivered")
            assert (UNREACHABLE_ALARM, "*", True) in daemon.local_alarms.history
            assert daemon.local_alarms.history[-1] == (UNREACHABLE_ALARM, "*", False)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    # Both destinations got every transition, each alert in order, no report twice.
    keys = manager.accepted_keys()
    assert len(keys) == len(set(keys))
    sent: dict[str, list[str]] = {}
    for (alert_id, _n), alert in sorted(mqtt_alerts(seen).items()):
        sent.setdefault(alert_id, []).append(PHASES[alert["state"]])
    reported: dict[str, list[str]] = {}
    for report in sorted(manager.accepted, key=lambda r: r.counter):
        reported.setdefault(report.alert_id, []).append(report.facet("MDC_ATTR_EVENT_PHASE"))
    assert reported == sent
    assert all(phases[-1] == "end" for phases in reported.values())
