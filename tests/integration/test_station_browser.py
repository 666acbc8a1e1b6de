"""The nurse station in a real browser: Mosquitto with WebSockets, the daemon on a simulated Rad-8, the
station's web server, and headless Debian chromium driven by playwright-core (tests/integration/browser/).

Set VITALWATCH_SCREENSHOTS=docs/img to refresh the screenshots that docs/station.md shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.fakes.alerts import transition
from tests.helpers import wait_until
from tests.integration.station_browser import daemon_config, drive, open_station, start_watching
from vitalwatch.delivery.payloads import WallClock, alert_payload, encode, status_payload, vital_payload
from vitalwatch.engine.outputs import Priority
from vitalwatch.ops.daemon import Daemon
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.browser]

SITE = "clinic-web"
BED = "chair-3"
CALM_BED = "chair-4"  # a second chair with a normal session: one tile per bed, side by side
HUNG_BED = "chair-9"  # a gateway that heartbeats, then hangs (TCP open, no will): must turn "silent"
NURSE = "RN-Kim"
REASON = "baseline cuff reading taken by hand"
# Scenario time runs 2x the wall clock: SpO2 starts falling ~15 s in and stays below 90 % for ~50 s,
# time enough to see the normal screen first and to acknowledge while the alarm is active.
SPEED = 2.0


def acknowledged_seen(seen: list[dict[str, Any]], alert_id: str) -> bool:
    """The watcher holds a successful ack result and the alert's acknowledged transition."""
    result = any(
        m["topic"].endswith("/cmd/result") and m.get("ok") and m.get("command") == "ack" for m in seen
    )
    return result and any(m.get("alert_id") == alert_id and m.get("state") == "acknowledged" for m in seen)


async def watch(port: int, seen: list[dict[str, Any]], ready: asyncio.Event) -> None:
    """What went over the wire: the bed's alert transitions, and every command and result of the site."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-watcher") as client:
        await client.subscribe(f"vitalwatch/v1/{SITE}/{BED}/alerts", qos=1)
        await client.subscribe(f"vitalwatch/v1/{SITE}/+/cmd", qos=1)
        await client.subscribe(f"vitalwatch/v1/{SITE}/+/cmd/result", qos=1)
        ready.set()
        async for message in client.messages:
            body = bytes(message.payload)  # type: ignore[arg-type]
            if body:
                seen.append({"topic": str(message.topic), **json.loads(body)})


async def heartbeat_until(port: int, stop: asyncio.Event) -> None:
    """A bed gateway that heartbeats every second, then stops without saying offline (hung, not dead).

    It left a retained blood pressure (the page shows it at once, with its clock time) and a MEDIUM
    alarm, which loses its Acknowledge button once the gateway is silent.
    """
    base = f"vitalwatch/v1/{SITE}/{HUNG_BED}"
    async with aiomqtt.Client("127.0.0.1", port, identifier="hung-gateway") as client:
        for kind, value in (("nibp_systolic", 121.0), ("nibp_diastolic", 78.0)):  # a stored last reading
            body = vital_payload(
                kind=kind, value=value, unit="mm[Hg]", quality="valid", measured_at=datetime.now(UTC),
                device="cuff",
            )  # fmt: skip
            await client.publish(f"{base}/vitals/{kind}", encode(body), qos=1, retain=True)
        alarm = transition(
            "hung-a1", 1, priority=Priority.MEDIUM, bed=HUNG_BED, t=0.0, message="SpO2 88 % below 90 %"
        )
        await client.publish(
            f"{base}/alarms/hung-a1",
            encode(alert_payload(alarm, site=SITE, wall=WallClock(0.0))),
            qos=1,
            retain=True,
        )
        beat = 0
        while not stop.is_set():
            beat += 1
            body = status_payload(
                state="online", site=SITE, bed=HUNG_BED, phase="recovery", links={"oximeter": True},
                heartbeat=beat, sent_at=datetime.now(UTC), technical=["device_silent"],
            )  # fmt: skip
            await client.publish(f"vitalwatch/v1/{SITE}/{HUNG_BED}/status", encode(body), qos=1, retain=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


@pytest.mark.asyncio
async def test_nurse_acknowledges_a_high_alarm_in_the_browser(
    browser_setup: str, ws_mosquitto: tuple[Mosquitto, int], screenshot_dir: Path, tmp_path: Path
) -> None:
    """Desaturation: a red HIGH tile with sound; Acknowledge reaches the daemon; the tile says who."""
    broker, ws_port = ws_mosquitto
    story = get_scenario("desaturation")
    seen: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        endpoint = await stack.enter_async_context(serve_pty(make_simulator("masimo", story), speed=SPEED))
        calm = await stack.enter_async_context(
            serve_pty(make_simulator("masimo", get_scenario("normal")), speed=SPEED)
        )
        config = daemon_config(
            SITE, broker.port, tmp_path,
            alarms={"table": "default", "rules": {"spo2_low_high": {"sustain_s": 2.0}}},
            beds=[
                {"id": BED, "devices": [{"id": "oximeter", "driver": "masimo", "url": endpoint.url}]},
                {"id": CALM_BED, "devices": [{"id": "oximeter", "driver": "masimo", "url": calm.url}]},
            ],
        )  # fmt: skip
        station = await open_station(stack, SITE, ws_port)
        watcher = await start_watching(watch, broker.port, seen)
        hang = asyncio.Event()
        hung = asyncio.create_task(heartbeat_until(broker.port, hang))
        daemon = Daemon(config)
        runner = asyncio.create_task(daemon.run())
        daemon.beds[BED].set_phase("infusion", asyncio.get_running_loop().time())
        daemon.beds[CALM_BED].set_phase("baseline", asyncio.get_running_loop().time())
        try:
            code, events, stderr = await drive({
                "url": f"http://127.0.0.1:{station.port}/", "bed": BED, "calmBed": CALM_BED, "nurse": NURSE,
                "chromium": browser_setup, "screenshots": str(screenshot_dir),
                "failureShot": str(tmp_path / "failure.png"), "hungBed": HUNG_BED, "overrideReason": REASON,
            }, on_event=lambda e: e["event"] == "high" and hang.set())  # fmt: skip
            if 0 == code and "high" in events:  # the browser acknowledged: the watcher must see it too
                await wait_until(
                    lambda: acknowledged_seen(seen, events["high"]["alert_id"]),
                    10,
                    "the ack's result and the acknowledged alert at the watcher",
                )
            active = {a.alert_id: a for a in daemon.beds[BED].engine.active_alarms()}
        finally:
            for task in (runner, watcher, hung):
                task.cancel()
            await asyncio.gather(runner, watcher, hung, return_exceptions=True)

    assert "failed" not in events, (events, stderr[-2000:])
    assert "console-error" not in events and "page-error" not in events, events
    normal = events["normal"]
    assert "ok" == normal["calm_state"]  # the other chair: online, no alarm
    assert "alarm-medium" == normal["hung_state"] and 1 == normal["hung_buttons"]  # still heartbeating
    assert ["device_silent"] == normal["hung_gateway"]  # the gateway's own technical alarm, shown
    assert "121/78" == normal["hung_bp"] and "before this screen opened" in normal["hung_bp_age"]  # retained
    assert normal["state"] in ("ok", "alarm-low")  # baseline_incomplete (LOW) is raised at infusion start
    assert normal["phase"].startswith("infusion")
    assert 90 <= int(normal["spo2"]) <= 100 and 40 <= int(normal["pulse"]) <= 140
    assert "no data yet" == normal["nibp_age"]  # no cuff on this bed: nothing is invented

    high = events["high"]
    assert "alarm-high" == high["tile_state"]
    assert "physiological" == high["category"]
    assert "rgb(213, 0, 0)" == high["colour"]  # IEC high priority: red
    assert "SpO2" in high["text"]
    assert high["beeps"] >= 1  # the audible HIGH signal started after the user's tap
    alert_id = high["alert_id"]

    assert 0 == code, (events, stderr[-2000:])  # 3: the acknowledgement never came back from the bed

    results = [m for m in seen if m["topic"].endswith("/cmd/result")]
    assert any(r["ok"] and r["command"] == "ack" and r["request_id"].startswith("st-") for r in results), (
        results
    )
    acked = [m for m in seen if m.get("alert_id") == alert_id and m.get("state") == "acknowledged"]
    assert acked and NURSE == acked[0]["acknowledged_by"], seen
    if alert_id in active:  # still active when the browser finished: the engine holds the acknowledgement
        assert NURSE == active[alert_id].acknowledged_by

    assert f"acknowledged by {NURSE}" in events["acked"]["text"]
    assert not events["acked"]["button"]

    silent = events["silent"]  # heartbeats stopped at the "high" event; k = 3 x 1 s later:
    assert "silent" == silent["state"]
    assert "BED GATEWAY SILENT" in silent["text"] and "NOT being monitored" in silent["text"]
    assert "rgb(213, 0, 0)" == silent["colour"] == silent["border"]  # an alarm colour, not a calm grey
    assert 0 == silent["buttons"]  # nothing to acknowledge at a gateway that cannot hear it

    rebuilt = events["reloaded"]
    assert rebuilt["phase"].startswith("infusion")  # from the retained status
    if alert_id in active:  # from the retained alarms/{alert_id}
        assert [(alert_id, "true")] == [
            (a["id"], a["acknowledged"]) for a in rebuilt["alarms"] if a["id"] == alert_id
        ]

    tablet = events["tablet"]  # the acknowledged alarm's text spans the alarm, not a narrow column
    assert 768 == tablet["viewport"] and tablet["text_width"] >= 0.8 * tablet["alarm_width"] - 40, tablet

    # The infusion form: what the nurse saw, what went over the wire, and the bed's answer shown.
    controls = events["controls"]
    assert {"start_infusion", "nibp", "event", "end_session"} <= set(controls["offered"])
    assert "pump_stopped" not in controls["offered"]  # not in baseline
    assert "Total 35 mg (0.5 mg/kg × 70 kg)" == controls["total"]
    assert "Override reason" in controls["missing"]  # readiness open or unknown: a reason first
    [command] = [m for m in seen if m["topic"].endswith(f"/{CALM_BED}/cmd")]
    assert {
        "command": "start_infusion", "by": NURSE, "dose_mg_per_kg": 0.5, "weight_kg": 70,
        "planned_minutes": 40, "override_reason": REASON,
    }.items() <= command.items()  # fmt: skip
    [result] = [
        m for m in seen if m["topic"].endswith("/cmd/result") and m["request_id"] == command["request_id"]
    ]
    note = controls["note"]
    if result["ok"]:
        assert not note["error"] and "Infusion started: 35 mg total" in note["text"], (note, result)
    else:  # refused: the page shows the bed's reason
        assert note["error"] and result["error"]["message"] in note["text"], (note, result)
