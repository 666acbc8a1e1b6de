"""``vitalwatch tail``: the view (snapshot, live transitions, de-duplication, heartbeat rule) and the
command against a real Mosquitto with messages the test publishes itself."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.helpers import wait_until
from vitalwatch.cli import build_parser, main
from vitalwatch.cli.tail import build_options
from vitalwatch.delivery.payloads import WallClock, alert_payload, encode, prompts_payload, status_payload
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Priority
from vitalwatch.station.tail_view import TailOptions, TailView, parse_broker_url, tail
from vitalwatch.testing import Mosquitto, free_port

NOW = datetime(2026, 3, 1, 10, 15, 17, tzinfo=UTC)
WALL = WallClock(100.0, NOW, clock_synced=True)
BASE = "vitalwatch/v1/clinic-a"


def alert(alert_id: str, seq: int, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "t": 100.0,
        "bed": "chair-1",
        "alert_id": alert_id,
        "seq": seq,
        "state": AlertState.RAISED,
        "priority": Priority.MEDIUM,
        "category": Category.PHYSIOLOGICAL,
        "condition": "spo2_low",
        "parameter": "spo2",
        "value": 88.0,
        "unit": "%",
        "limit": 90.0,
        "phase": "infusion",
        "phase_elapsed_s": 600.0,
        "onset_t": 90.0,
        "message": "SpO2 88 % below 90 % for 10 s",
    }
    fields.update(changes)
    return alert_payload(AlertTransition(**fields), site="clinic-a", wall=WALL, sent_at=NOW)


def status(state: str = "online", bed: str = "chair-1", beat: int = 1) -> bytes:
    return encode(
        status_payload(
            state=state,
            site="clinic-a",
            bed=bed,
            phase="infusion",
            links={"ox": True},
            heartbeat=beat,
            sent_at=NOW,
        )
    )


def test_snapshot_lists_active_alarms_highest_priority_first_then_goes_live() -> None:
    """Retained alarms make one snapshot, sorted HIGH first; a cleared retained alarm is not listed."""
    view = TailView()
    low = alert("01A", 1, priority=Priority.LOW, message="pulse 118 /min above 110 /min")
    high = alert("01B", 2, priority=Priority.HIGH, bed="chair-2", message="SpO2 84 % below 85 % for 5 s")
    gone = alert("01C", 3)
    assert [] == view.feed(f"{BASE}/chair-1/alarms/01A", encode(low), 0.0)
    assert [] == view.feed(f"{BASE}/chair-2/alarms/01B", encode(high), 0.0)
    assert [] == view.feed(f"{BASE}/chair-1/alarms/01C", encode(gone), 0.0)
    assert [] == view.feed(f"{BASE}/chair-1/alarms/01C", b"", 0.0)
    assert [] == view.feed(f"{BASE}/chair-1/status", status(), 0.0)
    lines = view.end_snapshot(1.0)
    assert "beds: chair-1 online" == lines[0]
    assert "active alarms (2):" == lines[1]
    assert lines[2].startswith("  chair-2 HIGH   SpO2 84 % below 85 % for 5 s  (since ")
    assert lines[3].startswith("  chair-1 LOW    pulse 118 /min above 110 /min  (since ")
    assert "-- live --" == lines[4]


def test_live_transitions_print_once_per_alert_id_and_seq() -> None:
    """A resend (same alert_id and seq) prints nothing; the next seq of the same alarm prints."""
    view = TailView()
    raised = alert("01A", 5)
    view.feed(f"{BASE}/chair-1/alarms/01A", encode(raised), 0.0)
    assert ["no active alarms"] != view.end_snapshot(0.0)[:1]
    assert [] == view.feed(f"{BASE}/chair-1/alerts", encode(raised), 1.0)  # already in the snapshot
    acked = alert("01A", 6, state=AlertState.ACKNOWLEDGED, acknowledged_by="RN Kim", acknowledged_t=101.0)
    (line,) = view.feed(f"{BASE}/chair-1/alerts", encode(acked), 2.0)
    assert "ACKNOWLEDGED" in line
    assert "by RN Kim" in line
    assert [] == view.feed(f"{BASE}/chair-1/alerts", encode(acked), 3.0)
    assert 2 == view.duplicates
    (cleared,) = view.feed(f"{BASE}/chair-1/alerts", encode(alert("01A", 7, state=AlertState.CLEARED)), 4.0)
    assert "CLEARED" in cleared
    assert "no active alarms" in view.end_snapshot(5.0)


def test_malformed_and_foreign_messages_never_raise() -> None:
    """Not JSON, not an object, or another prefix: a '??' line or nothing, never an exception."""
    view = TailView()
    view.end_snapshot(0.0)
    assert [f"?? {BASE}/chair-1/alerts: not a JSON object"] == view.feed(
        f"{BASE}/chair-1/alerts", b"[1]", 0.0
    )
    (line,) = view.feed(f"{BASE}/chair-1/alerts", b"\xff{", 0.0)
    assert line.startswith(f"?? {BASE}/chair-1/alerts: not JSON")
    assert [] == view.feed("other/v1/clinic-a/chair-1/alerts", encode(alert("01A", 1)), 0.0)
    assert [] == view.feed(f"{BASE}/chair-1", b"{}", 0.0)


def test_gateway_silent_after_the_configured_time_without_status_and_back_again() -> None:
    """The heartbeat rule: timer starts at the snapshot (a retained 'online' proves nothing about now)."""
    view = TailView(silent_after_s=15.0)
    view.feed(f"{BASE}/chair-1/status", status(beat=1), 0.0)
    view.end_snapshot(100.0)
    assert [] == view.tick(114.0)
    assert [] == view.feed(f"{BASE}/chair-1/status", status(beat=2), 110.0)  # heartbeat: not printed
    assert [] == view.tick(124.0)
    assert ["!! chair-1 GATEWAY SILENT: no status for 15 s; bed is NOT being monitored"] == view.tick(125.0)
    assert [] == view.tick(200.0)  # said once
    (back,) = view.feed(f"{BASE}/chair-1/status", status(beat=3), 201.0)
    assert "chair-1 gateway online" in back
    (offline,) = view.feed(f"{BASE}/chair-1/status", status("offline", beat=3), 202.0)
    assert "chair-1 gateway offline" in offline
    assert [] == view.tick(400.0)  # offline is already said; silence only applies to online beds


def test_json_lines_are_json_objects_with_an_event_name() -> None:
    """--json: one object per line for jq; the alert payload unchanged inside."""
    view = TailView(json_lines=True)
    view.feed(f"{BASE}/chair-1/alarms/01A", encode(alert("01A", 1)), 0.0)
    snap = [json.loads(line) for line in view.end_snapshot(0.0)]
    assert ["active", "snapshot_end"] == [d["event"] for d in snap]
    assert 1 == snap[1]["active"]
    doc = alert("01B", 2)
    (line,) = view.feed(f"{BASE}/chair-1/alerts", encode(doc), 0.0)
    assert {"event": "alert", "topic": f"{BASE}/chair-1/alerts", "payload": doc} == json.loads(line)


def test_broker_url_and_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mqtt/mqtts URLs with default ports; the password from a file or the systemd credential."""
    assert ("broker.local", 8883, True) == parse_broker_url("mqtts://broker.local")
    assert ("127.0.0.1", 1884, False) == parse_broker_url("mqtt://127.0.0.1:1884")
    with pytest.raises(ValueError, match="mqtt://HOST:PORT"):
        parse_broker_url("http://x")
    (tmp_path / "pw").write_text("s3cret\nignored\n")
    args = build_parser().parse_args(["tail", "--password-file", str(tmp_path / "pw")])
    assert "s3cret" == build_options(args).password
    (tmp_path / "mqtt-password").write_text("from-systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert "from-systemd" == build_options(build_parser().parse_args(["tail"])).password
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert build_options(build_parser().parse_args(["tail"])).password is None


def test_bad_options_exit_2_and_unreachable_broker_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A usage error names the option; a broker that is not there is exit 1 with the reason."""
    assert 2 == main(["tail", "--broker", "tcp://x:1"])
    assert 2 == main(["tail", "--site", "a/b"])
    assert 1 == main(["tail", "--broker", f"mqtt://127.0.0.1:{free_port()}"])
    assert "vitalwatch tail: broker 127.0.0.1:" in capsys.readouterr().err


async def _publish(port: int, *messages: tuple[str, bytes, bool]) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for topic, payload, retain in messages:
            await client.publish(topic, payload, qos=1, retain=retain)


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_tail_json_against_a_real_broker(mosquitto: Mosquitto) -> None:
    """Retained alarms of the site come first, then live alerts of the chosen bed only."""
    active = alert("01A", 1, priority=Priority.HIGH)
    other_site = alert("01Z", 1)
    await _publish(
        mosquitto.port,
        (f"{BASE}/chair-1/alarms/01A", encode(active), True),
        ("vitalwatch/v1/clinic-b/chair-1/alarms/01Z", encode(other_site), True),
    )
    out = io.StringIO()
    ready = asyncio.Event()
    opts = TailOptions(host="127.0.0.1", port=mosquitto.port, site="clinic-a", bed="chair-1", json_lines=True)
    task = asyncio.create_task(tail(opts, out, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    live = alert("01A", 2, state=AlertState.ESCALATED, escalation_level=1)
    later = alert("01B", 1)  # sent after the resend on the same topic: once printed, the resend was read
    await _publish(
        mosquitto.port,
        (f"{BASE}/chair-2/alerts", encode(alert("01Q", 9, bed="chair-2")), False),
        (f"{BASE}/chair-1/alerts", encode(live), False),
        (f"{BASE}/chair-1/alerts", encode(live), False),  # a resend: must not print
        (f"{BASE}/chair-1/alerts", encode(later), False),
    )
    await wait_until(lambda: '"01B"' in out.getvalue(), 10, "the alert published after the resend")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [
        {"event": "active", "payload": active},
        {"event": "snapshot_end", "active": 1},
        {"event": "alert", "topic": f"{BASE}/chair-1/alerts", "payload": live},
        {"event": "alert", "topic": f"{BASE}/chair-1/alerts", "payload": later},
    ] == events


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_vitalwatch_tail_command_prints_snapshot_then_transitions_and_exits_0_on_sigint(
    mosquitto: Mosquitto,
) -> None:
    """The real command in a subprocess, as an engineer runs it; Ctrl-C ends it cleanly."""
    await _publish(
        mosquitto.port,
        (f"{BASE}/chair-1/alarms/01A", encode(alert("01A", 1, priority=Priority.HIGH)), True),
        (f"{BASE}/chair-1/status", status(), True),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vitalwatch",
        "tail",
        "--broker",
        mosquitto.url,
        "--site",
        "clinic-a",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TZ": "UTC"},
    )
    assert proc.stdout is not None
    lines: list[str] = []

    async def read_until(text: str) -> None:
        assert proc.stdout is not None
        while not any(text in line for line in lines):
            raw = await proc.stdout.readline()
            if not raw:
                raise AssertionError(f"tail ended early: {lines}")
            lines.append(raw.decode().rstrip("\n"))

    try:
        async with asyncio.timeout(20):
            await read_until("-- live --")
            cleared = alert("01A", 2, state=AlertState.CLEARED, priority=Priority.HIGH, message="SpO2 back")
            await _publish(
                mosquitto.port,
                (f"{BASE}/chair-1/alerts", encode(cleared), False),
                (f"{BASE}/chair-1/alarms/01A", b"", True),
            )
            await read_until("CLEARED")
    finally:
        proc.send_signal(signal.SIGINT)
        rc = await asyncio.wait_for(proc.wait(), 10)
    assert 0 == rc
    assert [
        "beds: chair-1 online",
        "active alarms (1):",
        "  chair-1 HIGH   SpO2 88 % below 90 % for 10 s  (since 10:15:07, raised)",
        "-- live --",
        "10:15:17 chair-1 HIGH   CLEARED      SpO2 back  (value 88 %, limit 90 %)",
    ] == lines


class _Lines(io.StringIO):
    """Captured output whose lines can be awaited one condition at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def write(self, text: str) -> int:
        self.changed.set()
        return super().write(text)

    async def wait_for(self, needle: str) -> None:
        async with asyncio.timeout(20.0):
            while needle not in self.getvalue():
                self.changed.clear()
                await self.changed.wait()


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_tail_says_the_broker_was_lost_and_resumes_when_it_is_back(mosquitto: Mosquitto) -> None:
    """A broker killed and restarted: tail says so, re-reads the active set and prints new alerts once."""
    first = alert("01A", 1, priority=Priority.HIGH)
    await _publish(mosquitto.port, (f"{BASE}/chair-1/alarms/01A", encode(first), True))
    out = _Lines()
    ready = asyncio.Event()
    opts = TailOptions(host="127.0.0.1", port=mosquitto.port, site="clinic-a", bed="chair-1")
    task = asyncio.create_task(tail(opts, out, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert "active alarms (1):" in out.getvalue()
        mosquitto.kill()  # no persistence: the restarted broker has no retained 01A any more
        await out.wait_for("!! broker connection lost")
        mosquitto.start()
        await out.wait_for("-- broker connection back")
        await out.wait_for("no active alarms")  # the stale 01A is not shown as active any more
        second = alert("01B", 1, message="SpO2 84 % below 85 % for 5 s")
        await _publish(
            mosquitto.port,
            (f"{BASE}/chair-1/alerts", encode(second), False),
            (f"{BASE}/chair-1/alerts", encode(second), False),  # an outbox resend after the outage
            (f"{BASE}/chair-1/alerts", encode(alert("01C", 1, message="witness")), False),
        )
        await out.wait_for("witness")
        assert not task.done(), "tail ended instead of following the reconnected broker"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    text = out.getvalue()
    assert 1 == text.count("SpO2 84 % below 85 % for 5 s")
    assert 1 == text.count("!! broker connection lost")


def prompts_doc(*ids: str, bed: str = "chair-1") -> bytes:
    prompts = [
        {
            "prompt_id": pid,
            "kind": "take_bp",
            "text": f"Take a blood pressure by hand: baseline reading {n} of 2",
            "reason": f"baseline reading {n} of 2",
            "opened_utc": "2026-03-01T10:15:02.000Z",
            "then": "the baseline stays incomplete",
        }
        for n, pid in enumerate(ids, 1)
    ]
    return encode(prompts_payload(site="clinic-a", bed=bed, prompts=prompts, sent_at=NOW))


def test_prompts_print_in_the_snapshot_then_as_they_open_and_close() -> None:
    """A retained open prompt is part of the snapshot; later a new one prints, and a closed one says done."""
    view = TailView()
    assert [] == view.feed(f"{BASE}/chair-1/prompts", prompts_doc("chair-1-p1"), 1.0)
    snapshot = view.end_snapshot(1.0)
    assert any("PROMPT chair-1-p1" in line and "baseline reading 1 of 2" in line for line in snapshot)
    lines = view.feed(f"{BASE}/chair-1/prompts", prompts_doc("chair-1-p1", "chair-1-p2"), 2.0)
    assert 1 == len(lines) and "?? chair-1 PROMPT chair-1-p2" in lines[0]
    assert ["-- chair-1 prompt chair-1-p1 done", "-- chair-1 prompt chair-1-p2 done"] == view.feed(
        f"{BASE}/chair-1/prompts", prompts_doc(), 3.0
    )
    json_view = TailView(json_lines=True)
    json_view.end_snapshot(0.0)
    (opened,) = json_view.feed(f"{BASE}/chair-1/prompts", prompts_doc("chair-1-p7"), 1.0)
    assert ("prompt", "chair-1-p7") == (
        json.loads(opened)["event"],
        json.loads(opened)["payload"]["prompt_id"],
    )
