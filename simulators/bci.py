"""BerryMed BCI oximeter simulator: 100 five-byte packets per second, byte-exact with the driver.

Uses :func:`vitalwatch.drivers.bci.encode_packet`, so the same layout produces and parses every
packet (``device-protocols.md`` §1.5). The device streams unasked; ``receive`` ignores input.

Equipment conditions -> device markers:

- ``probe_off``: "no finger" (byte 3 bit 4) and "no signal" (byte 1 bit 4), signal strength 0,
  pleth and bar 0, pulse 0xFF and SpO2 0x7F (the PDF's invalid markers).
- ``artifact``: "pulse research" (byte 3 bit 5) and signal strength 1; the values keep coming
  (the device shows its last estimate), the flag is what makes them unreliable.
- ``silent``: nothing at all (the packet slots pass without bytes).

Simulator choices (not from the PDF): pleth is a synthetic pulse shape with seeded noise at
the scenario's pulse rate, the beep bit marks each beat, signal strength follows the perfusion
index (PI 4 % -> 8), bar graph follows the pleth.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import ClassVar

from vitalwatch.drivers.base import SerialSettings
from vitalwatch.drivers.bci import BciDriver, BciPacket, encode_packet
from vitalwatch.simulators.base import PatientState, Scenario

__all__ = ["BciSimulator", "PacketClock", "PulseShape"]


class PacketClock:
    """Fixed-rate packet slots from an epoch, so long runs never drift (count * period)."""

    def __init__(self, rate: float, epoch: float = 0.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.period = 1.0 / rate
        self.epoch = epoch
        self.count = 0

    def next_time(self) -> float:
        return self.epoch + self.count * self.period

    def due(self, now: float, end: float) -> Iterator[float]:
        """Slot times up to ``now`` (inclusive) and before ``end``, consumed as yielded."""
        while True:
            t = self.next_time()
            if t > now or t >= end:
                return
            self.count += 1
            yield t

    def restart(self, epoch: float) -> None:
        self.epoch = epoch
        self.count = 0


class PulseShape:
    """A plausible plethysmogram: a fast upstroke, a dicrotic notch, seeded noise."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._phase = rng.random()

    def step(self, pulse_rate: float, period: float) -> tuple[float, bool]:
        """Advance one sample; (amplitude 0..1, True on the sample where a beat starts)."""
        self._phase += max(pulse_rate, 0.0) / 60.0 * period
        beat = self._phase >= 1.0
        self._phase %= 1.0
        p = self._phase
        wave = math.exp(-((p - 0.15) ** 2) / 0.005) + 0.35 * math.exp(-((p - 0.45) ** 2) / 0.01)
        return min(1.0, max(0.0, wave / 1.05 + self._rng.gauss(0.0, 0.01))), beat


def clamp(value: float, low: int, high: int) -> int:
    return max(low, min(high, round(value)))


def signal_strength(state: PatientState) -> int:
    """0-8 from the perfusion index (simulator choice: 0.5 PI per step, at least 2)."""
    return clamp(state.perfusion_index * 2.0, 2, 8)


class BciSimulator:
    """A BerryMed BCI oximeter streaming at 100 Hz for a scenario."""

    device: ClassVar[str] = "bci"
    serial: ClassVar[SerialSettings] = BciDriver.serial

    def __init__(self, scenario: Scenario, seed: int = 0, *, rate: float = 100.0) -> None:
        self._scenario = scenario
        self._rng = random.Random(seed)
        self._clock = PacketClock(rate)
        self._shape = PulseShape(self._rng)

    def poll(self, now: float) -> bytes:
        """All packets due up to ``now`` not yet sent (none while the scenario is silent)."""
        out = bytearray()
        for t in self._clock.due(now, self._scenario.duration):
            state = self._scenario.state_at(t)
            packet = self.packet(state)
            if not state.silent:
                out += encode_packet(packet)
        return bytes(out)

    def packet(self, state: PatientState) -> BciPacket:
        """The packet the device sends for one state (advances the pleth)."""
        amplitude, beat = self._shape.step(state.pulse_rate, self._clock.period)
        if state.probe_off:
            return BciPacket(no_finger=True, no_signal=True)
        pleth = clamp(1 + amplitude * 99, 1, 100)  # 0 is the invalid marker
        return BciPacket(
            signal_strength=1 if state.artifact else signal_strength(state),
            beep=beat,
            pleth=pleth,
            bar=clamp(1 + amplitude * 14, 1, 15),
            searching=state.artifact,
            pulse_rate=clamp(state.pulse_rate, 0, 254),
            spo2=clamp(state.spo2, 0, 100),
        )

    def receive(self, data: bytes, now: float) -> None:
        """The BCI stream has no commands in the PDF; input is ignored."""

    def next_deadline(self) -> float | None:
        t = self._clock.next_time()
        return t if t < self._scenario.duration else None
