"""Alarm quality on a simulated cohort: the engine against a naive threshold monitor (issue 5 §7).

Run: ``python -m bench.alarm_quality [--sessions 240] [--seed 1]`` (or via ``python -m bench``
once registered). Not a timed test: it prints a Markdown table for docs/alarms.md.

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
The simulated nurse acknowledges 60 s after every notification (raised, re-notified, escalated).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

from vitalwatch.drivers.events import DeviceStatus, Observation
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, NibpRequest, Output
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import AlarmTable, load_alarm_table

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


def run_engine(table: AlarmTable, s: Session, rng: random.Random) -> list[AlertTransition]:
    """The session through the engine; requested confirmations are taken 60 s later."""
    eng = BedEngine(table, bed="b", devices={"ox": "spo2", "bp": "nibp"})
    raised: list[AlertTransition] = []
    acks: dict[int, list[str]] = {}
    extra: set[int] = set()
    was_art = was_off = False
    phase = ""

    rank: dict[str, int] = {}

    def take(outs: list[Output], t: int) -> None:
        for o in outs:
            if isinstance(o, AlertTransition) and o.state is AlertState.RAISED:
                raised.append(o)
                rank[o.alert_id] = o.priority.rank
            elif isinstance(o, AlertTransition) and o.priority.rank > rank.get(o.alert_id, 9):
                raised.append(o)  # a rise in priority is a new notification of the same occurrence
                rank[o.alert_id] = o.priority.rank
            if isinstance(o, AlertTransition) and o.state in _NOTIFYING:
                acks.setdefault(t + 60, []).append(o.alert_id)  # the nurse answers every notification
            elif isinstance(o, NibpRequest) and o.reason.startswith("confirm"):
                extra.add(t + 60)

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
    return raised


def run_naive(s: Session, rng: random.Random) -> list[tuple[float, str]]:
    """Same limits, no delay, no confirmation, every number believed: (t, condition) per onset."""
    bl_spo2, bl_pulse, bl_sys, bl_dia = s.bl
    on: dict[str, bool] = {}
    onsets: list[tuple[float, str]] = []

    def update(cond: str, active: bool, t: int) -> None:
        if active and not on.get(cond):
            onsets.append((float(t), cond))
        on[cond] = active

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
            high = sys_v >= 180 or dia_v >= 110 or (phase == "infusion" and (sys_v >= 165 or dia_v >= 100))
            update("nibp_high", high, t)
            update("nibp_low", sys_v < 90, t)
            update("nibp_rise_from_baseline", sys_v - bl_sys >= 40 or dia_v - bl_dia >= 25, t)
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
    delays: dict[str, list[float]] = field(default_factory=dict)


def _score(tally: Tally, alarms: list[tuple[float, str, str, bool]], events: list[TrueEvent]) -> None:
    """alarms: (t, condition, priority, is_rise); a rise detects an event but is not a new alarm."""
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
        if id(ev) in first:
            tally.detected[ev.kind] = tally.detected.get(ev.kind, 0) + 1
            tally.delays.setdefault(ev.kind, []).append(first[id(ev)] - ev.start)


def _naive_priority(cond: str) -> str:
    return "low" if cond in ("spo2_below_baseline", "pulse_above_baseline") else "high"


def main(argv: list[str] | None = None) -> int:
    """Run the cohort and print the Markdown table."""
    parser = argparse.ArgumentParser(prog="bench.alarm_quality")
    parser.add_argument("--sessions", type=int, default=240)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv if argv is not None else [])
    table = load_alarm_table(None)
    engine_t, naive_t = Tally(), Tally()
    technical: dict[str, int] = {}
    started = time.perf_counter()
    for i in range(args.sessions):
        s = make_session(random.Random(args.seed * 100003 + i))
        raised = run_engine(table, s, random.Random(i))
        phys = [
            (a.t, a.condition, a.priority.value, a.state is not AlertState.RAISED)
            for a in raised
            if a.category is Category.PHYSIOLOGICAL
        ]
        for a in raised:
            if a.category is not Category.PHYSIOLOGICAL and a.state is AlertState.RAISED:
                technical[a.condition] = technical.get(a.condition, 0) + 1
        _score(engine_t, phys, s.events)
        naive = [(t, c, _naive_priority(c), False) for t, c in run_naive(s, random.Random(i))]
        _score(naive_t, naive, s.events)
    elapsed = time.perf_counter() - started

    def rate(x: int) -> str:
        return f"{x / args.sessions:.2f}"

    def sens(t: Tally, kind: str) -> str:
        n, d = t.events.get(kind, 0), t.detected.get(kind, 0)
        delays = t.delays.get(kind, [])
        timing = "-"
        if delays:  # an onset may lead the labelled start by a few seconds: show it as 0
            med, worst = max(0.0, statistics.median(delays)), max(0.0, *delays)
            timing = f"median {med:.0f} s, max {worst:.0f} s"
        return f"{d}/{n} ({timing})"

    reduction = 1 - engine_t.false_alarms / naive_t.false_alarms if naive_t.false_alarms else 0.0
    reduction_hm = (
        1 - engine_t.false_high_medium / naive_t.false_high_medium if naive_t.false_high_medium else 0.0
    )
    print(f"Cohort: {args.sessions} sessions of {DURATION // 60} min, seed {args.seed} ({elapsed:.0f} s)\n")
    print("| | VitalWatch engine | naive threshold monitor |")
    print("|---|---|---|")
    for kind in ("desaturation", "hypertension", "bradycardia"):
        print(f"| {kind} events alerted (time to alert) | {sens(engine_t, kind)} | {sens(naive_t, kind)} |")
    false_rates = f"{rate(engine_t.false_alarms)} | {rate(naive_t.false_alarms)}"
    print(f"| false physiological alarms per session | {false_rates} |")
    print(
        f"| of which HIGH/MEDIUM per session | {rate(engine_t.false_high_medium)} | "
        f"{rate(naive_t.false_high_medium)} (all treated as HIGH) |"
    )
    print(f"| reduction in false alarms | {reduction:.0%} (HIGH/MEDIUM: {reduction_hm:.0%}) | - |")
    tech = ", ".join(f"{k} {rate(v)}" for k, v in sorted(technical.items())) or "none"
    print(f"| technical/advisory alarms per session (engine only) | {tech} | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
