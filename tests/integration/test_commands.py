"""Nurse commands over a real Mosquitto: every bad command gets an error result and changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import pytest_asyncio
from jsonschema import Draft202012Validator

from tests.fakes.alerts import transition
from tests.helpers import cuffless_daemon_config, wait_until
from vitalwatch.engine.outputs import Priority
from vitalwatch.ops.daemon import Daemon
from vitalwatch.testing import Mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.asyncio]

ROOT = Path(__file__).resolve().parents[2]
RESULT = Draft202012Validator(
    json.loads((ROOT / "schemas" / "command_result.schema.json").read_text(encoding="utf-8")),
    format_checker=Draft202012Validator.FORMAT_CHECKER,
)

SITE = "test-site"
BED = "chair-1"
BASE = f"vitalwatch/v1/{SITE}/{BED}"


class Nurse:
    """A station client: sends raw command payloads and collects results and alerts."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.results: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []

    async def listen(self) -> None:
        async for msg in self.client.messages:
            data = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
            (self.results if str(msg.topic).endswith("/cmd/result") else self.alerts).append(data)

    async def send(self, payload: bytes | dict[str, Any], *, topic: str = f"{BASE}/cmd") -> dict[str, Any]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        count = len(self.results)
        await self.client.publish(topic, body, qos=1)
        await wait_until(lambda: len(self.results) > count, 5, "a command result")
        return self.results[count]


@pytest_asyncio.fixture
async def setup(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[tuple[Daemon, Nurse]]:
    """The daemon with one bed in infusion without a baseline, so baseline_incomplete is active."""
    config = cuffless_daemon_config(mosquitto.port, tmp_path / "state", site=SITE, beds=[BED])
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.subscribe(f"{BASE}/cmd/result", qos=1)
        await client.subscribe(f"{BASE}/alerts", qos=1)
        nurse = Nurse(client)
        listener = asyncio.create_task(nurse.listen())
        try:
            await wait_until(lambda: daemon.publishers[BED].connected, 10, "daemon connected")
            daemon.beds[BED].set_phase("infusion", asyncio.get_running_loop().time())
            await wait_until(lambda: bool(nurse.alerts), 10, "the baseline_incomplete alert")
            yield daemon, nurse
        finally:
            listener.cancel()
            task.cancel()
            await asyncio.gather(listener, task, return_exceptions=True)


WITNESS = "witness"  # alert_id prefix of the markers below; never an engine's


async def everything_sent_so_far(daemon: Daemon, nurse: Nurse) -> None:
    """Return once the nurse holds every alert the daemon queued before this call.

    A marker transition (INFO: the lowest lane; a seq above any real one) is handed to the bed
    session now. The publisher sends the highest lane first and one alert at a time, and the
    broker keeps one publisher's order on a topic, so once the nurse has the marker anything
    queued before it has arrived too. "No new alert" is asserted only after this witness.
    """
    n = len(nurse.alerts)
    marker = transition(f"{WITNESS}-{n}", 10**9 + n, priority=Priority.INFO, bed=BED, message="test witness")
    daemon.beds[BED].dispatch([marker])
    await wait_until(lambda: any(a["alert_id"] == marker.alert_id for a in nurse.alerts), 10, "the witness")


def received(nurse: Nurse) -> list[dict[str, Any]]:
    """The alerts the nurse station received from the daemon's engine (witnesses left out)."""
    return [a for a in nurse.alerts if not a["alert_id"].startswith(WITNESS)]


BAD: list[tuple[bytes | dict[str, Any], str]] = [
    (b"{not json", "bad_json"),
    (b"\xff\xfe", "bad_json"),
    (b"[1, 2]", "not_object"),
    (b"x" * 5000, "too_large"),
    (
        json.dumps(
            {"request_id": "big", "command": "ack", "alert_id": "*", "by": "n" * 60, "pad": "y" * 4100}
        ).encode(),
        "too_large",
    ),
    ({"command": "ack", "alert_id": "*", "by": "nurse"}, "missing_field"),
    ({"request_id": "r-a", "command": "ack", "by": "nurse"}, "missing_field"),
    ({"request_id": "r-b", "command": "ack", "alert_id": 7, "by": "nurse"}, "wrong_type"),
    ({"request_id": 12, "command": "ack", "alert_id": "*", "by": "nurse"}, "wrong_type"),
    ({"request_id": "r-c", "command": "ack", "alert_id": "*", "by": "nurse", "extra": 1}, "unknown_field"),
    ({"request_id": "r-d", "command": "reboot"}, "unknown_command"),
    (
        {"request_id": "r-e", "command": "ack", "alert_id": "*", "by": "nurse", "bed": "chair-9"},
        "wrong_bed",
    ),
    ({"request_id": "r-f", "command": "ack", "alert_id": "chair-1-nope", "by": "nurse"}, "unknown_alert"),
    (
        {"request_id": "r-f2", "command": "ack", "alert_id": "all", "by": "RN Kim"},
        "unknown_alert",
    ),  # "*" only
    ({"request_id": "r-f3", "command": "ack", "alert_id": "*", "by": "RN\u0007Kim"}, "bad_value"),
    ({"request_id": "r-f4", "command": "nibp", "site": "other-site"}, "wrong_bed"),
    ({"request_id": "r-f5", "command": "nibp", "sent_utc": "yesterday"}, "bad_value"),
    ({"request_id": "r-g0", "command": "phase", "phase": "ended", "dose_mg_per_kg": 0}, "bad_value"),
    ({"request_id": "r-g", "command": "phase", "phase": "dancing"}, "bad_value"),
    ({"request_id": "r-h", "command": "phase", "phase": "infusion", "dose_mg_per_kg": "lots"}, "wrong_type"),
    (b'{"request_id": "r-dup", "command": "nibp", "command": "ack"}', "duplicate_key"),
    ({"request_id": "r-j", "command": "ack", "alert_id": "*", "by": "RN \u202eKim"}, "bad_value"),  # bidi
    ({"request_id": "r-k", "command": "ack", "alert_id": "*", "by": "RN\u2066Kim"}, "bad_value"),
    ({"request_id": "r-l", "command": "ack", "alert_id": "*", "by": "RN\u200fKim"}, "bad_value"),
    ({"request_id": "r-m", "command": "phase", "phase": "baseline"}, "wrong_phase"),  # infusion -/-> baseline
    ({"request_id": "r-n", "command": "end_session", "by": "RN Kim"}, "wrong_phase"),  # pump first
    ({"request_id": "r-o", "command": "phase", "phase": "infusion"}, "wrong_phase"),  # already
    (
        {"request_id": "r-p", "command": "prompt_done", "prompt_id": "chair-1-p99", "by": "RN Kim"},
        "unknown_prompt",
    ),
    (
        {"request_id": "r-q", "command": "event", "event": "note", "note": "born 1970", "by": "RN Kim"},
        "bad_value",
    ),
    ({"request_id": "r-r", "command": "event", "event": "dissociation", "by": "RN Kim"}, "missing_field"),
    (
        {"request_id": "r-s", "command": "start_session", "by": "RN Kim", "age_band": "1950-01-01"},
        "bad_value",
    ),
]


async def test_bad_commands_each_get_an_error_and_change_nothing(setup: tuple[Daemon, Nurse]) -> None:
    """Malformed, oversized, unknown, wrong-bed and impossible commands: error result, same state."""
    daemon, nurse = setup
    session = daemon.beds[BED]
    await everything_sent_so_far(daemon, nurse)  # alerts of the set-up are in before it is counted
    before = (
        len(received(nurse)),
        session.engine.phase,
        [t.acknowledged_by for t in session.engine.active_alarms()],
    )
    for payload, code in BAD:
        result = await nurse.send(payload)
        assert result["ok"] is False, payload
        RESULT.validate(result)
        assert code == result["error"]["code"], (payload, result)
        assert result["error"]["message"]
        assert BED == result["bed"]
    await everything_sent_so_far(daemon, nurse)
    after = (
        len(received(nurse)),
        session.engine.phase,
        [t.acknowledged_by for t in session.engine.active_alarms()],
    )
    assert before == after
    assert "r-b" == next(r for r in nurse.results if r["error"]["code"] == "wrong_type")["request_id"]


async def test_valid_ack_acknowledges_and_a_replay_is_refused(setup: tuple[Daemon, Nurse]) -> None:
    """An ack of the active alarm produces an 'acknowledged' alert; the same request again is refused."""
    daemon, nurse = setup
    alert_id = nurse.alerts[0]["alert_id"]
    ack = {
        "request_id": "st-1",
        "command": "ack",
        "alert_id": alert_id,
        "by": "RN Kim",
        "site": SITE,
        "bed": BED,
        "sent_utc": "2026-03-01T10:15:48.020Z",
    }
    result = await nurse.send(ack)
    RESULT.validate(result)
    assert {"acknowledged": [alert_id]} == result["detail"]
    assert (True, "st-1", "ack", None) == (
        result["ok"],
        result["request_id"],
        result["command"],
        result["error"],
    )
    await wait_until(lambda: any(a["state"] == "acknowledged" for a in nurse.alerts), 5, "acknowledged alert")
    acked = next(a for a in nurse.alerts if a["state"] == "acknowledged")
    assert (alert_id, "RN Kim") == (acked["alert_id"], acked["acknowledged_by"])
    replay = await nurse.send(ack)
    assert ("replayed", "st-1") == (replay["error"]["code"], replay["request_id"])
    await everything_sent_so_far(daemon, nurse)
    assert [acked] == [a for a in received(nurse) if a["state"] == "acknowledged"]


async def test_phase_command_changes_phase_and_stores_fields(setup: tuple[Daemon, Nurse]) -> None:
    """phase recovery with dose and planned minutes: applied, and the fields are journalled."""
    daemon, nurse = setup
    cmd = {
        "request_id": "st-2",
        "command": "phase",
        "phase": "recovery",
        "dose_mg_per_kg": 0.5,
        "planned_minutes": 40,
    }
    result = await nurse.send(cmd)
    assert result["ok"] is True
    assert "recovery" == daemon.beds[BED].engine.phase
    await daemon.store.flush()  # the journal write, queued when the command was applied, is done
    meta = daemon.store.meta(BED)
    assert {"phase": "recovery", "dose_mg_per_kg": 0.5, "planned_minutes": 40.0} == meta["phase_fields"]
    assert "recovery" == meta["phase"]


async def test_ack_star_acknowledges_every_active_alarm(setup: tuple[Daemon, Nurse]) -> None:
    """alert_id "*" (the documented wildcard) acknowledges the bed's active alarms, by a nurse's name."""
    daemon, nurse = setup
    result = await nurse.send({"request_id": "st-star", "command": "ack", "alert_id": "*", "by": "RN Kim"})
    RESULT.validate(result)
    assert (True, None) == (result["ok"], result["error"])
    await wait_until(lambda: any(a["state"] == "acknowledged" for a in nurse.alerts), 5, "acknowledged alert")
    assert all(t.acknowledged_by == "RN Kim" for t in daemon.beds[BED].engine.active_alarms())


# --- the chairside session ----------------------------------------------------------------------

PROMPTS = Draft202012Validator(
    json.loads((ROOT / "schemas" / "prompts.schema.json").read_text(encoding="utf-8")),
    format_checker=Draft202012Validator.FORMAT_CHECKER,
)
READINESS = Draft202012Validator(
    json.loads((ROOT / "schemas" / "readiness.schema.json").read_text(encoding="utf-8")),
    format_checker=Draft202012Validator.FORMAT_CHECKER,
)
STATUS = Draft202012Validator(
    json.loads((ROOT / "schemas" / "status.schema.json").read_text(encoding="utf-8")),
    format_checker=Draft202012Validator.FORMAT_CHECKER,
)


class Retained:
    """The latest retained prompts, readiness and status documents of the bed, as a station sees them."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    async def follow(self, port: int) -> None:
        async with aiomqtt.Client("127.0.0.1", port) as client:
            for name in ("prompts", "readiness", "status"):
                await client.subscribe(f"{BASE}/{name}", qos=1)
            async for msg in client.messages:
                self.docs[str(msg.topic).rsplit("/", 1)[1]] = json.loads(bytes(msg.payload))  # type: ignore[arg-type]


async def test_take_bp_without_a_cuff_opens_a_retained_prompt_that_done_clears(
    setup: tuple[Daemon, Nurse], mosquitto: Mosquitto
) -> None:
    """nibp on a bed whose devices cannot start a cuff: a prompt on .../prompts; prompt_done clears it."""
    daemon, nurse = setup
    station = Retained()
    follower = asyncio.create_task(station.follow(mosquitto.port))
    try:
        result = await nurse.send({"request_id": "bp-1", "command": "nibp", "by": "RN Kim"})
        RESULT.validate(result)
        assert "prompted" == result["detail"]["nibp"]
        prompt_id = result["detail"]["prompt_id"]
        await wait_until(lambda: bool(station.docs.get("prompts", {}).get("prompts")), 5, "the prompt")
        doc = station.docs["prompts"]
        PROMPTS.validate(doc)
        assert [(prompt_id, "take_bp")] == [(p["prompt_id"], p["kind"]) for p in doc["prompts"]]
        assert doc["prompts"][0]["then"]
        done = await nurse.send(
            {"request_id": "bp-2", "command": "prompt_done", "prompt_id": prompt_id, "by": "RN Kim"}
        )
        assert done["ok"] is True, done
        await wait_until(lambda: station.docs["prompts"]["prompts"] == [], 5, "the prompt cleared")
        assert [] == daemon.runtimes[BED].prompts.open_prompts()
        again = await nurse.send(
            {"request_id": "bp-3", "command": "prompt_done", "prompt_id": prompt_id, "by": "RN Kim"}
        )
        assert "unknown_prompt" == again["error"]["code"]
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)


async def test_a_whole_session_follows_the_state_machine_and_the_readiness_check(
    setup: tuple[Daemon, Nurse], mosquitto: Mosquitto
) -> None:
    """pump stopped -> discharge readiness in the status; end; start (age band); infusion refused
    while readiness items are open, started with an override; the record keeps dose, total and override."""
    daemon, nurse = setup
    runtime = daemon.runtimes[BED]
    station = Retained()
    follower = asyncio.create_task(station.follow(mosquitto.port))
    try:
        stop = await nurse.send({"request_id": "s-1", "command": "pump_stopped", "by": "RN Kim"})
        assert (True, "recovery") == (stop["ok"], daemon.beds[BED].engine.phase), stop
        await wait_until(lambda: station.docs.get("status", {}).get("discharge") is not None, 5, "discharge")
        status = station.docs["status"]
        STATUS.validate(status)
        discharge = status["discharge"]
        assert discharge["ready"] is False and discharge["missing"] and discharge["nurse_confirms"]
        assert any("since pump stop" in line for line in discharge["missing"])
        end = await nurse.send({"request_id": "s-2", "command": "end_session", "by": "RN Kim"})
        assert (True, "ended") == (end["ok"], daemon.beds[BED].engine.phase), end
        skip = await nurse.send({"request_id": "s-3", "command": "phase", "phase": "infusion"})
        assert "wrong_phase" == skip["error"]["code"] and "ended" in skip["error"]["message"]
        start = await nurse.send(
            {"request_id": "s-4", "command": "start_session", "by": "RN Kim", "age_band": "older_adult"}
        )
        assert (True, "baseline") == (start["ok"], daemon.beds[BED].engine.phase), start
        assert "older_adult" == daemon.beds[BED].engine.age_band
        infusion = {
            "request_id": "s-5",
            "command": "start_infusion",
            "by": "RN Kim",
            "dose_mg_per_kg": 0.5,
            "weight_kg": 70,
        }
        refused = await nurse.send(infusion)
        RESULT.validate(refused)
        assert "not_ready" == refused["error"]["code"]
        assert "oximeter not linked" in refused["error"]["message"]
        assert "baseline incomplete" in refused["error"]["message"]
        assert "baseline" == daemon.beds[BED].engine.phase  # refused: nothing changed
        await wait_until(lambda: station.docs.get("readiness", {}).get("phase") == "baseline", 5, "readiness")
        readiness = station.docs["readiness"]
        READINESS.validate(readiness)
        assert readiness["ready"] is False
        assert {"device:oximeter", "baseline"} <= {i["item"] for i in readiness["items"] if not i["ok"]}
        started = await nurse.send(
            infusion | {"request_id": "s-6", "override_reason": "monitor swap, watched"}
        )
        RESULT.validate(started)
        assert started["ok"] is True, started
        assert (35.0, 40.0, "monitor swap, watched") == (
            started["detail"]["total_mg"],
            started["detail"]["planned_minutes"],
            started["detail"]["override_reason"],
        )
        assert "infusion" == daemon.beds[BED].engine.phase
        event = await nurse.send(
            {"request_id": "s-7", "command": "event", "event": "dissociation", "score": 2, "by": "RN Kim"}
        )
        assert event["ok"] is True, event
        runtime.record.close(asyncio.get_running_loop().time())
        daemon.sessions.flush()
        conn = daemon.sessions.read()
        try:
            sid = runtime.record.session_id
            rows = conn.execute(
                "SELECT kind, data FROM events WHERE session_id=? ORDER BY n", (sid,)
            ).fetchall()
            dose = conn.execute("SELECT dose_mg_per_kg FROM sessions WHERE session_id=?", (sid,)).fetchone()[
                0
            ]
        finally:
            conn.close()
        kinds = {kind: json.loads(data) for kind, data in rows}
        assert {"total_mg": 35.0, "override_reason": "monitor swap, watched"}.items() <= kinds[
            "start_infusion"
        ].items()
        assert kinds["start_infusion"]["open_items"]
        assert {"score": 2, "by": "RN Kim"} == kinds["nurse_dissociation"]
        assert "start_session" in kinds and 0.5 == dose
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
