"""Nonin binary-format oximeter simulator (formats #2, #7, #8), byte-exact with the driver's encoder.

Speaks what an Onyx II 9560 / OEM III module sends (``device-protocols.md`` §1.1, NONIN9560):
75 frames/s (25-frame packets, 3 packets/s) in formats #2 and #7, one 4-byte packet per second in
format #8. Frame 1 of each packet carries the SYNC bit; the perfusion bits (GPRF/RPRF) are set for 12
frames per pulse at the scenario's pulse rate; ``probe_off`` sets SNSA and sends the missing markers
(HR 511, SpO2 127) in the recording values at once, while the display values (-D, and all of #8) hold
the last reading for 10 s as the spec describes; ``artifact`` sets OOT on every frame and ARTF on the
pulse frames. A valid select-format command (``02 70 02 02 ZZ 03``) received in the first 5 s is
answered with ACK 06 and the output switches format at the next packet boundary; format 13 (spot
check, not simulated) and malformed commands get NAK 15, as does nothing after 5 s (no reply at all).

Simulator choices (not spec facts): perfusion colour from the perfusion index (>= 1.0 green, >= 0.4
yellow, else red); display values update with every packet rather than every 1.5 s; the pleth is a
synthetic pulse shape with seeded noise; the firmware revision byte is 0x30.
"""

from __future__ import annotations

import random
from math import cos as _cos
from math import log as _log
from math import sin as _sin
from math import sqrt as _sqrt
from math import tau as _tau
from typing import ClassVar

from vitalwatch.drivers.base import SerialSettings
from vitalwatch.drivers.nonin import (
    ACK,
    ALWAYS,
    ARTF,
    F8_ARTF,
    F8_LPRF,
    F8_MPRF,
    F8_OOT,
    F8_SNSA,
    FRAME_RATE,
    FRAMES_PER_PACKET,
    GPRF,
    MISSING_HR,
    MISSING_SPO2,
    NAK,
    OOT,
    RPRF,
    SNSA,
    STAT2_SPA,
    SYNC,
    FloatValues,
    encode_frame,
    encode_packet8,
)
from vitalwatch.simulators.base import PatientState, Scenario

__all__ = ["NoninSimulator"]

_PULSE_FRAMES = 12  # perfusion bits are set for 12 frames (160 ms) per pulse (NONIN9560 p.9)
_DISPLAY_HOLD = 10.0  # display values keep the last reading this long after finger removal
_COMMAND = b"\x02\x70\x02\x02"
_FORMAT_BY_CODE = {0x02: 2, 0x07: 7, 0x08: 8}


def _clamp(value: float, low: int, high: int) -> int:
    return max(low, min(high, round(value)))


class NoninSimulator:
    """A Nonin oximeter in binary format #2, #7 or #8, driven by a scenario."""

    device: ClassVar[str] = "nonin"
    serial: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        *,
        data_format: int = 2,
        accept_window: float = 5.0,
        low_battery: bool = False,
    ) -> None:
        if data_format not in (2, 7, 8):
            raise ValueError(f"data_format must be 2, 7 or 8, not {data_format!r}")
        self._scenario = scenario
        self._rng = random.Random(seed)
        self._fmt = data_format
        self._accept_window = accept_window
        self._low_battery = low_battery
        self._epoch = 0.0  # time of unit 0 of the current format
        self._count = 0  # units emitted (or skipped while silent) since the epoch
        self._index = 0  # frame number within the packet (formats #2/#7)
        self._phase = self._rng.random()  # pulse phase, 0..1
        self._pulse_left = 0
        self._state: PatientState | None = None
        self._floats: tuple[int, ...] = (0,) * FRAMES_PER_PACKET
        self._last_good: tuple[int, int] | None = None
        self._off_since: float | None = None
        self._replies: list[tuple[float, bytes]] = []
        self._switch_to: int | None = None
        self._rx = bytearray()

    @property
    def data_format(self) -> int:
        """The format currently sent."""
        return self._fmt

    # -- DeviceSimulator protocol -----------------------------------------------------------

    def poll(self, now: float) -> bytes:
        """Every frame due up to ``now``, with command replies in time order between them."""
        out = bytearray()
        while True:
            t = self._unit_time()
            if self._replies and self._replies[0][0] <= min(t, now):
                out += self._replies.pop(0)[1]
                continue
            if t > now or t >= self._scenario.duration:
                break
            if self._fmt != 8 and self._switch_to is None and not self._replies:
                self._frames_until(now, out)
                continue
            out += self._unit(t)
        return bytes(out)

    def receive(self, data: bytes, now: float) -> None:
        """Parse select-format commands; the ACK/NAK comes out of the next ``poll``."""
        self._rx += data
        while True:
            start = self._rx.find(_COMMAND)
            if start < 0:
                del self._rx[: max(0, len(self._rx) - (len(_COMMAND) - 1))]
                return
            if len(self._rx) - start < 6:
                del self._rx[:start]
                return
            code, end = self._rx[start + 4], self._rx[start + 5]
            del self._rx[: start + 6]
            if now >= self._accept_window:
                continue  # the 9560 only listens during the first 5 s after connection
            fmt = _FORMAT_BY_CODE.get(code) if end == 0x03 else None
            if fmt is None:
                self._replies.append((now, bytes((NAK,))))
            else:
                self._replies.append((now, bytes((ACK,))))
                self._switch_to = fmt

    def next_deadline(self) -> float | None:
        """Time of the next frame or reply; None once the scenario is over and replies are out."""
        times = [r[0] for r in self._replies[:1]]
        t = self._unit_time()
        if t < self._scenario.duration:
            times.append(t)
        return min(times) if times else None

    # -- frames -----------------------------------------------------------------------------

    def _unit_time(self) -> float:
        period = 1.0 if self._fmt == 8 else 1.0 / FRAME_RATE
        return self._epoch + self._count * period

    def _unit(self, t: float) -> bytes:
        if self._switch_to is not None and (self._fmt == 8 or self._index == 0):
            self._fmt, self._switch_to = self._switch_to, None
            self._epoch, self._count, self._index = t, 0, 0
        self._count += 1
        if self._fmt == 8:
            now_state = self._scenario.state_at(t)
            data = self._packet8(now_state, t)
            return b"" if now_state.silent else data
        if self._index == 0:
            self._state = self._scenario.state_at(t)
            self._floats = self._float_values(self._state, t).to_bytes()
        state = self._state
        if state is None:  # cannot happen: index 0 always comes first
            state = self._scenario.state_at(t)
        frame = self._frame(state)
        self._index = (self._index + 1) % FRAMES_PER_PACKET
        return b"" if state.silent else frame

    def _frames_until(self, now: float, out: bytearray) -> None:
        """Every format #2/#7 frame due up to ``now`` into ``out``, in one loop.

        The same bytes as :meth:`_unit` frame by frame (the same clock sums, the same random
        draws in the same order), without its per-frame calls: at 75 frames/s those calls were
        most of a replay's simulator time. Only while no reply or format switch is pending.
        """
        period = 1.0 / FRAME_RATE
        duration = self._scenario.duration
        epoch, count, index = self._epoch, self._count, self._index
        rng = self._rng
        uniform, randint = rng.random, rng.randint
        # random.gauss inlined (the same Box-Muller pairs from the same random() draws, its spare
        # value kept in gauss_next as it keeps it): one call per frame was a third of the loop.
        spare: float | None = rng.gauss_next  # type: ignore[attr-defined]
        fmt2 = self._fmt == 2
        phase, pulse_left = self._phase, self._pulse_left
        floats = self._floats
        state = self._state
        packet = self._packet_constants(state) if state is not None and index != 0 else None
        while True:
            t = epoch + count * period
            if t > now or t >= duration:
                break
            count += 1
            if index == 0 or state is None or packet is None:
                state = self._scenario.state_at(t)
                self._state = state
                floats = self._floats = self._float_values(state, t).to_bytes()
                packet = self._packet_constants(state)
            probe_off, silent, step, amplitude, noise_scale, status, pulse_status = packet
            if not index:
                status |= SYNC
            if probe_off:
                pulse_left = 0
                pleth = 0x8000 + randint(-64, 64)
            else:
                phase += step
                if phase >= 1.0:
                    phase %= 1.0
                    pulse_left = _PULSE_FRAMES
                wave = phase / 0.15 if phase < 0.15 else (1.0 - (phase - 0.15) / 0.85) ** 2
                if spare is None:
                    x2pi = uniform() * _tau
                    g2rad = _sqrt(-2.0 * _log(1.0 - uniform()))
                    z = _cos(x2pi) * g2rad
                    spare = _sin(x2pi) * g2rad
                else:
                    z, spare = spare, None
                noise = (0.0 + z * 150.0) * noise_scale
                pleth = int(0x6000 + amplitude * wave + noise)
                pleth = 0 if pleth < 0 else 0xFFFF if pleth > 0xFFFF else pleth
            if pulse_left > 0:
                pulse_left -= 1
                status |= pulse_status
            float_byte = floats[index] & 0x7F
            if not silent:
                if fmt2:
                    hi = (pleth >> 8) & 0xFF
                    out += bytes((0x01, status, hi, float_byte, (0x01 + status + hi + float_byte) & 0xFF))
                else:
                    hi, lo = (pleth >> 8) & 0xFF, pleth & 0xFF
                    out += bytes((status, hi, lo, float_byte, (status + hi + lo + float_byte) & 0xFF))
            index = (index + 1) % FRAMES_PER_PACKET
        rng.gauss_next = spare  # type: ignore[attr-defined]
        self._count, self._index = count, index
        self._phase, self._pulse_left = phase, pulse_left

    def _packet_constants(self, state: PatientState) -> tuple[bool, bool, float, float, float, int, int]:
        """What every frame of a packet takes from its state (one state per packet): probe off,
        silent, the pulse phase step, the pleth amplitude and noise scale, the STATUS bits of
        every frame and those of a pulse frame (the same bits :meth:`_frame` sets)."""
        return (
            state.probe_off,
            state.silent,
            max(0.0, state.pulse_rate) / 60.0 / FRAME_RATE,
            min(90.0, 15.0 + 20.0 * state.perfusion_index) * 256,
            8.0 if state.artifact else 1.0,
            ALWAYS | (SNSA if state.probe_off else 0) | (OOT if state.artifact else 0),
            self._perfusion_bits(state) | (ARTF if state.artifact else 0),
        )

    def _display(self, state: PatientState, t: float) -> tuple[int, int]:
        """(SpO2, HR) display values: hold the last good reading for 10 s after finger removal."""
        if not state.probe_off:
            self._last_good = (_clamp(state.spo2, 0, 100), _clamp(state.pulse_rate, 0, MISSING_HR - 1))
            self._off_since = None
            return self._last_good
        if self._off_since is None:
            self._off_since = t
        if self._last_good is not None and t - self._off_since < _DISPLAY_HOLD:
            return self._last_good
        return MISSING_SPO2, MISSING_HR

    def _float_values(self, state: PatientState, t: float) -> FloatValues:
        spo2_d, hr_d = self._display(state, t)
        if state.probe_off:
            spo2, hr = MISSING_SPO2, MISSING_HR
        else:
            spo2, hr = _clamp(state.spo2, 0, 100), _clamp(state.pulse_rate, 0, MISSING_HR - 1)
        stat2 = (0 if state.probe_off or state.artifact else STAT2_SPA) | (1 if self._low_battery else 0)
        return FloatValues(
            hr=hr,
            spo2=spo2,
            hr_d=hr_d,
            spo2_d=spo2_d,
            e_hr=hr,
            e_spo2=spo2,
            e_spo2_d=spo2_d,
            e_hr_d=hr_d,
            spo2_fast=spo2,
            spo2_bb=spo2,
            timer=int(t) & 0x3FFF,
            stat2=stat2,
        )

    def _perfusion_bits(self, state: PatientState) -> int:
        if state.perfusion_index >= 1.0:
            return GPRF
        if state.perfusion_index >= 0.4:
            return GPRF | RPRF
        return RPRF

    def _frame(self, state: PatientState) -> bytes:
        status = ALWAYS | (SYNC if self._index == 0 else 0)
        if state.probe_off:
            status |= SNSA
            self._pulse_left = 0
        else:
            self._phase += max(0.0, state.pulse_rate) / 60.0 / FRAME_RATE
            if self._phase >= 1.0:
                self._phase %= 1.0
                self._pulse_left = _PULSE_FRAMES
        if state.artifact:
            status |= OOT
        if self._pulse_left > 0:
            self._pulse_left -= 1
            status |= self._perfusion_bits(state)
            if state.artifact:
                status |= ARTF
        pleth = self._pleth(state)
        if self._fmt == 2:
            return encode_frame(2, status, pleth >> 8, self._floats[self._index])
        return encode_frame(7, status, pleth, self._floats[self._index])

    def _pleth(self, state: PatientState) -> int:
        """A 16-bit synthetic pulse wave (format #2 sends its top 8 bits)."""
        if state.probe_off:
            return 0x8000 + self._rng.randint(-64, 64)
        p = self._phase
        wave = p / 0.15 if p < 0.15 else (1.0 - (p - 0.15) / 0.85) ** 2
        amplitude = min(90.0, 15.0 + 20.0 * state.perfusion_index) * 256
        noise = self._rng.gauss(0.0, 150.0) * (8.0 if state.artifact else 1.0)
        return max(0, min(0xFFFF, int(0x6000 + amplitude * wave + noise)))

    def _packet8(self, state: PatientState, t: float) -> bytes:
        spo2, hr = self._display(state, t)
        status = 0
        if state.artifact:
            status |= F8_OOT | F8_ARTF
        if not state.probe_off:
            perfusion = self._perfusion_bits(state)
            status |= {GPRF: 0, GPRF | RPRF: F8_MPRF}.get(perfusion, F8_LPRF)
        status2 = (F8_SNSA if state.probe_off else 0) | (1 if self._low_battery else 0)
        if not (state.probe_off or state.artifact):
            status2 |= STAT2_SPA
        return encode_packet8(status, hr, spo2, status2)
