"""Accutorr 3 driver: the manual's P reply, status bits, new-NIBP detection, polling, noise and fuzz."""

from __future__ import annotations

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
from vitalwatch.drivers.accutorr import (
    AccutorrDriver,
    PatientData,
    StatusFormat,
    encode_patient_data,
    parse_patient_data,
)
from vitalwatch.drivers.base import Driver
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event, Observation
from vitalwatch.drivers.vocabulary import STATUS_CODES

SAMPLE = (
    Path(__file__).resolve().parents[1] / "vectors" / "nibp" / "accutorr3_patient_data_example_manual.txt"
)


def sample_stream() -> bytes:
    """The manual's reply lines (comments dropped) with the CR LF the monitor sends."""
    lines = [ln for ln in SAMPLE.read_text().splitlines() if ln and not ln.startswith("#")]
    return b"".join(ln.encode("ascii") + b"\r\n" for ln in lines)


def values(events: list[Event]) -> dict[str, float | None]:
    return {o.kind: o.value for o in observations(events)}


def line(data: PatientData) -> bytes:
    return encode_patient_data(data)


def test_driver_satisfies_contract() -> None:
    """The link finds feed/feed_eof/data_to_send/next_deadline/on_timer by protocol."""
    assert isinstance(AccutorrDriver(), Driver)


def test_manual_reply_fields_in_sys_mean_dia_order() -> None:
    """``P:--,85,120, 45, 80,000,010,000, 5``: SaO2 none, PR 85, SYS 120, MEAN 45, DIA 80, 5 min."""
    first = sample_stream().split(b"\r\n")[0]
    assert parse_patient_data(first) == (None, 85, 120, 45, 80, 0, 10, 0, 5)


def test_manual_reply_as_events_with_initial_nibp() -> None:
    """With report_initial_nibp the on-screen BP is reported; mean is the 4th field, dia the 5th."""
    events = AccutorrDriver(report_initial_nibp=True).feed(sample_stream(), 0.0)
    assert values(events) == {
        "spo2": None,
        "pulse_rate": 85.0,
        "nibp_systolic": 120.0,
        "nibp_diastolic": 80.0,
        "nibp_mean": 45.0,
    }
    assert Observation("nibp_mean", 45.0, "mm[Hg]", 150023) in events
    # status 1 = 010 decimal = bits 1 and 3: SaO2 uncalibrated, RAM test failure
    assert statuses(events) == [
        DeviceStatus("device_fault", True, {"condition": "sao2_uncalibrated,ram_test_failure"})
    ]
    assert problems(events) == []  # the ">" prompt line is not noise


def test_manual_reply_default_does_not_announce_a_5_minute_old_bp() -> None:
    """By default the first poll reports SpO2/pulse only: the BP is 5 minutes old."""
    events = AccutorrDriver().feed(sample_stream(), 0.0)
    assert values(events) == {"spo2": None, "pulse_rate": 85.0}


@pytest.mark.parametrize(
    ("fmt", "text", "expected"),
    [
        ("decimal", "010", 10),
        ("binary", "00000010", 2),
        ("octal", "010", 8),
        ("hex", "0A", 10),
    ],
)
def test_status_format_option(fmt: StatusFormat, text: str, expected: int) -> None:
    """The [unconfirmed] printing of status bytes is an option; each reads its own spelling."""
    parsed = parse_patient_data(f"P:97,70,120,90,80,000,{text},000,1".encode(), fmt)
    assert parsed is not None
    assert parsed[6] == expected


def test_status_bits_map_to_vocabulary_codes() -> None:
    """Status 0/1/2 bits become the documented status codes, edges only."""
    drv = AccutorrDriver()
    on = drv.feed(line((None, None, None, None, None, 0b0000_1011, 0b1000_0000, 0b11, 3)), 0.0)
    assert statuses(on) == [
        DeviceStatus("no_sensor", True, {"condition": "no_sensor"}),
        DeviceStatus("sensor_off", True, {"condition": "sensor_off"}),
        DeviceStatus("searching", True, {"condition": "pulse_search"}),
        DeviceStatus("calibrating", True, {"condition": "system_test_in_progress"}),
        DeviceStatus("cuff_overpressure", True, {"condition": "nibp_cuff_overpressure"}),
        DeviceStatus("cuff_error", True, {"condition": "nibp_motion_artifact"}),
    ]
    assert {s.code for s in statuses(on)} <= STATUS_CODES
    same = drv.feed(line((None, None, None, None, None, 0b0000_1011, 0b1000_0000, 0b11, 3)), 5.0)
    assert statuses(same) == []
    off = drv.feed(line((98, 72, None, None, None, 0b0001_0000, 0, 0, 3)), 10.0)
    assert statuses(off) == [
        DeviceStatus("low_perfusion", True, {"condition": "pulse_level_weak"}),
        DeviceStatus("calibrating", False),
        DeviceStatus("cuff_error", False),
        DeviceStatus("cuff_overpressure", False),
        DeviceStatus("no_sensor", False),
        DeviceStatus("searching", False),
        DeviceStatus("sensor_off", False),
    ]


def test_new_nibp_detected_once_from_minutes_counter() -> None:
    """Old BP at connect: silent; counter drops to 0: reported once; repeats: not again."""
    drv = AccutorrDriver()
    seq = [
        (97, 70, 130, 95, 80, 0, 0, 0, 7),  # old reading on screen
        (97, 70, 130, 95, 80, 0, 0, 0, 8),
        (97, 71, 150, 113, 95, 0, 0, 0, 0),  # new measurement
        (97, 71, 150, 113, 95, 0, 0, 0, 0),
        (97, 71, 150, 113, 95, 0, 0, 0, 1),
        (97, 71, 150, 113, 95, 0, 0, 0, 0),  # new one with the same values: counter went down
        (96, 71, 140, 100, 90, 0, 0, 0, 0),  # new one within the same minute: values changed
        (96, 71, None, None, None, 0, 0, 0, 0),  # failed measurement: values gone
    ]
    nibps = []
    spo2 = []
    for i, data in enumerate(seq):
        events = drv.feed(line(data), 5.0 * i)
        spo2.append(values(events)["spo2"])
        got = values(events)
        nibps.append(tuple(got.get(k, "-") for k in ("nibp_systolic", "nibp_mean", "nibp_diastolic")))
    assert nibps == [
        ("-", "-", "-"),
        ("-", "-", "-"),
        (150.0, 113.0, 95.0),
        ("-", "-", "-"),
        ("-", "-", "-"),
        (150.0, 113.0, 95.0),
        (140.0, 100.0, 90.0),
        (None, None, None),
    ]
    assert spo2 == [97.0, 97.0, 97.0, 97.0, 97.0, 97.0, 96.0, 96.0]  # every poll


def test_polls_p_with_cr_on_interval() -> None:
    """Due at once, then every poll_interval_s; the command is the letter plus the suffix."""
    drv = AccutorrDriver(poll_interval_s=5.0)
    assert drv.next_deadline() == 0.0
    assert drv.on_timer(100.0) == []
    assert drv.data_to_send() == b"P\r"
    assert drv.next_deadline() == 105.0
    drv.on_timer(101.0)  # early call: nothing
    assert drv.data_to_send() == b""
    drv.on_timer(105.0)
    assert drv.data_to_send() == b"P\r"
    bare = AccutorrDriver(command_suffix="")
    bare.on_timer(0.0)
    assert bare.data_to_send() == b"P"


def test_three_way_feeding_with_junk() -> None:
    """Whole, byte-at-a-time and chunks agree; junk lines and damaged P lines are problems."""
    stream = (
        b"\x00\xffgarbage\r\n"
        + sample_stream()
        + b"P:97,7x,1\r\n"
        + line((95, 66, 150, 113, 95, 0, 0, 0, 0))
        + b"\r\nL:100,90,120,50,200,80,150,60,110,40\r\n"
        + b"trailing no newline"
    )
    runs = [feed_whole(AccutorrDriver, stream), feed_bytewise(AccutorrDriver, stream)]
    runs += [feed_chunks(AccutorrDriver, stream, seed=s) for s in range(5)]
    for events in runs:
        obs = [(o.kind, o.value) for o in observations(events)]
        assert obs == [
            ("spo2", None),
            ("pulse_rate", 85.0),
            ("spo2", 95.0),
            ("pulse_rate", 66.0),
            ("nibp_systolic", 150.0),
            ("nibp_diastolic", 95.0),
            ("nibp_mean", 113.0),
        ]
        assert problems(events) == [
            DecodeProblem("bad_patient_data", len(b"P:97,7x,1")),
            DecodeProblem("truncated_line", len(b"trailing no newline")),
        ]


def test_over_long_line_is_bounded() -> None:
    """A stream without line feeds is cut at max_line_bytes, and the next line decodes."""
    drv = AccutorrDriver(max_line_bytes=64)
    events = drv.feed(b"x" * 200, 0.0) + drv.feed(
        b"\r\n" + line((99, 60, None, None, None, 0, 0, 0, None)), 1.0
    )
    assert problems(events) == [DecodeProblem("line_too_long", 200)]
    assert values(events) == {"spo2": 99.0, "pulse_rate": 60.0}


opt = st.one_of(st.none(), st.integers(0, 999))
byte = st.integers(0, 255)


@settings(max_examples=80, deadline=None)
@given(
    data=st.tuples(
        opt, opt, opt, opt, opt, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), opt
    ),
    fmt=st.sampled_from(["decimal", "binary", "octal", "hex"]),
)
def test_round_trip_patient_data(data: PatientData, fmt: StatusFormat) -> None:
    """Every line the simulator's encoder writes parses back to the same fields, in each format."""
    encoded = encode_patient_data(data, fmt)
    assert parse_patient_data(encoded.rstrip(b"\r\n"), fmt) == data
    events = AccutorrDriver(status_format=fmt, report_initial_nibp=True).feed(encoded, 0.0)
    spo2, _, systolic, mean, diastolic = data[:5]
    # The documented plausible ranges: SpO2 0-100 %, NIBP 1-320 mmHg, systolic above diastolic.
    assert values(events)["spo2"] == (float(spo2) if spo2 is not None and spo2 <= 100 else None)
    if data[8] is not None:
        sys_ok, dia_ok = (v if v is not None and 1 <= v <= 320 else None for v in (systolic, diastolic))
        reversed_reading = sys_ok is not None and dia_ok is not None and sys_ok <= dia_ok
        plausible_mean = mean is not None and 1 <= mean <= 320 and not reversed_reading
        assert values(events)["nibp_mean"] == (float(mean) if plausible_mean and mean is not None else None)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=400), seed=st.integers(0, 1000))
def test_random_bytes_never_raise(data: bytes, seed: int) -> None:
    """Arbitrary bytes (with some real-looking lines mixed in) only give events."""
    noisy = data.replace(b"\x00", b"P:1,2,3,4,5,6,7,8,9\r\n").replace(b"\x01", b"\n")
    events = feed_chunks(AccutorrDriver, noisy, seed=seed, max_chunk=40, timers=True)
    assert only_events(list(events))
