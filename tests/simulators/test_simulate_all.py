"""Every simulator through its own driver, for every scenario, the way the daemon would see it.

In-process part: each family's simulator is wired to a live driver in virtual time, bytes both
ways like a real host (``driver.data_to_send()`` -> ``sim.receive``, driver timers run when due,
SunTech asked for a cuff cycle every minute as the engine would). Each scenario is run for a few
simulated minutes around its event (the scenario's clock is shifted, so the tachycardia at
~650 s is reached without simulating the 10 quiet minutes before it), and the test asserts the
stream decodes without a single ``DecodeProblem``, yields observations, and that the scenario
shows in the decoded values.

Subprocess part: ``vitalwatch simulate --device X --scenario normal --speed 20`` on a pty, read
with pyserial as the daemon would, decoded by the driver without problems.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import serial

from vitalwatch.drivers import make_driver
from vitalwatch.drivers.base import MeasurementStarter
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event, Observation
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.base import PatientState, Scenario
from vitalwatch.simulators.scenarios import get_scenario

OXIMETERS = ("masimo", "nonin", "nonin-ascii", "nellcor", "bci", "contec")
NIBP = ("suntech", "accutorr", "hl7")

# scenario -> (scenario second the run starts at, simulated seconds to run)
OXIMETER_RUNS = {
    "normal": (0.0, 90.0),
    "desaturation": (0.0, 160.0),  # SpO2 < 90 % from ~35 s to ~145 s
    "tachycardia": (600.0, 120.0),  # pulse > 140 from ~650 s
    "probe_off": (380.0, 100.0),  # probe off 400-460 s
    "silence": (860.0, 80.0),  # nothing from 900 s
}
NIBP_RUNS = {
    "normal": (0.0, 200.0),
    "hypertensive_response": (1200.0, 600.0),  # SBP about 160 -> 182 over these 10 min
    "hypotension": (900.0, 240.0),  # SBP < 85 from ~990 s
    "cuff_error": (560.0, 200.0),  # cycles fail 600-900 s
    "silence": (860.0, 80.0),
}
SILENCE_STARTS = 900.0
PROBE_OFF = (400.0, 460.0)

# Simulator options so an NIBP result comes every minute or two rather than every five.
SIM_OPTIONS: dict[str, dict[str, Any]] = {
    "hl7": {"nibp_interval_s": 60.0},
    "accutorr": {"nibp_interval_min": 2.0},  # 1 min: a failed cycle after a failed cycle looks unchanged
}
STEP = 0.25  # virtual seconds between polls (the endpoint caps its sleeps at 0.1 s wall)
CUFF_EVERY = 60.0  # how often the engine asks a SunTech module for a reading


@dataclass(frozen=True, slots=True)
class Shifted:
    """A named scenario seen from ``offset`` seconds on (so a run can start near the event)."""

    inner: Scenario
    offset: float
    name: str = ""
    duration: float = 0.0
    phases: tuple[tuple[float, str], ...] = ()

    def state_at(self, t: float) -> PatientState:
        return self.inner.state_at(t + self.offset)


@dataclass
class Run:
    """What a host saw: events with their (scenario) time, and the device's bytes per poll."""

    events: list[tuple[float, Event]] = field(default_factory=list)
    sent: list[tuple[float, int]] = field(default_factory=list)

    def values(self, kind: str) -> list[tuple[float, float | None]]:
        return [(t, e.value) for t, e in self.events if isinstance(e, Observation) and e.kind == kind]

    def numbers(self, kind: str) -> list[float]:
        return [v for _, v in self.values(kind) if v is not None]

    def problems(self) -> list[DecodeProblem]:
        return [e for _, e in self.events if isinstance(e, DecodeProblem)]

    def statuses_on(self) -> set[str]:
        return {e.code for _, e in self.events if isinstance(e, DeviceStatus) and e.active}


def simulate(device: str, scenario_name: str, start: float, seconds: float) -> Run:
    """Run ``device``'s simulator against its driver from scenario second ``start``."""
    base = get_scenario(scenario_name, seed=0)
    scenario = Shifted(base, start, name=scenario_name, duration=base.duration - start)
    sim = make_simulator(device, scenario, seed=0, **SIM_OPTIONS.get(device, {}))
    driver = make_driver(device)
    run = Run()
    next_cuff = 5.0
    t = 0.0
    while t <= seconds:
        at = start + t
        if isinstance(driver, MeasurementStarter) and device == "suntech" and t >= next_cuff:
            driver.start_measurement()
            next_cuff += CUFF_EVERY
        deadline = driver.next_deadline()
        if deadline is not None and deadline <= t:
            run.events += [(at, e) for e in driver.on_timer(t)]
        host = driver.data_to_send()
        if host:
            sim.receive(host, t)
        chunk = sim.poll(t)
        run.sent.append((at, len(chunk)))
        run.events += [(at, e) for e in driver.feed(chunk, t)]
        t += STEP
    return run


def check_common(run: Run) -> None:
    assert [] == run.problems()
    assert any(isinstance(e, Observation) and e.value is not None for _, e in run.events)


@pytest.mark.parametrize("scenario", list(OXIMETER_RUNS))
@pytest.mark.parametrize("device", OXIMETERS)
def test_oximeter_scenarios_show_in_decoded_values(device: str, scenario: str) -> None:
    """Each oximeter scenario decodes cleanly and its clinical event is visible to the engine."""
    start, seconds = OXIMETER_RUNS[scenario]
    run = simulate(device, scenario, start, seconds)
    check_common(run)
    # Waveform-rate devices (Nonin 75 frames/s, BCI 100/s, Contec 60/s) report at most once a
    # second: no flood of identical observations for the engine.
    assert len(run.values("spo2")) <= seconds + 2
    spo2 = run.numbers("spo2")
    pulse = run.numbers("pulse_rate")
    if scenario == "normal":
        assert min(spo2) >= 93
        assert 50 <= min(pulse) and max(pulse) <= 100
    elif scenario == "desaturation":
        assert min(spo2) < 90
    elif scenario == "tachycardia":
        assert max(pulse) > 140
    elif scenario == "probe_off":
        during = [(t, v) for t, v in run.values("spo2") if PROBE_OFF[0] + 3 <= t <= PROBE_OFF[1] - 1]
        assert during, "the driver still reports once a second while the probe is off"
        assert all(v is None for _, v in during), "no SpO2 number while the probe is off"
        if device != "nonin-ascii":  # its only probe-off sign is "---": no status channel
            assert run.statuses_on() & {"sensor_off", "no_sensor", "searching"}
        assert any(v is not None for t, v in run.values("spo2") if t > PROBE_OFF[1] + 10), "values come back"
    elif scenario == "silence":
        check_silence(run)


@pytest.mark.parametrize("scenario", list(NIBP_RUNS))
@pytest.mark.parametrize("device", NIBP)
def test_nibp_scenarios_show_in_decoded_values(device: str, scenario: str) -> None:
    """Each NIBP/HL7 scenario decodes cleanly and shows in the blood pressures."""
    start, seconds = NIBP_RUNS[scenario]
    run = simulate(device, scenario, start, seconds)
    if scenario == "cuff_error":
        check_cuff_error(device, run)
        return
    check_common(run)
    systolic = run.values("nibp_systolic")
    numbers = [v for _, v in systolic if v is not None]
    if scenario == "silence":
        check_silence(run)
        return
    assert numbers, f"no systolic reading in {seconds:.0f} s"
    if scenario == "normal":
        assert all(90 <= v <= 160 for v in numbers)
    elif scenario == "hypertensive_response":
        assert len(numbers) >= 4
        assert numbers[-1] - numbers[0] >= 10, numbers
        assert max(numbers) > 175
    elif scenario == "hypotension":
        assert min(numbers) < 90


def check_cuff_error(device: str, run: Run) -> None:
    """A failed cycle is reported the way the device can say it, and never as a pressure.

    SunTech has an error code (-> ``cuff_error``). The Accutorr only has ST2 bit 1 "NIBP motion
    artifact" with ``--`` values (the driver reports it as ``cuff_error`` with that condition).
    HL7 PCD-01 carries it as OBX-11 ``X`` with an empty value (-> ``value: None``).
    """
    assert [] == run.problems()
    failing = [(t, v) for t, v in run.values("nibp_systolic") if 600 + 45 <= t <= 900]
    assert all(v is None for _, v in failing), failing
    if device == "suntech":
        assert "cuff_error" in run.statuses_on()
    elif device == "accutorr":
        conditions = {
            e.detail.get("condition") for _, e in run.events if isinstance(e, DeviceStatus) and e.active
        }
        assert "nibp_motion_artifact" in conditions
        assert failing
    else:
        assert failing, "the failed cycles still come as NIBP observations without a value"


def check_silence(run: Run) -> None:
    """Bytes before the silence starts, none from one poll after it on."""
    before = sum(n for t, n in run.sent if t < SILENCE_STARTS)
    after = sum(n for t, n in run.sent if t >= SILENCE_STARTS + STEP)
    assert before > 0
    assert 0 == after


# -- the command line on a pty ------------------------------------------------------------------

ALL = OXIMETERS + NIBP
# Read at least this many bytes (a few device seconds) and until an observation has come; the
# NIBP modules only answer commands, so for them the first reading is enough.
WANT = {"suntech": 1, "accutorr": 1}


def _start(device: str) -> tuple[subprocess.Popen[str], str]:
    command = f"simulate --device {device} --scenario normal --speed 20 --duration 20".split()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vitalwatch", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10.0)
    assert ready, "no 'serving' line within 10 s"
    return proc, proc.stdout.readline().strip()


@pytest.mark.parametrize("device", ALL)
def test_simulate_command_serves_decodable_bytes_on_a_pty(device: str) -> None:
    """``vitalwatch simulate`` prints ``serving X on /dev/pts/N``; the bytes there decode cleanly."""
    proc, first = _start(device)
    try:
        prefix = f"serving {device} on "
        assert first.startswith(prefix), first
        path = first[len(prefix) :]
        assert path.startswith("/dev/pts/") and os.path.exists(path)
        # Poll the Accutorr every 0.5 s rather than 5 s so the test is quick (a config option).
        driver = make_driver(device, **({"poll_interval_s": 0.5} if device == "accutorr" else {}))
        events: list[Event] = []
        got = bytearray()
        with serial.Serial(path, timeout=0.05) as port:
            deadline = time.monotonic() + 8.0
            while time.monotonic() < deadline:
                if len(got) >= WANT.get(device, 400) and any(isinstance(e, Observation) for e in events):
                    break
                t = time.monotonic()
                if isinstance(driver, MeasurementStarter) and not got and device == "suntech":
                    driver.start_measurement()
                due = driver.next_deadline()
                if due is not None and due <= t:
                    events += driver.on_timer(t)
                host = driver.data_to_send()
                if host:
                    port.write(host)
                data = port.read(256)
                got += data
                events += driver.feed(data, t)
        assert got, "no bytes from the simulator"
        first = next((i for i, e in enumerate(events) if isinstance(e, Observation)), None)
        assert first is not None, f"{len(got)} bytes, no observation"
        # Joining a binary stream mid-packet (the simulator started before we opened the port)
        # costs at most the rest of one packet (Nonin format #2: 25 frames of 5 bytes); after
        # that, not a single problem.
        early = sum(e.length for e in events[:first] if isinstance(e, DecodeProblem))
        assert early < 125
        assert [] == [e for e in events[first:] if isinstance(e, DecodeProblem)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
