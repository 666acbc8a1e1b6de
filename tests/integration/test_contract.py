"""The MQTT contract as the running daemon keeps it: every message it publishes validates.

The in-process daemon reads a simulated Masimo on a pty through a desaturation, a nurse station
acknowledges the alarm, another sends a malformed and an unknown-alert command; one subscriber
on the bed's whole topic tree validates EVERY message against schemas/ (alerts and alarms/+
against the alert schema, status, vitals/+, trend, cmd/result), checks that topic levels and payloads
agree, and that each kind of message did occur. So docs/mqtt.md + schemas/ and the daemon
cannot drift apart: a field added, renamed or re-typed on either side fails here.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from jsonschema import Draft202012Validator

from tests.helpers import wait_until
from vitalwatch.config import parse_config
from vitalwatch.ops.daemon import Daemon
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.asyncio]

ROOT = Path(__file__).resolve().parents[2]
SITE = "clinic-contract"
BED = "chair-3"
BASE = f"vitalwatch/v1/{SITE}/{BED}"
# Scenario seconds 28 on at 4x: SpO2 falls below 90 % about 2 s after launch (desaturation starts
# at ~35 s), and with the sustain shortened to 2 s the HIGH alarm is raised within ~5 s.
SPEED, START_AT = 4.0, 28.0
STALE = "chair-3-19990101T000000-0001"  # a retained alarm left behind by a crashed predecessor


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


SCHEMAS = {
    name: validator(name)
    for name in ("alert", "status", "vital", "command_result", "command", "prompts", "readiness", "trend")
}


class Recorder:
    """Everything published under the bed's topic tree, validated as it arrives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bool, bytes]] = []
        self.problems: list[str] = []
        self.docs: dict[str, list[dict[str, Any]]] = {}

    def kind(self, topic: str) -> str:
        rest = topic.removeprefix(BASE + "/")
        return rest.split("/", 1)[0] if rest.startswith(("alarms/", "vitals/")) else rest

    def add(self, topic: str, retain: bool, body: bytes) -> None:
        self.messages.append((topic, retain, body))
        kind = self.kind(topic)
        level = topic.rsplit("/", 1)[-1]
        if kind == "cmd":
            return  # the stations' own commands (some malformed on purpose), not the daemon's
        if kind == "alarms" and body == b"":
            self.docs.setdefault("alarms-cleared", []).append({"alert_id": level})
            return  # an empty retained message ends an alarm (documented)
        if kind == "trend" and body == b"":
            self.docs.setdefault("trend-cleared", []).append({})
            return  # no session, or nothing known: the retained trend is emptied (documented)
        try:
            doc = json.loads(body)
        except ValueError:
            self.problems.append(f"{topic}: not JSON: {body[:80]!r}")
            return
        schema = {
            "alerts": "alert",
            "alarms": "alert",
            "status": "status",
            "vitals": "vital",
            "cmd/result": "command_result",
            "prompts": "prompts",
            "readiness": "readiness",
            "trend": "trend",
        }.get(kind)
        if schema is None:
            self.problems.append(f"{topic}: a topic the contract does not document")
            return
        self.problems += [f"{topic}: {e.message}" for e in SCHEMAS[schema].iter_errors(doc)]
        if kind == "alarms" and doc.get("alert_id") != level:
            self.problems.append(f"{topic}: alert_id {doc.get('alert_id')!r} is not the topic's")
        if kind == "vitals" and doc.get("kind") != level:
            self.problems.append(f"{topic}: kind {doc.get('kind')!r} is not the topic's")
        if kind in ("alerts", "alarms", "status", "cmd/result", "prompts", "readiness", "trend") and (
            doc.get("site"),
            doc.get("bed"),
        ) != (
            SITE,
            BED,
        ):
            self.problems.append(f"{topic}: site/bed {doc.get('site')}/{doc.get('bed')} not the topic's")
        self.docs.setdefault(kind, []).append(doc)

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [d for d in self.docs.get(kind, []) if all(d.get(k) == v for k, v in match.items())]


async def test_every_published_message_validates_against_its_schema(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Desaturation, ack, bad commands, heartbeats, vitals and a clean stop: all of it is the contract."""
    rec = Recorder()
    story = get_scenario("desaturation")
    async with (
        serve_pty(make_simulator("masimo", story), speed=SPEED, start_at=START_AT) as endpoint,
        aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="station") as station,
    ):
        config = parse_config(
            {
                "site": SITE,
                "mqtt": {"port": mosquitto.port, "heartbeat_s": 0.5, "keepalive_s": 5, "client_id": "vw"},
                "logging": {"level": "warning"},
                "state": {"directory": str(tmp_path / "state")},
                "alarms": {"table": "default", "rules": {"spo2_low_high": {"sustain_s": 2.0}}},
                "beds": [
                    {"id": BED, "devices": [{"id": "oximeter", "driver": "masimo", "url": endpoint.url}]}
                ],
            }
        )
        stale = json.dumps({"alert_id": STALE, "seq": 1}).encode()
        await station.publish(f"{BASE}/alarms/{STALE}", stale, qos=1, retain=True)
        await station.subscribe(f"{BASE}/#", qos=1)

        async def record() -> None:
            async for message in station.messages:
                rec.add(str(message.topic), message.retain, bytes(message.payload))  # type: ignore[arg-type]

        recorder = asyncio.create_task(record())
        await wait_until(lambda: any(t.endswith(STALE) for t, _, _ in rec.messages), 5, "the stale alarm")
        rec.messages.clear()
        rec.problems.clear()
        rec.docs.clear()

        daemon = Daemon(config)
        runner = asyncio.create_task(daemon.run())
        daemon.beds[BED].set_phase("infusion", asyncio.get_running_loop().time())
        try:
            await wait_until(
                lambda: bool(rec.of("alerts", condition="spo2_low", state="raised")), 12, "spo2_low"
            )
            alarm = rec.of("alerts", condition="spo2_low", state="raised")[0]
            ack = {
                "request_id": "st-contract-1",
                "command": "ack",
                "alert_id": alarm["alert_id"],
                "by": "RN Kim",
            }
            await station.publish(f"{BASE}/cmd", json.dumps(ack).encode(), qos=1)
            await station.publish(f"{BASE}/cmd", b'{"request_id": "st-contract-2", "command": "ack"', qos=1)
            unknown = {"request_id": "st-contract-3", "command": "ack", "alert_id": "all", "by": "RN Kim"}
            await station.publish(f"{BASE}/cmd", json.dumps(unknown).encode(), qos=1)
            await wait_until(lambda: len(rec.of("cmd/result")) >= 3, 5, "three command results")
            await wait_until(
                lambda: bool(rec.of("alerts", alert_id=alarm["alert_id"], state="acknowledged")), 5, "the ack"
            )
            await wait_until(lambda: len(rec.of("status", state="online")) >= 3, 5, "heartbeats")
            # Take a BP now on a bed whose monitor cannot start a cuff: a retained prompt, then done.
            bp = {"request_id": "st-contract-4", "command": "nibp", "by": "RN Kim"}
            await station.publish(f"{BASE}/cmd", json.dumps(bp).encode(), qos=1)
            await wait_until(lambda: any(d["prompts"] for d in rec.of("prompts")), 5, "a prompt")
            prompt_id = next(d for d in rec.of("prompts") if d["prompts"])["prompts"][0]["prompt_id"]
            done = {
                "request_id": "st-contract-5",
                "command": "prompt_done",
                "prompt_id": prompt_id,
                "by": "RN Kim",
            }
            await station.publish(f"{BASE}/cmd", json.dumps(done).encode(), qos=1)
            await wait_until(lambda: rec.of("prompts")[-1]["prompts"] == [], 5, "the prompt done")
            await wait_until(lambda: bool(rec.of("readiness")), 5, "readiness")
            await wait_until(
                lambda: {"spo2", "pulse_rate"} <= {d["kind"] for d in rec.of("vitals")}, 5, "vitals"
            )
            await wait_until(
                lambda: any({"spo2", "pulse_rate"} <= set(d["latest"]) for d in rec.of("trend")), 5, "trend"
            )
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        await wait_until(lambda: bool(rec.of("status", state="offline")), 5, "offline on a clean stop")
        # Restarted on the same journal: the active set it republishes at connect is the contract too.
        republished = len(rec.of("alarms", alert_id=alarm["alert_id"]))
        beat = rec.of("status", state="online")[-1]  # the first daemon's last heartbeat
        again = Daemon(config)
        rerun = asyncio.create_task(again.run())
        try:
            await wait_until(
                lambda: len(rec.of("alarms", alert_id=alarm["alert_id"])) > republished, 5, "the active set"
            )
        finally:
            rerun.cancel()
            await asyncio.gather(rerun, return_exceptions=True)
        recorder.cancel()
        await asyncio.gather(recorder, return_exceptions=True)

    assert [] == rec.problems
    results = {r["request_id"]: r for r in rec.of("cmd/result")}
    assert (True, None, {"acknowledged": [alarm["alert_id"]]}) == (
        results["st-contract-1"]["ok"],
        results["st-contract-1"]["error"],
        results["st-contract-1"]["detail"],
    )
    assert "bad_json" == results[None]["error"]["code"]
    assert "unknown_alert" == results["st-contract-3"]["error"]["code"]
    acked = rec.of("alerts", alert_id=alarm["alert_id"], state="acknowledged")[0]
    assert ("RN Kim", alarm["seq"] + 1 <= acked["seq"]) == (acked["acknowledged_by"], True)
    # The retained topic carries the alarm's latest transition (seq >= 1, enforced by the schema).
    retained = rec.of("alarms", alert_id=alarm["alert_id"])
    assert retained and retained[-1]["seq"] == max(
        d["seq"] for d in rec.of("alerts", alert_id=alarm["alert_id"])
    )
    # The stale retained alarm of a predecessor was cleared on connect (docs/mqtt.md, the active set).
    assert {"alert_id": STALE} in rec.docs.get("alarms-cleared", [])
    # What a station needs from the status: exact minutes in phase, the backlog, technical alarms.
    assert ("infusion", 0, []) == (beat["phase"], beat["outbox_pending"], beat["technical"])
    # The ack the station sent is a valid command too (the contract both ways).
    SCHEMAS["command"].validate(ack)
    # Positive control of the recorder: it does refuse a payload the daemon must never send.
    rec.add(f"{BASE}/status", True, json.dumps(beat | {"patient": "Doe^John"}).encode())
    assert rec.problems


async def test_status_says_exact_minutes_in_phase(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A station that (re)loads takes the minutes in phase from the status, so they must be there."""
    config = parse_config(
        {
            "site": SITE,
            "mqtt": {"port": mosquitto.port, "heartbeat_s": 0.5},
            "logging": {"level": "warning"},
            "state": {"directory": str(tmp_path / "state")},
            "beds": [
                {"id": BED, "devices": [{"id": "oximeter", "driver": "masimo", "url": "/nonexistent/tty"}]}
            ],
        }
    )
    rec = Recorder()
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="station") as station:
        await station.subscribe(f"{BASE}/status", qos=1)

        async def record() -> None:
            async for message in station.messages:
                rec.add(str(message.topic), message.retain, bytes(message.payload))  # type: ignore[arg-type]

        recorder = asyncio.create_task(record())
        daemon = Daemon(config)
        runner = asyncio.create_task(daemon.run())
        daemon.beds[BED].set_phase("infusion", asyncio.get_running_loop().time() - 90.0)
        try:
            await wait_until(
                lambda: len(rec.of("status", state="online", phase="infusion")) >= 2, 5, "heartbeats"
            )
        finally:
            runner.cancel()
            recorder.cancel()
            await asyncio.gather(runner, recorder, return_exceptions=True)
    assert [] == rec.problems
    minutes = rec.of("status", state="online", phase="infusion")[-1]["phase_minutes"]
    assert minutes is not None and 1.5 <= minutes <= 1.7
