"""Masimo simulator: one ASCII 1 line per second that the Masimo driver decodes back to the scenario."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitalwatch.drivers.events import DeviceStatus, Event, Observation
from vitalwatch.drivers.masimo import MasimoDriver
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.base import DeviceSimulator, PatientState
from vitalwatch.simulators.masimo import DEFAULT_CLOCK_START, MasimoSimulator
from vitalwatch.simulators.scenarios import get_scenario


@dataclass
class TinyScenario:
    """Constant physiology with equipment flags over [start, end) windows."""

    spo2: float = 97.0
    pulse_rate: float = 72.0
    perfusion_index: float = 3.5
    duration: float = 60.0
    name: str = "tiny"
    phases: tuple[tuple[float, str], ...] = ((0.0, "baseline"),)
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)

    def state_at(self, t: float) -> PatientState:
        flags = {k: lo <= t < hi for k, (lo, hi) in self.windows.items()}
        return PatientState(
            spo2=self.spo2,
            pulse_rate=self.pulse_rate,
            perfusion_index=self.perfusion_index,
            systolic=120.0,
            diastolic=80.0,
            mean=93.3,
            **flags,
        )


def decode(data: bytes) -> list[Event]:
    return MasimoDriver().feed(data, 0.0)


def values(events: list[Event], kind: str) -> list[float | None]:
    return [e.value for e in events if isinstance(e, Observation) and e.kind == kind]


def status_edges(events: list[Event]) -> list[tuple[str, bool]]:
    return [(e.code, e.active) for e in events if isinstance(e, DeviceStatus)]


def test_is_a_device_simulator_and_registered() -> None:
    sim = make_simulator("masimo", TinyScenario())
    assert isinstance(sim, MasimoSimulator)
    assert isinstance(sim, DeviceSimulator)
    assert 9600 == sim.serial.baudrate


def test_one_line_per_second_with_the_device_clock() -> None:
    """Lines at t = 0..9 by t = 9.5, each stamped clock_start + t, values as the scenario says."""
    sim = MasimoSimulator(TinyScenario(spo2=96.4, pulse_rate=71.6, perfusion_index=3.456))
    data = sim.poll(9.5)
    assert 10 == data.count(b"\r\n")
    events = decode(data)
    assert [96.0] * 10 == values(events, "spo2")
    assert [72.0] * 10 == values(events, "pulse_rate")
    assert [3.46] * 10 == values(events, "perfusion_index")
    times = [e.device_time for e in events if isinstance(e, Observation) and e.kind == "spo2"]
    assert [DEFAULT_CLOCK_START + timedelta(seconds=k) for k in range(10)] == times
    assert [] == status_edges(events)  # EXC=000800 is normal running
    assert b"" == sim.poll(9.9)
    assert 10.0 == sim.next_deadline()


def test_first_line_is_byte_exact_rad8_layout() -> None:
    sim = MasimoSimulator(TinyScenario(spo2=98, pulse_rate=97, perfusion_index=3.6))
    expected = (
        b"03/04/24 09:00:00 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-% "
        b"DESAT=-- PIDELTA=+-- ALARM=0000 EXC=000800\r\n"
    )
    assert expected == sim.poll(0.0)


def test_late_poll_catches_up_and_stops_after_duration() -> None:
    sim = MasimoSimulator(TinyScenario(duration=30.0))
    assert 31 == sim.poll(1000.0).count(b"\n")
    assert sim.next_deadline() is None
    assert b"" == sim.poll(2000.0)


def test_same_scenario_same_bytes() -> None:
    a = MasimoSimulator(get_scenario("session", 3)).poll(600.0)
    b = MasimoSimulator(get_scenario("session", 3)).poll(600.0)
    assert a == b
    assert a != MasimoSimulator(get_scenario("session", 4)).poll(600.0)


def test_probe_off_searches_then_sensor_off_then_reacquires() -> None:
    """0x828 for search_s seconds, 0x820 after; dashes (None) throughout; 0x808 while re-acquiring."""
    sim = MasimoSimulator(TinyScenario(windows={"probe_off": (10.0, 30.0)}), search_s=5, reacquire_s=4)
    lines = sim.poll(40.0).split(b"\r\n")
    assert lines[9].endswith(b"EXC=000800")
    assert lines[10].endswith(b"EXC=000828") and b"SPO2=---% BPM=---" in lines[10]
    assert lines[14].endswith(b"EXC=000828")
    assert lines[15].endswith(b"EXC=000820")
    assert lines[29].endswith(b"EXC=000820")
    assert lines[30].endswith(b"EXC=000808") and b"SPO2=---%" in lines[30]
    assert lines[34].endswith(b"EXC=000800") and b"SPO2=097%" in lines[34]

    events = decode(sim.__class__(sim.scenario).poll(40.0))
    spo2 = values(events, "spo2")
    assert [None] * 24 == spo2[10:34]
    assert all(v == 97.0 for v in spo2[:10] + spo2[34:])
    assert [
        ("searching", True),
        ("sensor_off", True),
        ("searching", False),
        ("searching", True),
        ("sensor_off", False),
        ("searching", False),
    ] == status_edges(events)


def test_artifact_holds_the_last_good_values_with_interference() -> None:
    scenario = TinyScenario(spo2=97.0, windows={"artifact": (5.0, 8.0)})
    sim = MasimoSimulator(scenario)
    first = sim.poll(4.0)
    scenario.spo2 = 80.0  # the physiology moves during the motion; the device keeps its last reading
    driver = MasimoDriver()
    events = driver.feed(first + sim.poll(7.0))
    assert [97.0] * 8 == values(events, "spo2")
    assert [("interference", True)] == status_edges(events)
    assert ("interference", False) in status_edges(driver.feed(sim.poll(8.0)))


def test_silent_seconds_emit_nothing_and_the_clock_keeps_going() -> None:
    sim = MasimoSimulator(TinyScenario(windows={"silent": (3.0, 7.0)}))
    assert 3 == sim.poll(2.0).count(b"\n")
    assert b"" == sim.poll(6.5)
    after = decode(sim.poll(7.0))
    times = [e.device_time for e in after if isinstance(e, Observation) and e.kind == "spo2"]
    assert [DEFAULT_CLOCK_START + timedelta(seconds=7)] == times


def test_device_alarm_bits_follow_its_own_limits() -> None:
    events = decode(MasimoSimulator(TinyScenario(spo2=85.0, pulse_rate=150.0)).poll(0.0))
    statuses = [e for e in events if isinstance(e, DeviceStatus)]
    assert ["device_alarm"] == [s.code for s in statuses]
    assert "spo2_low" in str(statuses[0].detail["alarms"])
    assert "pr_high" in str(statuses[0].detail["alarms"])


@pytest.mark.parametrize("model", ["rad8", "radical5", "radical7"])
def test_each_model_layout_decodes(model: str) -> None:
    events = decode(MasimoSimulator(TinyScenario(), model=model).poll(2.0))
    assert [97.0] * 3 == values(events, "spo2")


def test_options_arrive_as_text_from_the_command_line() -> None:
    sim = MasimoSimulator(TinyScenario(), clock_start="2025-01-02T03:04:05", serial_number="1234567890")
    line = sim.poll(0.0)
    assert line.startswith(b"01/02/25 03:04:05 SN=1234567890 ")
    with pytest.raises(ValueError, match="model"):
        MasimoSimulator(TinyScenario(), model="rad97")


def test_line_rate_fits_9600_baud() -> None:
    data = MasimoSimulator(get_scenario("normal")).poll(59.0)
    assert len(data) / 60 < MasimoSimulator.serial.bytes_per_second()


@settings(max_examples=60, deadline=None)
@given(
    spo2=st.floats(50, 100),
    pulse=st.floats(25, 250),
    pi=st.floats(0.02, 20),
    start=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2098, 12, 31)),
)
def test_round_trip_through_the_driver(spo2: float, pulse: float, pi: float, start: datetime) -> None:
    """What the simulator encodes, the driver decodes (to the device's resolution)."""
    start = start.replace(microsecond=0)
    sim = MasimoSimulator(TinyScenario(spo2=spo2, pulse_rate=pulse, perfusion_index=pi), clock_start=start)
    events = decode(sim.poll(0.0))
    assert [float(round(spo2))] == values(events, "spo2")
    assert [float(round(pulse))] == values(events, "pulse_rate")
    assert values(events, "perfusion_index")[0] == pytest.approx(pi, abs=0.0051)
    assert [start] == [e.device_time for e in events if isinstance(e, Observation) and e.kind == "spo2"]


def test_desaturation_scenario_makes_the_driver_see_spo2_below_90_early() -> None:
    events = decode(MasimoSimulator(get_scenario("desaturation")).poll(60.0))
    low = [v for v in values(events, "spo2") if v is not None and v < 90]
    assert len(low) >= 15
