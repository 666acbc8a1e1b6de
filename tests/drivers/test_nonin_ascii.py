"""Nonin ASCII ``SPO2=XXX HR=YYY`` output: manual line forms, header, markers, three-way feeding, fuzz."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import (
    feed_bytewise,
    feed_chunks,
    feed_whole,
    observations,
    only_events,
    problems,
    statuses,
)
from vitalwatch.drivers.base import Driver
from vitalwatch.drivers.events import DecodeProblem, Event
from vitalwatch.drivers.nonin_ascii import NoninAsciiDriver, encode_line

# Line forms as the manuals print them (device-protocols.md §1.1): 7500FO, Avant 9600 fast mode,
# the 7500 event marker, BT4000 no-data, 8600V clock prefix. Digits in the manuals are "XXX"; a
# zero-padded and a space-padded rendering are both accepted.
MANUAL_LINES = (
    b"SPO2=097 HR=072\r\n"
    b"SPO2=096 HR=071 F\r\n"
    b"SPO2=095 HR=070*\r\n"
    b"SPO2=--- HR=---\r\n"
    b"14:30:15 SPO2=094 HR=069\r\n"
    b"SPO2= 93 HR=100 *\r\n"
)
EXPECTED_SPO2 = [97.0, 96.0, 95.0, None, 94.0, 93.0]
EXPECTED_HR = [72.0, 71.0, 70.0, None, 69.0, 100.0]


def values(events: list[Event], kind: str) -> list[float | None]:
    return [e.value for e in observations(events) if e.kind == kind]


FEEDS: list[Callable[..., list[Event]]] = [feed_whole, feed_bytewise, feed_chunks]


def make() -> Driver:
    return NoninAsciiDriver()


@pytest.mark.parametrize("feed", FEEDS)
def test_manual_lines_three_ways_with_junk(feed: Callable[..., list[Event]]) -> None:
    """Header, the manual's line forms, junk before (a cut line) and after (no LF) decode alike."""
    header = b"Nonin 7500  08:00:00 01/01/25\r\n"
    stream = b"2=098 HR=0\r\n" + header + MANUAL_LINES + b"SPO2=09"
    events = feed(make, stream)
    assert only_events(events)
    assert values(events, "spo2") == EXPECTED_SPO2
    assert values(events, "pulse_rate") == EXPECTED_HR
    assert problems(events) == [DecodeProblem("bad_line", 10), DecodeProblem("truncated_line", 7)]
    assert statuses(events) == []


def test_units_and_codes() -> None:
    """SpO2 in %, pulse rate in /min, with their MDC codes."""
    obs = observations(NoninAsciiDriver().feed(b"SPO2=097 HR=072\r\n"))
    assert [(o.kind, o.unit, o.mdc) for o in obs] == [("spo2", "%", 150456), ("pulse_rate", "/min", 149530)]


def test_header_is_skipped_without_problem_and_markers_counted() -> None:
    """The power-on header is not a problem; the * event marker is counted, not reported."""
    drv = NoninAsciiDriver()
    events = drv.feed(b"NONIN MEDICAL 7500 12:00:01 03/04/24\r\n\r\n" + MANUAL_LINES)
    assert problems(events) == []
    assert drv.header_lines == 1
    assert drv.event_markers == 2


@pytest.mark.parametrize(
    "line",
    [
        b"SPO2=9x7 HR=072\r\n",
        b"SPO2=097\r\n",
        b"HR=072 SPO2=097\r\n",
        b"SPO2=097 HR=07\x0072\r\n",
        b"\xff\xfe\r\n",
    ],
)
def test_broken_lines_are_problems_not_values(line: bytes) -> None:
    """A line that mentions SPO2/HR but does not parse, or carries binary bytes, is a bad_line."""
    events = NoninAsciiDriver().feed(line)
    assert events == [DecodeProblem("bad_line", len(line) - 2)]


def test_out_of_range_spo2_is_none() -> None:
    """A saturation above 100 is not a number the engine should see."""
    assert values(NoninAsciiDriver().feed(b"SPO2=127 HR=511\r\n"), "spo2") == [None]


def test_endless_line_is_bounded() -> None:
    """A stream with no LF (wrong baud rate) is cut at max_line_bytes and reported."""
    drv = NoninAsciiDriver(max_line_bytes=64)
    events = drv.feed(b"A" * 200)
    assert events == [DecodeProblem("line_too_long", 200)]
    assert values(drv.feed(b"tail\r\nSPO2=090 HR=060\r\n"), "spo2") == [90.0]


def test_one_way_protocol() -> None:
    """Nothing to send, no timers."""
    drv = NoninAsciiDriver()
    assert drv.data_to_send() == b""
    assert drv.next_deadline() is None
    assert drv.on_timer(1.0) == []


@settings(max_examples=80, deadline=None)
@given(
    spo2=st.none() | st.integers(0, 100),
    hr=st.none() | st.integers(0, 300),
    event=st.booleans(),
    fast=st.booleans(),
    clock=st.none() | st.just("23:59:59"),
)
def test_encode_decode_round_trip(
    spo2: int | None, hr: int | None, event: bool, fast: bool, clock: str | None
) -> None:
    """encode_line → driver gives back the same SpO2 and HR (None for ---)."""
    events = NoninAsciiDriver().feed(encode_line(spo2, hr, event=event, fast=fast, clock=clock))
    assert values(events, "spo2") == [None if spo2 is None else float(spo2)]
    assert values(events, "pulse_rate") == [None if hr is None else float(hr)]
    assert problems(events) == []


@settings(max_examples=80, deadline=None)
@given(
    data=st.binary(max_size=400)
    | st.text(alphabet="SPO2=HR -*F0123456789\r\n:", max_size=200).map(str.encode)
)
def test_random_bytes_never_raise(data: bytes) -> None:
    """Any input gives only events (and SpO2 never above 100)."""
    events = feed_chunks(make, data, seed=len(data))
    assert only_events(events)
    for o in observations(events):
        assert o.value is None or o.kind != "spo2" or o.value <= 100
