"""HL7 simulator: message content, rates, markers, and conversations with the driver in-process."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import observations
from vitalwatch.drivers.events import Event
from vitalwatch.drivers.hl7 import Hl7Driver
from vitalwatch.drivers.mllp import MllpDeframer
from vitalwatch.simulators.base import DeviceSimulator, PatientState
from vitalwatch.simulators.hl7 import Hl7Simulator


@dataclass
class Fixed:
    """A tiny scenario: one state, with probe-off / silent / cuff-error windows."""

    state: PatientState
    probe_off: tuple[float, float] = (-1.0, -1.0)
    silent: tuple[float, float] = (-1.0, -1.0)
    name: str = "fixed"
    duration: float = 3600.0
    phases: tuple[tuple[float, str], ...] = field(default_factory=tuple)

    def state_at(self, t: float) -> PatientState:
        s = self.state
        return PatientState(
            spo2=s.spo2,
            pulse_rate=s.pulse_rate,
            perfusion_index=s.perfusion_index,
            systolic=s.systolic,
            diastolic=s.diastolic,
            mean=s.mean,
            probe_off=self.probe_off[0] <= t < self.probe_off[1],
            silent=self.silent[0] <= t < self.silent[1],
            cuff_error=s.cuff_error,
        )


NORMAL = PatientState(spo2=97.4, pulse_rate=71.6, perfusion_index=2.5, systolic=121, diastolic=79, mean=93)


def converse(sim: Hl7Simulator, driver: Hl7Driver, until: float, step: float = 0.5) -> list[Event]:
    """Pump bytes both ways in virtual time, like the link would."""
    events: list[Event] = []
    t = 0.0
    while t <= until:
        events += driver.feed(sim.poll(t), t)
        sim.receive(driver.data_to_send(), t)
        t += step
    return events


def test_is_a_device_simulator() -> None:
    """The class satisfies the DeviceSimulator protocol."""
    assert isinstance(Hl7Simulator(Fixed(NORMAL)), DeviceSimulator)


def test_conversation_with_acks() -> None:
    """Every second an SpO2/pulse/PI message; NIBP with OBX-14 = measurement time; all ACKed (AA)."""
    sim = Hl7Simulator(Fixed(NORMAL), nibp_interval_s=30.0, nibp_cycle_s=10.0)
    events = converse(sim, Hl7Driver(), until=20.0)
    obs = observations(events)
    assert [o.value for o in obs if o.kind == "spo2"] == [97.0] * 21
    assert {o.value for o in obs if o.kind == "pulse_rate"} == {72.0}
    nibp = [o for o in obs if o.kind.startswith("nibp")]
    assert [(o.kind, o.value) for o in nibp] == [
        ("nibp_systolic", 121.0),
        ("nibp_diastolic", 79.0),
        ("nibp_mean", 93.0),
        ("nibp_pulse_rate", 72.0),
    ]
    assert nibp[0].device_time == datetime(2024, 1, 1, 8, 0, 10, tzinfo=UTC)
    assert sim.acked == 22
    assert (sim.errors, sim.resent, sim.dropped) == (0, 0, 0)


def test_control_ids_increase() -> None:
    """MSH-10 counts up 1, 2, 3 ... as messages are accepted."""
    sim = Hl7Simulator(Fixed(NORMAL), wait_for_ack=False)
    blocks = MllpDeframer().feed(sim.poll(2.0))
    ids = [b.split(b"\r", 1)[0].split(b"|")[9] for b in blocks if isinstance(b, bytes)]
    assert ids == [b"1", b"2", b"3"]


def test_resend_after_ae() -> None:
    """A block corrupted on the wire gets AE from the driver; the simulator resends it and the
    second copy is accepted (AA); the values arrive exactly once."""
    sim = Hl7Simulator(Fixed(NORMAL))
    driver = Hl7Driver()
    sent = sim.poll(0.0)
    corrupted = sent.replace(b"|97|", b"|9?|", 1)
    assert corrupted != sent
    assert observations(driver.feed(corrupted, 0.0)) == []
    ack = driver.data_to_send()
    assert b"MSA|AE|1|" in ack
    sim.receive(ack, 0.1)
    again = sim.poll(0.2)
    assert again == sent
    events = driver.feed(again, 0.2)
    assert [o.value for o in observations(events) if o.kind == "spo2"] == [97.0]
    sim.receive(driver.data_to_send(), 0.3)
    assert (sim.errors, sim.resent, sim.acked) == (1, 1, 1)


def test_gives_up_after_three_tries() -> None:
    """GE B40: at most 3 attempts in total on AE, then the message is dropped and the next one goes."""
    sim = Hl7Simulator(Fixed(NORMAL))
    driver = Hl7Driver()
    attempts = 0
    data = sim.poll(0.0)
    while attempts < 3:
        attempts += 1
        driver.feed(data.replace(b"|97|", b"|9?|", 1), 0.0)
        sim.receive(driver.data_to_send(), 0.0)
        data = sim.poll(0.0)
    assert (sim.errors, sim.resent, sim.dropped) == (3, 2, 1)
    assert data == b""  # nothing new due yet at t=0
    assert b"|ORU^R01^ORU_R01|2|" in sim.poll(1.0)


def test_no_ack_resends_after_timeout() -> None:
    """Without an answer the message is repeated after ack_timeout_s, up to 3 attempts."""
    sim = Hl7Simulator(Fixed(NORMAL), ack_timeout_s=3.0)
    first = sim.poll(0.0)
    assert sim.poll(2.0) == b""
    assert sim.poll(3.0) == first
    assert sim.poll(6.0) == first
    assert sim.poll(9.0).count(b"\x0b") == 1  # third attempt timed out: dropped, message 2 goes
    assert sim.dropped == 1


def test_probe_off_gives_none_and_silence_gives_nothing() -> None:
    """probe_off -> OBX-11 X with empty values (driver: None); silent -> no bytes at all."""
    sim = Hl7Simulator(Fixed(NORMAL, probe_off=(2.0, 4.0), silent=(6.0, 9.0)), nibp_cycle_s=1000.0)
    driver = Hl7Driver()
    per_second: list[list[float | None]] = []
    for t in range(12):
        data = sim.poll(float(t))
        if 6 <= t < 9:
            assert data == b""
        events = driver.feed(data, float(t))
        sim.receive(driver.data_to_send(), float(t))
        per_second.append([o.value for o in observations(events) if o.kind == "spo2"])
    assert per_second[:6] == [[97.0], [97.0], [None], [None], [97.0], [97.0]]
    assert per_second[6:9] == [[], [], []]
    assert per_second[9:] == [[97.0], [97.0], [97.0]]


def test_cuff_error_gives_none_nibp() -> None:
    """cuff_error -> the NIBP rows are invalid (None), never the scenario's numbers."""
    state = PatientState(spo2=97, pulse_rate=70, perfusion_index=2, systolic=120, diastolic=80, mean=93,
                         cuff_error=True)
    events = converse(Hl7Simulator(Fixed(state), nibp_cycle_s=2.0), Hl7Driver(), until=4.0)
    nibp = [o.value for o in observations(events) if o.kind.startswith("nibp")]
    assert nibp == [None, None, None, None]


def test_deterministic_for_a_seed() -> None:
    """Same seed, same bytes; the device id depends on the seed."""
    a = Hl7Simulator(Fixed(NORMAL), seed=3, wait_for_ack=False).poll(5.0)
    b = Hl7Simulator(Fixed(NORMAL), seed=3, wait_for_ack=False).poll(5.0)
    c = Hl7Simulator(Fixed(NORMAL), seed=4, wait_for_ack=False).poll(5.0)
    assert a == b
    assert a != c


def test_patient_identifiers_never_reach_events() -> None:
    """The simulator's fake PID is not in any event."""
    events = converse(Hl7Simulator(Fixed(NORMAL)), Hl7Driver(), until=3.0)
    assert "SIMULATED" not in repr(events)
    assert "SIM-0001" not in repr(events)


@settings(max_examples=60, deadline=None)
@given(
    st.builds(
        PatientState,
        spo2=st.floats(min_value=50, max_value=100),
        pulse_rate=st.floats(min_value=20, max_value=250),
        perfusion_index=st.floats(min_value=0.02, max_value=20),
        systolic=st.integers(min_value=60, max_value=250),
        diastolic=st.integers(min_value=30, max_value=150),
        mean=st.integers(min_value=40, max_value=200),
    ).filter(lambda s: s.systolic > s.diastolic)  # a reading with systolic <= diastolic is refused
)
def test_round_trip(state: PatientState) -> None:
    """Simulator values -> bytes -> driver gives back what the monitor would show."""
    sim = Hl7Simulator(Fixed(state), nibp_cycle_s=0.0, wait_for_ack=False)
    got = {(o.kind, o.value) for o in observations(Hl7Driver().feed(sim.poll(0.0)))}
    assert got == {
        ("spo2", float(round(state.spo2))),
        ("pulse_rate", float(round(state.pulse_rate))),
        ("perfusion_index", round(state.perfusion_index, 2)),
        ("nibp_systolic", float(state.systolic)),
        ("nibp_diastolic", float(state.diastolic)),
        ("nibp_mean", float(state.mean)),
        ("nibp_pulse_rate", float(round(state.pulse_rate))),
    }
