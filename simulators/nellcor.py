"""Nellcor NPB-295 real-time printout simulator, byte-exact with the driver's line format.

Speaks what the NPB-290/295 data port prints (``device-protocols.md`` §1.3, NPB29x): the
two header lines first, again after every 25 data lines and whenever the alarm limits change,
then one data line every ``interval`` seconds (the NPB-290 manual says 2 s, the default),
formatted by :func:`vitalwatch.drivers.nellcor.format_line`, CR LF terminated.

Equipment conditions -> device markers:

- ``probe_off``: ``--- --- ---`` and status ``SO`` (sensor off);
- ``artifact``: the values keep coming, status ``MO`` (motion);
- values outside the alarm limits get a ``*`` and ``SL``/``SH``/``PL``/``PH``;
- ``silent``: nothing (the monitor on battery prints nothing either).

Simulator choices: header text ``NPB-295 VERSION 2.0.0.0 CRC: XXXX`` as in the manual's
sample; PA = perfusion index x 10 (a relative amplitude, clamped 0-254); the clock starts at
``start`` (default 2024-01-01 08:00:00).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

from vitalwatch.drivers.base import SerialSettings
from vitalwatch.drivers.nellcor import NellcorDriver, NellcorLine, format_line
from vitalwatch.simulators.base import PatientState, Scenario
from vitalwatch.simulators.bci import PacketClock, clamp

__all__ = ["NellcorSimulator"]

HEADER_EVERY = 25  # NPB29x: "repeated every 25 lines"


class NellcorSimulator:
    """An NPB-295 printing its real-time data lines for a scenario."""

    device: ClassVar[str] = "nellcor"
    serial: ClassVar[SerialSettings] = NellcorDriver.serial

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        *,
        interval: float = 2.0,
        spo2_limits: tuple[int, int] = (85, 100),
        pulse_limits: tuple[int, int] = (50, 140),
        start: datetime = datetime(2024, 1, 1, 8, 0, 0),
    ) -> None:
        self._scenario = scenario
        self.seed = seed  # the printout has no noise: same bytes for every seed
        self._clock = PacketClock(1.0 / interval)
        self._spo2_limits = spo2_limits
        self._pulse_limits = pulse_limits
        self._start = start
        self._since_header = HEADER_EVERY  # so the first line is preceded by the header
        self._printed_limits: tuple[tuple[int, int], tuple[int, int]] | None = None

    def set_limits(self, spo2: tuple[int, int], pulse: tuple[int, int]) -> None:
        """Change the alarm limits (the header is printed again before the next line)."""
        self._spo2_limits, self._pulse_limits = spo2, pulse

    def header(self) -> bytes:
        """The two header lines as printed by the NPB-295."""
        (slo, shi), (plo, phi) = self._spo2_limits, self._pulse_limits
        return (
            f"NPB-295 VERSION 2.0.0.0 CRC: XXXX SpO2 Limit: {slo}-{shi}% PR Limit: {plo}-{phi}BPM\r\n"
            "TIME %SPO2 BPM PA Status\r\n"
        ).encode()

    def line(self, state: PatientState, t: float) -> NellcorLine:
        """The data line for one state at scenario time ``t``."""
        when = self._start + timedelta(seconds=int(t))
        if state.probe_off:
            return NellcorLine(time=when, spo2=None, pulse_rate=None, pa=None, codes=("SO",))
        spo2 = clamp(state.spo2, 0, 100)
        pulse = clamp(state.pulse_rate, 0, 300)
        codes: list[str] = []
        (slo, shi), (plo, phi) = self._spo2_limits, self._pulse_limits
        spo2_star = not slo <= spo2 <= shi
        pulse_star = not plo <= pulse <= phi
        if spo2_star:
            codes.append("SL" if spo2 < slo else "SH")
        if pulse_star:
            codes.append("PL" if pulse < plo else "PH")
        if state.artifact:
            codes.append("MO")
        return NellcorLine(
            time=when,
            spo2=spo2,
            pulse_rate=pulse,
            pa=clamp(state.perfusion_index * 10, 0, 254),
            spo2_star=spo2_star,
            pulse_star=pulse_star,
            codes=tuple(codes),
        )

    def poll(self, now: float) -> bytes:
        """Every line due up to ``now`` (headers included) not yet sent."""
        out = bytearray()
        for t in self._clock.due(now, self._scenario.duration):
            state = self._scenario.state_at(t)
            if state.silent:
                continue
            limits = (self._spo2_limits, self._pulse_limits)
            if self._since_header >= HEADER_EVERY or limits != self._printed_limits:
                out += self.header()
                self._since_header = 0
                self._printed_limits = limits
            out += format_line(self.line(state, t))
            self._since_header += 1
        return bytes(out)

    def receive(self, data: bytes, now: float) -> None:
        """The printout takes no commands (XON/XOFF flow control is not simulated)."""

    def next_deadline(self) -> float | None:
        t = self._clock.next_time()
        return t if t < self._scenario.duration else None
