"""BedEngine.snapshot() / BedEngine.restore(): a restarted daemon continues the same session.

- Random input sequences: an engine restored (through JSON) on a clock 1000 s ahead gives exactly
  the outputs of the engine that never stopped, times shifted by exactly 1000.
- Golden: a latched HIGH spo2_low survives restore with its alert_id, state and timers; seq and
  alert ids continue; an outage passed as ``elapsed_outage_s`` counts in the phase and
  escalation clocks.
- Corrupt snapshots are refused with a ValueError naming the field.

Times in the random test are multiples of 0.5 s below 2**20, so every sum and difference is
exact in binary floating point and "shifted by exactly 1000" can be asserted with ``==``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitalwatch.drivers.events import DeviceStatus, Observation
from vitalwatch.engine.outputs import (
    AlertState,
    AlertTransition,
    NibpRequest,
    Output,
    Priority,
    StatusChanged,
)
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import load_alarm_table
from vitalwatch.engine.testing import EngineHarness

TABLE = load_alarm_table(None)
DEVICES = {"ox": "spo2", "bp": "nibp", "mon": "multi"}
SHIFT = 1000.0
Step = tuple[Any, ...]

# ---------------------------------------------------------------------------- random inputs
_dev = st.sampled_from(sorted(DEVICES))
_spo2 = st.sampled_from([None, 80.0, 84.0, 88.0, 91.0, 93.0, 97.0])
_pulse = st.sampled_from([None, 35.0, 45.0, 72.0, 125.0, 145.0])
_sys = st.sampled_from([None, 85.0, 120.0, 170.0, 185.0, 205.0])
_dia = st.sampled_from([None, 60.0, 80.0, 105.0, 115.0, 125.0])
_status = st.sampled_from(["sensor_off", "artifact", "cuff_error", "sensor_fault"])
_dt = st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, 15.0, 40.0, 130.0, 600.0])

_step = st.one_of(
    st.tuples(st.just("obs"), _dev, st.just("spo2"), _spo2),
    st.tuples(st.just("obs"), _dev, st.just("pulse_rate"), _pulse),
    st.tuples(st.just("obs"), _dev, st.sampled_from(["nibp_systolic", "nibp_diastolic", "nibp_mean"]), _sys),
    # A whole reading, or systolic + diastolic only: completed at the next call (the assembler).
    st.tuples(st.just("nibp"), st.sampled_from(["bp", "mon"]), _sys, _dia, st.booleans()),
    st.tuples(st.just("status"), _dev, _status, st.booleans()),
    st.tuples(st.just("link"), _dev, st.booleans()),
    st.tuples(st.just("bytes"), _dev),
    st.tuples(st.just("phase"), st.sampled_from(["baseline", "infusion", "recovery", "ended"])),
    st.tuples(st.just("ack"), st.one_of(st.none(), st.integers(0, 3))),
    st.tuples(st.just("tick")),
    st.tuples(st.just("run"), _spo2, _pulse, st.integers(5, 60)),
    st.tuples(st.just("run"), st.sampled_from([84.0, 88.0, 97.0]), st.just(72.0), st.integers(5, 40)),
)
_timed = st.tuples(_dt, _step)


def apply(engine: BedEngine, step: Step, t: float) -> tuple[list[Output], float]:
    """Feed one step at ``t``; return its outputs and the time it ends at."""
    match step:
        case ("obs", dev, kind, value):
            return engine.observe(dev, Observation(kind, value, ""), t), t
        case ("nibp", dev, sys_v, dia_v, with_mean):
            out: list[Output] = []
            for kind, value in (("nibp_systolic", sys_v), ("nibp_diastolic", dia_v), ("nibp_mean", 90.0)):
                if kind != "nibp_mean" or with_mean:
                    out += engine.observe(dev, Observation(kind, value, "mm[Hg]"), t)
            return out, t
        case ("status", dev, code, on):
            return engine.observe(dev, DeviceStatus(code, on), t), t
        case ("link", dev, up):
            return engine.link(dev, up, t), t
        case ("bytes", dev):
            engine.bytes_seen(dev, t)
            return [], t
        case ("phase", name):
            return engine.set_phase(name, t), t
        case ("ack", index):
            active = engine.active_alarms()
            target = "*" if index is None or index >= len(active) else active[index].alert_id
            return engine.acknowledge(target, "nurse", t), t
        case ("tick",):
            return engine.tick(t), t
        case ("run", spo2, pulse, seconds):
            out = []
            for i in range(seconds):
                now = t + i
                for kind, value in (("spo2", spo2), ("pulse_rate", pulse)):
                    out += engine.observe("ox", Observation(kind, value, ""), now)
                for dev in DEVICES:
                    engine.bytes_seen(dev, now)
                out += engine.tick(now)
            return out, t + seconds - 1
    raise AssertionError(step)


def _shift_text(text: str, by: float) -> str:
    return re.sub(r"\bt=(-?\d+(?:\.\d+)?)", lambda m: f"t={float(m.group(1)) + by:.1f}", text)


def shifted(out: Output, by: float) -> Output:
    """``out`` as it would read on a clock ``by`` seconds ahead."""
    if isinstance(out, AlertTransition):
        return dataclasses.replace(
            out,
            t=out.t + by,
            onset_t=out.onset_t + by,
            acknowledged_t=None if out.acknowledged_t is None else out.acknowledged_t + by,
            evidence=tuple(_shift_text(e, by) for e in out.evidence),
        )
    return dataclasses.replace(out, t=out.t + by)


def round_trip(engine: BedEngine) -> dict[str, Any]:
    state = engine.snapshot()
    loaded: dict[str, Any] = json.loads(json.dumps(state, allow_nan=False))
    return loaded


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    prelude=st.booleans(),
    before=st.lists(_timed, max_size=30),
    after=st.lists(_timed, min_size=1, max_size=30),
)
def test_restored_engine_continues_exactly(
    prelude: bool, before: list[tuple[float, Step]], after: list[tuple[float, Step]]
) -> None:
    """Restored on a clock 1000 s ahead, the engine's outputs equal the uninterrupted one's, shifted."""
    a = BedEngine(TABLE, bed="b", devices=DEVICES)
    t = 0.0
    a.tick(t)
    if prelude:  # a complete baseline, then the infusion: the baseline-relative rules have limits
        for step, at in [
            (("nibp", "bp", 120.0, 80.0, True), 0.0),
            (("run", 97.0, 72.0, 150), 0.0),
            (("nibp", "bp", 120.0, 80.0, True), 150.0),
            (("run", 97.0, 72.0, 150), 150.0),
            (("phase", "infusion"), 300.0),
        ]:
            _, t = apply(a, step, at)
    statuses: set[tuple[str, str]] = set()
    for dt, step in before:
        t += dt
        _, t = apply(a, step, t)
        if step[0] == "status":
            (statuses.add if step[3] else statuses.discard)((step[1], step[2]))
    # What a restart does to the inputs: fresh drivers (statuses start over), every port just opened.
    for dev, code in sorted(statuses):
        a.observe(dev, DeviceStatus(code, False), t)
    for dev in DEVICES:
        a.bytes_seen(dev, t)

    b = BedEngine.restore(TABLE, round_trip(a), now=t + SHIFT)

    assert [shifted(x, SHIFT) for x in a.active_alarms()] == b.active_alarms()
    for dt, step in after:
        t += dt
        out_a, end = apply(a, step, t)
        out_b, _ = apply(b, step, t + SHIFT)
        assert [shifted(x, SHIFT) for x in out_a] == out_b, step
        t = end
    assert a.phase == b.phase
    assert a.baseline == b.baseline
    assert [shifted(x, SHIFT) for x in a.active_alarms()] == b.active_alarms()


def test_unstarted_engine_round_trips() -> None:
    """A snapshot taken before the first input restores to an engine that starts at its first call."""
    a = BedEngine(TABLE, bed="b", devices=DEVICES)
    b = BedEngine.restore(TABLE, round_trip(a), now=5.0)
    assert a.tick(7.0) == b.tick(7.0)
    assert {"baseline": 7.0} == b.phase_starts


# ---------------------------------------------------------------------------- golden
def latched_high() -> EngineHarness:
    """Infusion from t=300; SpO2 86 % from 300 to 330 (HIGH spo2_low raised at 315), then 97 %."""
    h = EngineHarness()
    h.standard_baseline()
    h.run(300.0, 330.0, spo2=86.0)
    h.run(330.0, 340.0, spo2=97.0)
    return h


def test_latched_high_survives_restore() -> None:
    """alert_id, state, priority, onset, re-notify timer, seq and id counter all continue."""
    h = latched_high()
    (before,) = h.engine.active_alarms()
    assert ("spo2_low", Priority.HIGH, AlertState.RAISED, 315.0) == (
        before.condition,
        before.priority,
        before.state,
        before.onset_t,
    )
    seq = max(o.seq for o in h.alerts())

    # taken_at is 339 (the last input); the new process's clock reads 50_339 at restore.
    e = BedEngine.restore(h.engine.table, round_trip(h.engine), now=50_339.0)
    (after,) = e.active_alarms()
    assert shifted(before, 50_000.0) == after
    assert 50_315.0 == after.onset_t
    assert "infusion" == e.phase
    assert 120.0 == e.baseline.systolic
    assert 97.0 == e.baseline.spo2
    assert "50315.0 raised high" == e.explain(after.alert_id)["history"][-1]

    # HIGH re-notifies every 30 s: due at 345 -> 50_345 in the new clock, not earlier.
    for t in range(50_339, 50_345):
        out = e.observe("oximeter", Observation("spo2", 97.0, ""), float(t))
        e.bytes_seen("nibp", float(t))
        assert [] == [o for o in out + e.tick(float(t)) if isinstance(o, AlertTransition)]
    (renotified,) = [o for o in e.tick(50_345.0) if isinstance(o, AlertTransition)]
    assert (before.alert_id, AlertState.RENOTIFIED, seq + 1, 45.0) == (
        renotified.alert_id,
        renotified.state,
        renotified.seq,
        renotified.phase_elapsed_s,
    )

    # The latch holds until acknowledged; then acknowledged and cleared at once, same id.
    acked = e.acknowledge(before.alert_id, "nurse", 50_346.0)
    assert [
        (before.alert_id, AlertState.ACKNOWLEDGED, seq + 2),
        (before.alert_id, AlertState.CLEARED, seq + 3),
    ] == [(o.alert_id, o.state, o.seq) for o in acked if isinstance(o, AlertTransition)]

    # The next alarm takes the next id of the old process's counter.
    raised = []
    for t in range(50_347, 50_370):
        out = e.observe("oximeter", Observation("spo2", 84.0, ""), float(t))
        e.bytes_seen("nibp", float(t))
        raised += [o for o in out + e.tick(float(t)) if isinstance(o, AlertTransition)]
    assert ("bed-1-000002", seq + 4) == (raised[0].alert_id, raised[0].seq)


def test_outage_counts_in_phase_and_escalation_clocks() -> None:
    """elapsed_outage_s: the phase clock and the escalation deadline include the gap; sustain does not."""
    h = latched_high()
    (before,) = h.engine.active_alarms()
    # Escalation of an unacknowledged HIGH is due 120 s after raising (315 + 120 = 435); 90 s of
    # outage on top of the 339 - 315 = 24 s already elapsed leaves 6 s.
    e = BedEngine.restore(h.engine.table, round_trip(h.engine), now=10_000.0, elapsed_outage_s=90.0)
    assert 10_000.0 - 90.0 - 24.0 == e.active_alarms()[0].onset_t
    e.bytes_seen("oximeter", 10_000.0)
    e.bytes_seen("nibp", 10_000.0)
    out = [o for o in e.tick(10_005.0) if isinstance(o, AlertTransition)]
    assert AlertState.ESCALATED not in [o.state for o in out]
    out = [o for o in e.tick(10_006.0) if isinstance(o, AlertTransition)]
    escalated = [o for o in out if o.state is AlertState.ESCALATED]
    assert [(before.alert_id, 39.0 + 90.0 + 6.0)] == [(o.alert_id, o.phase_elapsed_s) for o in escalated]


def test_vanished_port_keeps_its_link_lost_alarm() -> None:
    """A port vanished at the snapshot stays so until the daemon reports it open: same alert_id."""
    h = EngineHarness()
    h.standard_baseline()
    (raised,) = [o for o in h.engine.link("oximeter", False, 301.0) if isinstance(o, AlertTransition)]
    e = BedEngine.restore(h.engine.table, round_trip(h.engine), now=9_000.0)
    assert [] == [o for o in e.link("oximeter", False, 9_001.0) if isinstance(o, AlertTransition)]
    cleared = [o for o in e.link("oximeter", True, 9_002.0) if isinstance(o, AlertTransition)]
    assert [(raised.alert_id, AlertState.CLEARED)] == [(o.alert_id, o.state) for o in cleared]


def test_changed_rule_starts_fresh_others_continue() -> None:
    """A rule whose definition changed between snapshot and restore loses its timer; the rest keep theirs."""
    h = EngineHarness()
    h.standard_baseline()
    h.run(300.0, 310.0, spo2=86.0)  # part of the 15 s HIGH delay and of the 30 s MEDIUM delay
    assert 9.0 == h.engine._sustain["spo2_low_high"].acc == h.engine._sustain["spo2_low_medium"].acc
    state = round_trip(h.engine)
    table = load_alarm_table({"rules": {"spo2_low_medium": {"sustain_s": 31}}})
    e = BedEngine.restore(table, state, now=310.0)
    assert 9.0 == e._sustain["spo2_low_high"].acc
    assert 0.0 == e._sustain["spo2_low_medium"].acc


def test_outage_neither_advances_nor_resets_sustain_timers() -> None:
    """Over a 60 s outage the held SpO2 counts for its 5 s hold only, as without a restart; then it pauses."""
    h = EngineHarness()
    h.standard_baseline()
    h.run(300.0, 310.0, spo2=86.0)
    e = BedEngine.restore(h.engine.table, round_trip(h.engine), now=1_000.0, elapsed_outage_s=60.0)
    e.bytes_seen("nibp", 1_000.0)
    # Nobody watched for 60 s: signal_lost (> 30 s) is true at once (the sample was stale after 5 s).
    first = [o for o in e.tick(1_000.0) if isinstance(o, AlertTransition)]
    assert [("signal_lost", AlertState.RAISED, 55.0)] == [(o.condition, o.state, o.value) for o in first]
    assert 9.0 + 5.0 == e._sustain["spo2_low_high"].acc
    e.tick(1_029.0)
    assert 14.0 == e._sustain["spo2_low_high"].acc  # no valid signal: paused, not reset
    raised = []
    for t in range(1_030, 1_040):
        raised += e.observe("oximeter", Observation("spo2", 86.0, ""), float(t))
        e.bytes_seen("nibp", float(t))
    # 14 s, then 1 s after the first new sample (at 1030) = 15 s at 1031.
    assert [(1_031.0, "spo2_low", AlertState.RAISED)] == [
        (o.t, o.condition, o.state)
        for o in raised
        if isinstance(o, AlertTransition) and o.condition == "spo2_low"
    ]


# ---------------------------------------------------------------------------- corrupt snapshots
@pytest.fixture(scope="module")
def good_state() -> dict[str, Any]:
    return round_trip(latched_high().engine)


def _set(state: dict[str, Any], path: str, value: Any) -> None:
    """Set (or with value ``...`` delete) ``a.b[0].c`` in ``state``."""
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node: Any = state
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    key: Any = int(last[1:-1]) if last.startswith("[") else last
    if value is ...:
        del node[key]
    else:
        node[key] = value


TOP_KEYS = [
    "version", "taken_at", "now", "bed", "devices", "older_adult", "id_counter", "started", "phase",
    "phase_start", "phase_starts", "signals", "nibp_pending", "nibp_readings", "baseline",
    "frozen_baseline", "rules", "port_down", "due_requested", "discharge_ready",
    "baseline_requested", "alarms",
]  # fmt: skip


@pytest.mark.parametrize("key", TOP_KEYS)
def test_missing_top_level_key(good_state: dict[str, Any], key: str) -> None:
    """Every top-level field is required and a missing one is named."""
    state = copy.deepcopy(good_state)
    del state[key]
    with pytest.raises(ValueError, match=rf"\b{key}: missing"):
        BedEngine.restore(TABLE, state, now=0.0)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("version", 2, r"version: this engine reads version 1, got 2"),
        ("version", "1", r"version: this engine reads version 1, got '1'"),
        ("taken_at", "NaN", r"taken_at: expected a finite number"),
        ("taken_at", None, r"taken_at: expected a finite number"),
        ("phase", "lunch", r"phase: expected one of"),
        ("phase", 5, r"phase: expected a string, got int"),
        ("id_counter", -1, r"id_counter: expected an integer >= 0"),
        ("id_counter", True, r"id_counter: expected an integer >= 0"),
        ("started", "yes", r"started: expected true or false"),
        ("devices.oximeter", "toaster", r"devices.oximeter: expected one of"),
        ("phase_starts.lunch", 3.0, r"phase_starts.lunch: not a phase"),
        ("signals.spo2.current.t", "soon", r"signals.spo2.current.t: expected a finite number"),
        ("signals.pulse_rate", ..., r"signals.pulse_rate: missing"),
        ("nibp_readings[0].systolic", "high", r"nibp_readings\[0\].systolic: expected a number"),
        ("baseline.samples.spo2", 97, r"baseline.samples.spo2: expected a list, got int"),
        ("baseline.valid_s.spo2", -5.0, r"baseline.valid_s.spo2: expected a duration >= 0"),
        ("frozen_baseline.nibp_count", 1.5, r"frozen_baseline.nibp_count: expected an integer"),
        ("rules.spo2_low_high.state.acc", None, r"rules.spo2_low_high.state.acc: expected a finite number"),
        ("rules.spo2_low_high.type", "magic", r"rules.spo2_low_high.type: expected one of"),
        ("alarms.seq", ..., r"alarms.seq: missing"),
        ("alarms.active[0].alert_id", 7, r"alarms.active\[0\].alert_id: expected a string, got int"),
        ("alarms.active[0].priority", "urgent", r"alarms.active\[0\].priority: expected one of high"),
        ("alarms.active[0].onset_t", ..., r"alarms.active\[0\].onset_t: missing"),
        ("alarms.active[0].finding.condition", "spo2_lowish", r"alarms.active\[0\].finding.condition"),
        ("alarms.active[0].last.state", "gone", r"alarms.active\[0\].last.state: expected one of"),
        ("alarms.active[0].history", ["soon raised high"], r"alarms.active\[0\].history\[0\]"),
        ("alarms.active", {}, r"alarms.active: expected a list, got dict"),
    ],
)
def test_invalid_field_is_named(good_state: dict[str, Any], path: str, value: Any, message: str) -> None:
    """A wrong version, a wrong type or a missing nested field gives a ValueError naming it."""
    state = copy.deepcopy(good_state)
    _set(state, path, value)
    with pytest.raises(ValueError, match=message):
        BedEngine.restore(TABLE, state, now=0.0)


def test_duplicate_active_occurrence_is_refused(good_state: dict[str, Any]) -> None:
    """Two active occurrences of one key cannot come from a real engine."""
    state = copy.deepcopy(good_state)
    state["alarms"]["active"].append(copy.deepcopy(state["alarms"]["active"][0]))
    with pytest.raises(ValueError, match=r"alarms.active\[1\]: a second active occurrence"):
        BedEngine.restore(TABLE, state, now=0.0)


@pytest.mark.parametrize("state", [None, [], "state", 3])
def test_not_an_object(state: Any) -> None:
    with pytest.raises(ValueError, match="expected an object"):
        BedEngine.restore(TABLE, state, now=0.0)


@pytest.mark.parametrize("outage", [-1.0, float("nan"), float("inf")])
def test_bad_outage_is_refused(good_state: dict[str, Any], outage: float) -> None:
    with pytest.raises(ValueError, match="elapsed_outage_s"):
        BedEngine.restore(TABLE, good_state, now=0.0, elapsed_outage_s=outage)


def test_non_finite_values_stay_strict_json() -> None:
    """A NaN from a misbehaving driver is stored as "nan" and restored as NaN (never invalid JSON)."""
    h = EngineHarness()
    h.sample("spo2", float("nan"), 1.0)
    state = round_trip(h.engine)
    assert "nan" == state["signals"]["spo2"]["current"]["value"]
    e = BedEngine.restore(h.engine.table, state, now=1.0)
    value = e._signals["spo2"].current.value  # type: ignore[union-attr]
    assert value is not None and math.isnan(value)


# ---------------------------------------------------------------------------- once-only outputs
def test_scheduled_request_and_discharge_status_are_not_repeated() -> None:
    """The 35-40 min scheduled NIBP request and discharge_ready were sent once; restore keeps it so."""
    h = EngineHarness()
    h.standard_baseline()  # infusion from 300
    for start in range(300, 2400, 300):  # a reading every 5 min (no overdue alarm), none from 35 min
        h.nibp(float(start), 120, 80)
        h.run(float(start), float(start + 300))
    h.run(2400.0, 2460.0)
    assert 1 == sum("scheduled reading" in r.reason for r in h.requests())
    e = BedEngine.restore(h.engine.table, round_trip(h.engine), now=7_000.0)
    later = e.tick(7_001.0) + e.tick(7_060.0)
    assert [] == [o for o in later if isinstance(o, NibpRequest) and "scheduled" in o.reason]

    h.nibp(2460.0, 120, 80)
    h.run(2460.0, 2700.0)
    h.phase("recovery", 2700.0)  # 60 min later, two readings 10 min apart near baseline
    h.run(2700.0, 5800.0)
    h.nibp(5800.0, 120, 80)
    h.run(5800.0, 6400.0)
    h.nibp(6400.0, 121, 80)
    h.run(6400.0, 6410.0)
    assert [True] == [s.active for s in h.statuses()]
    e = BedEngine.restore(h.engine.table, round_trip(h.engine), now=9_000.0)
    out = e.observe("oximeter", Observation("spo2", 97.0, ""), 9_001.0)
    out += e.observe("oximeter", Observation("pulse_rate", 72.0, ""), 9_001.0) + e.tick(9_002.0)
    assert [] == [o for o in out if isinstance(o, StatusChanged)]
