"""SunTech Advantage OEM NIBP module simulator: measures only when the host says START_BP.

Speaks the bytes of :mod:`vitalwatch.drivers.suntech` (its encoders, so one truth makes and
reads every packet). A cycle lasts 20-40 s (drawn from the seed); the cuff pressure rises
to the systolic + 40 mmHg during the first quarter, then falls back to near zero. At the end
the module sends ``3E 04 4B 73`` ('K', complete) and answers GET_BP_DATA with the reading
the scenario held at that moment. Scenario conditions:

- ``cuff_error`` at the end of the cycle: the BP data carries ``cuff_error_code`` (the real
  error table is [unconfirmed]) and zero pressures.
- ``silent``: commands are not heard and nothing is sent (the cable is out).
"""

from __future__ import annotations

import random
from typing import ClassVar

from vitalwatch.drivers.base import SerialSettings
from vitalwatch.drivers.suntech import (
    COMPLETE_PACKET,
    GET_BP_DATA,
    GET_CUFF_PRESSURE,
    START_BP,
    SuntechResult,
    encode_bp_data,
    encode_cuff_pressure,
    split_commands,
)
from vitalwatch.simulators.base import Scenario

__all__ = ["SuntechSimulator"]


def _u16(value: float) -> int:
    """A pressure as the module's unsigned 16-bit field."""
    return max(0, min(0xFFFF, round(value)))


class SuntechSimulator:
    """The module side of a SunTech conversation, in scenario time."""

    device: ClassVar[str] = "suntech"
    serial: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        *,
        min_cycle_s: float = 20.0,
        max_cycle_s: float = 40.0,
        cuff_error_code: int = 1,
        reply_delay_s: float = 0.05,
    ) -> None:
        """``reply_delay_s``: a 9600-baud reply of up to 24 bytes takes ~25 ms on the wire."""
        if not 0 < min_cycle_s <= max_cycle_s:
            raise ValueError("need 0 < min_cycle_s <= max_cycle_s")
        if not 1 <= cuff_error_code <= 0xFF:
            raise ValueError("cuff_error_code must be 1..255")
        self._scenario = scenario
        self._rng = random.Random(seed)
        self._min_cycle = min_cycle_s
        self._max_cycle = max_cycle_s
        self._error_code = cuff_error_code
        self._delay = reply_delay_s
        self._pending: list[tuple[float, bytes]] = []  # (due time, bytes), in due order
        self._cycle: tuple[float, float, float] | None = None  # start, end, peak pressure
        self._result: SuntechResult | None = None

    def receive(self, data: bytes, now: float) -> None:
        """Act on START_BP, GET_CUFF_PRESSURE and GET_BP_DATA (unknown bytes are ignored)."""
        if not data or self._scenario.state_at(now).silent:
            return
        for cmd in split_commands(data):
            if cmd == START_BP and self._cycle is None:
                state = self._scenario.state_at(now)
                duration = self._rng.uniform(self._min_cycle, self._max_cycle)
                self._cycle = (now, now + duration, state.systolic + 40.0)
            elif cmd == GET_CUFF_PRESSURE:
                self._send(now, encode_cuff_pressure(round(self._pressure(now))))
            elif cmd == GET_BP_DATA and self._result is not None:
                self._send(now, encode_bp_data(self._result))

    def poll(self, now: float) -> bytes:
        """Replies and the complete packet due by ``now``; nothing while the scenario is silent."""
        self._finish_cycle(now)
        due = [data for at, data in self._pending if at <= now]
        if not due:
            return b""  # nothing due (most polls): no need to ask the scenario whether it is silent
        self._pending = [(at, data) for at, data in self._pending if at > now]
        if self._scenario.state_at(now).silent:
            return b""
        return b"".join(due)

    def next_deadline(self) -> float | None:
        """The next reply, or the end of the running cycle."""
        times = [at for at, _ in self._pending]
        if self._cycle is not None:
            times.append(self._cycle[1])
        return min(times) if times else None

    def _send(self, now: float, data: bytes) -> None:
        self._pending.append((now + self._delay, data))

    def _pressure(self, now: float) -> float:
        """Cuff mmHg: linear rise over the first quarter of the cycle, linear fall to ~5 mmHg."""
        if self._cycle is None:
            return 0.0
        start, end, peak = self._cycle
        rise_end = start + (end - start) / 4
        if now <= rise_end:
            return peak * max(0.0, now - start) / (rise_end - start)
        return max(5.0, peak - (peak - 5.0) * (now - rise_end) / (end - rise_end))

    def _finish_cycle(self, now: float) -> None:
        if self._cycle is None or now < self._cycle[1]:
            return
        start, end, _ = self._cycle
        self._cycle = None
        state = self._scenario.state_at(end)
        if state.cuff_error:
            self._result = SuntechResult(0, 0, 0, 0, error_code=self._error_code)
        else:
            hr = round(state.pulse_rate)
            self._result = SuntechResult(
                systolic=_u16(state.systolic),
                diastolic=_u16(state.diastolic),
                mean=_u16(state.mean),
                heart_rate=max(0, min(255, hr)),
                beats=max(0, min(255, round(hr * (end - start) * 0.75 / 60))),
                bp_status=0x01,  # what the one real sample carries
            )
        self._pending.append((end, COMPLETE_PACKET))
        self._pending.sort(key=lambda item: item[0])
