"""What each second of a sustained rule's delay buys: false alarms against time to alert.

Run: ``python -m bench alarm_sweep [--sessions 2000] [--seed 1]``. It prints, per sustained rule
that can detect a labelled event (SpO2 < 90 and <= 92, pulse < 40 and < 50), the same cohort as
``bench.alarm_quality`` judged by that rule alone at several delays: alarm onsets outside any
labelled event per session, events caught, and time from the first crossing of the rule's limit.

The rule alone means the table's timer (:func:`bench.alarm_timing.table_fire_time`'s semantics:
valid out-of-range time counts, a valid in-range value resets, invalid signal pauses) applied to
the stream the engine is given, in the rule's phases, with no latching, acknowledgement or
one-occurrence-per-condition; so the counts at the table's delay are close to, not equal to, the
engine's. No engine runs here, which is why it takes seconds where the cohort takes minutes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

from bench.alarm_quality import (
    EVENT_CONDITIONS,
    Session,
    _is_true,
    _phase,
    _points,
    make_session,
)
from bench.alarm_timing import Point, first_crossing
from vitalwatch.engine.table import AlarmTable, Rule, compare, load_alarm_table

DELAYS = (0, 5, 10, 15, 20, 30)
RULES = ("spo2_low_high", "spo2_low_medium", "pulse_low_high", "pulse_low_medium")
EPS = 1e-6


def onsets(points: list[Point], rule: Rule, delay: float, hold_s: float) -> list[float]:
    """Times the rule alone would raise an alarm: the timer reaches ``delay`` (once per run of
    out-of-range signal; a valid in-range value ends the run), only in the rule's phases."""
    assert rule.limit is not None
    out: list[float] = []
    acc, firing = 0.0, False
    held: Point | None = None
    for p in points:
        t, value, valid = p
        if (
            held is not None
            and held[2]
            and held[1] is not None
            and compare(rule.compare, held[1], rule.limit)
        ):
            acc += min(t - held[0], hold_s)
        if valid and value is not None:
            if compare(rule.compare, value, rule.limit):
                if not firing and acc >= delay - EPS and _phase(int(t)) in rule.phases:
                    out.append(t)
                    firing = True
            else:
                acc, firing = 0.0, False
        held = p
    return out


@dataclass
class RuleSweep:
    """Per delay: false onsets, events caught, and seconds from the first crossing to the alarm."""

    false: dict[float, int] = field(default_factory=dict)
    caught: dict[float, int] = field(default_factory=dict)
    events: int = 0
    lag: dict[float, list[float]] = field(default_factory=dict)


def sweep_session(table: AlarmTable, s: Session, result: dict[str, RuleSweep]) -> None:
    """Add one session to ``result`` (rule id -> sweep)."""
    for rule_id in RULES:
        rule = table.rule(rule_id)
        points = _points(s, rule.parameter or "spo2")
        sw = result.setdefault(rule_id, RuleSweep())
        kinds = [k for k, conds in EVENT_CONDITIONS.items() if rule.condition in conds]
        events = [ev for ev in s.events if ev.kind in kinds]
        sw.events += len(events)
        for d in DELAYS:
            times = onsets(points, rule, d, table.sample_hold_s)
            sw.false[d] = sw.false.get(d, 0) + sum(
                1 for t in times if _is_true(t, rule.condition, s.events) is None
            )
            for ev in events:
                hit = next((t for t in times if _is_true(t, rule.condition, [ev]) is not None), None)
                if hit is None:
                    continue
                sw.caught[d] = sw.caught.get(d, 0) + 1
                cross = first_crossing(points, rule.compare, rule.limit or 0.0, float(int(ev.start)), hit)
                if cross is not None:
                    sw.lag.setdefault(d, []).append(hit - cross)


def main(argv: list[str] | None = None) -> int:
    """Sweep the delays over one cohort and print a Markdown table per rule."""
    parser = argparse.ArgumentParser(prog="bench.alarm_sweep")
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    table = load_alarm_table(None)
    started = time.perf_counter()
    result: dict[str, RuleSweep] = {}
    for i in range(args.sessions):
        sweep_session(table, make_session(random.Random(args.seed * 100003 + i)), result)
    print(
        f"Delay sweep: {args.sessions} sessions, seed {args.seed} ({time.perf_counter() - started:.0f} s)\n"
    )
    print("| rule | delay | false alarms per session | events caught | from first crossing, median / max |")
    print("|---|---|---|---|---|")
    for rule_id in RULES:
        rule, sw = table.rule(rule_id), result[rule_id]
        for d in DELAYS:
            lag = sw.lag.get(d, [])
            timing = f"{statistics.median(lag):.0f} / {max(lag):.0f} s" if lag else "-"
            mark = " (table)" if abs(d - rule.sustain_s) < EPS else ""
            print(
                f"| {rule_id} ({rule.compare} {rule.limit:g}) | {d} s{mark} | "
                f"{sw.false.get(d, 0) / args.sessions:.2f} | {sw.caught.get(d, 0)}/{sw.events} | {timing} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
