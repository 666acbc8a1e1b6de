"""NIBP simulators (SunTech, Accutorr): their bytes on their own, and whole driver <-> simulator cycles."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from tests.helpers import observations, problems, statuses
from vitalwatch.drivers.accutorr import AccutorrDriver, parse_patient_data
from vitalwatch.drivers.base import Driver
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event, Observation
from vitalwatch.drivers.suntech import (
    COMPLETE_PACKET,
    GET_BP_DATA,
    GET_CUFF_PRESSURE,
    START_BP,
    SuntechDriver,
    decode_bp_data,
)
from vitalwatch.simulators.accutorr import AccutorrSimulator
from vitalwatch.simulators.base import DeviceSimulator, PatientState
from vitalwatch.simulators.suntech import SuntechSimulator

BASE = PatientState(
    spo2=97.0, pulse_rate=72.0, perfusion_index=3.0, systolic=150.0, diastolic=95.0, mean=113.0
)


@dataclass
class Scenario:
    """Constant patient, with optional windows where an equipment condition holds."""

    state: PatientState = BASE
    name: str = "test"
    duration: float = 3600.0
    phases: tuple[tuple[float, str], ...] = ()
    cuff_error_from: float = float("inf")
    silent_from: float = float("inf")
    probe_off_from: float = float("inf")

    def state_at(self, t: float) -> PatientState:
        return replace(
            self.state,
            cuff_error=t >= self.cuff_error_from,
            silent=t >= self.silent_from,
            probe_off=t >= self.probe_off_from,
        )


def converse(
    drv: Driver, sim: DeviceSimulator, until: float, *, step: float = 0.05, start_at: float | None = None
) -> list[tuple[float, Event]]:
    """Wire driver and simulator in virtual time: bytes each way, timers when due."""
    events: list[tuple[float, Event]] = []
    for i in range(round(until / step) + 1):
        t = i * step
        if start_at is not None and t >= start_at:
            assert isinstance(drv, SuntechDriver)
            drv.start_measurement()
            start_at = None
        deadline = drv.next_deadline()
        if deadline is not None and deadline <= t:
            events += [(t, e) for e in drv.on_timer(t)]
        sim.receive(drv.data_to_send(), t)
        events += [(t, e) for e in drv.feed(sim.poll(t), t)]
    return events


def split_replies(data: bytes) -> list[bytes]:
    """Cut a module->host stream into packets by the length byte."""
    packets = []
    while data:
        packets.append(data[: data[1]])
        data = data[data[1] :]
    return packets


# -- SunTech simulator on its own ---------------------------------------------------------------


def test_suntech_sim_is_a_device_simulator_and_idle_until_started() -> None:
    """No start command: no cycle, no bytes, no deadline."""
    sim = SuntechSimulator(Scenario())
    assert isinstance(sim, DeviceSimulator)
    assert sim.poll(100.0) == b""
    assert sim.next_deadline() is None


def test_suntech_sim_cycle_pressure_rises_then_falls_and_ends_in_the_bp() -> None:
    """A 20-40 s cycle; polled pressures go up then down; 'K' then BP data 150/95/113, HR 72."""
    sim = SuntechSimulator(Scenario(), seed=3)
    sim.receive(START_BP, 0.0)
    end = sim.next_deadline()
    assert end is not None
    assert 20.0 <= end <= 40.0
    pressures = []
    for second in range(int(end)):
        sim.receive(GET_CUFF_PRESSURE, float(second))
        (packet,) = split_replies(sim.poll(second + 0.5))
        assert sum(packet) % 256 == 0
        pressures.append(int.from_bytes(packet[2:4], "little"))
    peak = pressures.index(max(pressures))
    assert 0 < peak < len(pressures) - 1
    assert pressures[: peak + 1] == sorted(pressures[: peak + 1])
    assert pressures[peak:] == sorted(pressures[peak:], reverse=True)
    assert max(pressures) >= 150
    assert sim.poll(end) == COMPLETE_PACKET
    sim.receive(GET_BP_DATA, end + 1)
    (bp,) = split_replies(sim.poll(end + 2))
    assert sum(bp) % 256 == 0
    result = decode_bp_data(bp)
    assert (
        result.systolic,
        result.diastolic,
        result.mean,
        result.heart_rate,
        result.error_code,
    ) == (150, 95, 113, 72, 0)


def test_suntech_sim_is_deterministic_per_seed() -> None:
    """Same seed, same cycle length; seeds differ in their cycle lengths."""

    def cycle_end(seed: int) -> float | None:
        sim = SuntechSimulator(Scenario(), seed=seed)
        sim.receive(START_BP, 0.0)
        return sim.next_deadline()

    assert cycle_end(1) == cycle_end(1)
    assert len({cycle_end(s) for s in range(5)}) > 1


def test_suntech_sim_cuff_error_gives_nonzero_error_code() -> None:
    """cuff_error at the end of the cycle: BP data with the configured error code."""
    sim = SuntechSimulator(Scenario(cuff_error_from=0.0), cuff_error_code=7)
    sim.receive(START_BP, 0.0)
    assert sim.poll(41.0) == COMPLETE_PACKET
    sim.receive(GET_BP_DATA, 41.0)
    assert decode_bp_data(sim.poll(42.0)).error_code == 7


def test_suntech_sim_silent_sends_nothing() -> None:
    """silent: commands go unheard and nothing comes out."""
    sim = SuntechSimulator(Scenario(silent_from=0.0))
    sim.receive(START_BP, 0.0)
    sim.receive(GET_CUFF_PRESSURE, 1.0)
    assert sim.poll(100.0) == b""


# -- SunTech conversation --------------------------------------------------------------------------


def test_suntech_conversation_whole_cycle() -> None:
    """start -> measuring on -> cuff pressure (<= 1/s) -> BP equal to the scenario -> measuring off."""
    drv, sim = SuntechDriver(), SuntechSimulator(Scenario(), seed=1)
    timed = converse(drv, sim, 60.0, start_at=1.0)
    events = [e for _, e in timed]
    assert problems(events) == []
    assert statuses(events) == [DeviceStatus("measuring", True), DeviceStatus("measuring", False)]
    kinds = [e.kind for e in observations(events)]
    assert kinds[-4:] == ["nibp_systolic", "nibp_diastolic", "nibp_mean", "nibp_pulse_rate"]
    assert set(kinds[:-4]) == {"cuff_pressure"}
    assert len(kinds) - 4 >= 15  # a 20-40 s cycle polled every second
    cuff_times = [t for t, e in timed if isinstance(e, Observation) and e.kind == "cuff_pressure"]
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(cuff_times))
    cuff = [e.value for e in observations(events) if e.kind == "cuff_pressure"]
    assert max(cuff) > 150  # type: ignore[type-var]
    bp = {e.kind: e.value for e in observations(events)[-4:]}
    assert bp == {"nibp_systolic": 150.0, "nibp_diastolic": 95.0, "nibp_mean": 113.0, "nibp_pulse_rate": 72.0}
    # Order: measuring on first, the three NIBP kinds together, then measuring off last.
    assert isinstance(events[0], DeviceStatus)
    assert events[-1] == DeviceStatus("measuring", False)
    assert drv.next_deadline() is None


def test_suntech_conversation_cuff_error_cycle() -> None:
    """cuff_error scenario: cuff_error on with the error code, no blood pressure, measuring off."""
    drv, sim = SuntechDriver(), SuntechSimulator(Scenario(cuff_error_from=0.0), seed=2, cuff_error_code=4)
    events = [e for _, e in converse(drv, sim, 60.0, start_at=0.5)]
    assert [o for o in observations(events) if o.kind.startswith("nibp_")] == []
    assert statuses(events) == [
        DeviceStatus("measuring", True),
        DeviceStatus("cuff_error", True, {"error_code": 4, "bp_status": 0}),
        DeviceStatus("measuring", False),
    ]


def test_suntech_conversation_cable_pulled_times_out() -> None:
    """Silent module mid-cycle: the driver's own timeout reports cuff_error, measuring off."""
    drv = SuntechDriver(cycle_timeout_s=50.0)
    sim = SuntechSimulator(Scenario(silent_from=5.0))
    events = [e for _, e in converse(drv, sim, 60.0, start_at=0.0)]
    assert statuses(events) == [
        DeviceStatus("measuring", True),
        DeviceStatus("cuff_error", True, {"reason": "timeout", "seconds": 50.0}),
        DeviceStatus("measuring", False),
    ]


# -- Accutorr --------------------------------------------------------------------------------------


def test_accutorr_sim_answers_p_and_c() -> None:
    """``P`` gives a patient-data line from the scenario, ``C`` the prompt; nothing unasked."""
    sim = AccutorrSimulator(Scenario(), nibp_interval_min=5.0)
    assert isinstance(sim, DeviceSimulator)
    assert sim.poll(10.0) == b""
    sim.receive(b"P\r", 130.0)
    reply = sim.poll(131.0)
    assert reply.endswith(b"\r\n")
    assert parse_patient_data(reply.rstrip(b"\r\n")) == (97, 72, 150, 113, 95, 0, 0, 0, 2)
    sim.receive(b"C\r", 131.0)
    assert sim.poll(132.0) == b">\r\n"


def test_accutorr_sim_minutes_reset_at_each_own_measurement() -> None:
    """Every nibp_interval_min the monitor measures; minutes since last count up from 0 again."""
    sim = AccutorrSimulator(Scenario(), nibp_interval_min=2.0)
    minutes = []
    for t in (0.0, 61.0, 119.0, 121.0, 190.0, 250.0):
        sim.receive(b"P", t)
        parsed = parse_patient_data(sim.poll(t + 1).rstrip(b"\r\n"))
        assert parsed is not None
        minutes.append(parsed[8])
    assert minutes == [0, 1, 1, 0, 1, 0]


def test_accutorr_sim_conditions() -> None:
    """probe_off: SaO2/PR '--', sensor-off bit; cuff_error: BP '--', NIBP artifact bit; silent: nothing."""
    sim = AccutorrSimulator(Scenario(probe_off_from=0.0, cuff_error_from=0.0))
    sim.receive(b"P", 1.0)
    assert parse_patient_data(sim.poll(2.0).rstrip(b"\r\n")) == (None, None, None, None, None, 2, 0, 2, 0)
    quiet = AccutorrSimulator(Scenario(silent_from=0.0))
    quiet.receive(b"P", 1.0)
    assert quiet.poll(2.0) == b""


def test_accutorr_conversation_reports_each_nibp_once() -> None:
    """Polling every 5 s for 7 min with NIBP every 2 minutes: SpO2 each poll, BP once per measurement.

    Identical BPs need the minutes counter to have left 0 between them (documented limit), hence
    a 2-minute interval rather than 1.
    """
    drv = AccutorrDriver(poll_interval_s=5.0)
    sim = AccutorrSimulator(Scenario(), nibp_interval_min=2.0)
    timed = converse(drv, sim, 421.0, step=0.1)
    events = [e for _, e in timed]
    assert problems(events) == []
    assert statuses(events) == []
    spo2 = [e.value for e in observations(events) if e.kind == "spo2"]
    assert len(spo2) == 85  # polls at 0, 5, ..., 420 s
    assert set(spo2) == {97.0}
    nibp_times = [t for t, e in timed if isinstance(e, Observation) and e.kind == "nibp_systolic"]
    # t=0 measurement reported at the first poll (counter 0), then each new one at 120, 240, 360 s
    assert [round(t) for t in nibp_times] == [0, 120, 240, 360]
    bp = {e.kind: e.value for e in observations(events) if e.kind.startswith("nibp_")}
    assert bp == {"nibp_systolic": 150.0, "nibp_diastolic": 95.0, "nibp_mean": 113.0}


def test_accutorr_conversation_failed_nibp_and_probe_off() -> None:
    """A failed cuff cycle gives NIBP observations with value None and cuff_error; probe off -> sensor_off."""
    drv = AccutorrDriver(poll_interval_s=5.0)
    sim = AccutorrSimulator(Scenario(cuff_error_from=200.0, probe_off_from=250.0), nibp_interval_min=2.0)
    events = [e for _, e in converse(drv, sim, 260.0, step=0.1)]
    nibp_sys = [e.value for e in observations(events) if e.kind == "nibp_systolic"]
    assert nibp_sys == [150.0, 150.0, None]
    assert statuses(events) == [
        DeviceStatus("cuff_error", True, {"condition": "nibp_motion_artifact"}),
        DeviceStatus("sensor_off", True, {"condition": "sensor_off"}),
    ]
    assert observations(events)[-2:] == [
        Observation("spo2", None, "%", 150456),
        Observation("pulse_rate", None, "/min", 149530),
    ]
    assert not [e for e in events if isinstance(e, DecodeProblem)]
