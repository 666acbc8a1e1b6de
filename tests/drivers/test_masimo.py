"""Masimo ASCII 1 driver: real sample lines decoded to the values a reader sees, three ways, plus fuzz."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

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
from vitalwatch.drivers import make_driver
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event, Observation
from vitalwatch.drivers.masimo import MasimoDriver, encode_line

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "masimo"
RAD8 = VECTORS / "rad8_ascii1_capture_yahnatan.txt"
TREND = VECTORS / "rad8_trend_sample_output_manual.txt"
RADICAL5 = VECTORS / "radical5_example_mdpnp.bin"
RADICAL7 = VECTORS / "radical7_example_mdpnp.bin"
NMENON = VECTORS / "radical_variants_nmenon_comments.txt"

Feeder = Callable[..., list[Event]]

FEEDERS = [
    pytest.param(feed_whole, id="whole"),
    pytest.param(feed_bytewise, id="bytewise"),
    pytest.param(feed_chunks, id="chunks"),
]


def values(events: list[Event], kind: str) -> list[float | None]:
    return [o.value for o in observations(events) if o.kind == kind]


def edges(events: list[Event]) -> list[tuple[str, bool]]:
    return [(s.code, s.active) for s in statuses(events)]


def nmenon_lines() -> bytes:
    """The nmenon file without its ``#`` provenance comments (those are ours, not the device's)."""
    lines = [ln for ln in NMENON.read_bytes().splitlines(keepends=True) if not ln.startswith(b"#")]
    return b"".join(lines)


@pytest.mark.parametrize("feed", FEEDERS)
def test_rad8_capture_values(feed: Feeder) -> None:
    """The YAHNATAN Rad-8 capture: 5 lines, SpO2 98, BPM and PI as printed, no status."""
    events = feed(MasimoDriver, RAD8.read_bytes())
    assert values(events, "spo2") == [98.0] * 5
    assert values(events, "pulse_rate") == [97.0, 96.0, 96.0, 96.0, 97.0]
    assert values(events, "perfusion_index") == [3.60, 3.95, 4.25, 3.19, 2.41]
    assert values(events, "spco") == [None] * 5
    assert values(events, "spmet") == [None] * 5
    assert values(events, "pvi") == []  # Rad-8 has no PVI token
    assert statuses(events) == []  # EXC=000800 is Masimo SET: normal running
    assert problems(events) == []
    times = [o.device_time for o in observations(events) if o.kind == "spo2"]
    assert [datetime(2016, 2, 22, 22, 47, s) for s in range(45, 50)] == times


def test_observation_units_and_mdc_codes() -> None:
    """SpO2/pulse/PI carry the shared vocabulary's units and MDC codes."""
    obs = {o.kind: o for o in observations(feed_whole(MasimoDriver, RAD8.read_bytes()))}
    assert (obs["spo2"].unit, obs["spo2"].mdc) == ("%", 150456)
    assert (obs["pulse_rate"].unit, obs["pulse_rate"].mdc) == ("/min", 149530)
    assert (obs["perfusion_index"].unit, obs["perfusion_index"].mdc) == ("%", 150488)


def test_statuses_come_before_observations_of_their_line() -> None:
    """A line's status changes precede its observations, so the engine discounts them in time."""
    events = feed_whole(MasimoDriver, RADICAL7.read_bytes(), eof=False)
    assert isinstance(events[0], DeviceStatus)
    assert all(isinstance(e, Observation) for e in events[1:])


@pytest.mark.parametrize("feed", FEEDERS)
def test_radical7_mdpnp_line(feed: Feeder) -> None:
    """Radical-7 (MDPNP): SpO2 98, BPM 240, PI 20.00, PVI 27, SpCO 1.0, SpMET 0.5; EXC=820 sensor_off."""
    events = feed(MasimoDriver, RADICAL7.read_bytes())
    obs = {o.kind: o.value for o in observations(events)}
    assert obs == {
        "spo2": 98.0,
        "pulse_rate": 240.0,
        "perfusion_index": 20.0,
        "pvi": 27.0,
        "spco": 1.0,
        "spmet": 0.5,
    }
    # on at the line, off at end of input
    assert edges(events) == [("sensor_off", True), ("sensor_off", False)]
    assert datetime(2005, 12, 1, 11, 56, 29) == observations(events)[0].device_time


@pytest.mark.parametrize("feed", FEEDERS)
def test_radical5_alarm_silenced(feed: Feeder) -> None:
    """Radical-5 (MDPNP): 2-digit ALARM=20 is 'alarm silenced', not an EXC 'sensor off'."""
    events = feed(MasimoDriver, RADICAL5.read_bytes())
    assert values(events, "spo2") == [97.0]
    assert values(events, "pulse_rate") == [64.0]
    assert values(events, "perfusion_index") == [11.82]
    assert edges(events) == [("alarm_silenced", True), ("alarm_silenced", False)]


@pytest.mark.parametrize("feed", FEEDERS)
def test_nmenon_variants(feed: Feeder) -> None:
    """NMENON lines: dashes are None, EXC=000001 no_sensor, 'color' EXC=0000C00 low signal IQ."""
    events = feed(MasimoDriver, nmenon_lines())
    assert problems(events) == []
    # rad8s1 (no PI token), rad7 color, rad7 blue
    assert values(events, "spo2") == [None, 98.0, None]
    assert values(events, "pulse_rate") == [None, 123.0, None]
    assert values(events, "perfusion_index") == [0.55, None]  # PI without '%' in the color line
    assert values(events, "pvi") == [None, None]
    assert values(events, "sphb") == [None]
    assert values(events, "spco") == [None, None]
    assert edges(events) == [
        ("no_sensor", True),
        ("low_signal_quality", True),
        ("no_sensor", False),
        ("low_signal_quality", False),
    ]


def test_nmenon_file_comment_lines_are_problems_not_crashes() -> None:
    """Our provenance comments fed as-is are three bad lines; the device lines still decode."""
    events = feed_whole(MasimoDriver, NMENON.read_bytes())
    assert [p.reason for p in problems(events)] == ["bad_token"] * 3
    assert values(events, "spo2") == [None, 98.0, None]


@pytest.mark.parametrize("feed", FEEDERS)
def test_trend_sample(feed: Feeder) -> None:
    """Rad-8 trend download (RAD8MAN p.4-24): 000 means missing; OffPat/Search/LowSigIQ bits."""
    events = feed(MasimoDriver, TREND.read_bytes())
    assert values(events, "spo2") == [None, None, 97.0, 96.0, 98.0, None, None, 96.0]
    assert values(events, "pulse_rate") == [None, None, 69.0, 74.0, 78.0, None, None, 78.0]
    assert values(events, "perfusion_index") == [None, None, 4.69, 2.28, 3.64, None, None, 2.68]
    assert edges(events) == [
        ("sensor_off", True),  # 820 OffPat
        ("searching", True),  # 828 Search,OffPat
        ("searching", False),  # 800 SET
        ("sensor_off", False),
        ("low_signal_quality", True),  # C00 LowSigIQ
        ("low_signal_quality", False),
        ("sensor_off", True),  # 820
        ("sensor_off", False),
    ]
    assert problems(events) == []


def test_trend_zeros_kept_when_asked() -> None:
    """trend_zero_is_missing=False keeps the printed zeros (the constructor option works)."""
    events = feed_whole(lambda: MasimoDriver(trend_zero_is_missing=False), TREND.read_bytes())
    assert values(events, "spo2")[:3] == [0.0, 0.0, 97.0]


def test_ascii1_zero_is_a_number() -> None:
    """ASCII 1 marks missing with dashes, so 000 there is a reading (not None)."""
    line = encode_line(when=datetime(2020, 1, 1), spo2=0, pulse_rate=0, perfusion_index=0.0)
    assert values(feed_whole(MasimoDriver, line), "spo2") == [0.0]


@pytest.mark.parametrize("seed", range(5))
def test_junk_before_and_after(seed: int) -> None:
    """Noise before the first line and a partial line after: all 5 records decode, noise is problems."""
    rng = random.Random(seed)
    junk_before = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))).replace(b"\n", b"")
    junk_after = b"\x00\xff~garbage SPO2="
    data = junk_before + RAD8.read_bytes() + junk_after
    events = feed_chunks(MasimoDriver, data, seed=seed)
    assert values(events, "pulse_rate") == [97.0, 96.0, 96.0, 96.0, 97.0]
    reasons = [p.reason for p in problems(events)]
    assert reasons[0] == "garbage_before_line"
    assert reasons[-1] == "truncated_line"
    assert len(junk_before) == problems(events)[0].length


def test_junk_line_between_records_resyncs() -> None:
    """A noise line in the middle is one problem; the lines around it decode."""
    lines = RAD8.read_bytes().splitlines(keepends=True)
    noise = b"\x13\x88 SPO2=09\xf1% BPM=0"
    data = b"".join(lines[:2]) + noise + b"\r\n" + b"".join(lines[2:])
    events = feed_whole(MasimoDriver, data)
    assert values(events, "pulse_rate") == [97.0, 96.0, 96.0, 96.0, 97.0]
    assert [DecodeProblem("not_ascii", len(noise))] == problems(events)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"02/22/16 22:47:45 SN=0000056661 PI=03.60% EXC=000800", "missing_spo2_or_bpm"),
        (b"02/22/16 22:47:45 SPO2=098% BPM=097 EXC=00G800", "bad_hex"),
        (b"02/22/16 22:47:45 SPO2=098% BPM=097 ALARM=zz EXC=800", "bad_hex"),
        (b"02/22/16 22:47:45 SPO2=0x8% BPM=097 EXC=800", "bad_value"),
        (b"02/22/16 22:47:45 SPO2=098% SPO2=097% BPM=097", "duplicate_key"),
        (b"02/22/16 22:47:45 SPO2=098% BPM=097 hello", "bad_token"),
        (b"02/22/16 22:47:45 SPO2=" + b"9" * 40 + b"% BPM=097 EXC=800", "bad_value"),
    ],
)
def test_bad_lines_are_problems(line: bytes, reason: str) -> None:
    """Each kind of malformed line gives one DecodeProblem with its reason and length, no readings."""
    events = feed_whole(MasimoDriver, line + b"\r\n")
    assert [DecodeProblem(reason, len(line))] == events


def test_blank_lines_are_not_problems() -> None:
    """A cooked tty prints CR LF as blank lines (YAHNATAN); they are skipped silently."""
    data = RAD8.read_bytes().replace(b"\n", b"\r\n\r\n")
    events = feed_whole(MasimoDriver, data)
    assert problems(events) == []
    assert len(values(events, "spo2")) == 5


def test_invalid_device_time_is_none_but_line_decodes() -> None:
    """A prefix shaped like a date but not a real one (month 13) gives device_time None."""
    events = feed_whole(MasimoDriver, b"13/45/16 25:61:00 SPO2=095% BPM=070 EXC=800\n")
    obs = observations(events)
    assert [o.value for o in obs] == [95.0, 70.0]
    assert all(o.device_time is None for o in obs)


def test_no_prefix_device_time_none() -> None:
    events = feed_whole(MasimoDriver, b"SPO2=095% BPM=070 EXC=800\n")
    assert [o.device_time for o in observations(events)] == [None, None]


def test_exc_bits_map_to_status_codes() -> None:
    """Every EXC bit of the MDPNP table maps as documented; SET and reserved bits give nothing."""
    table = {
        0x1: "no_sensor",
        0x2: "sensor_fault",
        0x4: "low_perfusion",
        0x8: "searching",
        0x10: "interference",
        0x20: "sensor_off",
        0x40: "ambient_light",
        0x80: "sensor_fault",
        0x100: "sensor_fault",
        0x400: "low_signal_quality",
        0x1000: "sensor_fault",
        0x2000: "sensor_fault",
        0x4000: "sensor_fault",
        0x8000: "sensor_fault",
        0x10000: "sensor_fault",
        0x20000: "calibrating",
    }
    for bit, code in table.items():
        line = encode_line(when=datetime(2020, 1, 1), spo2=97, pulse_rate=70, perfusion_index=1.0, exc=bit)
        assert [(code, True), (code, False)] == edges(feed_whole(MasimoDriver, line)), hex(bit)
    for quiet in (0x200, 0x800, 0x200000, 0x400000, 0x800000):
        line = encode_line(when=datetime(2020, 1, 1), spo2=97, pulse_rate=70, perfusion_index=1.0, exc=quiet)
        assert statuses(feed_whole(MasimoDriver, line)) == [], hex(quiet)


def test_sensor_fault_detail_names_the_faults() -> None:
    line = encode_line(
        when=datetime(2020, 1, 1), spo2=None, pulse_rate=None, perfusion_index=None, exc=0x1002
    )
    on = statuses(feed_whole(MasimoDriver, line))[0]
    assert DeviceStatus("sensor_fault", True, {"faults": "defective_sensor,no_cable"}) == on


def test_alarm_bits_are_not_exc_bits() -> None:
    """ALARM=0012 is 'alarm sounding for SpO2 low' (not interference + defective sensor)."""
    line = encode_line(when=datetime(2020, 1, 1), spo2=85, pulse_rate=70, perfusion_index=1.0, alarm=0x12)
    events = feed_whole(MasimoDriver, line, eof=False)
    assert [DeviceStatus("device_alarm", True, {"alarms": "spo2_low"})] == statuses(events)


def test_alarm_battery_and_silence() -> None:
    line = encode_line(when=datetime(2020, 1, 1), spo2=97, pulse_rate=70, perfusion_index=1.0, alarm=0x7C)
    events = feed_whole(MasimoDriver, line, eof=False)
    assert [
        DeviceStatus("device_alarm", True, {"alarms": "pr_high,pr_low"}),
        DeviceStatus("alarm_silenced", True),
        DeviceStatus("low_battery", True),
    ] == statuses(events)


def test_encode_line_reproduces_the_captures() -> None:
    """encode_line gives the real lines byte for byte (capture files store LF; the device sends CR LF)."""
    rad8_lines = RAD8.read_bytes().splitlines()
    pulse = [97, 96, 96, 96, 97]
    pi = [3.60, 3.95, 4.25, 3.19, 2.41]
    for i, expected in enumerate(rad8_lines):
        when = datetime(2016, 2, 22, 22, 47, 45 + i)
        assert expected + b"\r\n" == encode_line(
            when=when, spo2=98, pulse_rate=pulse[i], perfusion_index=pi[i]
        )
    assert RADICAL5.read_bytes() == encode_line(
        when=datetime(2010, 9, 15, 15, 10, 29),
        spo2=97,
        pulse_rate=64,
        perfusion_index=11.82,
        alarm=0x20,
        model="radical5",
    )
    assert RADICAL7.read_bytes() == encode_line(
        when=datetime(2005, 12, 1, 11, 56, 29),
        spo2=98,
        pulse_rate=240,
        perfusion_index=20.0,
        exc=0x820,
        serial_number="0123456789",
        model="radical7",
        pvi=27,
        spco=1.0,
        spmet=0.5,
        desat=1,
        pi_delta=-2,
    )


def test_encode_line_rejects_unknown_model() -> None:
    with pytest.raises(ValueError, match="model"):
        encode_line(when=datetime(2020, 1, 1), spo2=1, pulse_rate=1, perfusion_index=1.0, model="rad97")


def test_over_long_line_is_bounded() -> None:
    """A stream with no line feed is cut at the bound; the next real line decodes."""
    data = b"A" * 2000 + b"\n" + RAD8.read_bytes()
    events = feed_bytewise(lambda: MasimoDriver(max_line_bytes=512), data)
    assert problems(events)[0].reason == "line_too_long"
    assert len(values(events, "spo2")) == 5


def test_registry_builds_driver_with_options() -> None:
    driver = make_driver("masimo", trend_zero_is_missing=False)
    assert isinstance(driver, MasimoDriver)
    assert MasimoDriver.serial.baudrate == 9600
    assert (driver.data_to_send(), driver.next_deadline(), driver.on_timer(1.0)) == (b"", None, [])


_PI = st.none() | st.integers(0, 9999).map(lambda n: n / 100)
_WHEN = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
    lambda d: d.replace(microsecond=0)
)


_CASES = st.fixed_dictionaries(
    {
        "when": _WHEN,
        "spo2": st.none() | st.integers(0, 100),
        "pulse_rate": st.none() | st.integers(0, 350),
        "perfusion_index": _PI,
        "exc": st.integers(0, 0xFFFFFF),
        "alarm": st.integers(0, 0xFFFF),
        "model": st.sampled_from(["rad8", "radical5", "radical7"]),
        "pvi": st.none() | st.integers(0, 100),
    }
)


@settings(max_examples=150, deadline=None)
@given(case=_CASES)
def test_round_trip(case: dict[str, Any]) -> None:
    """decode(encode_line(x)) gives back the values, the time and the documented status bits."""
    events = feed_chunks(MasimoDriver, encode_line(**case), eof=False, seed=case["exc"])
    assert problems(events) == []
    got = {o.kind: o.value for o in observations(events)}
    assert case["spo2"] == got["spo2"]
    assert case["pulse_rate"] == got["pulse_rate"]
    assert case["perfusion_index"] == got["perfusion_index"]
    if case["model"] == "radical7":
        assert case["pvi"] == got["pvi"]
    assert all(o.device_time == case["when"] for o in observations(events))
    on = {s.code for s in statuses(events)}
    exc, alarm = case["exc"], case["alarm"]
    assert (exc & 0x20 != 0) == ("sensor_off" in on)
    assert (exc & 0x1 != 0) == ("no_sensor" in on)
    assert (exc & 0x8 != 0) == ("searching" in on)
    assert (exc & 0x20000 != 0) == ("calibrating" in on)
    assert (alarm & 0x10 != 0) == ("device_alarm" in on)
    assert (alarm & 0x20 != 0) == ("alarm_silenced" in on)
    assert (alarm & 0x40 != 0) == ("low_battery" in on)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=2000), chunk_seed=st.integers(0, 1000))
def test_random_bytes_never_raise(data: bytes, chunk_seed: int) -> None:
    """Any bytes in any chunking: only events come out, nothing is raised."""
    events = feed_chunks(MasimoDriver, data, seed=chunk_seed)
    assert only_events(list(events))


def test_random_mutations_of_real_lines_never_raise() -> None:
    """Flipped bytes inside real lines (likelier to reach deep parser paths than pure noise)."""
    base = RAD8.read_bytes() + TREND.read_bytes() + RADICAL7.read_bytes() + nmenon_lines()
    rng = random.Random(7)
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        events = feed_chunks(MasimoDriver, bytes(data), seed=rng.randrange(1000))
        assert only_events(list(events))
        assert all(o.value is None or o.value >= 0 for o in observations(events))
