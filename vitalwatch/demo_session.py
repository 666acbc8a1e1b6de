"""The demo's chairside session: simulated chairs, shortened timings, and a scripted nurse.

Why: a new user should see a whole session (start, the readiness check, the infusion with its
dose, a prompt, pause and resume, the pump stop, discharge readiness, the end) without reading
the MQTT contract. The scripted nurse is an ordinary MQTT client sending the same ``cmd``
documents a nurse station sends (docs/mqtt.md, "Commands") and reading the same retained
``status``, ``readiness`` and ``prompts`` documents, so the demo's station page shows the
session moving exactly as the nurse drives it.

Two chairs: :data:`SESSION_BED` has a Masimo Rad-8 and a SunTech cuff the gateway can start;
:data:`PROMPT_BED` has an ACCUTORR, whose cuff it cannot start, so "take BP now" there becomes a
prompt for the nurse. The station's browser test runs the same chairs (:func:`session_simulators`,
:func:`session_beds`).

A real session takes about two hours; :class:`DemoTimings` shortens the baseline, the infusion
and the recovery through the daemon's ordinary ``[alarms]`` overrides of the alarm table, for
the demo's own configuration only. The shipped defaults are not touched, and the demo prints
what it shortened (:meth:`DemoTimings.notice`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import aiomqtt

from vitalwatch import strict_json
from vitalwatch.delivery.broker import message_bytes
from vitalwatch.engine.table import load_alarm_table
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.base import DeviceSimulator, Scenario
from vitalwatch.simulators.scenarios import get_scenario

__all__ = [
    "NURSE",
    "PROMPT_BED",
    "SESSION_BED",
    "DemoTimings",
    "ScriptedNurse",
    "SessionStepFailed",
    "run_session",
    "session_beds",
    "session_simulators",
]

SESSION_BED = "chair-1"  # Rad-8 and a SunTech cuff the gateway starts itself
PROMPT_BED = "chair-2"  # ACCUTORR: the gateway cannot start its cuff, so it asks the nurse
NURSE = "RN Demo"
DOSE_MG_PER_KG = 0.5
WEIGHT_KG = 70.0
# The ACCUTORR measures by itself at start and then hardly ever: BPs on chair-2 come from the nurse.
ACCUTORR_EVERY_MIN = 600.0
# The least baseline of SpO2 and pulse a table may ask for (the configuration refuses less).
MIN_OXIMETRY_S = 30.0
# A short cuff cycle (a real one takes 20-40 s), so a requested reading shows within seconds.
CUFF_CYCLE_S = (2.0, 3.0)


def session_simulators(scenario: Scenario) -> dict[str, DeviceSimulator]:
    """The devices of the two chairs by device id: ``scenario`` drives chair-1, chair-2 is normal."""
    return {
        "oximeter": make_simulator("masimo", scenario),
        "cuff": make_simulator("suntech", scenario, min_cycle_s=CUFF_CYCLE_S[0], max_cycle_s=CUFF_CYCLE_S[1]),
        "monitor": make_simulator("accutorr", get_scenario("normal"), nibp_interval_min=ACCUTORR_EVERY_MIN),
    }


def session_beds(urls: Mapping[str, str]) -> list[dict[str, Any]]:
    """The ``[[beds]]`` tables of the two chairs, given each device id's port URL."""
    return [
        {
            "id": SESSION_BED,
            "devices": [
                {"id": "oximeter", "driver": "masimo", "url": urls["oximeter"]},
                {"id": "cuff", "driver": "suntech", "url": urls["cuff"]},
            ],
        },
        {"id": PROMPT_BED, "devices": [{"id": "monitor", "driver": "accutorr", "url": urls["monitor"]}]},
    ]


def _fmt(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"


@dataclass(frozen=True, slots=True)
class DemoTimings:
    """The demo's session timings, in proportion to ``step_s``, the pause between nurse steps.

    At the default 6 s a whole session takes about three minutes. The baseline needs one BP
    reading instead of two (so the chair whose cuff only the nurse can start is not asked for
    one again and again) and at least 30 s of oximetry, the least the configuration accepts;
    every limit, priority and rule of the alarm table stays the shipped default.
    """

    step_s: float = 6.0

    @property
    def baseline_oximetry_s(self) -> float:
        return max(MIN_OXIMETRY_S, 6 * self.step_s)

    @property
    def infusion_s(self) -> float:
        return 16 * self.step_s

    @property
    def recovery_s(self) -> float:
        return 6 * self.step_s

    @property
    def recovery_spacing_s(self) -> float:
        return 2 * self.step_s

    def alarms(self) -> dict[str, Any]:
        """The daemon's ``[alarms]`` table for the demo: the default table with shortened timings.

        The infusion's length is the nurse's (she stops the pump); the table's planned length,
        which only raises an overrun advisory, stays the default.
        """
        return {
            "table": "default",
            "baseline": {"oximetry_s": self.baseline_oximetry_s, "nibp_readings": 1, "nibp_spacing_s": 0},
            "discharge": {
                "after_recovery_min": self.recovery_s / 60,
                "nibp_spacing_min": self.recovery_spacing_s / 60,
            },
        }

    def notice(self) -> str:
        """What the demo shortened, beside the shipped default, for the user to read first."""
        default = load_alarm_table(None)
        b, d = default.baseline, default.discharge
        return (
            "demo timings are SHORTENED (this demo's configuration only; the shipped alarm table is"
            " unchanged):\n"
            f"  baseline {_fmt(self.baseline_oximetry_s)} of SpO2 and pulse and 1 BP reading (default"
            f" {_fmt(b.oximetry_s)}, and {b.nibp_readings} BP readings {_fmt(b.nibp_spacing_s)} apart)\n"
            f"  infusion: the nurse stops the pump after {_fmt(self.infusion_s)} (planned by default"
            f" {_fmt(default.planned_infusion_s)})\n"
            f"  discharge after {_fmt(self.recovery_s)} of recovery, BP readings"
            f" {_fmt(self.recovery_spacing_s)} apart (default {_fmt(d.after_recovery_min * 60)},"
            f" {_fmt(d.nibp_spacing_min * 60)} apart)"
        )


class SessionStepFailed(Exception):
    """A step of the scripted session was refused or never answered; the message says which."""


Doc = dict[str, Any]


class ScriptedNurse:
    """One MQTT client acting as the nurse at a station: sends commands, reads what a station reads.

    Keeps the latest retained document per (bed, kind) and every result and alert; every wait is
    on a condition over them, bounded by a timeout that names the step.
    """

    def __init__(self, client: aiomqtt.Client, *, base: str, out: TextIO, name: str = NURSE) -> None:
        self.client, self.base, self.out, self.name = client, base, out, name
        self.docs: dict[tuple[str, str], Doc] = {}
        self.results: dict[str, Doc] = {}
        self.alerts: list[Doc] = []
        self._n = 0
        self._news = asyncio.Condition()

    async def subscribe(self) -> None:
        for kind in ("status", "readiness", "prompts", "cmd/result", "alerts", "vitals/nibp_systolic"):
            await self.client.subscribe(f"{self.base}/+/{kind}", qos=1)

    async def listen(self) -> None:
        """Collect until cancelled (run as a task beside the script)."""
        async for msg in self.client.messages:
            try:
                doc = json.loads(message_bytes(msg))
            except ValueError:
                continue
            if not isinstance(doc, dict):
                continue
            bed, kind = str(msg.topic)[len(self.base) + 1 :].split("/", 1)
            if kind == "cmd/result":
                self.results[str(doc.get("request_id"))] = doc
            elif kind == "alerts":
                self.alerts.append(doc)
            else:
                self.docs[(bed, kind)] = doc
            async with self._news:
                self._news.notify_all()

    def say(self, line: str) -> None:
        print(f"== {line}", file=self.out, flush=True)

    def doc(self, bed: str, kind: str) -> Doc:
        return self.docs.get((bed, kind)) or {}

    async def until(self, condition: Callable[[], bool], within_s: float, what: str) -> None:
        try:
            async with asyncio.timeout(within_s):
                async with self._news:
                    await self._news.wait_for(condition)
        except TimeoutError:
            raise SessionStepFailed(f"no {what} within {within_s:g} s") from None

    async def send(self, bed: str, command: str, *, refused_ok: bool = False, **fields: Any) -> Doc:
        """Publish one command with the nurse's name; its result, or SessionStepFailed when refused
        (unless ``refused_ok``)."""
        self._n += 1
        cmd = {"request_id": f"demo-{self._n:04d}", "command": command, "by": self.name, **fields}
        body = strict_json.dumps(cmd, what="command", separators=(",", ":"))
        await self.client.publish(f"{self.base}/{bed}/cmd", body, qos=1, retain=False)
        rid = cmd["request_id"]
        await self.until(lambda: rid in self.results, 15, f"answer from {bed}'s gateway to {command}")
        result = self.results[rid]
        if not result.get("ok") and not refused_ok:
            error = result.get("error") or {}
            raise SessionStepFailed(
                f"{command} on {bed} refused ({error.get('code')}): {error.get('message')}"
            )
        return result


async def _take_bp(nurse: ScriptedNurse, bed: str) -> str:
    """ "Take BP now" on ``bed``: the cuff starts and its reading shows, or a prompt opens (its id)."""
    before = nurse.doc(bed, "vitals/nibp_systolic").get("measured_utc")
    detail = (await nurse.send(bed, "nibp"))["detail"] or {}
    if detail.get("nibp") == "prompted":
        return str(detail["prompt_id"])
    nurse.say(f"nurse {nurse.name}: take BP now on {bed} -> the gateway started the cuff")
    await nurse.until(
        lambda: nurse.doc(bed, "vitals/nibp_systolic").get("measured_utc") not in (None, before),
        60,
        f"BP reading on {bed}",
    )
    nurse.say(f"{bed}: BP reading {nurse.doc(bed, 'vitals/nibp_systolic').get('value'):g} mmHg systolic")
    return ""


async def _acknowledge(nurse: ScriptedNurse, bed: str, step_s: float) -> None:
    """The nurse answers every alarm raised on ``bed``: acknowledged a moment after it shows."""
    seen = 0

    def more() -> bool:
        return len(nurse.alerts) > seen

    while True:
        await nurse.until(more, 1e9, "alert")
        new, seen = nurse.alerts[seen:], len(nurse.alerts)
        for alert in new:
            if alert.get("bed") != bed or alert.get("state") != "raised":
                continue
            await asyncio.sleep(step_s / 2)  # she reads it first
            result = await nurse.send(bed, "ack", refused_ok=True, alert_id=alert["alert_id"])
            if result.get("ok"):  # else it ended meanwhile
                priority = str(alert.get("priority", "")).upper()
                nurse.say(f"nurse {nurse.name}: acknowledges the {priority} alarm: {alert.get('message')}")


async def _discharge(nurse: ScriptedNurse, bed: str, within_s: float) -> Doc:
    """Wait for discharge readiness on the bed's status; print it when it appears and when it is met."""
    await nurse.until(lambda: bool(nurse.doc(bed, "status").get("discharge")), 30, "discharge readiness")
    first = nurse.doc(bed, "status")["discharge"]
    nurse.say(f"station, {bed}: discharge readiness appears: not yet; missing: {'; '.join(first['missing'])}")
    try:
        await nurse.until(
            lambda: bool((nurse.doc(bed, "status").get("discharge") or {}).get("ready")), within_s, "ready"
        )
    except SessionStepFailed:
        last = nurse.doc(bed, "status").get("discharge") or first
        nurse.say(
            f"station, {bed}: still not discharge-ready after {within_s:g} s (missing:"
            f" {'; '.join(last['missing'])}); the demo ends the session anyway"
        )
        return dict(last)
    ready = nurse.doc(bed, "status")["discharge"]
    nurse.say(f"station, {bed}: DISCHARGE-READY: {'; '.join(ready['met'])}")
    nurse.say(f"  the nurse confirms what no monitor measures: {', '.join(ready['nurse_confirms'])}")
    return dict(ready)


def _readiness(nurse: ScriptedNurse, bed: str, when: str) -> Doc:
    """Print the bed's pre-infusion readiness check as the station shows it."""
    ready = nurse.doc(bed, "readiness")
    verdict = "READY" if ready.get("ready") else "NOT READY"
    nurse.say(f"station, {bed}: readiness check ({when}): {verdict} to start the infusion")
    for item in ready.get("items", []):
        nurse.say(f"  [{'x' if item['ok'] else ' '}] {item['text']}")
    return ready


async def _script(nurse: ScriptedNurse, t: DemoTimings) -> None:
    step = t.step_s
    bed = SESSION_BED
    await nurse.until(
        lambda: all(nurse.doc(b, "status").get("state") == "online" for b in (SESSION_BED, PROMPT_BED)),
        30,
        "online status from both chairs",
    )
    await nurse.send(bed, "start_session", age_band="adult")
    nurse.say(f"nurse {nurse.name}: start session on {bed} (age band adult) -> baseline")

    await asyncio.sleep(step)
    prompt_id = await _take_bp(nurse, PROMPT_BED)
    await nurse.until(
        lambda: any(p["prompt_id"] == prompt_id for p in nurse.doc(PROMPT_BED, "prompts").get("prompts", [])),
        15,
        f"prompt {prompt_id} on the station",
    )
    prompt = next(p for p in nurse.doc(PROMPT_BED, "prompts")["prompts"] if p["prompt_id"] == prompt_id)
    nurse.say(
        f"nurse {nurse.name}: take BP now on {PROMPT_BED} -> its ACCUTORR cannot be started remotely;"
        f" station shows prompt {prompt_id}: {prompt['text']}"
    )
    await asyncio.sleep(step)
    await nurse.send(PROMPT_BED, "prompt_done", prompt_id=prompt_id)
    await nurse.until(
        lambda: all(p["prompt_id"] != prompt_id for p in nurse.doc(PROMPT_BED, "prompts").get("prompts", [])),
        15,
        f"prompt {prompt_id} cleared",
    )
    nurse.say(f"nurse {nurse.name}: took the BP by hand, marks {prompt_id} done -> the prompt is gone")

    await asyncio.sleep(step)
    _readiness(nurse, bed, "first look")

    def baseline_done() -> bool:
        items = nurse.doc(bed, "readiness").get("items", [])
        return any(i["item"] == "baseline" and i["ok"] for i in items)

    await nurse.until(baseline_done, t.baseline_oximetry_s + 60, "complete baseline")
    ready = _readiness(nurse, bed, "baseline complete")
    fields: dict[str, Any] = {
        "dose_mg_per_kg": DOSE_MG_PER_KG,
        "weight_kg": WEIGHT_KG,
        "planned_minutes": round(t.infusion_s / 60, 1),
    }
    if not ready.get("ready"):
        fields["override_reason"] = "patient assessed at the chair, BP stable"
    detail = (await nurse.send(bed, "start_infusion", **fields))["detail"]
    override = f', override: "{fields["override_reason"]}"' if "override_reason" in fields else ""
    nurse.say(
        f"nurse {nurse.name}: start infusion {detail['dose_mg_per_kg']:g} mg/kg x {detail['weight_kg']:g} kg"
        f" = {detail['total_mg']:g} mg total, {detail['planned_minutes']:g} min planned{override} -> infusion"
    )

    await asyncio.sleep(3 * step)
    await nurse.send(bed, "phase", phase="pause")
    nurse.say(f"nurse {nurse.name}: pause infusion (pump paused)")
    await asyncio.sleep(step)
    await nurse.send(bed, "phase", phase="resume")
    nurse.say(f"nurse {nurse.name}: resume infusion")
    await asyncio.sleep(step)
    await nurse.send(bed, "event", event="dissociation", score=1)
    nurse.say(f"nurse {nurse.name}: observation: dissociation, mild (1 on the 0-3 scale)")
    await asyncio.sleep(t.infusion_s - 5 * step)
    await nurse.send(bed, "pump_stopped")
    nurse.say(f"nurse {nurse.name}: pump stopped -> recovery")

    await asyncio.sleep(step)
    await _take_bp(nurse, bed)
    await asyncio.sleep(t.recovery_spacing_s)
    await _take_bp(nurse, bed)
    await _discharge(nurse, bed, t.recovery_s + max(10 * step, 30))
    await asyncio.sleep(step)
    await nurse.send(bed, "end_session")
    nurse.say(f"nurse {nurse.name}: end session (discharge) -> ended; the session record is closed")


async def run_session(host: str, port: int, *, site: str, out: TextIO, timings: DemoTimings) -> None:
    """Drive one whole session on :data:`SESSION_BED` over the broker (SessionStepFailed: a step failed)."""
    async with aiomqtt.Client(host, port, identifier=f"vitalwatch-demo-nurse-{port}") as client:
        nurse = ScriptedNurse(client, base=f"vitalwatch/v1/{site}", out=out)
        await nurse.subscribe()
        listener = asyncio.create_task(nurse.listen(), name="nurse-listen")
        acks = asyncio.create_task(_acknowledge(nurse, SESSION_BED, timings.step_s), name="nurse-acks")
        try:
            await _script(nurse, timings)
        finally:
            for task in (acks, listener):
                task.cancel()
            await asyncio.gather(acks, listener, return_exceptions=True)
