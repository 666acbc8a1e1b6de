"""Nellcor NPB-29x / N-595 real-time printout driver."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

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
from vitalwatch.drivers.events import DeviceStatus, Observation
from vitalwatch.drivers.nellcor import NellcorDriver, NellcorLine, format_line, parse_line

VECTOR = Path(__file__).parent.parent / "vectors" / "nellcor" / "npb29x_realtime_printout_manual.txt"


def device_bytes() -> bytes:
    """The manual's printout without the vector file's own ``#`` label lines, CR LF ended."""
    lines = [ln for ln in VECTOR.read_text().splitlines() if not ln.startswith("#")]
    return "".join(ln + "\r\n" for ln in lines).encode()


def values(events: list[object]) -> list[tuple[str, float | None, datetime | None]]:
    return [(o.kind, o.value, o.device_time) for o in observations(events)]  # type: ignore[arg-type]


EXPECTED = [
    ("spo2", 100.0, datetime(1997, 11, 12, 14, 0, 5)),
    ("pulse_rate", 120.0, datetime(1997, 11, 12, 14, 0, 5)),
    ("spo2", 100.0, datetime(1998, 11, 12, 14, 0, 5)),
    ("pulse_rate", 120.0, datetime(1998, 11, 12, 14, 0, 5)),
]


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise, feed_chunks])
def test_manual_sample_decodes_the_same_three_ways(feed: object) -> None:
    """Both manual samples give SpO2 100 %, pulse 120/min at their clock time; headers are silent."""
    events = feed(NellcorDriver, device_bytes())  # type: ignore[operator]
    assert values(events) == EXPECTED
    assert problems(events) == []
    assert statuses(events) == []


def test_junk_before_and_after_is_reported_and_data_still_decodes() -> None:
    """Line noise is a problem per bad line; the data lines in between still decode."""
    data = b"\x00\xff garbage\r\n" + device_bytes() + b"12-NOV-98 14:0"
    events = feed_whole(NellcorDriver, data)
    assert values(events) == EXPECTED
    assert [p.reason for p in problems(events)] == ["unrecognised_line", "truncated_line"]


def test_observation_units_and_codes() -> None:
    obs = observations(NellcorDriver().feed(b"12-NOV-98 14:00:05 97 64 50\r\n"))
    assert [(o.kind, o.value, o.unit, o.mdc) for o in obs] == [
        ("spo2", 97.0, "%", 150456),
        ("pulse_rate", 64.0, "/min", 149530),
    ]


def test_dashes_are_none_never_numbers() -> None:
    """``---`` is the device's "no value": None, and the line still reports the sensor status."""
    events = NellcorDriver().feed(b"12-NOV-98 14:00:05 --- --- --- SO\r\n")
    assert [o.value for o in observations(events)] == [None, None]
    assert [DeviceStatus("sensor_off", True, {})] == statuses(events)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("SO", ["sensor_off"]),
        ("SD", ["no_sensor"]),
        ("PS", ["searching"]),
        ("LP", ["searching"]),
        ("LM", ["searching", "artifact"]),
        ("MO", ["artifact"]),
        ("LB", ["low_battery"]),
        ("AO", ["alarm_silenced"]),
        ("AS", ["alarm_silenced"]),
        ("SL", ["device_alarm"]),
        ("PH", ["device_alarm"]),
    ],
)
def test_status_codes_map_to_vocabulary(code: str, expected: list[str]) -> None:
    driver = NellcorDriver()
    on = statuses(driver.feed(f"12-NOV-98 14:00:05 97 64 50 {code}\r\n".encode()))
    assert expected == [s.code for s in on]
    assert all(s.active for s in on)
    off = statuses(driver.feed(b"12-NOV-98 14:00:07 97 64 50\r\n"))
    assert sorted(expected) == sorted(s.code for s in off)
    assert not any(s.active for s in off)


def test_star_keeps_the_value_and_reports_which_parameter_with_the_header_limits() -> None:
    """``85*`` is SpO2 85 outside its limit: value kept, device_alarm says spo2 and the limits."""
    driver = NellcorDriver()
    data = (
        b"NPB-295 VERSION 2.0.0.0 CRC: XXXX SpO2 Limit: 90-100% PR Limit: 60-160BPM\r\n"
        b"TIME %SPO2 BPM PA Status\r\n"
        b"12-NOV-98 14:00:05 85* 120 50 SL\r\n"
    )
    events = driver.feed(data)
    assert [o.value for o in observations(events)] == [85.0, 120.0]
    assert [
        DeviceStatus(
            "device_alarm",
            True,
            {"param": "spo2", "spo2_limits": "90-100", "pulse_rate_limits": "60-160"},
        )
    ] == statuses(events)
    # A second parameter joins the alarm: the receiver learns it through off + on.
    events = driver.feed(b"12-NOV-98 14:00:07 85* 170* 50 SL PH\r\n")
    assert [(s.code, s.active) for s in statuses(events)] == [("device_alarm", False), ("device_alarm", True)]
    assert statuses(events)[1].detail["param"] == "spo2,pulse_rate"
    # Unchanged line: no new edges.
    assert statuses(driver.feed(b"12-NOV-98 14:00:09 85* 170* 50 SL PH\r\n")) == []


def test_n595_mode_line_and_menu_are_skipped() -> None:
    data = (
        b"   ADULT  0SAT-S  SPO2 RESP MODE: NORMAL\r\n"
        b"NPB-595   Interactive Mode\r\n"
        b"1) Dump Instrument Info\r\n"
        b"12-NOV-98 14:00:05 97 64 50\r\n"
    )
    events = NellcorDriver().feed(data)
    assert problems(events) == []
    assert [o.value for o in observations(events)] == [97.0, 64.0]


def test_endless_line_is_bounded() -> None:
    """A wrong baud rate (no LF ever) becomes a problem, then the next line decodes."""
    driver = NellcorDriver(max_line_bytes=64)
    events = driver.feed(b"x" * 100)
    assert [p.reason for p in problems(events)] == ["line_too_long"]
    events = driver.feed(b"yyy\r\n12-NOV-98 14:00:05 97 64 50\r\n")
    assert [o.value for o in observations(events)] == [97.0, 64.0]


def test_format_line_reproduces_the_manual_sample_byte_for_byte() -> None:
    raw = b"12-NOV-98 14:00:05 100 120 50"
    parsed = parse_line(raw)
    assert parsed is not None
    assert raw + b"\r\n" == format_line(parsed)


def test_feed_eof_switches_statuses_off() -> None:
    driver = NellcorDriver()
    driver.feed(b"12-NOV-98 14:00:05 --- --- --- SO\r\n")
    assert [DeviceStatus("sensor_off", False)] == driver.feed_eof()


_value = st.one_of(st.none(), st.integers(0, 254))
lines = st.builds(
    NellcorLine,
    time=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2069, 12, 31)).map(
        lambda d: d.replace(microsecond=0)
    ),
    spo2=st.one_of(st.none(), st.integers(0, 100)),
    pulse_rate=_value,
    pa=_value,
    spo2_star=st.booleans(),
    pulse_star=st.booleans(),
    codes=st.lists(st.sampled_from(["SO", "SD", "PS", "LP", "MO", "LB", "SL", "PH"]), max_size=3).map(tuple),
)


@settings(max_examples=60, deadline=None)
@given(lines)
def test_round_trip_format_then_parse(line: NellcorLine) -> None:
    assert line == parse_line(format_line(line).rstrip(b"\r\n"))


@settings(max_examples=60, deadline=None)
@given(lines)
def test_round_trip_through_the_driver(line: NellcorLine) -> None:
    obs = observations(NellcorDriver().feed(format_line(line)))
    expect = [None if v is None else float(v) for v in (line.spo2, line.pulse_rate)]
    assert expect == [o.value for o in obs]
    assert all(o.device_time == line.time for o in obs)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 2**16))
def test_random_bytes_never_raise(data: bytes, seed: int) -> None:
    events = feed_chunks(NellcorDriver, data, seed=seed)
    assert only_events(events)
    assert all(isinstance(o.value, float | None) for o in events if isinstance(o, Observation))


def test_random_printable_noise_only_gives_events() -> None:
    rng = random.Random(7)
    data = bytes(rng.choice(b"0123456789-*: ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n") for _ in range(20000))
    assert only_events(feed_whole(NellcorDriver, data))
