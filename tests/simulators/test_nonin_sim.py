"""Nonin simulators: real rates, status bits, markers, command replies, determinism, driver agreement."""

from __future__ import annotations

from dataclasses import dataclass, field

from vitalwatch.drivers.events import Event, Observation
from vitalwatch.drivers.nonin import ACK, NAK, NoninDriver, decode_hr, select_format_command
from vitalwatch.drivers.nonin_ascii import NoninAsciiDriver
from vitalwatch.simulators.base import DeviceSimulator, PatientState
from vitalwatch.simulators.nonin import NoninSimulator
from vitalwatch.simulators.nonin_ascii import NoninAsciiSimulator


@dataclass
class Script:
    """A scenario with optional probe-off / artifact / silent windows (start, end) in seconds."""

    spo2: float = 97
    pulse_rate: float = 60
    perfusion_index: float = 2.0
    probe_off: tuple[float, float] = (-1.0, -1.0)
    artifact: tuple[float, float] = (-1.0, -1.0)
    silent: tuple[float, float] = (-1.0, -1.0)
    name: str = "script"
    duration: float = 60.0
    phases: tuple[tuple[float, str], ...] = field(default_factory=tuple)

    def state_at(self, t: float) -> PatientState:
        def inside(w: tuple[float, float]) -> bool:
            return w[0] <= t < w[1]

        return PatientState(
            spo2=self.spo2,
            pulse_rate=self.pulse_rate,
            perfusion_index=self.perfusion_index,
            systolic=120,
            diastolic=80,
            mean=93,
            probe_off=inside(self.probe_off),
            artifact=inside(self.artifact),
            silent=inside(self.silent),
        )


def frames(data: bytes) -> list[bytes]:
    assert len(data) % 5 == 0
    return [data[i : i + 5] for i in range(0, len(data), 5)]


def test_is_a_device_simulator() -> None:
    """Both classes satisfy the simulator contract and name the driver they mirror."""
    assert isinstance(NoninSimulator(Script()), DeviceSimulator)
    assert isinstance(NoninAsciiSimulator(Script()), DeviceSimulator)
    assert (NoninSimulator.device, NoninAsciiSimulator.device) == ("nonin", "nonin-ascii")
    assert NoninAsciiSimulator.serial.stopbits == 2


def test_format2_rate_and_sync_bit() -> None:
    """75 frames per second; SYNC (bit 0) on every 25th frame only, starting with the first."""
    sim = NoninSimulator(Script())
    data = sim.poll(1.999)
    fs = frames(data)
    assert len(fs) == 150
    assert all(f[0] == 0x01 and f[1] & 0x80 and (sum(f[:4]) & 0xFF) == f[4] for f in fs)
    assert [i for i, f in enumerate(fs) if f[1] & 0x01] == [0, 25, 50, 75, 100, 125]
    assert sim.next_deadline() == 2.0


def test_perfusion_bits_twelve_frames_per_pulse() -> None:
    """At 90/min: ~15 pulses in 10 s, each marked green on 12 consecutive frames."""
    fs = frames(NoninSimulator(Script(pulse_rate=90)).poll(9.999))
    marked = [bool(f[1] & 0x06) for f in fs]
    starts = [i for i in range(1, len(marked)) if marked[i] and not marked[i - 1]]
    assert 14 <= len(starts) <= 16
    runs: list[int] = []
    for i, m in enumerate(marked):
        if m and (i == 0 or not marked[i - 1]):
            runs.append(0)
        if m:
            runs[-1] += 1
    assert set(runs[:-1]) == {12}
    assert all(f[1] & 0x06 == 0x02 for f in fs if f[1] & 0x06)  # PI 2.0 -> green


def test_probe_off_sets_snsa_and_missing_recording_values_display_held() -> None:
    """probe_off: SNSA on every frame, HR 511 / SpO2 127 at once, SpO2-D held (10 s rule)."""
    fs = frames(NoninSimulator(Script(spo2=95, pulse_rate=80, probe_off=(1.0, 30.0))).poll(2.999))
    off = fs[75:]
    assert all(f[1] & 0x08 for f in off)
    assert not any(f[1] & 0x08 for f in fs[:75])
    first = off[:25]
    assert decode_hr(first[0][3], first[1][3]) == 511
    assert first[2][3] == 127
    assert first[8][3] == 95  # SpO2-D still shows the last reading
    assert not any(f[1] & 0x06 for f in off)  # no pulses without a finger


def test_artifact_sets_oot_everywhere_and_artf_on_pulses() -> None:
    """artifact: OOT on every frame, ARTF exactly on the frames that carry a pulse."""
    fs = frames(NoninSimulator(Script(artifact=(0.0, 60.0))).poll(4.999))
    assert all(f[1] & 0x10 for f in fs)
    assert all(bool(f[1] & 0x20) == bool(f[1] & 0x06) for f in fs)
    assert any(f[1] & 0x20 for f in fs)


def test_silent_sends_nothing_and_time_moves_on() -> None:
    """While silent no bytes come out; afterwards frames resume at the right frame number."""
    sim = NoninSimulator(Script(silent=(0.0, 1.0)))
    assert sim.poll(0.999) == b""
    fs = frames(sim.poll(1.999))
    assert len(fs) == 75
    assert fs[0][1] & 0x01  # frame 75 is frame 1 of packet 4


def test_format8_one_packet_per_second() -> None:
    """#8: 4 bytes at t = 0, 1, 2 ...; low perfusion flag from a low perfusion index."""
    data = NoninSimulator(Script(perfusion_index=0.1, pulse_rate=200), data_format=8).poll(2.5)
    assert len(data) == 12
    assert [data[i] & 0x80 for i in range(0, 12, 4)] == [0x80] * 3
    assert data[0] & 0x10  # LPRF
    assert decode_hr(data[0], data[1]) == 200


def test_format7_has_sixteen_bit_pleth_and_checksum() -> None:
    """#7: no 0x01 start byte, STATUS first, checksum over the 4 bytes."""
    fs = frames(NoninSimulator(Script(), data_format=7).poll(0.999))
    assert len(fs) == 75
    assert all(f[0] & 0x80 and (sum(f[:4]) & 0xFF) == f[4] for f in fs)
    assert len({(f[1] << 8) | f[2] for f in fs}) > 20


def test_valid_command_gets_ack_and_switches_at_packet_boundary() -> None:
    """ACK 06 follows the frames sent before the command; #8 packets start after the current packet."""
    sim = NoninSimulator(Script())
    before = sim.poll(0.1)
    sim.receive(select_format_command(8), 0.1)
    after = sim.poll(3.0)
    assert after[0] == ACK
    rest = after[1:]
    frames_left = 25 - len(before) // 5
    assert len(rest) == frames_left * 5 + 3 * 4
    assert sim.data_format == 8


def test_bad_commands_get_nak_and_late_ones_nothing() -> None:
    """Format 13 (not simulated) or a bad trailer: NAK; after the 5 s window: no reply at all."""
    sim = NoninSimulator(Script())
    sim.receive(select_format_command(13), 0.0)
    sim.receive(b"\x02\x70\x02\x02\x07\x04", 0.0)
    assert sim.poll(0.0)[:2] == bytes((NAK, NAK))
    sim.receive(select_format_command(7), 6.0)
    assert ACK not in sim.poll(6.0)[-5:]
    assert sim.data_format == 2


def test_deterministic_for_a_seed() -> None:
    """Same seed, same bytes; another seed changes the pleth, not the values."""
    a = NoninSimulator(Script(), seed=1).poll(3.0)
    b = NoninSimulator(Script(), seed=1).poll(3.0)
    c = NoninSimulator(Script(), seed=2).poll(3.0)
    assert a == b
    assert a != c
    assert [f[3] for f in frames(a)] == [f[3] for f in frames(c)]


def test_ends_with_the_scenario() -> None:
    """No frames at or after the scenario's duration; the deadline then says idle."""
    sim = NoninSimulator(Script(duration=1.0))
    assert len(sim.poll(5.0)) == 75 * 5
    assert sim.next_deadline() is None


def test_probe_off_scenario_reaches_driver_as_sensor_off_and_none() -> None:
    """probe_off through the real driver: sensor_off on, values None, then back."""
    sim = NoninSimulator(Script(probe_off=(3.0, 6.0)))
    drv = NoninDriver()
    events: list[Event] = []
    for i in range(9 * 75):
        t = i / 75
        events += drv.feed(sim.poll(t), t)
    codes = [(e.code, e.active, i) for i, e in enumerate(events) if not isinstance(e, Observation)]
    assert [(c, a) for c, a, _ in codes] == [("sensor_off", True), ("sensor_off", False)]
    spo2 = [e.value for e in events if isinstance(e, Observation) and e.kind == "spo2"]
    assert None in spo2
    assert spo2[0] == 97.0
    assert spo2[-1] == 97.0
    on, off = codes[0][2], codes[1][2]
    between = [e for e in events[on:off] if isinstance(e, Observation)]
    assert between
    assert all(e.value is None for e in between)


def test_low_perfusion_reaches_driver() -> None:
    """A low perfusion index becomes a latched low_perfusion status (red perfusion bits)."""
    sim = NoninSimulator(Script(perfusion_index=0.1))
    drv = NoninDriver()
    events = drv.feed(sim.poll(5.0), 5.0)
    assert [(e.code, e.active) for e in events if not isinstance(e, Observation)] == [("low_perfusion", True)]


def test_ascii_one_line_a_second_with_header() -> None:
    """Header first, then one CR LF line per second; probe_off is ---, silent is nothing."""
    sim = NoninAsciiSimulator(Script(spo2=94, pulse_rate=66, probe_off=(2.0, 3.0), silent=(3.0, 4.0)))
    data = sim.poll(4.5)
    lines = data.split(b"\r\n")
    assert lines == [
        b"Nonin 7500  08:00:00 01/01/25",
        b"SPO2=094 HR=066",
        b"SPO2=094 HR=066",
        b"SPO2=--- HR=---",
        b"SPO2=094 HR=066",
        b"",
    ]
    assert sim.next_deadline() == 5.0


def test_ascii_round_trip_through_driver_with_options() -> None:
    """Fast flag, clock prefix and event marker all decode to the scenario's values, no problems."""
    sim = NoninAsciiSimulator(Script(spo2=90, pulse_rate=120), fast=True, clock_prefix=True, event_at=1.0)
    data = sim.poll(3.0)
    assert b"08:00:01 SPO2=090 HR=120 * F\r\n" in data
    drv = NoninAsciiDriver()
    events = drv.feed(data)
    assert [e for e in events if not isinstance(e, Observation)] == []
    assert [e.value for e in events if isinstance(e, Observation)] == [90.0, 120.0] * 4
    assert drv.event_markers == 1
