"""Time to alert from the first crossing of a limit (bench/alarm_timing.py), on hand-built streams.

The alarm-quality benchmark judges the engine by these functions, so they are checked here on
cases worked out by hand, and once end to end: a hand-built session through the real engine.
"""

from __future__ import annotations

import random

from bench.alarm_quality import (
    DURATION,
    Session,
    Tally,
    TrueEvent,
    _score,
    carried_events,
    event_timings,
    run_engine,
    run_naive,
)
from bench.alarm_timing import Gaps, Point, between, first_crossing, table_fire_time
from vitalwatch.engine.table import load_alarm_table


def _stream(
    values: dict[int, float | None], invalid: frozenset[int] | set[int] = frozenset(), n: int = 60
) -> list[Point]:
    """1 Hz samples of 97 %, with the given seconds replaced; ``invalid`` seconds are flagged."""
    return [(float(t), values.get(t, 97.0), t not in invalid) for t in range(n)]


def _desaturation(low_from: int, start: int) -> Session:
    """A quiet session with SpO2 at 88 % from ``low_from`` to ``start + 60`` and a desaturation
    labelled from ``start`` to ``start + 60``; no cuff outliers or failures."""
    spo2: list[float | None] = [97.0] * DURATION
    for t in range(low_from, start + 60):
        spo2[t] = 88.0
    return Session(
        spo2=spo2,
        pulse=[72.0] * DURATION,
        artifact=[False] * DURATION,
        sensor_off=[False] * DURATION,
        bp_true=[(120.0, 75.0)] * DURATION,
        bl=(97.0, 72.0, 120.0, 75.0),
        events=[TrueEvent("desaturation", float(start), float(start + 60))],
        outlier_rate=0.0,
        cuff_fail_rate=0.0,
    )


def test_first_crossing_skips_invalid_values_and_the_time_before_the_window() -> None:
    points = _stream({3: 85.0, 8: 89.0, 10: 95.0, 12: 88.0, 13: 88.0}, invalid={8})
    assert first_crossing(points, "<", 90, 5, 59) == 12.0  # 3 is before the window, 8 is flagged
    assert first_crossing(points, "<", 90, 0, 59) == 3.0
    assert first_crossing(points, "<=", 95, 9, 59) == 10.0  # "<=" includes the limit itself
    assert first_crossing(points, "<", 80, 0, 59) is None


def test_table_timer_counts_valid_out_of_range_time_pauses_on_invalid_and_restarts_in_range() -> None:
    low = {t: 88.0 for t in range(10, 50)}
    clean = _stream(low)
    assert table_fire_time(clean, "<", 90, delay=15, start=0, end=59) == 25.0
    # one flagged second in the run: it holds nothing valid, so the alert is one second later
    paused = _stream(low, invalid={14})
    assert table_fire_time(paused, "<", 90, delay=15, start=0, end=59) == 26.0
    # one valid value back in range at 12: the count starts again at 13
    back = _stream({**low, 12: 91.0})
    assert table_fire_time(back, "<", 90, delay=15, start=0, end=59) == 28.0
    # samples stop at 20 (absent): held for at most 5 s, then nothing counts
    absent = [p for p in clean if p[0] <= 20]
    assert table_fire_time(absent, "<", 90, delay=15, start=0, end=59) is None
    assert between(back, "<", 90, 10, 28) == Gaps(in_range_s=1, invalid_s=0)
    assert between(paused, "<", 90, 10, 26) == Gaps(in_range_s=0, invalid_s=1)


def test_hand_built_desaturation_through_the_engine_is_alerted_at_crossing_plus_the_table_delay() -> None:
    """SpO2 steps from 97 to 88 % for 60 s: below 92 and 90 at once, so the HIGH rule (< 90 for
    15 s) alerts 15 s after the crossing, and the engine adds nothing to the table's timer."""
    s = _desaturation(low_from=1500, start=1500)
    table = load_alarm_table(None)
    readings: list[tuple[float, float, float]] = []
    raised = run_engine(table, s, random.Random(0), readings)
    naive = run_naive(s, random.Random(0))
    [timing] = event_timings(table, s, raised, readings, naive)
    assert timing.rule == "spo2_low_high"
    assert timing.delay == 15
    assert timing.from_rule_cross == 15
    assert timing.beyond_table == 0
    assert timing.from_cond_cross == 15  # 88 crosses the widest limit (<= 92) at the same second
    assert timing.naive_from_cond_cross == 0
    assert (timing.back_in_range_s, timing.invalid_s) == (0, 0)


def test_an_alarm_already_on_at_the_event_start_alerts_it() -> None:
    """SpO2 at 88 % from t=1400; the labelled desaturation starts at 1500. The HIGH raised at
    1415 is still on (and the value still low) inside the event: the event counts as alerted,
    by an alarm already on at its start, with no time to alert measured."""
    start = 1500
    s = _desaturation(low_from=1400, start=start)
    table = load_alarm_table(None)
    readings: list[tuple[float, float, float]] = []
    spans: list[tuple[str, float, float]] = []
    raised = run_engine(table, s, random.Random(0), readings, spans=spans)
    assert any(cond == "spo2_low" and t0 == 1415.0 and t1 > start for cond, t0, t1 in spans)
    carried = carried_events(table, s, spans, readings)
    assert {id(s.events[0])} == carried
    tally = Tally()
    phys = [(a.t, a.condition, a.priority.value, False) for a in raised]
    _score(tally, phys, s.events, carried)
    assert (tally.detected, tally.carried) == ({"desaturation": 1}, {"desaturation": 1})
    assert {} == tally.delays
    assert [] == event_timings(table, s, raised, readings, run_naive(s, random.Random(0)), carried=carried)
    # without the carried set, the strict count finds no alarm starting inside the event
    strict = Tally()
    _score(strict, phys, s.events)
    assert {} == strict.detected
