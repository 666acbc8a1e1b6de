"""Nellcor, BCI and Contec simulators: real rates, device markers, and what the drivers read back."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import pytest

from tests.helpers import problems, statuses
from vitalwatch.drivers.bci import BciDriver
from vitalwatch.drivers.contec import ContecDriver
from vitalwatch.drivers.events import Event, Observation
from vitalwatch.drivers.nellcor import NellcorDriver
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.base import DeviceSimulator, PatientState
from vitalwatch.simulators.bci import BciSimulator
from vitalwatch.simulators.contec import ContecSimulator
from vitalwatch.simulators.nellcor import NellcorSimulator

BASE = PatientState(
    spo2=96.0, pulse_rate=72.0, perfusion_index=3.0, systolic=120.0, diastolic=80.0, mean=93.0
)


@dataclass
class Steps:
    """A tiny scenario: ``(start, state)`` steps, each lasting until the next."""

    steps: tuple[tuple[float, PatientState], ...]
    duration: float = 60.0
    name: str = "steps"
    phases: tuple[tuple[float, str], ...] = ((0.0, "baseline"),)

    def state_at(self, t: float) -> PatientState:
        current = self.steps[0][1]
        for start, state in self.steps:
            if t >= start:
                current = state
        return current


def steady(duration: float = 60.0, **changes: object) -> Steps:
    return Steps(((0.0, replace(BASE, **changes)),), duration=duration)  # type: ignore[arg-type]


def run(sim: DeviceSimulator, driver: object, until: float, step: float = 0.25) -> list[tuple[float, Event]]:
    """Drive simulator and driver together in virtual time; events tagged with the time seen."""
    out: list[tuple[float, Event]] = []
    t = 0.0
    while t <= until:
        deadline = driver.next_deadline()  # type: ignore[attr-defined]
        if deadline is not None and deadline <= t:
            driver.on_timer(t)  # type: ignore[attr-defined]
        sim.receive(driver.data_to_send(), t)  # type: ignore[attr-defined]
        out += [(t, e) for e in driver.feed(sim.poll(t), t)]  # type: ignore[attr-defined]
        t += step
    return out


def spo2_times(events: list[tuple[float, Event]]) -> list[float]:
    return [t for t, e in events if isinstance(e, Observation) and e.kind == "spo2"]


# -- rates -------------------------------------------------------------------------------------


def test_bci_sends_100_packets_per_second() -> None:
    sim = BciSimulator(steady())
    assert len(sim.poll(0.999)) == 100 * 5
    assert len(sim.poll(1.999)) == 100 * 5


def test_contec_old_sends_60_packets_per_second_unasked() -> None:
    sim = ContecSimulator(steady(), protocol="old")
    assert len(sim.poll(0.999)) == 60 * 5


def test_nellcor_line_every_2_s_and_header_every_25_lines() -> None:
    text = NellcorSimulator(steady(duration=200.0)).poll(199.0).decode()
    lines = text.splitlines()
    data = [ln for ln in lines if ln[:2].isdigit()]
    assert len(data) == 100  # one per 2 s
    headers = [i for i, ln in enumerate(lines) if ln.startswith("NPB-295")]
    assert headers == [i * 27 for i in range(4)]  # 2 header lines + 25 data lines per block
    assert lines[1] == "TIME %SPO2 BPM PA Status"


def test_nellcor_header_again_when_limits_change() -> None:
    sim = NellcorSimulator(steady())
    sim.poll(4.0)
    sim.set_limits((90, 100), (50, 140))
    assert sim.poll(6.0).startswith(
        b"NPB-295 VERSION 2.0.0.0 CRC: XXXX SpO2 Limit: 90-100% PR Limit: 50-140BPM\r\n"
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda s: BciSimulator(s, seed=3),
        lambda s: ContecSimulator(s, seed=3, protocol="old"),
        lambda s: NellcorSimulator(s, seed=3),
    ],
)
def test_deterministic_for_a_seed_and_silent_sends_nothing(build: object) -> None:
    a, b = build(steady()), build(steady())  # type: ignore[operator]
    assert a.poll(10.0) == b.poll(10.0)
    assert build(steady(silent=True)).poll(10.0) == b""  # type: ignore[operator]


def test_registry_builds_each() -> None:
    for name, cls in (("bci", BciSimulator), ("contec", ContecSimulator), ("nellcor", NellcorSimulator)):
        sim = make_simulator(name, steady(), seed=1)
        assert isinstance(sim, cls)
        assert isinstance(sim, DeviceSimulator)


# -- simulator -> driver -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sim", "driver"),
    [
        (BciSimulator, BciDriver),
        (lambda s: ContecSimulator(s, protocol="old"), lambda: ContecDriver(protocol="old")),
        (lambda s: ContecSimulator(s, protocol="new"), lambda: ContecDriver(protocol="new")),
        (NellcorSimulator, NellcorDriver),
    ],
)
def test_values_round_trip_and_at_most_one_spo2_per_second(sim: object, driver: object) -> None:
    scenario = steady(spo2=88.0, pulse_rate=150.0)
    events = run(sim(scenario), driver(), 30.0)  # type: ignore[operator]
    obs = [e for _, e in events if isinstance(e, Observation)]
    # Drivers of checksum-less protocols report the very first window before 5 packets in a row
    # established the framing: no values in that one report only.
    assert all(o.value is not None for o in obs[2:])
    assert {(o.kind, o.value) for o in obs if o.value is not None} == {("spo2", 88.0), ("pulse_rate", 150.0)}
    assert problems([e for _, e in events]) == []
    times = spo2_times(events)
    assert len(times) >= 14  # the Nellcor prints every 2 s, the others report every second
    assert all(b - a >= 0.99 for a, b in itertools.pairwise(times))


@pytest.mark.parametrize(
    ("sim", "driver", "off_codes", "artifact_code"),
    [
        (BciSimulator, BciDriver, {"sensor_off", "searching"}, "searching"),
        (
            lambda s: ContecSimulator(s, protocol="old"),
            lambda: ContecDriver(protocol="old"),
            {"sensor_off"},
            "searching",
        ),
        (
            lambda s: ContecSimulator(s, protocol="new"),
            lambda: ContecDriver(protocol="new"),
            {"sensor_off"},
            "searching",
        ),
        (NellcorSimulator, NellcorDriver, {"sensor_off"}, "artifact"),
    ],
)
def test_probe_off_and_artifact_become_device_markers(
    sim: object, driver: object, off_codes: set[str], artifact_code: str
) -> None:
    """Probe off -> the device's no-value markers (None) and its sensor status; motion -> its flag."""
    scenario = Steps(
        (
            (0.0, BASE),
            (10.0, replace(BASE, probe_off=True)),
            (20.0, BASE),
            (30.0, replace(BASE, artifact=True)),
            (40.0, BASE),
        )
    )
    events = run(sim(scenario), driver(), 50.0)  # type: ignore[operator]
    on = {(e.code, round(t)) for t, e in events if hasattr(e, "active") and e.active}  # type: ignore[union-attr]
    codes_during_off = {c for c, t in on if 10 <= t <= 12}
    assert off_codes <= codes_during_off
    assert artifact_code in {c for c, t in on if 30 <= t <= 32}
    off_values = [e.value for t, e in events if isinstance(e, Observation) and 12 <= t < 20]
    assert off_values and all(v is None for v in off_values)
    late = [e for t, e in events if isinstance(e, Observation) and t > 42]
    assert late and all(o.value is not None for o in late)
    assert all(not s.active for s in statuses([e for t, e in events if t > 43]))


# -- Contec V7 conversation --------------------------------------------------------------------


def test_contec_v7_is_silent_until_the_start_command() -> None:
    sim = ContecSimulator(steady())
    assert sim.poll(5.0) == b""
    assert sim.next_deadline() is None


def test_contec_v7_conversation_starts_on_command_and_lives_on_keepalives() -> None:
    """Driver <-> simulator in-process: nothing until A1, then readings for a minute thanks to AF."""
    driver = ContecDriver(protocol="new")
    sim = ContecSimulator(steady(duration=120.0), keepalive_timeout=5.0)
    assert sim.poll(2.0) == b""  # the device waits for the host
    events = run(sim, driver, 60.0, step=0.1)
    times = spo2_times(events)
    assert times[0] < 0.5
    assert len(times) >= 58  # still streaming long after the 5 s keep-alive timeout
    assert max(b - a for a, b in itertools.pairwise(times)) < 1.2
    assert sim.streaming


def test_contec_v7_stream_stops_without_keepalives() -> None:
    """Start command only (no keep-alives, no restarts): the device stops after its timeout."""
    driver = ContecDriver(protocol="new", keepalive_interval=1e9, restart_after=1e9)
    sim = ContecSimulator(steady(duration=120.0), keepalive_timeout=5.0)
    events = run(sim, driver, 30.0, step=0.1)
    times = spo2_times(events)
    assert times and max(times) < 5.1
    assert not sim.streaming
    # The driver's restart logic brings it back: a fresh start command restarts the stream.
    sim.receive(ContecDriver(protocol="new").data_to_send(), 31.0)
    assert len(sim.poll(32.0)) == 61 * 9


def test_contec_v7_info_commands_get_the_captured_replies() -> None:
    sim = ContecSimulator(steady())
    sim.receive(bytes.fromhex("7D81A7808080808080 7D81AA808080808080"), 0.0)
    assert sim.poll(0.0) == bytes.fromhex("0C80 0480F5F3E5F2A0A0A0")
