"""A whole chairside session run from the nurse station in a real browser, at tablet width.

Mosquitto with WebSockets, the daemon with simulated devices on ptys (the demo's two chairs,
vitalwatch/demo_session.py: chair-1 has a Rad-8 and a SunTech cuff the daemon can start; chair-2
an ACCUTORR, whose cuff it cannot start), the
station's web server, and headless Debian chromium (768 x 1024) driven by
tests/integration/browser/session.mjs. A real MQTT subscriber records every command the page
sends, so the test checks what went over the wire as well as what the nurse saw, and the session
record shows what the daemon kept.

Set VITALWATCH_SCREENSHOTS=docs/img to refresh the session screenshots that docs/station.md shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.integration.station_browser import daemon_config, drive, open_station, start_watching
from vitalwatch.demo_session import PROMPT_BED as DEMO_PROMPT_BED
from vitalwatch.demo_session import SESSION_BED, session_beds, session_simulators
from vitalwatch.ops.daemon import Daemon
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.browser,
]

SITE = "clinic-web"
BED = SESSION_BED  # SunTech cuff: the daemon starts it
PROMPT_BED = DEMO_PROMPT_BED  # ACCUTORR: the daemon cannot start its cuff, so it asks the nurse
NURSE = "RN Kim"
REASON = "cuff reading older than 30 s, BP stable"
# Short clinical timings so a whole session fits in well under a minute: 30 s of oximetry and one
# cuff reading make the baseline; discharge needs no waiting time after the pump stop and two
# readings without spacing. Everything else is the default table.
ALARMS = {
    "table": "default",
    "baseline": {"oximetry_s": 30, "nibp_readings": 1, "nibp_spacing_s": 0},
    "discharge": {"after_recovery_min": 0, "nibp_spacing_min": 0},
}


async def record_commands(port: int, seen: list[dict[str, Any]], ready: asyncio.Event) -> None:
    """Every command the page publishes, and every answer: what went over the wire."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-command-watcher") as client:
        await client.subscribe(f"vitalwatch/v1/{SITE}/+/cmd", qos=1)
        await client.subscribe(f"vitalwatch/v1/{SITE}/+/cmd/result", qos=1)
        ready.set()
        async for message in client.messages:
            body = bytes(message.payload)  # type: ignore[arg-type]
            seen.append({"topic": str(message.topic), "retain": message.retain, **json.loads(body)})


def session_events(daemon: Daemon, bed: str) -> list[tuple[str, dict[str, Any]]]:
    """The nurse's steps and observations in the bed's session record, oldest first."""
    daemon.sessions.flush()
    conn = daemon.sessions.read()
    try:
        rows = conn.execute(
            "SELECT e.kind, e.data FROM events e JOIN sessions s USING (session_id)"
            " WHERE s.bed=? ORDER BY s.started_utc, e.n",
            (bed,),
        ).fetchall()
    finally:
        conn.close()
    return [(kind, json.loads(data) if data else {}) for kind, data in rows]


@pytest.mark.asyncio
async def test_a_whole_session_from_the_station(
    browser_setup: str, ws_mosquitto: tuple[Mosquitto, int], screenshot_dir: Path, tmp_path: Path
) -> None:
    """Start, observation, readiness with an open item, override, infusion with a dose, a prompt
    marked done, pause/resume, pump stopped, discharge readiness, end: all from the page."""
    broker, ws_port = ws_mosquitto
    normal = get_scenario("normal")
    seen: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        # The demo's two chairs (vitalwatch demo runs the same session on them).
        urls = {
            device: (await stack.enter_async_context(serve_pty(sim))).url
            for device, sim in session_simulators(normal).items()
        }
        config = daemon_config(SITE, broker.port, tmp_path, alarms=ALARMS, beds=session_beds(urls))
        station = await open_station(stack, SITE, ws_port)
        watcher = await start_watching(record_commands, broker.port, seen)
        daemon = Daemon(config)
        runner = asyncio.create_task(daemon.run())
        try:
            code, events, stderr = await drive(
                {
                    "url": f"http://127.0.0.1:{station.port}/", "bed": BED, "promptBed": PROMPT_BED,
                    "nurse": NURSE, "chromium": browser_setup, "screenshots": str(screenshot_dir),
                    "failureShot": str(tmp_path / "failure.png"), "overrideReason": REASON,
                    "width": 768, "height": 1024,
                },
                script="session.mjs",
                timeout_s=150,
            )  # fmt: skip
            record = session_events(daemon, BED)
        finally:
            for task in (runner, watcher):
                task.cancel()
            await asyncio.gather(runner, watcher, return_exceptions=True)

    assert "console-error" not in events and "page-error" not in events, events
    assert 0 == code and "failed" not in events, "\n".join(
        [*map(json.dumps, events.values()), stderr[-2000:]]
    )

    baseline = events["baseline"]
    assert ["start_session", "start_infusion", "nibp", "event", "end_session"] == [
        a["action"] for a in baseline["actions"]
    ]
    started = events["session-started"]
    assert "" == started["first_focus"]  # the dialog opened on its first choice ("not given")
    assert "start_session" == started["focus_back"]  # and gave the focus back to the button

    prompt = events["prompt"]
    assert "take_bp" == prompt["kind"] and "prompt" in prompt["nibp"]

    infusion = events["infusion"]
    assert "Total 35 mg (0.5 mg/kg × 70 kg)" == infusion["total"]
    assert "40" == infusion["planned"]
    assert infusion["reason_shown"] and "override" in infusion["ok"]
    assert any(i["item"] == "baseline" and i["ok"] == "true" for i in infusion["checklist"])
    assert any(i["ok"] == "false" for i in infusion["checklist"]), infusion["checklist"]
    assert "Override reason" in infusion["missing_reason"]
    assert "35 mg total" in infusion["text"] and REASON in infusion["text"]

    assert "(paused)" in events["pause-resume"]["paused_phase"]
    recovery = events["recovery"]
    assert "cannot be undone" in recovery["confirm"] and "infusion" == recovery["after_escape"]
    assert ["nibp", "event", "end_session"] == [a["action"] for a in recovery["actions"]]
    assert "false" == events["discharge"]["not_yet"]["ready"]
    assert all("true" == line["ok"] for line in events["discharge"]["met"]), events["discharge"]
    assert "nurse confirms" in events["discharge"]["text"]
    ended = events["ended"]
    assert ["start_session"] == [a["action"] for a in ended["actions"]] and ended["discharge_hidden"]

    # What went over the wire: one command per step, each with the nurse's name, never retained,
    # and each answered ok by the bed it was sent to.
    commands = [m for m in seen if m["topic"].endswith("/cmd")]
    results = {m["request_id"]: m for m in seen if m["topic"].endswith("/cmd/result")}
    assert all(not m["retain"] and NURSE == m["by"] for m in commands), commands
    assert all(results[m["request_id"]]["ok"] for m in commands), (commands, results)
    sent = [(m["topic"].split("/")[-2], m["command"], m.get("phase")) for m in commands]
    assert [
        (BED, "start_session", None),
        (PROMPT_BED, "nibp", None),
        (PROMPT_BED, "prompt_done", None),
        (BED, "event", None),
        (BED, "start_infusion", None),
        (BED, "phase", "pause"),
        (BED, "phase", "resume"),
        (BED, "pump_stopped", None),
        (BED, "nibp", None),
        (BED, "nibp", None),
        (BED, "end_session", None),
    ] == sent
    by_command = {m["command"]: m for m in commands if m["topic"].split("/")[-2] == BED}
    assert {"age_band": "adult"}.items() <= by_command["start_session"].items()
    assert {"event": "dissociation", "score": 1}.items() <= by_command["event"].items()
    assert {
        "dose_mg_per_kg": 0.5, "weight_kg": 70, "planned_minutes": 40, "override_reason": REASON,
    }.items() <= by_command["start_infusion"].items()  # fmt: skip

    # What the daemon kept: the dose, the override with its open items, the observation.
    kinds = dict(record)
    infusion_record = kinds["start_infusion"]
    assert 35.0 == infusion_record["total_mg"] and REASON == infusion_record["override_reason"]
    assert infusion_record["open_items"]
    assert {"score": 1, "by": NURSE} == kinds["nurse_dissociation"]
    assert {"pump_stopped", "end_session"} <= kinds.keys()
