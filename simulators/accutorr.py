"""Datascope ACCUTORR 3 simulator: answers ``P`` and ``C`` like the monitor, takes its own NIBP.

Lines are made by :func:`vitalwatch.drivers.accutorr.encode_patient_data`, the inverse of the
driver's parser. The monitor measures NIBP by itself every ``nibp_interval_min`` minutes
(first one at ``t = 0``) and reports the minutes since the last one. Scenario conditions:

- ``probe_off``: SaO2 and pulse ``--``, status 0 bit 1 (sensor off).
- ``artifact``: status 0 bit 2 (interference); values still shown.
- ``cuff_error`` at a measurement time: that measurement fails, SYS/MEAN/DIA ``--`` and
  status 2 bit 1 (NIBP motion artifact, the usual cause) until the next good one.
- ``silent``: commands are not heard and nothing is sent.
"""

from __future__ import annotations

import math
from typing import ClassVar

from vitalwatch.drivers.accutorr import PatientData, StatusFormat, encode_patient_data
from vitalwatch.drivers.base import SerialSettings
from vitalwatch.simulators.base import Scenario

__all__ = ["AccutorrSimulator"]


class AccutorrSimulator:
    """The monitor side of an ACCUTORR 3 ASCII conversation, in scenario time."""

    device: ClassVar[str] = "accutorr"
    serial: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        *,
        nibp_interval_min: float = 5.0,
        status_format: StatusFormat = "decimal",
        reply_delay_s: float = 0.05,
        max_command_bytes: int = 64,
    ) -> None:
        """``seed`` is accepted for the common constructor; this device has no randomness."""
        if nibp_interval_min <= 0:
            raise ValueError("nibp_interval_min must be positive")
        self._scenario = scenario
        self._interval = nibp_interval_min * 60.0
        self._format: StatusFormat = status_format
        self._delay = reply_delay_s
        self._max_cmd = max_command_bytes  # bound on bytes kept while looking for a letter
        self._pending: list[tuple[float, bytes]] = []
        self._nibp_at: float | None = None  # time of the last measurement already taken
        self._nibp: tuple[int | None, int | None, int | None] = (None, None, None)
        self._nibp_failed = False

    def receive(self, data: bytes, now: float) -> None:
        """``P`` -> patient data line, ``C`` -> ``>`` prompt; CR, LF and other bytes ignored."""
        if not data or self._scenario.state_at(now).silent:
            return
        for byte in data[-self._max_cmd :]:
            if byte in b"Pp":
                self._pending.append((now + self._delay, encode_patient_data(self._data(now), self._format)))
            elif byte in b"Cc":
                self._pending.append((now + self._delay, b">\r\n"))

    def poll(self, now: float) -> bytes:
        """Replies due by ``now``; nothing while the scenario is silent."""
        due = [data for at, data in self._pending if at <= now]
        self._pending = [(at, data) for at, data in self._pending if at > now]
        if self._scenario.state_at(now).silent:
            return b""
        return b"".join(due)

    def next_deadline(self) -> float | None:
        """The next reply; the monitor never speaks unasked."""
        return min((at for at, _ in self._pending), default=None)

    def _data(self, now: float) -> PatientData:
        self._measure_nibp(now)
        state = self._scenario.state_at(now)
        st0 = st2 = 0
        if state.probe_off:
            sao2: int | None = None
            pr: int | None = None
            st0 |= 1 << 1
        else:
            sao2 = max(0, min(100, round(state.spo2)))
            pr = max(0, min(999, round(state.pulse_rate)))
        if state.artifact:
            st0 |= 1 << 2
        if self._nibp_failed:
            st2 |= 1 << 1
        assert self._nibp_at is not None  # _measure_nibp always takes the t=0 one first
        minutes = min(999, int((now - self._nibp_at) // 60))
        sys_, mean, dia = self._nibp
        return (sao2, pr, sys_, mean, dia, st0, 0, st2, minutes)

    def _measure_nibp(self, now: float) -> None:
        """Take the latest scheduled measurement not yet taken (at multiples of the interval)."""
        latest = math.floor(max(0.0, now) / self._interval) * self._interval
        if self._nibp_at is not None and latest <= self._nibp_at:
            return
        self._nibp_at = latest
        state = self._scenario.state_at(latest)
        self._nibp_failed = state.cuff_error
        if state.cuff_error:
            self._nibp = (None, None, None)
        else:
            self._nibp = (_mmhg(state.systolic), _mmhg(state.mean), _mmhg(state.diastolic))


def _mmhg(value: float) -> int:
    """A pressure as the 3-digit field prints it."""
    return max(0, min(999, round(value)))
