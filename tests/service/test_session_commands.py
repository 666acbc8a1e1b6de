"""The chairside session's command handling with a fake bed: state machine, readiness and override,
rate limit, retained refusal, prompts and events (real Mosquitto runs in tests/integration)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from vitalwatch.delivery.commands import TRANSITIONS, CommandHandler, RateLimit, transition_refusal
from vitalwatch.engine.baseline import Baseline
from vitalwatch.engine.discharge import discharge_checklist, discharge_status
from vitalwatch.engine.signals import NibpReading
from vitalwatch.engine.table import BaselineSettings, DischargeSettings
from vitalwatch.ops.prompts import PromptBook, prompt_kind
from vitalwatch.ops.readiness import readiness_items


@dataclass
class FakeBed:
    """A bed with a phase and no cuff (every nibp request fails)."""

    phase: str = "baseline"
    phases: list[str] = field(default_factory=list)
    bands: list[str] = field(default_factory=list)

    def acknowledge(self, alert_id: str, by: str, now: float) -> None: ...

    def set_phase(self, phase: str, now: float) -> None:
        if phase in ("pause", "resume") and self.phase != "infusion":
            raise ValueError(f"{phase}: only an infusion can be paused or resumed (phase is {self.phase})")
        if phase not in ("pause", "resume"):
            self.phase = phase
        self.phases.append(phase)

    def set_age_band(self, band: str, now: float) -> None:
        self.bands.append(band)

    def request_nibp(self, reason: str, now: float) -> bool:
        return False

    def is_active(self, alert_id: str) -> bool:
        return False

    def active_ids(self) -> list[str]:
        return []


@dataclass
class FakeDesk:
    open_items: list[str] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fields: list[dict[str, Any]] = field(default_factory=list)
    band: list[str | None] = field(default_factory=list)
    prompts: PromptBook = field(default_factory=lambda: PromptBook("chair-1"))

    def remember_request(self, request_id: str) -> None: ...

    def phase_fields(self, fields: dict[str, Any]) -> None:
        self.fields.append(fields)

    def readiness_open(self, now: float) -> list[str]:
        return list(self.open_items)

    def age_band(self, band: str | None, now: float) -> None:
        self.band.append(band)

    def session_event(self, kind: str, data: dict[str, Any], now: float) -> None:
        self.events.append((kind, data))

    def open_prompt(self, reason: str, now: float) -> str:
        return self.prompts.open(reason, now).prompt_id

    def prompt_done(self, prompt_id: str, by: str, now: float) -> bool:
        return self.prompts.done(prompt_id) is not None


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def handler(bed: FakeBed, desk: FakeDesk, clock: Clock | None = None) -> CommandHandler:
    return CommandHandler(site="s", bed="chair-1", target=bed, clock=clock or Clock(), journal=desk)


def send(h: CommandHandler, n: int, **fields: Any) -> dict[str, Any]:
    return h.handle(json.dumps({"request_id": f"r-{n}", **fields}).encode())


INFUSION = {"command": "start_infusion", "by": "RN Kim", "dose_mg_per_kg": 0.5, "weight_kg": 72}


def test_state_machine_allows_exactly_the_documented_transitions() -> None:
    """ended -> baseline -> ended -> infusion: the last is refused; every pair is judged by the table."""
    allowed = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert {
        ("ended", "baseline"),
        ("baseline", "infusion"),
        ("baseline", "ended"),
        ("infusion", "recovery"),
        ("recovery", "ended"),
    } == allowed
    for a in TRANSITIONS:
        for b in TRANSITIONS:
            assert (transition_refusal(a, b) is None) == ((a, b) in allowed), (a, b)
    assert transition_refusal("infusion", "pause") is None  # the pause is not this table's
    bed = FakeBed(phase="ended")
    h = handler(bed, FakeDesk())
    codes = [
        send(h, 1, command="phase", phase="baseline")["ok"],
        send(h, 2, command="phase", phase="ended")["ok"],
        send(h, 3, command="phase", phase="infusion")["error"]["code"],
    ]
    assert [True, True, "wrong_phase"] == codes
    assert ["baseline", "ended"] == bed.phases


def test_infusion_start_needs_an_override_while_readiness_items_are_open() -> None:
    """Refused with the open items named; with a reason it starts, total mg computed and recorded."""
    bed, desk = (
        FakeBed(),
        FakeDesk(open_items=["cuff not linked", "baseline incomplete: NIBP 1 of 2 readings"]),
    )
    h = handler(bed, desk)
    refused = send(h, 1, **INFUSION)
    assert "not_ready" == refused["error"]["code"]
    assert (
        "cuff not linked" in refused["error"]["message"] and "override_reason" in refused["error"]["message"]
    )
    assert ("baseline", []) == (bed.phase, desk.events)
    ok = send(h, 2, **INFUSION, override_reason="cuff swapped, BP by hand")
    assert ok["ok"] is True
    assert {"total_mg": 36.0, "planned_minutes": 40.0, "weight_kg": 72.0}.items() <= ok["detail"].items()
    assert "infusion" == bed.phase
    kind, data = desk.events[-1]
    assert "start_infusion" == kind
    assert ("cuff swapped, BP by hand", desk.open_items, 36.0, "RN Kim") == (
        data["override_reason"],
        data["open_items"],
        data["total_mg"],
        data["by"],
    )
    assert {"phase": "infusion", "dose_mg_per_kg": 0.5, "planned_minutes": 40.0} == desk.fields[-1]


def test_ready_bed_starts_without_override_and_end_is_recorded_before_the_phase_ends() -> None:
    bed, desk = FakeBed(), FakeDesk()
    h = handler(bed, desk)
    assert send(h, 1, **INFUSION, planned_minutes=30)["detail"]["total_mg"] == 36.0
    assert "override_reason" not in desk.events[-1][1]
    assert "wrong_phase" == send(h, 2, command="end_session", by="RN Kim")["error"]["code"]  # pump first
    assert send(h, 3, command="pump_stopped", by="RN Kim")["ok"]
    assert send(h, 4, command="end_session", by="RN Kim")["ok"]
    assert ["infusion", "recovery", "ended"] == bed.phases
    assert ["start_infusion", "pump_stopped", "end_session"] == [k for k, _ in desk.events]
    assert send(h, 5, command="start_session", by="RN Kim", age_band="older_adult")["ok"]
    assert (["older_adult"], "baseline") == (desk.band, bed.phase)


def test_pause_and_resume_pass_the_state_machine_to_the_engine_and_age_band_goes_with_a_phase() -> None:
    """pause/resume are the engine's (refused outside the infusion with its reason); a phase command's
    age band is set on the bed; a new session without one takes the bed's (the desk decides)."""
    bed, desk = FakeBed(phase="recovery"), FakeDesk()
    h = handler(bed, desk)
    refused = send(h, 1, command="phase", phase="pause", by="RN Kim")
    assert ("bad_value", []) == (refused["error"]["code"], bed.phases)
    bed.phase = "infusion"
    assert send(h, 2, command="phase", phase="pause", by="RN Kim")["ok"]
    assert send(h, 3, command="phase", phase="resume", by="RN Kim")["ok"]
    assert (["pause", "resume"], "infusion") == (bed.phases, bed.phase)
    bed.phase = "ended"
    ok = send(h, 4, command="phase", phase="baseline", age_band="older_adult")
    assert ("older_adult", ["older_adult"]) == (ok["detail"]["age_band"], bed.bands)
    bed.phase = "ended"
    assert send(h, 5, command="start_session", by="RN Kim")["ok"]
    assert [None] == desk.band  # the runtime gives the bed's configured band


def test_rate_limit_refuses_a_flood_and_recovers() -> None:
    """A burst passes, the rest is refused (counted), and after a pause commands pass again."""
    clock = Clock()
    h = CommandHandler(
        site="s",
        bed="chair-1",
        target=FakeBed(),
        clock=clock,
        journal=FakeDesk(),
        rate=RateLimit(burst=5, per_s=1),
    )
    results = [send(h, n, command="ack", alert_id="*", by="x") for n in range(50)]
    assert 5 == sum(r["ok"] for r in results)
    assert (
        45
        == h.rate_limited
        == sum(r["error"] is not None and r["error"]["code"] == "rate_limited" for r in results)
    )
    assert "r-49" == results[-1]["request_id"]  # still answered, with its id
    clock.t += 2.0
    assert send(h, 100, command="ack", alert_id="*", by="x")["ok"] is True


def test_retained_duplicate_keys_and_bidi_names_are_refused_and_change_nothing() -> None:
    bed = FakeBed(phase="recovery")
    h = handler(bed, FakeDesk())
    retained = h.handle(b'{"request_id": "a", "command": "phase", "phase": "ended"}', retained=True)
    duplicate = h.handle(b'{"request_id": "b", "command": "phase", "phase": "ended", "phase": "baseline"}')
    bidi = send(h, 3, command="end_session", by="RN \u202eKim")
    assert ["retained", "duplicate_key", "bad_value"] == [
        retained["error"]["code"],
        duplicate["error"]["code"],
        bidi["error"]["code"],
    ]
    assert ("recovery", []) == (bed.phase, bed.phases)


def test_take_bp_without_a_cuff_opens_a_prompt_and_done_closes_it() -> None:
    desk = FakeDesk()
    h = handler(FakeBed(), desk)
    result = send(h, 1, command="nibp", by="RN Kim")
    assert "prompted" == result["detail"]["nibp"]
    pid = result["detail"]["prompt_id"]
    assert send(h, 2, command="prompt_done", prompt_id=pid, by="RN Kim")["ok"]
    assert "unknown_prompt" == send(h, 3, command="prompt_done", prompt_id=pid, by="RN Kim")["error"]["code"]


def test_events_are_recorded_with_their_fields() -> None:
    desk = FakeDesk()
    h = handler(FakeBed(phase="infusion"), desk)
    assert send(
        h, 1, command="event", event="rescue_medication", drug="midazolam", dose=1, dose_unit="mg", by="N"
    )["ok"]
    assert send(h, 2, command="event", event="note", note="asked for water", by="N")["ok"]
    assert [
        ("nurse_rescue_medication", {"drug": "midazolam", "dose": 1.0, "dose_unit": "mg", "by": "N"}),
        ("nurse_note", {"note": "asked for water", "by": "N"}),
    ] == desk.events


def test_prompt_book_kinds_replacement_and_reading() -> None:
    """Kinds from the engine's reasons; a newer prompt of a kind replaces the open one; a reading closes
    what was opened before it."""
    assert ["take_bp", "confirm_bp", "repeat_bp", "take_bp"] == [
        prompt_kind(r)
        for r in (
            "baseline reading 1 of 2",
            "confirm BP 182/113 mmHg (nibp_high)",
            "scheduled reading due at 10-20 min of the infusion (expected BP peak)",
            "nurse request",
        )
    ]
    book = PromptBook("chair-1")
    first = book.open("baseline reading 1 of 2", 10.0)
    second = book.open("baseline reading 2 of 2", 20.0)
    confirm = book.open("confirm BP 182/113 mmHg (nibp_high)", 30.0)
    assert [second.prompt_id, confirm.prompt_id] == [p.prompt_id for p in book.open_prompts()]
    assert first.prompt_id != second.prompt_id
    assert [second] == book.reading(25.0)
    assert [confirm] == book.open_prompts()
    assert [confirm] == book.clear() and [] == book.open_prompts()


def test_prompt_book_state_survives_a_new_clock_and_refuses_nonsense() -> None:
    """The journalled state gives the same prompts on another monotonic clock (opened times kept as
    UTC), ids go on from the counter, and a malformed state is a ValueError, never a guess."""
    book = PromptBook("chair-1")
    book.open("baseline reading 1 of 2", 100.0)
    kept = book.open("confirm BP 182/113 mmHg (nibp_high)", 110.0)
    state = book.to_state(now=120.0, epoch_now=1_000_120.0)
    again = PromptBook.restore("chair-1", state, now=5.0, epoch_now=1_000_200.0)  # 80 s on, new clock
    assert [(p.prompt_id, p.kind, p.text, p.then) for p in book.open_prompts()] == [
        (p.prompt_id, p.kind, p.text, p.then) for p in again.open_prompts()
    ]
    assert [5.0 - 100.0, 5.0 - 90.0] == [p.opened_t for p in again.open_prompts()]
    assert [] == again.reading(-100.0) and 2 == len(again.reading(5.0))  # a reading after the restart
    assert again.open("nurse request", 6.0).prompt_id not in (kept.prompt_id, "chair-1-p1")
    assert [] == PromptBook.restore("chair-1", None, now=0.0, epoch_now=0.0).open_prompts()
    for bad in ({}, {"n": -1, "open": []}, {"n": 1, "open": [1]}, {"n": 1, "open": [{"prompt_id": "x"}]},
                {"n": 1, "open": [{"prompt_id": "x", "reason": "r", "opened_epoch": "soon"}]}):  # fmt: skip
        with pytest.raises(ValueError):
            PromptBook.restore("chair-1", bad, now=0.0, epoch_now=0.0)


BL_SETTINGS = BaselineSettings()


def test_readiness_items_name_what_is_missing() -> None:
    partial = Baseline(None, None, 97.0, None, nibp_count=1, oximetry_s=95.0)
    items = readiness_items(
        devices=["oximeter", "cuff", "spare"],
        links={"oximeter": True, "cuff": True, "spare": False},
        last_valid={"oximeter": 99.0, "cuff": 40.0},
        now=100.0,
        baseline=partial,
        settings=BL_SETTINGS,
        broker_connected=True,
        outbox_pending=2,
        advisories=["Baseline BP 182/104 mmHg (mean of 2) above 180/110"],
    )
    state = {i.item: (i.ok, i.text) for i in items}
    assert state["device:oximeter"][0] is True
    assert (False, "cuff: no valid reading in the last 30 s") == state["device:cuff"]
    assert (False, "spare not linked") == state["device:spare"]
    assert (False, "baseline incomplete: NIBP 1 of 2 readings, SpO2 and pulse 1.5 of 3 min valid") == state[
        "baseline"
    ]
    assert (False, "broker connected, 2 alert(s) not yet sent") == state["broker"]
    assert state["start_gate"][0] is False
    full = Baseline(128.0, 80.0, 97.0, 72.0, nibp_count=2, oximetry_s=200.0)
    ready = readiness_items(
        devices=["oximeter"],
        links={"oximeter": True},
        last_valid={"oximeter": 99.0},
        now=100.0,
        baseline=full,
        settings=BL_SETTINGS,
        broker_connected=True,
        outbox_pending=0,
        advisories=[],
    )
    assert all(i.ok for i in ready)


def reading(t: float, sys_v: float, dia_v: float) -> NibpReading:
    return NibpReading(t, sys_v, dia_v, None, True, "cuff", "recovery")


@pytest.mark.parametrize(
    ("readings", "elapsed", "missing"),
    [
        ([], 600.0, {"time", "nibp"}),
        ([reading(3000, 130, 82)], 3700.0, {"nibp"}),
        ([reading(2400, 130, 82), reading(3600, 131, 80)], 3700.0, set()),
        ([reading(2400, 130, 82), reading(3600, 170, 80)], 3700.0, {"nibp"}),
    ],
)
def test_discharge_checklist_lists_met_and_missing_and_agrees_with_the_status(
    readings: list[NibpReading], elapsed: float, missing: set[str]
) -> None:
    kwargs: dict[str, Any] = {
        "phase": "recovery",
        "recovery_elapsed": elapsed,
        "baseline": Baseline(128.0, 80.0, 97.0, 72.0, nibp_count=2, oximetry_s=200.0),
        "readings": readings,
        "spo2": 97.0,
        "pulse": 74.0,
        "medium_or_high_active": False,
    }
    checklist = discharge_checklist(DischargeSettings(), **kwargs)
    assert missing == {c.name for c in checklist if not c.met}
    assert ["time", "baseline", "nibp", "pulse", "spo2", "alarms"] == [c.name for c in checklist]
    assert (not missing) == discharge_status(DischargeSettings(), **kwargs)[0]
    assert [] == discharge_checklist(DischargeSettings(), **kwargs | {"phase": "infusion"})
