"""BerryMed BCI 5-byte protocol driver."""

from __future__ import annotations

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
from vitalwatch.drivers.bci import BciDriver, BciPacket, decode_packet, encode_packet
from vitalwatch.drivers.events import DeviceStatus, Observation

# Hand-built from the BCI v1.2 PDF layout (not from our encoder):
# byte1 0x88 = sync | signal strength 8; byte2 0x32 pleth 50;
# byte3 0x47 = PR bit 7 (bit 6) | bar 7; byte4 0x16 = PR bits 6..0 -> 0x96 = 150; byte5 0x62 = SpO2 98.
GOOD = bytes.fromhex("8832471662")
# Sensor state: probe unplugged (b1 bit5) + no signal (b1 bit4), no finger + searching (b3 bits 4, 5),
# invalid markers PR 0xFF (b3 bit6 + b4 0x7F) and SpO2 0x7F.
INVALID = bytes.fromhex("B000707F7F")


def one_per_packet() -> BciDriver:
    return BciDriver(packets_per_report=1, consistent_frames=1)


def test_hand_built_packet_decodes_to_the_pdf_values() -> None:
    assert BciPacket(signal_strength=8, pleth=50, bar=7, pulse_rate=150, spo2=98) == decode_packet(GOOD)
    assert [(o.kind, o.value) for o in observations(one_per_packet().feed(GOOD))] == [
        ("spo2", 98.0),
        ("pulse_rate", 150.0),
    ]


def test_invalid_markers_are_none_and_flags_are_statuses() -> None:
    events = one_per_packet().feed(INVALID)
    assert [o.value for o in observations(events)] == [None, None]
    assert [s.code for s in statuses(events)] == [
        "no_sensor",
        "sensor_off",
        "searching",
        "low_signal_quality",
    ]


def test_statuses_are_edges_not_repeats() -> None:
    driver = one_per_packet()
    first = statuses(driver.feed(INVALID * 3))
    assert len(first) == 4
    back = statuses(driver.feed(GOOD))
    assert {"no_sensor", "sensor_off", "searching", "low_signal_quality"} == {s.code for s in back}
    assert not any(s.active for s in back)


def test_one_observation_pair_per_100_packets_with_the_latest_valid_value() -> None:
    """100 Hz in, 1 Hz out: the first packet reports at once, then every 100th."""
    driver = BciDriver()
    packets = [
        encode_packet(BciPacket(signal_strength=8, pulse_rate=60 + i // 10, spo2=95)) for i in range(250)
    ]
    events = driver.feed(b"".join(packets))
    # Packets 1, 101 and 201 close a window; each reports the packet that closed it, except the
    # first: before 5 packets in a row the framing is not established (no checksum).
    assert [o.value for o in observations(events) if o.kind == "pulse_rate"] == [None, 70.0, 80.0]


def test_random_bytes_give_no_values_and_no_flapping_statuses() -> None:
    """Random bytes at 1000 B/s frame single packets ~30 times a second, never 5 in a row: no
    value, no status (today's flapping signal_lost), only decode problems, many a second."""
    import random

    from vitalwatch.drivers.events import DecodeProblem, DeviceStatus

    rng = random.Random(7)
    driver = BciDriver()
    events = [e for _ in range(60) for e in driver.feed(rng.randbytes(1000))]
    assert all(o.value is None for o in observations(events))
    assert [] == [e for e in events if isinstance(e, DeviceStatus)]
    assert sum(isinstance(e, DecodeProblem) for e in events) >= 600


def test_window_with_only_invalid_packets_reports_none_and_keeps_latest_valid_otherwise() -> None:
    driver = BciDriver(packets_per_report=4, consistent_frames=1)
    valid = encode_packet(BciPacket(signal_strength=8, pulse_rate=70, spo2=96))
    invalid = encode_packet(BciPacket(signal_strength=8))
    events = driver.feed(valid + invalid * 4 + valid + invalid * 3)
    spo2 = [o.value for o in observations(events) if o.kind == "spo2"]
    assert spo2 == [96.0, None, 96.0]


STREAM = b"".join(
    encode_packet(BciPacket(signal_strength=8, pleth=i % 100, pulse_rate=40 + i, spo2=90 + i % 10))
    for i in range(200)
)


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise, feed_chunks])
def test_three_way_feeding_with_junk_gives_the_same_values(feed: object) -> None:
    data = b"\x01\x02\x85\x7f" + STREAM + b"\x88\x01"
    events = feed(one_per_packet, data)  # type: ignore[operator]
    pulses = [o.value for o in observations(events) if o.kind == "pulse_rate"]
    assert [float(40 + i) for i in range(200)] == pulses
    assert [(p.reason, p.length) for p in problems(events)] == [("resync", 4), ("truncated_packet", 2)]


def test_corrupted_packet_resyncs_on_the_next_one() -> None:
    """A lost byte breaks one packet; the next good one decodes."""
    broken = GOOD[:2] + GOOD[3:]
    events = one_per_packet().feed(broken + GOOD)
    assert [o.value for o in observations(events)] == [98.0, 150.0]
    assert [p.reason for p in problems(events)] == ["resync"]


packets = st.builds(
    BciPacket,
    signal_strength=st.integers(0, 15),
    no_signal=st.booleans(),
    probe_unplugged=st.booleans(),
    beep=st.booleans(),
    pleth=st.integers(0, 127),
    bar=st.integers(0, 15),
    no_finger=st.booleans(),
    searching=st.booleans(),
    pulse_rate=st.one_of(st.none(), st.integers(0, 254)),
    spo2=st.one_of(st.none(), st.integers(0, 100)),
)


@settings(max_examples=100, deadline=None)
@given(packets)
def test_round_trip_encode_decode(packet: BciPacket) -> None:
    assert packet == decode_packet(encode_packet(packet))


@settings(max_examples=50, deadline=None)
@given(st.lists(packets, min_size=1, max_size=20))
def test_round_trip_through_the_driver(items: list[BciPacket]) -> None:
    events = one_per_packet().feed(b"".join(encode_packet(p) for p in items))
    assert [None if p.spo2 is None else float(p.spo2) for p in items] == [
        o.value for o in observations(events) if o.kind == "spo2"
    ]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=500), st.integers(0, 2**16))
def test_random_bytes_never_raise_and_markers_never_become_numbers(data: bytes, seed: int) -> None:
    events = feed_chunks(one_per_packet, data, seed=seed)
    assert only_events(events)
    for e in events:
        if isinstance(e, Observation) and e.value is not None:
            assert e.value <= 100.0 if e.kind == "spo2" else e.value < 255.0


def test_feed_eof_switches_statuses_off() -> None:
    driver = one_per_packet()
    driver.feed(INVALID)
    assert all(isinstance(e, DeviceStatus) and not e.active for e in driver.feed_eof())


def test_no_commands_and_no_timers() -> None:
    driver = BciDriver()
    assert (driver.data_to_send(), driver.next_deadline(), driver.on_timer(5.0)) == (b"", None, [])
