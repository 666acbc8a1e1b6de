"""Contec V7 fast path: whole runs of real-time packets give the events of a packet-by-packet reading.

The driver decodes back-to-back V7 packets in bulk (slices, one loop per report window) because
packet-by-packet Python reached only ~140x the 115200-baud line rate. These tests hold it to a
plain model of the documented rules: high-byte bit 1 -> ``sensor_off``, bit 0 -> ``searching``
(both make the values None), pulse 0xFF and SpO2 > 100 are None, and packet k (1-based) closes a
report window when ``(k - 1) % n == 0`` with the latest valid values since the last report.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import feed_chunks
from vitalwatch.drivers.contec import ContecDriver
from vitalwatch.drivers.events import DeviceStatus, Event, Observation

# (validity class, pulse byte value, spo2 byte value), 8-bit values before the high-bit split.
packet = st.tuples(
    st.sampled_from([0, 0, 0, 1, 2, 3]),
    st.one_of(st.integers(30, 250), st.just(0xFF)),
    st.one_of(st.integers(70, 100), st.sampled_from([0x7F, 0xFF, 101])),
)


def encode(cls: int, pulse: int, spo2: int) -> bytes:
    """One real-time packet with pleth 0x40 and the given validity bits and values."""
    data = [0x05, 0x40, 0x20, pulse, spo2, 0xFF, 0xFF]
    high = 0x80 | cls
    for k, d in enumerate(data):
        if d & 0x80:
            high |= 1 << k
    # High-byte bits 0 and 1 double as bit 7 of d2 and d3; HEADROTOR reads them as validity.
    return bytes((0x01, high, *(0x80 | (d & 0x7F) for d in data)))


def model(packets: list[tuple[int, int, int]], n: int) -> list[Event]:
    """What a packet-by-packet reading of the documented rules yields."""
    events: list[Event] = []
    active: tuple[str, ...] = ()
    latest: dict[str, float] = {}
    for k, (cls, pulse, spo2) in enumerate(packets, start=1):
        codes = tuple(c for c, bit in (("sensor_off", 2), ("searching", 1)) if cls & bit)
        events += [DeviceStatus(c, True) for c in codes if c not in active]
        events += [DeviceStatus(c, False) for c in sorted(set(active) - set(codes))]
        active = codes
        if not cls:
            if pulse != 0xFF:
                latest["pulse_rate"] = float(pulse)
            if spo2 <= 100:
                latest["spo2"] = float(spo2)
        if (k - 1) % n == 0:
            events.append(Observation("spo2", latest.get("spo2"), "%", 150456))
            events.append(Observation("pulse_rate", latest.get("pulse_rate"), "/min", 149530))
            latest.clear()
    events += [DeviceStatus(c, False) for c in sorted(active)]
    return events


@settings(max_examples=60, deadline=None)
@given(
    packets=st.lists(packet, min_size=1, max_size=300),
    n=st.sampled_from([1, 2, 7, 60]),
    seed=st.integers(0, 1000),
)
def test_bulk_decoding_matches_packet_by_packet_model(
    packets: list[tuple[int, int, int]], n: int, seed: int
) -> None:
    """Fed whole or in random chunks, the stream gives exactly the model's events."""
    data = b"".join(encode(*p) for p in packets)
    expected = model(packets, n)
    whole = ContecDriver(protocol="new", packets_per_report=n, consistent_frames=1)
    assert expected == whole.feed(data) + whole.feed_eof()
    chunked = feed_chunks(
        lambda: ContecDriver(protocol="new", packets_per_report=n, consistent_frames=1), data, seed=seed
    )
    assert expected == chunked


def test_auto_mode_locks_on_a_long_run_fed_at_once() -> None:
    """A long run in one feed locks auto-detection to V7 and reports once per window."""
    driver = ContecDriver(protocol="auto")
    events = driver.feed(encode(0, 72, 96) * 150)
    assert "new" == driver.detected
    # The first report (packet 1) comes before the framing held for 5 packets: no values yet.
    assert [("spo2", None), ("pulse_rate", None)] + [("spo2", 96.0), ("pulse_rate", 72.0)] * 2 == [
        (e.kind, e.value) for e in events if isinstance(e, Observation)
    ]


@settings(max_examples=40, deadline=None)
@given(
    packets=st.lists(st.tuples(packet, st.booleans()), min_size=1, max_size=200),
    n=st.sampled_from([1, 7, 60]),
    seed=st.integers(0, 1000),
)
def test_framing_gate_is_the_same_in_bulk_and_chunked(
    packets: list[tuple[tuple[int, int, int], bool]], n: int, seed: int
) -> None:
    """With the default 5-packet framing gate and junk bytes between some packets, the fast path
    and any chunking give the same events, and no report right after junk carries a value."""
    data = b"".join((b"\x00" if junk else b"") + encode(*p) for p, junk in packets)
    whole = ContecDriver(protocol="new", packets_per_report=n)
    expected = whole.feed(data) + whole.feed_eof()
    assert expected == feed_chunks(
        lambda: ContecDriver(protocol="new", packets_per_report=n), data, seed=seed
    )
    first = [e for e in expected if isinstance(e, Observation)][:2]
    assert all(e.value is None for e in first)
