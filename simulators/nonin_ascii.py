"""Nonin ASCII-output oximeter simulator: a header line, then ``SPO2=XXX HR=YYY`` once a second.

Mirrors :mod:`vitalwatch.drivers.nonin_ascii` (and uses its encoder). ``probe_off`` sends
``SPO2=--- HR=---`` (the no-data form, BT4000/8500 manuals); ``artifact`` has no marker in this output
(the devices send no status), so values go on unchanged; ``silent`` sends nothing.

Simulator choices (the real text is **[unconfirmed]**): the header reads
``Nonin <model>  hh:mm:ss mm/dd/yy`` from a fixed clock start of 2025-01-01 08:00:00, digits are
zero-padded, and with ``clock_prefix=True`` each line starts ``HH:MM:SS `` like the 8600V.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

from vitalwatch.drivers.base import SerialSettings
from vitalwatch.drivers.nonin_ascii import encode_line
from vitalwatch.simulators.base import Scenario

__all__ = ["NoninAsciiSimulator"]

_CLOCK_START = datetime(2025, 1, 1, 8, 0, 0)


class NoninAsciiSimulator:
    """A Nonin 7500/Avant/8600V in ASCII output mode, driven by a scenario."""

    device: ClassVar[str] = "nonin-ascii"
    serial: ClassVar[SerialSettings] = SerialSettings(baudrate=9600, stopbits=2)

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        *,
        model: str = "7500",
        fast: bool = False,
        clock_prefix: bool = False,
        header: bool = True,
        event_at: float | None = None,
    ) -> None:
        self._scenario = scenario
        self._seed = seed  # output is fully determined by the scenario; kept for the common signature
        self._model = model
        self._fast = fast
        self._clock_prefix = clock_prefix
        self._header = header
        self._event_at = event_at
        self._next = 0  # index of the next line (line k is due at t = k seconds)
        self._header_sent = False

    def poll(self, now: float) -> bytes:
        """The header (once) and every line due up to ``now``."""
        out = bytearray()
        while self._next <= now and self._next < self._scenario.duration:
            t = float(self._next)
            self._next += 1
            state = self._scenario.state_at(t)
            if state.silent:
                continue
            clock = _CLOCK_START + timedelta(seconds=t)
            if self._header and not self._header_sent:
                self._header_sent = True
                out += f"Nonin {self._model}  {clock:%H:%M:%S %m/%d/%y}\r\n".encode("ascii")
            if state.probe_off:
                spo2: int | None = None
                hr: int | None = None
            else:
                spo2 = max(0, min(100, round(state.spo2)))
                hr = max(0, min(999, round(state.pulse_rate)))
            event = self._event_at is not None and self._event_at <= t < self._event_at + 1
            out += encode_line(
                spo2,
                hr,
                event=event,
                fast=self._fast,
                clock=f"{clock:%H:%M:%S}" if self._clock_prefix else None,
            )
        return bytes(out)

    def receive(self, data: bytes, now: float) -> None:
        """These models take no commands on the serial output."""

    def next_deadline(self) -> float | None:
        """The next whole second, until the scenario ends."""
        return float(self._next) if self._next < self._scenario.duration else None
