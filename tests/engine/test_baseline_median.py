"""The baseline's SpO2 and pulse medians, kept in a sorted window as samples come, are exactly
statistics.median of the window: the same value, sign and type of the middle elements chosen,
through the window dropping its oldest samples, equal values of either sign or type, infinities
and NaN (which has no place in an order, so a window holding one is sorted again)."""

from __future__ import annotations

import math
import statistics
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from vitalwatch.engine.baseline import BaselineCollector
from vitalwatch.engine.table import load_alarm_table

SETTINGS = load_alarm_table(None).baseline
# Few distinct values, so that equal ones (0.0 and -0.0, 97 and 97.0) meet in the middle often.
VALUES = st.one_of(
    st.sampled_from([0.0, -0.0, 0, 97, 97.0, 96.5, 1e308, -1e308, math.inf, -math.inf]),
    st.sampled_from([math.nan]),
    st.floats(min_value=-5, max_value=5),
    st.integers(min_value=-3, max_value=3),
)


def _expected(window: deque[float]) -> str:
    return repr(float(statistics.median(window)))


@settings(max_examples=300, deadline=None)
@given(st.lists(VALUES, min_size=1, max_size=40), st.integers(min_value=1, max_value=7))
def test_the_kept_median_is_the_median_of_the_window(values: list[float], size: int) -> None:
    collector = BaselineCollector(SETTINGS, window=size)
    collector.add_valid_time("spo2", SETTINGS.oximetry_s)  # enough valid time: the median is in force
    window: deque[float] = deque(maxlen=size)
    for value in values:
        collector.add_sample("spo2", value)
        window.append(value)
        assert repr(collector.oximetry("spo2")) == _expected(window)


def test_a_window_that_dropped_its_last_nan_is_ordered_again() -> None:
    collector = BaselineCollector(SETTINGS, window=3)
    collector.add_valid_time("spo2", SETTINGS.oximetry_s)
    for value in (5.0, math.nan, 1.0, 3.0, 2.0, 9.0):
        collector.add_sample("spo2", value)
    assert collector.oximetry("spo2") == 3.0  # median of 3, 2, 9


def test_equal_values_leave_the_window_oldest_first() -> None:
    """-0.0 arrived first and leaves first: the 0.0 that stays is the median, not -0.0."""
    collector = BaselineCollector(SETTINGS, window=3)
    collector.add_valid_time("spo2", SETTINGS.oximetry_s)
    for value in (-0.0, 0.0, -1.0, 1.0):
        collector.add_sample("spo2", value)
    assert repr(collector.oximetry("spo2")) == "0.0"
