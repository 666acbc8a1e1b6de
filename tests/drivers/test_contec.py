"""Contec CMS50D+/CMS50E driver: old 5-byte protocol, V7 9-byte protocol, auto-detection, keep-alive."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import (
    feed_bytewise,
    feed_chunks,
    feed_whole,
    only_events,
    problems,
    statuses,
)
from vitalwatch.drivers.base import Parity, SerialSettings
from vitalwatch.drivers.contec import (
    KEEP_ALIVE,
    START_REALTIME,
    ContecDriver,
    OldPacket,
    V7Packet,
    decode_old,
    decode_v7,
    encode_old,
    encode_v7,
)
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Observation

VECTORS = Path(__file__).parent.parent / "vectors" / "contec_berrymed"
STREAM = (VECTORS / "cms50dplus_v7_realtime_stream_headrotor.bin").read_bytes()


def capture_device_bytes() -> bytes:
    """Every device->host byte of the HEADROTOR capture, in order (host commands removed)."""
    out = bytearray()
    for line in (VECTORS / "cms50dplus_v7_capture_headrotor.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        tokens = bytes.fromhex(line)
        out += tokens[9:] if tokens[:2] == b"\x7d\x81" else tokens
    return bytes(out)


def new_each() -> ContecDriver:
    return ContecDriver(protocol="new", packets_per_report=1, consistent_frames=1)


def auto_each() -> ContecDriver:
    return ContecDriver(protocol="auto", packets_per_report=1, consistent_frames=1)


def old_each() -> ContecDriver:
    return ContecDriver(protocol="old", packets_per_report=1, consistent_frames=1)


def pairs(events: list[object]) -> list[tuple[str, float | None]]:
    return [(o.kind, o.value) for o in events if isinstance(o, Observation)]


# -- V7: the real capture ----------------------------------------------------------------------


def test_capture_packets_decode_to_pulse_65_spo2_97() -> None:
    """Each captured packet: pulse 65/min, SpO2 97 %, falling pleth, FF FF tail restored as 0xFF."""
    packets = [decode_v7(STREAM[i : i + 9]) for i in range(0, len(STREAM), 9)]
    assert [p.pulse_raw for p in packets] == [65] * 7
    assert [p.spo2_raw for p in packets] == [97] * 7
    assert [p.pleth for p in packets] == [0x33, 0x30, 0x2E, 0x2C, 0x2B, 0x2A, 0x2A]
    assert {p.status for p in packets} == {0x05}
    assert {p.data[5:] for p in packets} == {(0xFF, 0xFF)}
    assert [encode_v7(p) for p in packets] == [STREAM[i : i + 9] for i in range(0, len(STREAM), 9)]


@pytest.mark.parametrize("factory", [new_each, auto_each])
@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise, feed_chunks])
def test_capture_three_ways_with_junk(feed: object, factory: object) -> None:
    """Junk before and a cut packet after do not change the seven readings."""
    events = feed(factory, b"\xa0\x85\x7d" + STREAM + b"\x01\xe0\x85")  # type: ignore[operator]
    assert pairs(events) == [("spo2", 97.0), ("pulse_rate", 65.0)] * 7
    assert [(p.reason, p.length) for p in problems(events)] == [("resync", 3), ("truncated_packet", 3)]
    assert statuses(events) == []


def test_capture_reports_once_per_60_packets_by_default() -> None:
    events = ContecDriver(protocol="new").feed(STREAM * 20)  # 140 packets: reports at 1, 61, 121
    # The first report comes before 5 packets in a row established the framing: no values yet.
    assert (
        pairs(events) == [("spo2", None), ("pulse_rate", None)] + [("spo2", 97.0), ("pulse_rate", 65.0)] * 2
    )


def test_random_bytes_never_become_valid_values() -> None:
    """Random bytes at 1000 B/s (a wrong baud rate) frame old packets by chance about 30 times a
    second, never 5 in a row: no value and no status comes out, only decode problems."""
    import random

    rng = random.Random(13)
    for protocol in ("auto", "old", "new"):
        driver = ContecDriver(protocol=protocol)  # type: ignore[arg-type]
        events = [e for _ in range(60) for e in driver.feed(rng.randbytes(1000))]
        values = [e.value for e in events if isinstance(e, Observation)]
        assert values and all(v is None for v in values), protocol
        assert [] == [e for e in events if isinstance(e, DeviceStatus)]
        if protocol != "new":  # V7-only skips random bytes as info packets: silence, so link_lost
            assert sum(isinstance(e, DecodeProblem) for e in events) >= 60 * 10


def test_values_after_a_glitch_wait_for_five_clean_packets() -> None:
    """A junk byte in a clean V7 stream: the window it falls in reports nothing; 5 packets later
    the values count again."""
    driver = ContecDriver(protocol="new", packets_per_report=10)
    clean = driver.feed(STREAM * 3)  # 21 packets: reports at 1, 11, 21
    assert [None, 97.0, 97.0] == [e.value for e in clean if isinstance(e, Observation) and e.kind == "spo2"]
    glitch = driver.feed(b"\x00" + STREAM * 3)  # packets 22-42: reports at 31, 41
    assert [97.0, 97.0] == [e.value for e in glitch if isinstance(e, Observation) and e.kind == "spo2"]


def test_whole_conversation_info_replies_are_skipped_silently() -> None:
    """The replies to A7, A2, A0, B0, AC, B3, A8, AA, A9 are not readings and not noise."""
    events = new_each().feed(capture_device_bytes())
    assert pairs(events) == [("spo2", 97.0), ("pulse_rate", 65.0)] * 7
    assert problems(events) == []


def test_v7_pulse_above_127_uses_the_high_byte() -> None:
    """Pulse 150 = 0x96: bit 7 travels in high-byte bit 3 (E0 | 08 = E8)."""
    raw = bytes.fromhex("01E885B39696E1FFFF")
    assert pairs(new_each().feed(raw)) == [("spo2", 97.0), ("pulse_rate", 150.0)]
    assert encode_v7(V7Packet(data=(5, 0x33, 0x16, 150, 97, 255, 255))) == raw


@pytest.mark.parametrize(
    ("high", "code"),
    [(0xE1, "searching"), (0xE2, "sensor_off")],
)
def test_headrotor_validity_codes(high: int, code: str) -> None:
    """HEADROTOR: E1 pulse/SpO2 not valid, E2 nothing valid -> statuses and None values."""
    raw = bytes((0x01, high)) + STREAM[2:9]
    events = new_each().feed(raw)
    assert statuses(events) == [DeviceStatus(code, True, {})]
    assert pairs(events) == [("spo2", None), ("pulse_rate", None)]
    lenient = ContecDriver(protocol="new", packets_per_report=1, v7_validity_flags=False)
    assert statuses(lenient.feed(raw)) == []


def test_v7_invalid_markers_are_none() -> None:
    raw = encode_v7(V7Packet(data=(5, 0x33, 0x16, 0xFF, 0x7F, 0xFF, 0xFF)))
    assert pairs(new_each().feed(raw)) == [("spo2", None), ("pulse_rate", None)]


# -- old protocol ------------------------------------------------------------------------------

# Hand-built from ATBRASK's layout: 0x88 sync | signal 8; pleth 0x40; 0x47 = PR bit 7 | bar 7;
# 0x16 -> PR 0x96 = 150; SpO2 0x5F = 95.
OLD_GOOD = bytes.fromhex("884047165F")
# Finger out (b1 bit4), probe error + searching (b3 bits 4, 5), PR 0xFF, SpO2 0x7F.
OLD_OFF = bytes.fromhex("9000707F7F")


def test_old_hand_built_packet() -> None:
    assert decode_old(OLD_GOOD) == OldPacket(signal_strength=8, pleth=0x40, bar=7, pulse_rate=150, spo2=95)
    assert pairs(old_each().feed(OLD_GOOD)) == [("spo2", 95.0), ("pulse_rate", 150.0)]


def test_old_flags_and_markers() -> None:
    events = old_each().feed(OLD_OFF)
    assert [s.code for s in statuses(events)] == [
        "sensor_off",
        "sensor_fault",
        "searching",
        "low_signal_quality",
    ]
    assert pairs(events) == [("spo2", None), ("pulse_rate", None)]


OLD_STREAM = b"".join(
    encode_old(OldPacket(signal_strength=7, pulse_rate=50 + i, spo2=99)) for i in range(100)
)


@pytest.mark.parametrize("factory", [old_each, auto_each])
@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise, feed_chunks])
def test_old_three_ways_with_junk(feed: object, factory: object) -> None:
    events = feed(factory, b"\x12\x34" + OLD_STREAM + b"\x88\x01")  # type: ignore[operator]
    assert [v for k, v in pairs(events) if k == "pulse_rate"] == [float(50 + i) for i in range(100)]
    assert [(p.reason, p.length) for p in problems(events)] == [("resync", 2), ("truncated_packet", 2)]


def test_serial_settings_per_protocol() -> None:
    assert ContecDriver.serial_for("old") == SerialSettings(baudrate=19200, parity=Parity.ODD)
    assert ContecDriver.serial_for("new") == SerialSettings(baudrate=115200)
    assert ContecDriver.serial == ContecDriver.serial_for("auto")


def test_auto_locks_to_old_and_stops_sending_v7_commands() -> None:
    driver = ContecDriver(protocol="auto")
    assert driver.data_to_send() == START_REALTIME
    driver.feed(OLD_STREAM[:15])
    assert driver.detected == "old"
    driver.on_timer(0.0)
    assert (driver.next_deadline(), driver.on_timer(10.0), driver.data_to_send()) == (None, [], b"")


def test_auto_locks_to_new() -> None:
    driver = ContecDriver(protocol="auto")
    driver.feed(STREAM)
    assert driver.detected == "new"


def test_old_mode_sends_nothing() -> None:
    driver = ContecDriver(protocol="old")
    assert (driver.data_to_send(), driver.next_deadline()) == (b"", None)


def test_bad_protocol_option() -> None:
    with pytest.raises(ValueError, match="protocol"):
        ContecDriver(protocol="v9")  # type: ignore[arg-type]


# -- V7 keep-alive schedule --------------------------------------------------------------------


def test_start_then_keepalive_every_interval_and_restart_when_the_stream_dies() -> None:
    driver = ContecDriver(protocol="new", keepalive_interval=1.5, restart_after=5.0)
    assert driver.data_to_send() == START_REALTIME
    assert driver.next_deadline() == 0.0
    driver.on_timer(0.0)
    assert (driver.data_to_send(), driver.next_deadline()) == (b"", 1.5)
    driver.feed(STREAM, 1.0)
    driver.on_timer(1.5)
    assert driver.data_to_send() == KEEP_ALIVE
    assert driver.next_deadline() == 3.0
    for t in (3.0, 4.5):
        driver.on_timer(t)
        assert driver.data_to_send() == KEEP_ALIVE
    driver.on_timer(6.0)  # 5 s since the last packet: ask for the stream again
    assert driver.data_to_send() == KEEP_ALIVE + START_REALTIME


# -- round trips and fuzz ----------------------------------------------------------------------

old_packets = st.builds(
    OldPacket,
    signal_strength=st.integers(0, 15),
    finger_out=st.booleans(),
    dropping_spo2=st.booleans(),
    beep=st.booleans(),
    pleth=st.integers(0, 127),
    bar=st.integers(0, 15),
    probe_error=st.booleans(),
    searching=st.booleans(),
    pulse_rate=st.one_of(st.none(), st.integers(0, 254)),
    spo2=st.one_of(st.none(), st.integers(0, 100)),
)
v7_data = st.tuples(*[st.integers(0, 255)] * 7)


@settings(max_examples=100, deadline=None)
@given(old_packets)
def test_old_round_trip(packet: OldPacket) -> None:
    assert decode_old(encode_old(packet)) == packet


@settings(max_examples=100, deadline=None)
@given(v7_data)
def test_v7_round_trip(data: tuple[int, int, int, int, int, int, int]) -> None:
    packet = V7Packet(data=data)
    assert decode_v7(encode_v7(packet)) == packet


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 254), st.integers(0, 100)), min_size=1, max_size=20))
def test_v7_values_round_trip_through_the_driver(values: list[tuple[int, int]]) -> None:
    raw = b"".join(encode_v7(V7Packet(data=(5, 40, 10, pr, sp, 255, 255))) for pr, sp in values)
    expect = [(float(sp), float(pr)) for pr, sp in values]
    got = pairs(new_each().feed(raw))
    assert [(got[i][1], got[i + 1][1]) for i in range(0, len(got), 2)] == expect


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 2**16), st.sampled_from(["auto", "old", "new"]))
def test_random_bytes_never_raise(data: bytes, seed: int, protocol: str) -> None:
    events = feed_chunks(lambda: ContecDriver(protocol=protocol, packets_per_report=1), data, seed=seed)  # type: ignore[arg-type]
    assert only_events(events)
    for e in events:
        if isinstance(e, Observation) and e.value is not None:
            assert e.value <= 100.0 if e.kind == "spo2" else e.value < 255.0
