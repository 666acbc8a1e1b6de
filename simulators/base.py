"""The simulator contract: a scenario says what the patient does, a device simulator says it in bytes.

Two layers, both sans-I/O and deterministic for a given seed (so ``vitalwatch replay
--scenario`` gives the same alerts every time):

.. code-block:: text

    Scenario.state_at(t) ──▶ PatientState ──▶ DeviceSimulator.poll(t) ──▶ bytes (the device's own format)
                                            DeviceSimulator.receive(host_bytes, t) ◀── driver.data_to_send()

``t`` is scenario time in seconds from the start. The endpoints in
:mod:`vitalwatch.simulators.endpoint` map it to wall time (with ``--speed``) and move the
bytes over a pseudo-terminal or TCP socket; replay drives the same objects in virtual time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from vitalwatch.drivers.base import SerialSettings

__all__ = ["DeviceSimulator", "PatientState", "Scenario"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientState:
    """What is true of the patient and the equipment at one instant.

    Values are the physiology (what a perfect device would show). Equipment conditions say
    how the devices behave: ``probe_off`` (oximeter sensor off the finger), ``silent``
    (every device stops sending: cable pulled), ``cuff_error`` (NIBP cycles fail), and
    ``artifact`` (motion: oximeter values unreliable for the moment).
    """

    spo2: float
    pulse_rate: float
    perfusion_index: float
    systolic: float
    diastolic: float
    mean: float
    probe_off: bool = False
    artifact: bool = False
    silent: bool = False
    cuff_error: bool = False
    resp_rate: float = 14.0  # breaths /min (no scenario varies it yet)


@runtime_checkable
class Scenario(Protocol):
    """A patient's course over a session, as a function of scenario time."""

    name: str
    duration: float  # seconds
    # Session phase changes a nurse would make, (t, phase), in time order.
    phases: tuple[tuple[float, str], ...]

    def state_at(self, t: float) -> PatientState:
        """The patient and equipment at scenario time ``t`` (deterministic)."""
        ...


@runtime_checkable
class DeviceSimulator(Protocol):
    """A device family speaking exactly its real bytes for a scenario."""

    device: ClassVar[str]  # the driver name it mirrors ("masimo", "suntech", ...)
    serial: ClassVar[SerialSettings]

    def poll(self, now: float) -> bytes:
        """Every byte the device emits up to scenario time ``now`` (and not yet emitted)."""
        ...

    def receive(self, data: bytes, now: float) -> None:
        """Bytes the host sent (commands, ACKs); the answer comes out of a later ``poll``."""
        ...

    def next_deadline(self) -> float | None:
        """Scenario time of the next byte the device will emit, or None when idle."""
        ...
