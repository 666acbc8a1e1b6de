"""Nonin binary formats #2/#7/#8: sample frames, framing, statuses, rate limit, round trips, fuzz."""

from __future__ import annotations

from dataclasses import dataclass, field
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
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event, Observation
from vitalwatch.drivers.nonin import (
    ACK,
    NAK,
    FloatValues,
    NoninDriver,
    decode_hr,
    encode_frame,
    encode_packet8,
    hr_bytes,
    select_format_command,
)
from vitalwatch.simulators.base import PatientState
from vitalwatch.simulators.nonin import NoninSimulator

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "nonin"


def sample_frames() -> list[bytes]:
    """The 6 frames of the pufferfish OEM III test file, in file order."""
    lines = (VECTORS / "oem3_format2_frames_pufferfish_tests.hex").read_text().splitlines()
    return [bytes.fromhex(line) for line in lines if line.strip() and not line.startswith("#")]


def pufferfish_packet() -> bytes:
    """The valid 25-frame packet of TestNoninOEM3.cpp: sample frames 1-4, then frames 5-25 re-encoded.

    Frames 5-25 carry the values that test lists (SpO2-D/fast/B-B/E-SpO2 97, E-HR/HR-D 72, reserved 0).
    """
    f = sample_frames()
    floats = FloatValues(
        hr=72, spo2=97, hr_d=72, spo2_d=97, e_hr=72, e_spo2=97, e_spo2_d=97, e_hr_d=72,
        spo2_fast=97, spo2_bb=97,
    ).to_bytes()  # fmt: skip
    rest = b"".join(encode_frame(2, 0x80, 0x01, fb) for fb in floats[4:])
    return f[0] + f[1] + f[4] + f[5] + rest


def values(events: list[Event], kind: str) -> list[float | None]:
    return [e.value for e in observations(events) if e.kind == kind]


def active_after(events: list[Event]) -> set[str]:
    active: set[str] = set()
    for e in statuses(events):
        (active.add if e.active else active.discard)(e.code)
    return active


@dataclass
class Constant:
    """A scenario whose state never changes (statuses from keyword arguments)."""

    spo2: float = 97
    pulse_rate: float = 72
    perfusion_index: float = 2.0
    probe_off: bool = False
    artifact: bool = False
    name: str = "constant"
    duration: float = 60.0
    phases: tuple[tuple[float, str], ...] = field(default_factory=tuple)

    def state_at(self, t: float) -> PatientState:
        return PatientState(
            spo2=self.spo2, pulse_rate=self.pulse_rate, perfusion_index=self.perfusion_index,
            systolic=120, diastolic=80, mean=93, probe_off=self.probe_off, artifact=self.artifact,
        )  # fmt: skip


def run_sim(sim: NoninSimulator, drv: NoninDriver, seconds: float, step: float = 1 / 75) -> list[Event]:
    """Feed the simulator's bytes to the driver at the simulator's own pace."""
    events: list[Event] = []
    n = round(seconds / step)
    for i in range(n + 1):
        t = i * step
        events += drv.feed(sim.poll(t), t)
    return events


# -- real sample bytes ------------------------------------------------------------------------


def test_sample_frames_encode_identically() -> None:
    """The encoder rebuilds the published frames byte for byte (checksum = sum of 4 bytes mod 256)."""
    f = sample_frames()
    assert f[0] == encode_frame(2, 0x81, 0x01, 0x00)
    assert f[1] == encode_frame(2, 0x80, 0x01, 0x48)
    assert f[4] == encode_frame(2, 0x80, 0x01, 0x61)
    assert f[5] == encode_frame(2, 0x80, 0x01, 0x30)
    assert f[3] != encode_frame(2, 0x80, 0x01, 0x48)  # the deliberately corrupt one


def test_sample_frames_decode_to_hr_72_spo2_97() -> None:
    """Frames 1-4 (HR MSB 00, HR LSB 0x48, SpO2 0x61) give HR 72 and SpO2 97, with no problem."""
    f = sample_frames()
    events = feed_whole(NoninDriver, f[0] + f[1] + f[4] + f[5], eof=False)
    assert values(events, "spo2") == [97.0]
    assert values(events, "pulse_rate") == [72.0]
    assert problems(events) == []
    assert statuses(events) == []


def test_sample_bad_checksum_is_a_problem_and_no_value() -> None:
    """The pufferfish frame pair with CHK CB instead of CA: one bad_checksum of 5 bytes, no value."""
    f = sample_frames()
    events = feed_whole(NoninDriver, f[2] + f[3])
    assert [DecodeProblem("bad_checksum", 5)] == events


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise, feed_chunks])
def test_sample_packets_three_ways_with_junk(feed: object) -> None:
    """Two full sample packets with junk before and a cut frame after decode the same three ways."""
    junk_before = b"\x00\x13\xfe\x01\x80garbage"
    stream = junk_before + pufferfish_packet() * 2 + b"\x01\x81\x01"
    events = feed(NoninDriver, stream)  # type: ignore[operator]
    assert only_events(events)
    assert {97.0} == set(values(events, "spo2"))
    assert {72.0} == set(values(events, "pulse_rate"))
    assert 1 <= len(values(events, "spo2")) <= 2
    reasons = [p.reason for p in problems(events)]
    assert reasons == ["unsynced", "truncated_frame"]
    assert problems(events)[0].length == len(junk_before)


def test_select_format_command_matches_spec_sample() -> None:
    """``02 70 02 02 ZZ 03`` from the 9560 spec, for every ZZ the spec lists."""
    text = (VECTORS / "9560_command_examples_spec.txt").read_text()
    template = next(line for line in text.splitlines() if line.startswith("02 70"))
    for fmt, zz in ((2, "02"), (7, "07"), (8, "08"), (13, "0D")):
        assert bytes.fromhex(template.replace("ZZ", zz)) == select_format_command(fmt)
    with pytest.raises(ValueError):
        select_format_command(3)


# -- values and markers ------------------------------------------------------------------------


@pytest.mark.parametrize("hr", [0, 1, 72, 127, 128, 255, 300, 510])
def test_hr_is_nine_bits_msb_low_two_bits(hr: int) -> None:
    """HR = ((MSB & 3) << 7) | (LSB & 0x7F); 128 would read 1 with the wrong msb<<8 formula."""
    assert hr == decode_hr(*hr_bytes(hr))
    assert decode_hr(0x01, 0x00) == 128


def packet(fmt: int, floats: FloatValues, status: int = 0x80) -> bytes:
    fb = floats.to_bytes()
    return b"".join(encode_frame(fmt, status | (1 if i == 0 else 0), 0x10, fb[i]) for i in range(25))


@pytest.mark.parametrize("fmt", [2, 7])
def test_missing_markers_are_none_never_numbers(fmt: int) -> None:
    """HR 511 and SpO2 127 (and 101-126) come out as None."""
    events = NoninDriver(data_format=fmt).feed(packet(fmt, FloatValues(hr=511, spo2=127)) * 2)
    assert values(events, "spo2") == [None]
    assert values(events, "pulse_rate") == [None]
    events = NoninDriver(data_format=fmt).feed(packet(fmt, FloatValues(hr=80, spo2=120)) * 2)
    assert values(events, "spo2") == [None]
    assert values(events, "pulse_rate") == [80.0]


def test_format8_decodes_and_gates_display_values_on_snsa() -> None:
    """#8 packets: values and flags; with SNSA set the held display values are reported as None."""
    drv = NoninDriver(data_format=8)
    ok = encode_packet8(0x10, 300, 95, 0x20)  # LPRF
    events = drv.feed(b"\x7f\x00" + ok, 0.0) + drv.feed(ok, 1.0)
    assert values(events, "spo2") == [95.0, 95.0]
    assert values(events, "pulse_rate") == [300.0, 300.0]
    assert {"low_perfusion"} == active_after(events)
    assert [DecodeProblem("unsynced", 2)] == problems(events)
    held = encode_packet8(0x00, 72, 96, 0x08)  # display values still present, SNSA set
    events += drv.feed(held, 2.0)
    assert values(events[-3:], "spo2") == [None]
    assert {"sensor_off"} == active_after(events)
    gone = encode_packet8(0x00, 511, 127, 0x09)
    later = drv.feed(gone, 3.0)
    assert [None] == values(later, "spo2") == values(later, "pulse_rate")
    assert [DeviceStatus("low_battery", True)] == statuses(later)


def test_status_bits_map_to_statuses() -> None:
    """SNSD → no_sensor (optional), SNSA → sensor_off, OOT → artifact, STAT2 LOW BAT → low_battery."""
    fl = FloatValues(hr=70, spo2=96, stat2=0x01)
    events = NoninDriver().feed(packet(2, fl, 0x80 | 0x40 | 0x10))
    assert {"no_sensor", "artifact", "low_battery"} == active_after(events)
    assert next(e for e in statuses(events) if e.code == "artifact").detail == {"cause": "out_of_track"}
    events = NoninDriver(bit6_is_snsd=False).feed(packet(2, fl, 0x80 | 0x40 | 0x08))
    assert {"sensor_off", "low_battery"} == active_after(events)


def test_pulse_artifact_and_red_perfusion_latch_between_pulses() -> None:
    """ARTF and RPRF come only on pulse frames; the status stays on between pulses, off after a clean one."""
    fb = FloatValues(hr=70, spo2=96).to_bytes()
    drv = NoninDriver()

    def frames(pulse_status: int) -> bytes:
        out = b""
        for i in range(25):
            st_ = 0x80 | (1 if i == 0 else 0) | (pulse_status if 5 <= i < 17 else 0)
            out += encode_frame(2, st_, 0x20, fb[i])
        return out

    events = drv.feed(frames(0x20 | 0x04))  # ARTF + red
    assert {"artifact", "low_perfusion"} == active_after(events)
    assert len(statuses(events)) == 2  # no flapping between pulse frames
    events += drv.feed(frames(0x02))  # green, clean pulse
    assert set() == active_after(events)


def test_lost_frame_is_short_packet_and_decoding_continues() -> None:
    """A packet missing a frame: one short_packet problem, then the next packet decodes."""
    p = packet(2, FloatValues(hr=65, spo2=93))
    damaged = p[:50] + p[55:]
    events = NoninDriver().feed(damaged + p, 0.0)
    assert [DecodeProblem("short_packet", 120)] == problems(events)
    assert {93.0} == set(values(events, "spo2"))


# -- rate limiting -------------------------------------------------------------------------------


def test_at_most_one_spo2_per_second_at_75_frames_per_second() -> None:
    """20 s of format #2 at its real pace: one spo2 per second slot, no flood of 3/s."""
    events = run_sim(NoninSimulator(Constant()), NoninDriver(), 20.0)
    times: list[float] = []
    drv = NoninDriver()
    sim = NoninSimulator(Constant())
    for i in range(20 * 75 + 1):
        t = i / 75
        for e in drv.feed(sim.poll(t), t):
            if isinstance(e, Observation) and e.kind == "spo2":
                times.append(t)
    assert 19 <= len(times) <= 21
    per_second = [int(t + 1e-9) for t in times]
    assert len(per_second) == len(set(per_second))
    assert len(values(events, "spo2")) == len(times)


def test_value_to_none_is_reported_at_once() -> None:
    """A finger coming out is not held back by the one-second limit."""
    drv = NoninDriver()
    good = packet(2, FloatValues(hr=70, spo2=96))
    off = packet(2, FloatValues(), 0x88)
    events = drv.feed(good, 0.0) + drv.feed(off, 0.3) + drv.feed(good, 0.6)
    assert values(events, "spo2") == [96.0, None, 96.0]
    assert [DeviceStatus("sensor_off", True), DeviceStatus("sensor_off", False)] == statuses(events)


# -- host commands -------------------------------------------------------------------------------


def test_request_format_queues_command_and_takes_ack_silently() -> None:
    """request_format: deadline 0.0 until the first on_timer, then the command; ACK produces nothing."""
    drv = NoninDriver(data_format=7, request_format=True)
    assert drv.next_deadline() == 0.0
    assert drv.data_to_send() == b""
    assert drv.on_timer(0.0) == []
    assert bytes.fromhex("027002020703") == drv.data_to_send()
    assert drv.next_deadline() is None
    events = drv.feed(bytes((ACK,)) + packet(7, FloatValues(hr=70, spo2=96)) * 2, 0.5)
    assert drv.format_acknowledged
    assert problems(events) == []
    assert values(events, "spo2") == [96.0]


def test_nak_is_a_problem() -> None:
    """NAK 15 within the reply window is reported; without a request it is just unsynced noise."""
    drv = NoninDriver(request_format=True)
    drv.on_timer(0.0)
    assert [DecodeProblem("format_select_nak", 1)] == drv.feed(bytes((NAK,)), 1.0)
    assert [DecodeProblem("unsynced", 1)] == feed_whole(NoninDriver, bytes((NAK,)))


def test_driver_switches_simulator_format_end_to_end() -> None:
    """Driver asks for #7, simulator (in #2) ACKs and switches; the driver then decodes #7 values."""
    sim = NoninSimulator(Constant(spo2=91, pulse_rate=88), data_format=2)
    drv = NoninDriver(data_format=7, request_format=True)
    events: list[Event] = []
    for i in range(5 * 75):
        t = i / 75
        deadline = drv.next_deadline()
        if deadline is not None and deadline <= t:
            events += drv.on_timer(t)
        sim.receive(drv.data_to_send(), t)
        events += drv.feed(sim.poll(t), t)
    assert sim.data_format == 7
    assert drv.format_acknowledged
    assert {91.0} == set(values(events, "spo2"))
    assert {88.0} == set(values(events, "pulse_rate"))


# -- round trips and fuzz --------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    fmt=st.sampled_from([2, 7, 8]),
    spo2=st.integers(0, 100),
    hr=st.integers(0, 300),
    probe_off=st.booleans(),
    artifact=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_simulator_round_trip(
    *, fmt: int, spo2: int, hr: int, probe_off: bool, artifact: bool, seed: int
) -> None:
    """What the simulator encodes (values, sensor_off, artifact) is what the driver decodes."""
    sc = Constant(spo2=spo2, pulse_rate=hr, probe_off=probe_off, artifact=artifact, duration=3.0)
    sim = NoninSimulator(sc, seed=seed, data_format=fmt)
    drv = NoninDriver(data_format=fmt)
    events = run_sim(sim, drv, 3.0, step=0.05)
    assert problems(events) == []
    want_spo2 = None if probe_off else float(spo2)
    want_hr = None if probe_off else float(hr)
    assert {want_spo2} == set(values(events, "spo2"))
    assert {want_hr} == set(values(events, "pulse_rate"))
    active = active_after(events)
    assert ("sensor_off" in active) == probe_off
    assert ("artifact" in active) == artifact


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=600), fmt=st.sampled_from([2, 7, 8]), seed=st.integers(0, 99))
def test_random_bytes_never_raise(data: bytes, fmt: int, seed: int) -> None:
    """Any bytes, any chunking: only events come out, and values are never the raw markers."""
    def requesting() -> NoninDriver:
        drv = NoninDriver(data_format=fmt, request_format=True)
        drv.on_timer(0.0)
        return drv

    events = feed_chunks(requesting, data, seed=seed, max_chunk=40, byte_s=0.01)
    assert only_events(list(events))
    for o in observations(events):
        assert o.value not in (127.0, 511.0)


def test_noise_stream_is_bounded_and_reported_in_pieces() -> None:
    """100 kB without a frame: problems of max_unsynced_bytes each, and nothing piles up."""
    drv = NoninDriver()
    events = drv.feed(b"\x55" * 100_000, 0.0)
    assert len(events) == 97
    assert all(e == DecodeProblem("unsynced", 1024) for e in events)
    assert [DecodeProblem("unsynced", 100_000 - 97 * 1024)] == drv.feed_eof()
