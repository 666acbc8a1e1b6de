"""An instant the engine just evaluated is not evaluated again: the skip changes no output and no state.

The engine skips the clock advance and the evaluation of a tick at the instant its last call
evaluated, and of an observation no rule reads from a device already heard at that instant
(``BedEngine._settled``). These tests run the same inputs through an engine that skips and one
made to evaluate every call, and compare every output field for field and the final snapshot.
The last test covers the other shortcut of a repeated value: a sample equal to the last one is
not compared with the sustained rules again while their limits and the phase stay the same.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bench.engine_identity import first_difference, record
from vitalwatch.drivers.events import DeviceStatus, Observation
from vitalwatch.engine.outputs import AlertTransition
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import AlarmTable, load_alarm_table


def _feed(engine: BedEngine) -> list[dict[str, Any]]:
    """A baseline, then an infusion with a 10-minute desaturation (an alarm raised, re-notified,
    escalated and acknowledged), 1 Hz oximetry with values no rule reads, BP every 5 min, and a
    tick at every reading's instant and between them."""
    out = []
    for t in range(-400, 1800):
        now = float(t)
        if t == 0:
            out += engine.set_phase("infusion", now)
        spo2 = 84.0 if 300 <= t < 900 else 97.0
        out += engine.observe("ox", Observation("spo2", spo2, "%"), now)
        out += engine.observe("ox", Observation("pulse_rate", 72.0, "/min"), now)
        out += engine.observe("ox", Observation("perfusion_index", 2.5, "%"), now)
        if t % 300 == 0 or t == -200:
            out += engine.observe("bp", DeviceStatus("measuring", False), now)
            out += engine.observe("bp", Observation("cuff_pressure", 20.0, "mm[Hg]"), now)
            for kind, v in (("nibp_systolic", 125.0), ("nibp_diastolic", 80.0), ("nibp_mean", 95.0)):
                out += engine.observe("bp", Observation(kind, v, "mm[Hg]"), now)
        if t == 700:
            out += engine.acknowledge("*", "nurse-1", now)
        out += engine.tick(now)
        out += engine.tick(now + 0.5)
    return [record(o) for o in out]


def _both(
    table: AlarmTable,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], dict[str, Any], int]:
    """(outputs skipping, outputs evaluating every call, both snapshots, evaluations saved)."""
    skipping = BedEngine(table, "b", {"ox": "spo2", "bp": "nibp"})
    every = BedEngine(table, "b", {"ox": "spo2", "bp": "nibp"})
    every._settled = lambda now: False  # type: ignore[method-assign]
    counts = {}
    for name, engine in (("skipping", skipping), ("every", every)):
        inner, calls = engine._evaluate, [0]

        def counted(now: float, inner: Any = inner, calls: list[int] = calls) -> Any:
            calls[0] += 1
            return inner(now)

        engine._evaluate = counted  # type: ignore[method-assign]
        counts[name] = calls
    fast, reference = _feed(skipping), _feed(every)
    return fast, reference, skipping.snapshot(), every.snapshot(), counts["every"][0] - counts["skipping"][0]


def test_skipping_an_instant_already_evaluated_changes_no_output_and_no_state() -> None:
    fast, reference, fast_state, reference_state, saved = _both(load_alarm_table(None))
    assert first_difference(fast, reference) is None, first_difference(fast, reference)
    states = {r["state"] for r in fast if r.get("type") == "alert"}
    assert {"raised", "renotified", "escalated", "acknowledged", "cleared"} <= states, states
    assert fast_state == reference_state
    assert saved > 2000, saved  # the skip happened: a tick and a perfusion index per second at least


def test_a_table_without_baseline_request_spacing_skips_nothing() -> None:
    """With a spacing of 0 a baseline request may be asked again at the same instant, so an
    evaluation there is not a no-op and nothing is skipped."""
    table = load_alarm_table(None)
    table = replace(table, baseline=replace(table.baseline, nibp_spacing_s=0.0))
    fast, reference, fast_state, reference_state, saved = _both(table)
    assert first_difference(fast, reference) is None
    assert fast_state == reference_state
    assert saved == 0


def test_a_steady_value_is_judged_again_when_the_baseline_gives_its_rule_a_limit() -> None:
    """A sample equal to the last one is not compared again only while the limits and the phase
    are the same: here SpO2 stays at 95 while the baseline is collected, and a rule made to run in
    the baseline phase gets its limit (99 - 4) when 180 s of signal make the baseline (median 99)."""
    table = load_alarm_table(None)
    rules = tuple(
        replace(r, phases=frozenset({"baseline", *r.phases}), sustain_s=15.0)
        if r.id == "spo2_below_baseline"
        else r
        for r in table.rules
    )
    engine = BedEngine(replace(table, rules=rules), "b", {"ox": "spo2"})
    raised = []
    for t in range(230):
        spo2 = 99.0 if t < 120 else 95.0
        for out in engine.observe("ox", Observation("spo2", spo2, "%"), float(t)):
            if isinstance(out, AlertTransition) and out.state.value == "raised":
                raised.append((engine.explain(out.alert_id)["rule"], t))
    assert [rule for rule, _ in raised] == ["spo2_below_baseline"], raised
    assert 190 <= raised[0][1] <= 200, raised
