"""Alarm quality on a simulated cohort: the engine against a naive threshold monitor.

Run: ``python -m bench alarm_quality [--sessions 2000] [--seed 1] [--holdout-seed 2]
[--workers 2] [--details FILE]``. Not a timed test: it prints Markdown tables for
docs/alarms.md. ``--seed`` is the cohort the table is judged (and any tuning is done) on;
``--holdout-seed`` a second cohort of the same size that no tuning may look at (0 skips it).
Each session's random streams depend only on (seed, index), so the worker pool changes
nothing in the result.

Time to alert is reported twice: from the labelled event's start (which includes how fast the
simulated patient's value fell to the limit) and from the first crossing of the limit of the
rule that alerted first (:mod:`bench.alarm_timing`), beside that rule's delay in the table,
the table's own timer replayed on the same stream (what the engine adds beyond it), the naive
monitor, and the documented alarm delay of bedside pulse oximeters.

The cohort is synthesized as 1 Hz event streams (what the drivers would hand the engine), so
the measure is about the alarm logic, not the byte codecs. Each session: 10 min baseline,
40 min infusion, 60 min recovery, with

- physiology: per-patient baseline (SpO2 ~97, pulse ~72, BP ~125/78), AR(1) noise, the
  typical ketamine BP/pulse rise peaking at 30-40 min;
- artifact (false-alarm generators): brief probe-motion dips (3-14 s, SpO2 down to 78-89,
  pulse spike; half of them flagged ``artifact`` by the device), sensor-off episodes (a few
  falling unflagged values as the probe slides, then ``sensor_off`` with no values), cuff
  outliers (6 % of readings off by 35-70 mmHg), failed cuff cycles (``cuff_error``);
- labelled true events: sustained desaturation (SpO2 80-88 for 1-4 min), hypertensive
  response (> 180/110 for 15-30 min), bradycardia (pulse 35-45 for 45-150 s).

The naive monitor uses the same limits as the physiological rules of the default table
(SpO2 < 90 / <= 92 / <= BL-4, pulse > 140 / > 120 / > BL+30 / < 40 / < 50, NIBP >= 180/110,
>= 200/120, >= 165/100 in infusion, < 90, rise >= 40/25) with no delay, no confirmation and no
validity handling (values under an artifact status count). One alarm = one onset of a
condition, as the engine's one-occurrence-per-condition. An alarm is true when it starts
inside a labelled event of its parameter (window extended 3 min, 10 min for BP); else false.
An event is alerted by an alarm of its condition that starts inside it, or by one already on
when it began and still on at its first value beyond the limit (counted apart, no time to alert).
The simulated nurse acknowledges 60 s after every notification (raised, re-notified, escalated).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from bench.alarm_timing import Point, between, first_crossing, table_fire_time
from vitalwatch.drivers.events import DeviceStatus, Observation
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, NibpRequest, Output
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import AlarmTable, Rule, compare, load_alarm_table

BASELINE_S, INFUSION_S, RECOVERY_S = 600, 2400, 3600
DURATION = BASELINE_S + INFUSION_S + RECOVERY_S
PARAM_OF = {
    "spo2_low": "spo2",
    "spo2_below_baseline": "spo2",
    "pulse_high": "pulse_rate",
    "pulse_low": "pulse_rate",
    "pulse_above_baseline": "pulse_rate",
    "nibp_high": "nibp",
    "nibp_low": "nibp",
    "nibp_rise_from_baseline": "nibp",
    "bp_recovery_slow": "nibp",
}
_NOTIFYING = (AlertState.RAISED, AlertState.RENOTIFIED, AlertState.ESCALATED)
EVENT_PARAM = {"desaturation": "spo2", "bradycardia": "pulse_rate", "hypertension": "nibp"}
EVENT_CONDITIONS = {"desaturation": {"spo2_low"}, "bradycardia": {"pulse_low"}, "hypertension": {"nibp_high"}}


Reading = tuple[float, float, float]  # one valid cuff reading: t, systolic, diastolic
Span = tuple[str, float, float]  # one alarm's condition, when it was raised, when it cleared
CUFF_CYCLE_S = 60  # the simulated cuff answers a confirmation request this long after it


@dataclass
class TrueEvent:
    kind: str
    start: float
    end: float


@dataclass
class Session:
    """One synthesized session: per-second values and statuses, NIBP truth, labelled events."""

    spo2: list[float | None]
    pulse: list[float | None]
    artifact: list[bool]  # device flags artifact
    sensor_off: list[bool]
    bp_true: list[tuple[float, float]]  # per second
    bl: tuple[float, float, float, float]  # spo2, pulse, sys, dia
    events: list[TrueEvent] = field(default_factory=list)
    outlier_rate: float = 0.06
    cuff_fail_rate: float = 0.03


def _ar1(rng: random.Random, n: int, sd: float, tau: float) -> list[float]:
    a = math.exp(-1 / tau)
    x, out = 0.0, []
    for _ in range(n):
        x = a * x + rng.gauss(0, sd * math.sqrt(1 - a * a))
        out.append(x)
    return out


def make_session(rng: random.Random) -> Session:
    n = DURATION
    bl_spo2 = min(99.0, max(94.0, rng.gauss(97, 1.2)))
    bl_pulse = min(95.0, max(55.0, rng.gauss(72, 8)))
    bl_sys, bl_dia = rng.gauss(125, 10), rng.gauss(78, 6)
    rise_s, rise_d, rise_p = rng.gauss(12, 6), rng.gauss(8, 4), rng.gauss(6, 4)
    peak = BASELINE_S + rng.uniform(1800, 2400)
    s_noise, p_noise = _ar1(rng, n, 0.7, 20), _ar1(rng, n, 3.0, 15)
    spo2: list[float] = []
    pulse: list[float] = []
    bp: list[tuple[float, float]] = []
    for t in range(n):
        k = 0.0 if t < BASELINE_S else math.exp(-(((t - peak) / 1200) ** 2))
        spo2.append(min(100.0, bl_spo2 + s_noise[t]))
        pulse.append(bl_pulse + rise_p * k + p_noise[t])
        bp.append((bl_sys + rise_s * k, bl_dia + rise_d * k))
    events: list[TrueEvent] = []
    lo, hi = BASELINE_S + 300, DURATION - 1800
    if rng.random() < 0.3:  # sustained desaturation
        start, hold, nadir = rng.uniform(lo, hi), rng.uniform(60, 240), rng.uniform(80, 88)
        fall = rng.uniform(15, 40)
        for t in range(int(start), int(start + fall + hold + 30)):
            x = t - start
            depth = min(1.0, x / fall) if x < fall + hold else max(0.0, 1 - (x - fall - hold) / 30)
            spo2[t] = spo2[t] - depth * (spo2[t] - nadir)
        events.append(TrueEvent("desaturation", start, start + fall + hold + 30))
    if rng.random() < 0.2:  # hypertensive response > 180/110
        start, length = BASELINE_S + rng.uniform(900, 1500), rng.uniform(900, 1800)
        target = (rng.uniform(185, 205), rng.uniform(112, 122))
        for t in range(int(start), int(start + length)):
            bp[t] = target
        events.append(TrueEvent("hypertension", start, start + length))
    if rng.random() < 0.15:  # bradycardia
        start, length, rate = rng.uniform(lo, hi), rng.uniform(45, 150), rng.uniform(35, 45)
        for t in range(int(start), int(start + length)):
            pulse[t] = rate + p_noise[t] / 3
        events.append(TrueEvent("bradycardia", start, start + length))

    spo2_out: list[float | None] = [round(v) for v in spo2]
    pulse_out: list[float | None] = [round(v) for v in pulse]
    artifact = [False] * n
    off = [False] * n
    for _ in range(_poisson(rng, 5)):  # probe-motion dips
        start, length = int(rng.uniform(BASELINE_S, n - 60)), int(rng.uniform(3, 14))
        depth, flagged, spike = rng.uniform(78, 89), rng.random() < 0.5, rng.uniform(20, 60)
        for t in range(start, start + length):
            x = (t - start) / max(1, length - 1)
            v = spo2_out[t] or 97.0
            spo2_out[t] = round(v - (v - depth) * math.sin(math.pi * x))
            pulse_out[t] = round((pulse_out[t] or 72.0) + spike * math.sin(math.pi * x))
            artifact[t] = flagged
    for _ in range(_poisson(rng, 1.5)):  # sensor off: the probe slides, then the device says so
        start, length = int(rng.uniform(BASELINE_S, n - 200)), int(rng.uniform(10, 90))
        for i, t in enumerate(range(start, start + 3)):
            spo2_out[t], pulse_out[t] = 85 - 5 * i, 60 - 8 * i
        for t in range(start + 3, start + 3 + length):
            spo2_out[t] = pulse_out[t] = None
            off[t] = True
    return Session(spo2_out, pulse_out, artifact, off, bp, (bl_spo2, bl_pulse, bl_sys, bl_dia), events)


def _poisson(rng: random.Random, mean: float) -> int:
    k, p, limit = 0, 1.0, math.exp(-mean)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _schedule(t: int) -> bool:
    """Routine NIBP: 0 and 3 min of baseline, every 5 min in the infusion, every 10 min after."""
    if t < BASELINE_S:
        return t in (0, 180)
    if t < BASELINE_S + INFUSION_S:
        return (t - BASELINE_S) % 300 == 60
    return (t - BASELINE_S - INFUSION_S) % 600 == 60


def _measure(rng: random.Random, s: Session, t: int) -> tuple[float, float] | None:
    """One cuff reading: None for a failed cycle, sometimes an outlier."""
    if rng.random() < s.cuff_fail_rate:
        return None
    sys_v, dia_v = s.bp_true[t]
    sys_v, dia_v = sys_v + rng.gauss(0, 4), dia_v + rng.gauss(0, 3)
    if rng.random() < s.outlier_rate:
        if rng.random() < 0.7:
            sys_v, dia_v = sys_v + rng.uniform(35, 70), dia_v + rng.uniform(20, 40)
        else:
            sys_v, dia_v = sys_v - rng.uniform(35, 55), dia_v - rng.uniform(15, 30)
    return round(sys_v), round(dia_v)


def _phase(t: int) -> str:
    return "baseline" if t < BASELINE_S else "infusion" if t < BASELINE_S + INFUSION_S else "recovery"


def run_engine(
    table: AlarmTable,
    s: Session,
    rng: random.Random,
    readings: list[Reading] | None = None,
    *,
    engine_class: type[BedEngine] = BedEngine,
    spans: list[Span] | None = None,
) -> list[AlertTransition]:
    """The session through the engine; requested confirmations are taken 60 s later.

    ``readings``, when given, collects every cuff reading handed to the engine (t, systolic,
    diastolic), so the time-to-alert measure can find the first reading over a limit.
    ``engine_class``: a BedEngine subclass (bench.engine_identity's, which keeps every output).
    ``spans``, when given, collects each physiological occurrence's (condition, raised, cleared)
    (cleared ``inf`` when still active at the end), so the count can see an alarm that was
    already on when an event began.
    """
    eng = engine_class(table, bed="b", devices={"ox": "spo2", "bp": "nibp"})
    raised: list[AlertTransition] = []
    acks: dict[int, list[str]] = {}
    extra: set[int] = set()
    was_art = was_off = False
    phase = ""

    rank: dict[str, int] = {}
    opened: dict[str, tuple[str, float]] = {}

    def take(outs: list[Output], t: int) -> None:
        for o in outs:
            if isinstance(o, AlertTransition) and o.category is Category.PHYSIOLOGICAL:
                if o.state is AlertState.RAISED:
                    opened[o.alert_id] = (o.condition, o.t)
                elif o.state is AlertState.CLEARED and o.alert_id in opened:
                    cond, t0 = opened.pop(o.alert_id)
                    if spans is not None:
                        spans.append((cond, t0, o.t))
            if isinstance(o, AlertTransition) and o.state is AlertState.RAISED:
                raised.append(o)
                rank[o.alert_id] = o.priority.rank
            elif isinstance(o, AlertTransition) and o.priority.rank > rank.get(o.alert_id, 9):
                raised.append(o)  # a rise in priority is a new notification of the same occurrence
                rank[o.alert_id] = o.priority.rank
            if isinstance(o, AlertTransition) and o.state in _NOTIFYING:
                acks.setdefault(t + 60, []).append(o.alert_id)  # the nurse answers every notification
            elif isinstance(o, NibpRequest) and o.reason.startswith("confirm"):
                extra.add(t + CUFF_CYCLE_S)

    for t in range(DURATION):
        now = float(t)
        if _phase(t) != phase:
            phase = _phase(t)
            take(eng.set_phase(phase, now), t)
        if s.artifact[t] != was_art:
            was_art = s.artifact[t]
            take(eng.observe("ox", DeviceStatus("artifact", was_art), now), t)
        if s.sensor_off[t] != was_off:
            was_off = s.sensor_off[t]
            take(eng.observe("ox", DeviceStatus("sensor_off", was_off), now), t)
        take(eng.observe("ox", Observation("spo2", s.spo2[t], "%"), now), t)
        take(eng.observe("ox", Observation("pulse_rate", s.pulse[t], "/min"), now), t)
        if _schedule(t) or t in extra:
            reading = _measure(rng, s, t)
            if reading is None:
                take(eng.observe("bp", DeviceStatus("cuff_error", True), now), t)
                extra.add(t + 60)
            else:
                if readings is not None:
                    readings.append((now, reading[0], reading[1]))
                take(eng.observe("bp", DeviceStatus("cuff_error", False), now), t)
                for kind, v in (("nibp_systolic", reading[0]), ("nibp_diastolic", reading[1])):
                    take(eng.observe("bp", Observation(kind, v, "mm[Hg]"), now), t)
                take(
                    eng.observe(
                        "bp", Observation("nibp_mean", round((reading[0] + 2 * reading[1]) / 3), ""), now
                    ),
                    t,
                )
        eng.bytes_seen("bp", now)
        take(eng.tick(now), t)
        for alert_id in acks.pop(t, []):
            take(eng.acknowledge(alert_id, "nurse", now), t)
    if spans is not None:
        spans.extend((cond, t0, math.inf) for cond, t0 in opened.values())
    return raised


def run_naive(
    s: Session,
    rng: random.Random,
    spans: list[Span] | None = None,
    readings: list[Reading] | None = None,
) -> list[tuple[float, str]]:
    """Same limits, no delay, no confirmation, every number believed: (t, condition) per onset.

    ``spans`` and ``readings``, when given, collect each alarm's (condition, on, off) and the
    monitor's own cuff readings, as :func:`run_engine` does for the engine.
    """
    bl_spo2, bl_pulse, bl_sys, bl_dia = s.bl
    on: dict[str, float] = {}
    onsets: list[tuple[float, str]] = []

    def update(cond: str, active: bool, t: int) -> None:
        if active and cond not in on:
            onsets.append((float(t), cond))
            on[cond] = float(t)
        elif not active and cond in on:
            t0 = on.pop(cond)
            if spans is not None:
                spans.append((cond, t0, float(t)))

    for t in range(DURATION):
        phase = _phase(t)
        if phase == "baseline":
            continue
        spo2, pulse = s.spo2[t], s.pulse[t]
        if spo2 is not None:
            update("spo2_low", spo2 <= 92, t)
            update("spo2_below_baseline", spo2 <= round(bl_spo2) - 4, t)
        if pulse is not None:
            update("pulse_high", pulse > 120, t)
            update("pulse_low", pulse < 50, t)
            update("pulse_above_baseline", pulse > bl_pulse + 30, t)
        if _schedule(t):
            reading = _measure(rng, s, t)
            if reading is None:
                continue
            sys_v, dia_v = reading
            if readings is not None:
                readings.append((float(t), sys_v, dia_v))
            high = sys_v >= 180 or dia_v >= 110 or (phase == "infusion" and (sys_v >= 165 or dia_v >= 100))
            update("nibp_high", high, t)
            update("nibp_low", sys_v < 90, t)
            update("nibp_rise_from_baseline", sys_v - bl_sys >= 40 or dia_v - bl_dia >= 25, t)
    if spans is not None:
        spans.extend((cond, t0, math.inf) for cond, t0 in on.items())
    return onsets


def _is_true(t: float, cond: str, events: list[TrueEvent]) -> TrueEvent | None:
    param = PARAM_OF.get(cond)
    for ev in events:
        slack = 600 if ev.kind == "hypertension" else 180
        if EVENT_PARAM[ev.kind] == param and ev.start - 5 <= t <= ev.end + slack:
            return ev
    return None


@dataclass
class Tally:
    sessions: int = 0
    false_alarms: int = 0
    false_high_medium: int = 0
    true_alarms: int = 0
    events: dict[str, int] = field(default_factory=dict)
    detected: dict[str, int] = field(default_factory=dict)
    carried: dict[str, int] = field(default_factory=dict)  # of detected: an alarm already on at the start
    delays: dict[str, list[float]] = field(default_factory=dict)

    def merge(self, other: Tally) -> None:
        """Add another tally (one session's, from a worker) to this one."""
        self.sessions += other.sessions
        self.false_alarms += other.false_alarms
        self.false_high_medium += other.false_high_medium
        self.true_alarms += other.true_alarms
        for kind, n in other.events.items():
            self.events[kind] = self.events.get(kind, 0) + n
        for kind, n in other.detected.items():
            self.detected[kind] = self.detected.get(kind, 0) + n
        for kind, n in other.carried.items():
            self.carried[kind] = self.carried.get(kind, 0) + n
        for kind, xs in other.delays.items():
            self.delays.setdefault(kind, []).extend(xs)


def _score(
    tally: Tally,
    alarms: list[tuple[float, str, str, bool]],
    events: list[TrueEvent],
    carried: AbstractSet[int] = frozenset(),
) -> None:
    """alarms: (t, condition, priority, is_rise); a rise detects an event but is not a new alarm.

    An event is alerted by an alarm of its condition that starts inside it (see :func:`_is_true`)
    or, for the events in ``carried`` (by ``id``, :func:`carried_events`), by one that was
    already on when it began and was still on inside it: that was its first alert, so it has no
    time to alert, whatever starts inside it later (a rise in priority, another occurrence).
    """
    tally.sessions += 1
    first: dict[int, float] = {}
    for t, cond, priority, is_rise in alarms:
        ev = _is_true(t, cond, events)
        if ev is not None and cond in EVENT_CONDITIONS[ev.kind]:
            first.setdefault(id(ev), t)
        if is_rise:
            continue
        if ev is None:
            tally.false_alarms += 1
            tally.false_high_medium += priority in ("high", "medium")
        else:
            tally.true_alarms += 1
    for ev in events:
        tally.events[ev.kind] = tally.events.get(ev.kind, 0) + 1
        if id(ev) in carried:  # its first alert came before it: whatever follows is not the first
            tally.detected[ev.kind] = tally.detected.get(ev.kind, 0) + 1
            tally.carried[ev.kind] = tally.carried.get(ev.kind, 0) + 1
        elif id(ev) in first:
            tally.detected[ev.kind] = tally.detected.get(ev.kind, 0) + 1
            tally.delays.setdefault(ev.kind, []).append(first[id(ev)] - ev.start)


def _first_beyond_inside(
    table: AlarmTable, s: Session, ev: TrueEvent, readings: list[Reading]
) -> float | None:
    """The first valid value inside ``ev`` beyond its condition's widest limit (a reading for NIBP)."""
    wide = _widest(_condition_rules(table, ev.kind, ev.start))
    begin = float(math.ceil(ev.start))
    if EVENT_PARAM[ev.kind] == "nibp":
        return next((r[0] for r in readings if begin <= r[0] <= ev.end and _reading_beyond(wide, r)), None)
    assert wide.limit is not None
    return first_crossing(_points(s, EVENT_PARAM[ev.kind]), wide.compare, wide.limit, begin, ev.end)


def carried_events(table: AlarmTable, s: Session, spans: list[Span], readings: list[Reading]) -> set[int]:
    """The events (by ``id``) an alarm already on at their start alerted: one of the event's
    condition, raised before the window in which :func:`_is_true` counts an onset, not cleared
    at the start, and still not cleared at the event's first valid value beyond the condition's
    widest limit (so the event's own value is what the alarm is then about, not a latch)."""
    out: set[int] = set()
    for ev in s.events:
        at = _first_beyond_inside(table, s, ev, readings)
        if at is None:
            continue
        if any(cond in EVENT_CONDITIONS[ev.kind] and t0 < ev.start - 5 and t1 > at for cond, t0, t1 in spans):
            out.add(id(ev))
    return out


def _naive_priority(cond: str) -> str:
    return "low" if cond in ("spo2_below_baseline", "pulse_above_baseline") else "high"


# --------------------------------------------------------------------------- time from first crossing
@dataclass(frozen=True)
class EventTiming:
    """One labelled event: when its first alert came, measured from the first crossing of a limit.

    ``rule``/``delay`` are the table row whose alert detected the event first and that row's own
    wait (``sustain_s``, ``bypass_s``, or for a confirmed NIBP rule ``confirm_min_s`` plus the
    simulated cuff cycle). ``from_rule_cross`` is alert minus the first valid crossing of that
    row's limit; ``beyond_table`` is alert minus the time the table's own timer fires on the same
    stream (what the engine adds); ``back_in_range_s``/``invalid_s`` explain the rest.
    ``from_cond_cross`` and ``naive_from_cond_cross`` use the condition's widest limit (SpO2 <= 92,
    pulse < 50, BP >= 165/100 in the infusion), the naive monitor's own limit.
    """

    kind: str
    rule: str
    delay: float
    from_rule_cross: float | None
    beyond_table: float | None
    back_in_range_s: float
    invalid_s: float
    from_cond_cross: float | None
    naive_from_cond_cross: float | None
    session: int = -1  # index in the cohort, for a look at one case (--details)
    start: float = 0.0  # the labelled start
    slid_cross: bool = False  # the first crossing was a sliding probe's value, not the patient's


def _points(s: Session, parameter: str) -> list[Point]:
    """The stream the engine is given for one parameter: (t, value, valid) per second."""
    values = s.spo2 if parameter == "spo2" else s.pulse
    return [
        (float(t), v, v is not None and not s.artifact[t] and not s.sensor_off[t])
        for t, v in enumerate(values)
    ]


def _widest(rules: list[Rule]) -> Rule:
    """The rule whose limit a value crosses first (the highest of the '<' limits, the lowest '>')."""

    def key(r: Rule) -> float:
        lim = r.limit if r.limit is not None else r.systolic if r.systolic is not None else 0.0
        return -lim if r.compare.startswith("<") else lim

    return min(rules, key=key)


def _condition_rules(table: AlarmTable, kind: str, t: float) -> list[Rule]:
    cond = next(iter(EVENT_CONDITIONS[kind]))
    phase = _phase(int(t))
    return [
        r
        for r in table.rules
        if r.condition == cond
        and phase in r.phases
        and (r.limit is not None or r.systolic is not None)
        and r.baseline_offset is None
    ]


def _reading_beyond(rule: Rule, reading: Reading) -> bool:
    _, sys_v, dia_v = reading
    return (rule.systolic is not None and compare(rule.compare, sys_v, rule.systolic)) or (
        rule.diastolic is not None and compare(rule.compare, dia_v, rule.diastolic)
    )


def _nibp_timing(
    table: AlarmTable, ev: TrueEvent, alert: AlertTransition, readings: list[Reading], naive_t: float | None
) -> EventTiming:
    """NIBP: the first crossing is the first valid reading over the limit (the cuff's cadence decides it)."""
    rule = table.rule(alert.rule)
    delay = rule.confirm_min_s + CUFF_CYCLE_S if rule.confirm else 0.0
    after = [r for r in readings if r[0] >= math.floor(ev.start)]
    cross = next((r[0] for r in after if _reading_beyond(rule, r)), None)
    table_t = None
    if cross is not None:  # single reading: that reading; confirmed: the next one over the limit >= min later
        table_t = cross
        if rule.confirm:
            table_t = next(
                (
                    r[0]
                    for r in after
                    if r[0] >= cross + rule.confirm_min_s - 1e-6 and _reading_beyond(rule, r)
                ),
                None,
            )
    wide = _widest(_condition_rules(table, ev.kind, ev.start))
    cond_cross = next((r[0] for r in after if _reading_beyond(wide, r)), None)
    return EventTiming(
        ev.kind,
        rule.id,
        delay,
        None if cross is None else alert.t - cross,
        None if table_t is None else alert.t - table_t,
        0.0,
        0.0,
        None if cond_cross is None else alert.t - cond_cross,
        None if naive_t is None or cond_cross is None else naive_t - cond_cross,
        start=ev.start,
    )


def _sustained_timing(
    table: AlarmTable, s: Session, ev: TrueEvent, alert: AlertTransition, naive_t: float | None
) -> EventTiming:
    rule = table.rule(alert.rule)
    bypass = rule.bypass_limit is not None and alert.limit == rule.bypass_limit
    limit = rule.bypass_limit if bypass and rule.bypass_limit is not None else rule.limit
    delay = rule.bypass_s if bypass else rule.sustain_s
    assert limit is not None, f"{rule.id}: a baseline-relative rule cannot detect a labelled event"
    points = _points(s, rule.parameter or "spo2")
    begin = float(math.floor(ev.start))  # the synthesized change starts at this whole second
    cross = first_crossing(points, rule.compare, limit, begin, alert.t)
    fired = table_fire_time(
        points,
        rule.compare,
        limit,
        delay=delay,
        start=begin,
        end=alert.t + 600,
        hold_s=table.sample_hold_s,
    )
    # A sliding probe's last unflagged values (just before the device says sensor_off) are not
    # the patient's: say so when the first crossing is one of them.
    slid = cross is not None and any(s.sensor_off[int(cross) + 1 : int(cross) + 4])
    gaps = between(points, rule.compare, limit, cross if cross is not None else alert.t, alert.t)
    wide = _widest(_condition_rules(table, ev.kind, ev.start))
    assert wide.limit is not None
    cond_cross = first_crossing(points, wide.compare, wide.limit, begin, alert.t)
    raw = [(t, v, True) for t, v, _ in points]  # the naive monitor believes every value
    naive_cross = first_crossing(raw, wide.compare, wide.limit, begin, ev.end)
    return EventTiming(
        ev.kind,
        rule.id + (" (bypass)" if bypass else ""),
        delay,
        None if cross is None else alert.t - cross,
        None if fired is None else alert.t - fired,
        gaps.in_range_s,
        gaps.invalid_s,
        None if cond_cross is None else alert.t - cond_cross,
        None if naive_t is None or naive_cross is None else naive_t - naive_cross,
        start=ev.start,
        slid_cross=slid,
    )


def _first_detections(alarms: list[tuple[float, str]], events: list[TrueEvent]) -> dict[int, int]:
    """Index into ``alarms`` of the first alarm that detects each event (by ``id`` of the event)."""
    first: dict[int, int] = {}
    for k, (t, cond) in enumerate(alarms):
        ev = _is_true(t, cond, events)
        if ev is not None and cond in EVENT_CONDITIONS[ev.kind]:
            first.setdefault(id(ev), k)
    return first


def event_timings(
    table: AlarmTable,
    s: Session,
    raised: list[AlertTransition],
    readings: list[Reading],
    naive: list[tuple[float, str]],
    *,
    carried: AbstractSet[int] = frozenset(),
) -> list[EventTiming]:
    """Per detected event, the time to alert from the first crossing (see :class:`EventTiming`).

    An event in ``carried`` had its alarm on before it began: no time to alert is measured
    (a later occurrence inside it is not its first alert)."""
    phys = [a for a in raised if a.category is Category.PHYSIOLOGICAL]
    eng_first = _first_detections([(a.t, a.condition) for a in phys], s.events)
    naive_first = _first_detections(naive, s.events)
    out: list[EventTiming] = []
    for ev in s.events:
        if id(ev) not in eng_first or id(ev) in carried:
            continue
        alert = phys[eng_first[id(ev)]]
        naive_t = naive[naive_first[id(ev)]][0] if id(ev) in naive_first else None
        if EVENT_PARAM[ev.kind] == "nibp":
            out.append(_nibp_timing(table, ev, alert, readings, naive_t))
        else:
            out.append(_sustained_timing(table, s, ev, alert, naive_t))
    return out


# --------------------------------------------------------------------------- one session, the cohort
@dataclass
class SessionResult:
    engine: Tally
    naive: Tally
    technical: dict[str, int]
    timings: list[EventTiming]


@functools.cache
def _default_table() -> AlarmTable:
    """The shipped table, loaded once per (worker) process."""
    return load_alarm_table(None)


def run_session(seed: int, i: int) -> SessionResult:
    """Session ``i`` of the cohort with ``seed``: engine, naive monitor, scores and timings.

    Its own random streams (the patient, the cuff) depend only on (seed, i), so a worker pool
    gives the same result as one process, in any order.
    """
    table = _default_table()
    s = make_session(random.Random(seed * 100003 + i))
    readings: list[Reading] = []
    spans: list[Span] = []
    raised = run_engine(table, s, random.Random(f"cuff-{seed}-{i}"), readings, spans=spans)
    naive_readings: list[Reading] = []
    naive_spans: list[Span] = []
    naive_onsets = run_naive(s, random.Random(f"cuff-{seed}-{i}"), naive_spans, naive_readings)
    carried = carried_events(table, s, spans, readings)
    naive_carried = carried_events(table, s, naive_spans, naive_readings)
    engine_t, naive_t = Tally(), Tally()
    phys = [
        (a.t, a.condition, a.priority.value, a.state is not AlertState.RAISED)
        for a in raised
        if a.category is Category.PHYSIOLOGICAL
    ]
    technical: dict[str, int] = {}
    for a in raised:
        if a.category is not Category.PHYSIOLOGICAL and a.state is AlertState.RAISED:
            technical[a.condition] = technical.get(a.condition, 0) + 1
    _score(engine_t, phys, s.events, carried)
    _score(naive_t, [(t, c, _naive_priority(c), False) for t, c in naive_onsets], s.events, naive_carried)
    timings = event_timings(table, s, raised, readings, naive_onsets, carried=carried)
    return SessionResult(engine_t, naive_t, technical, [dataclasses.replace(x, session=i) for x in timings])


def _run_star(job: tuple[int, int]) -> SessionResult:
    return run_session(*job)


@dataclass
class CohortResult:
    seed: int
    sessions: int
    elapsed_s: float
    engine: Tally = field(default_factory=Tally)
    naive: Tally = field(default_factory=Tally)
    technical: dict[str, int] = field(default_factory=dict)
    timings: list[EventTiming] = field(default_factory=list)

    def add(self, r: SessionResult) -> None:
        self.engine.merge(r.engine)
        self.naive.merge(r.naive)
        for k, v in r.technical.items():
            self.technical[k] = self.technical.get(k, 0) + v
        self.timings.extend(r.timings)


def run_cohort(seed: int, sessions: int, workers: int) -> CohortResult:
    """All sessions of one seed, on ``workers`` processes (1: in this process)."""
    started = time.perf_counter()
    jobs = [(seed, i) for i in range(sessions)]
    if workers > 1:
        with multiprocessing.Pool(workers) as pool:
            results = pool.map(_run_star, jobs, chunksize=max(1, sessions // (workers * 8)))
    else:
        results = [_run_star(j) for j in jobs]
    out = CohortResult(seed, sessions, 0.0)
    for r in results:
        out.add(r)
    out.elapsed_s = time.perf_counter() - started
    return out


# --------------------------------------------------------------------------- report
# The bedside monitor's own documented alarm delay for a low SpO2 / low pulse rate (averaging,
# processing and alarm generation together, from the actual change in the patient), as printed in
# one multi-vendor monitor's specifications (GE CARESCAPE ONE user manual, "Alarm specifications"):
# SpO2 low: GE TruSignal 10 s, Masimo 17 s (9-20), Nellcor 13 s (12-15); pulse low: 17 s, 15 s, 14 s.
BEDSIDE_DELAY = {"desaturation": "10-17 s", "bradycardia": "14-17 s", "hypertension": "- (cuff cycle)"}


def _med_max(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{statistics.median(xs):.0f} / {max(xs):.0f} s"


def _print_classic(c: CohortResult) -> None:
    """The original table: events alerted and time from the labelled start, false alarms."""
    n = c.sessions

    def rate(x: int) -> str:
        return f"{x / n:.2f}"

    def sens(t: Tally, kind: str) -> str:
        total, d = t.events.get(kind, 0), t.detected.get(kind, 0)
        delays = t.delays.get(kind, [])
        timing = "-"
        if delays:  # an onset may lead the labelled start by a few seconds: show it as 0
            med, worst = max(0.0, statistics.median(delays)), max(0.0, *delays)
            timing = f"median {med:.0f} s, max {worst:.0f} s"
        already = t.carried.get(kind, 0)
        if already:
            timing += f"; {already} by an alarm already on at the start"
        return f"{d}/{total} ({timing})"

    e, nv = c.engine, c.naive
    reduction = 1 - e.false_alarms / nv.false_alarms if nv.false_alarms else 0.0
    reduction_hm = 1 - e.false_high_medium / nv.false_high_medium if nv.false_high_medium else 0.0
    print(f"Cohort: {n} sessions of {DURATION // 60} min, seed {c.seed} ({c.elapsed_s:.0f} s)\n")
    print("| | VitalWatch engine | naive threshold monitor |")
    print("|---|---|---|")
    for kind in ("desaturation", "hypertension", "bradycardia"):
        print(f"| {kind} events alerted (time from labelled start) | {sens(e, kind)} | {sens(nv, kind)} |")
    print(f"| false physiological alarms per session | {rate(e.false_alarms)} | {rate(nv.false_alarms)} |")
    print(
        f"| of which HIGH/MEDIUM per session | {rate(e.false_high_medium)} | "
        f"{rate(nv.false_high_medium)} (all treated as HIGH) |"
    )
    print(f"| reduction in false alarms | {reduction:.1%} (HIGH/MEDIUM: {reduction_hm:.1%}) | - |")
    tech = ", ".join(f"{k} {rate(v)}" for k, v in sorted(c.technical.items())) or "none"
    print(f"| technical/advisory alarms per session (engine only) | {tech} | - |")


def _print_crossing(c: CohortResult) -> bool:
    """Time to alert from the first crossing, per detecting rule; True when every row meets the target."""
    print(f"\nTime to alert from the first crossing of the limit, seed {c.seed}:\n")
    print("| event | condition's widest limit: engine | naive monitor | bedside monitor (documented) |")
    print("|---|---|---|---|")
    for kind in ("desaturation", "bradycardia", "hypertension"):
        rows = [x for x in c.timings if x.kind == kind]
        eng = [x.from_cond_cross for x in rows if x.from_cond_cross is not None]
        naive = [x.naive_from_cond_cross for x in rows if x.naive_from_cond_cross is not None]
        cells = f"{_med_max(eng)} ({len(eng)}) | {_med_max(naive)} ({len(naive)})"
        print(f"| {kind} | {cells} | {BEDSIDE_DELAY[kind]} |")
    print(
        "\n| first alert by rule | events | table delay | from first crossing of its limit (median / max) "
        "| beyond the table's timer (median / max) | target (median <= d+1, max <= d+5) | why later |"
    )
    print("|---|---|---|---|---|---|---|")
    ok = True
    for rule in sorted({x.rule for x in c.timings}):
        rows = [x for x in c.timings if x.rule == rule]
        d = rows[0].delay
        lag = [x.from_rule_cross for x in rows if x.from_rule_cross is not None]
        beyond = [x.beyond_table for x in rows if x.beyond_table is not None]
        met = bool(lag) and len(lag) == len(rows) and statistics.median(lag) <= d + 1 and max(lag) <= d + 5
        ok = ok and met
        late = [x for x in rows if x.from_rule_cross is not None and x.from_rule_cross > d + 1]
        why = "-"
        if late:
            back = sum(1 for x in late if x.back_in_range_s > 0)
            inval = sum(1 for x in late if x.invalid_s > 0)
            slid = sum(1 for x in late if x.slid_cross)
            why = f"{len(late)} later than d+1: {back} came back in range, {inval} had invalid signal"
            if slid:
                why += f" ({slid} first crossed by a sliding probe's value)"
        print(
            f"| {rule} | {len(rows)} | {d:.0f} s | {_med_max(lag)} | {_med_max(beyond)} | "
            f"{'met' if met else 'NOT met'} | {why} |"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    """Run the cohort (and the held-out seed) and print the Markdown tables."""
    parser = argparse.ArgumentParser(prog="bench.alarm_quality")
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1, help="the cohort the table is judged (and tuned) on")
    parser.add_argument(
        "--holdout-seed", type=int, default=2, help="a second cohort, never tuned on (0: skip it)"
    )
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--details", help="write every event's timing here (JSON lines), for analysis")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    seeds = [args.seed] + ([args.holdout_seed] if args.holdout_seed else [])
    all_met = True
    for seed in seeds:
        cohort = run_cohort(seed, args.sessions, args.workers)
        label = "held out" if seed != args.seed else "tuning"
        print(f"\n### Seed {seed} ({label})\n")
        _print_classic(cohort)
        all_met = _print_crossing(cohort) and all_met
        if args.details:
            with open(args.details, "a", encoding="utf-8") as f:
                for x in cohort.timings:
                    f.write(json.dumps({"seed": seed, **dataclasses.asdict(x)}) + "\n")
        e = cohort.engine
        missed = sum(e.events.values()) - sum(e.detected.values())
        print(f"\nTrue events not alerted: {missed}")
    print(f"\nTime-to-alert target {'met' if all_met else 'NOT met'} on every rule and seed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
