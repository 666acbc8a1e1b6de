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

import itertools
import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from math import cos as _cos
from math import log as _log
from math import sin as _sin
from math import sqrt as _sqrt
from math import tau as _tau
from typing import Any, ClassVar

import numpy as np

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
from vitalwatch.simulators.mt_words import WordStream, doubles
from vitalwatch.simulators.scenarios import columns_at

__all__ = ["NoninSimulator"]

_PULSE_FRAMES = 12  # perfusion bits are set for 12 frames (160 ms) per pulse (NONIN9560 p.9)
_DISPLAY_HOLD = 10.0  # display values keep the last reading this long after finger removal
_COMMAND = b"\x02\x70\x02\x02"
_FORMAT_BY_CODE = {0x02: 2, 0x07: 7, 0x08: 8}
# Formats #2/#7 are made this far ahead of the time polled (NoninSimulator._frames_ahead), and
# at most this much at once: long enough that numpy's per-call cost vanishes, short enough that
# the first poll of a live simulator stays quick. Undoing the rest after a command
# (NoninSimulator._settle) costs the frames handed out, not the frames made.
_AHEAD_S = 240.0
_AHEAD_MAX_S = 480.0
# The pulse phase is summed this many frames at a time (NoninSimulator._pulse_phases): a pulse
# takes about 62 frames at 72/min and 225 at the scenarios' slowest rate, 20/min.
_PHASE_WINDOW = 256
# A pleth value numpy worked out closer than this to an integer is worked out again with
# Python's math (numpy's sin, cos and log may differ from the C library's in the last bit).
_NEAR_INTEGER = 1e-6
# The NoninSimulator attributes that making frames changes (besides the random generator).
_REWOUND = ("_count", "_index", "_phase", "_pulse_left", "_state", "_floats", "_last_good", "_off_since")

_Bools = np.ndarray[Any, np.dtype[np.bool_]]
_Floats = np.ndarray[Any, np.dtype[np.float64]]
_Ints = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(slots=True)
class _Ahead:
    """Frames made ahead of time: their times, their bytes (a silent frame has none), and the
    simulator's state before them (to undo the rest when a command changes what comes next)."""

    times: list[float]
    offsets: list[int] | None  # where each frame's bytes start in data, then the end (None: 5 * frame)
    data: bytes
    before: tuple[tuple[Any, ...], Any]
    taken: int = 0

    def hand_out(self, now: float, out: bytearray) -> bool:
        """The frames due by ``now`` into ``out``; True once every frame is handed out."""
        out += self.take(now)
        return self.taken == len(self.times)

    def take(self, now: float) -> bytes:
        """The frames due by ``now`` and not handed out yet."""
        start, done = self.taken, bisect_right(self.times, now, self.taken)
        self.taken = done
        if self.offsets is None:
            return self.data[5 * start : 5 * done]
        return self.data[self.offsets[start] : self.offsets[done]]


def _clamp(value: float, low: int, high: int) -> int:
    return max(low, min(high, round(value)))


def _float_values(key: tuple[int, ...], timer: int) -> FloatValues:
    """What a packet's FLOAT bytes say, from (hr, spo2, hr_d, spo2_d, stat2): the extended and
    fast values repeat the plain ones."""
    hr, spo2, hr_d, spo2_d, stat2 = key
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
        timer=timer,
        stat2=stat2,
    )


def _timer_flips() -> _Ints:
    """The FLOAT bytes each of the timer's 14 bits flips, from the driver's encoder."""
    zero = FloatValues(timer=0).to_bytes()
    flips = [
        [a ^ b for a, b in zip(FloatValues(timer=1 << bit).to_bytes(), zero, strict=True)]
        for bit in range(_TIMER_BITS)
    ]
    return np.array(flips, dtype=np.int64)


# The encoder lays the timer out bit for bit in bytes of its own (FloatValues.to_bytes), so a
# packet's FLOAT bytes are those with the timer at 0, each set timer bit's flips XORed in: the
# values are encoded once per set of values, not once a second. tests/simulators/test_fast_paths.py
# checks every timer value against the encoder.
_TIMER_BITS = 14
_TIMER_FLIPS = _timer_flips()
_TIMER_BYTES = np.flatnonzero(_TIMER_FLIPS.any(axis=0))  # the bytes that carry the timer


def _timer_floats(timers: _Ints) -> _Ints:
    """For each timer (0..0x3FFF), the XOR of its set bits' flips: (timers, 25)."""
    bits = (timers[:, None] >> np.arange(_TIMER_BITS)) & 1
    flips = np.zeros((len(timers), FRAMES_PER_PACKET), dtype=np.int64)
    per_bit = bits[:, :, None] * _TIMER_FLIPS[None, :, _TIMER_BYTES]
    flips[:, _TIMER_BYTES] = np.bitwise_xor.reduce(per_bit, axis=1)
    return flips


def _clamps(values: _Floats, low: int, high: int) -> _Ints:
    """:func:`_clamp` of each (finite) value: numpy's rint rounds half to even, as round does."""
    return np.clip(np.rint(values), low, high).astype(np.int64)


@dataclass(slots=True)
class _Packets:
    """What the frames of consecutive packets take from each packet's state, one entry per packet:
    the columns of :meth:`NoninSimulator._packet_constants` and the 25 FLOAT bytes."""

    probe_off: _Bools
    silent: _Bools
    step: _Floats
    amplitude: _Floats
    noise_scale: _Floats
    status: _Ints
    pulse_status: _Ints
    floats: _Ints  # (packets, 25)

    @classmethod
    def one(
        cls, constants: tuple[bool, bool, float, float, float, int, int], floats: tuple[int, ...]
    ) -> _Packets:
        """A single packet, from its constants and FLOAT bytes."""
        probe_off, silent, step, amplitude, noise_scale, status, pulse_status = constants
        return cls(
            np.array([probe_off], dtype=np.bool_),
            np.array([silent], dtype=np.bool_),
            np.array([step], dtype=np.float64),
            np.array([amplitude], dtype=np.float64),
            np.array([noise_scale], dtype=np.float64),
            np.array([status], dtype=np.int64),
            np.array([pulse_status], dtype=np.int64),
            np.array([floats], dtype=np.int64),
        )

    def then(self, more: _Packets) -> _Packets:
        """These packets followed by ``more``."""
        return _Packets(
            np.concatenate((self.probe_off, more.probe_off)),
            np.concatenate((self.silent, more.silent)),
            np.concatenate((self.step, more.step)),
            np.concatenate((self.amplitude, more.amplitude)),
            np.concatenate((self.noise_scale, more.noise_scale)),
            np.concatenate((self.status, more.status)),
            np.concatenate((self.pulse_status, more.pulse_status)),
            np.concatenate((self.floats, more.floats)),
        )


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
        self._ahead: _Ahead | None = None
        self._float_key: tuple[int, ...] = ()  # the values _float_memo was encoded from
        self._float_memo: tuple[int, ...] = ()
        self._untimed: dict[tuple[int, ...], int] = {}  # see _untimed_row
        self._untimed_table: _Ints = np.zeros((0, FRAMES_PER_PACKET), dtype=np.int64)
        self._words = WordStream()

    @property
    def data_format(self) -> int:
        """The format currently sent."""
        return self._fmt

    # -- DeviceSimulator protocol -----------------------------------------------------------

    def poll(self, now: float) -> bytes:
        """Every frame due up to ``now``, with command replies in time order between them."""
        ahead = self._ahead
        if ahead is not None and now < ahead.times[-1]:
            return ahead.take(now)  # frames made ahead are left after these: nothing else is due
        out = bytearray()
        while True:
            if self._ahead is not None:
                if not self._ahead.hand_out(now, out):
                    break
                self._ahead = None  # every frame made ahead is out: the state is the simulator's again
                continue
            t = self._unit_time()
            if self._replies and self._replies[0][0] <= min(t, now):
                out += self._replies.pop(0)[1]
                continue
            if t > now or t >= self._scenario.duration:
                break
            if self._fmt != 8 and self._switch_to is None and not self._replies:
                self._ahead = self._frames_ahead(min(max(now, t + _AHEAD_S), t + _AHEAD_MAX_S))
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
            self._settle()  # what comes next changes: frames made ahead are made again
            if fmt is None:
                self._replies.append((now, bytes((NAK,))))
            else:
                self._replies.append((now, bytes((ACK,))))
                self._switch_to = fmt

    def next_deadline(self) -> float | None:
        """Time of the next frame or reply; None once the scenario is over and replies are out."""
        if self._ahead is not None:
            return self._ahead.times[self._ahead.taken]
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
            self._floats = self._float_bytes(self._state, t)
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
                floats = self._floats = self._float_bytes(state, t)
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

    def _frames_ahead(self, until: float) -> _Ahead:
        """Every format #2/#7 frame from the next one up to ``until`` (and before the end), at once.

        The same bytes as :meth:`_frames_until` (the same clock sums, packet states, random draws
        and arithmetic), with the work done by numpy: the packet states, display values and FLOAT
        bytes for every packet at once (:meth:`_packets`), the draws from the same Mersenne
        Twister in bulk (:mod:`vitalwatch.simulators.mt_words`), the pulse phase as running sums
        (:meth:`_pulse_phases`), the pleth and the frames as array arithmetic. The simulator's
        state afterwards is that after the last of them; :meth:`_settle` undoes the frames not
        handed out yet. Only while no reply or format switch is pending.
        """
        before = self._state_now()
        period = 1.0 / FRAME_RATE
        epoch, first, index = self._epoch, self._count, self._index
        counts = np.arange(first, first + int((until - epoch) / period) - first + 2, dtype=np.float64)
        all_times = epoch + counts * period
        n = int(np.count_nonzero((all_times <= until) & (all_times < self._scenario.duration)))
        frame_times = all_times[:n]
        touched = (index + n + FRAMES_PER_PACKET - 1) // FRAMES_PER_PACKET  # packets these frames are in
        of = np.repeat(np.arange(touched), FRAMES_PER_PACKET)[index : index + n]  # packet of each frame
        at = np.tile(np.arange(FRAMES_PER_PACKET), touched)[index : index + n]  # its place in the packet
        starts = np.arange(1 if index else 0, touched) * FRAMES_PER_PACKET - index  # frames of a new packet
        if index and n and self._state is None:
            starts = np.concatenate(([0], starts))  # as _frames_until: the first frame gets a state
        packets = self._packets(frame_times[starts])
        if index and n and self._state is not None:  # the frames before the next packet finish this one
            packets = _Packets.one(self._packet_constants(self._state), self._floats).then(packets)
        if starts.size:
            self._state = self._scenario.state_at(float(frame_times[starts[-1]]))
            self._floats = tuple(packets.floats[-1].tolist())
        probe_off = packets.probe_off[of]
        phases, pulse = self._pulse_phases(probe_off, packets.step[of])
        pleth = self._plethysmogram(phases, probe_off, packets.amplitude[of], packets.noise_scale[of])
        status = packets.status[of] | np.where(at == 0, SYNC, 0)
        status |= np.where(pulse, packets.pulse_status[of], 0)
        float_bytes = packets.floats[of, at] & 0x7F
        hi = (pleth >> 8) & 0xFF
        frames = np.empty((n, 5), dtype=np.uint8)
        if self._fmt == 2:
            frames[:, 0], frames[:, 1], frames[:, 2] = 0x01, status, hi
            frames[:, 4] = (0x01 + status + hi + float_bytes) & 0xFF
        else:
            lo = pleth & 0xFF
            frames[:, 0], frames[:, 1], frames[:, 2] = status, hi, lo
            frames[:, 4] = (status + hi + lo + float_bytes) & 0xFF
        frames[:, 3] = float_bytes
        silent = packets.silent[of]
        offsets = None
        if silent.any():
            frames = frames[~silent]
            offsets = [0, *np.cumsum(~silent * 5).tolist()]
        self._count, self._index = first + n, (index + n) % FRAMES_PER_PACKET
        return _Ahead(frame_times.tolist(), offsets, frames.tobytes(), before)

    def _packets(self, times: _Floats) -> _Packets:
        """The packets starting at ``times``, in order: :meth:`_packet_constants` and
        :meth:`_float_bytes` (with its display hold) for all of them at once, the same numbers.
        Leaves the display hold and the FLOAT memo as after the last of them."""
        values, flags = columns_at(self._scenario, times)
        spo2, rate, perfusion = values[0], values[1], values[2]
        probe_off, artifact, silent = flags[0], flags[1], flags[2]
        on = ~probe_off
        for k in np.flatnonzero(on & ~(np.isfinite(spo2) & np.isfinite(rate))).tolist():
            _clamp(float(spo2[k]), 0, 100)  # NaN or infinite: raises as _display does
            _clamp(float(rate[k]), 0, MISSING_HR - 1)
        spo2_on = _clamps(np.where(on, spo2, 0.0), 0, 100)
        hr_on = _clamps(np.where(on, rate, 0.0), 0, MISSING_HR - 1)
        spo2_d, hr_d = self._displays(times, probe_off, spo2_on, hr_on)
        stat2 = np.where(probe_off | artifact, 0, STAT2_SPA) | (1 if self._low_battery else 0)
        hr, spo2 = np.where(on, hr_on, MISSING_HR), np.where(on, spo2_on, MISSING_SPO2)
        keys = np.stack((hr, spo2, hr_d, spo2_d, stat2), axis=1)
        changed = np.ones(len(times), dtype=np.bool_)
        changed[1:] = (keys[1:] != keys[:-1]).any(axis=1)
        rows = [self._untimed_row(tuple(key)) for key in keys[changed].tolist()]
        floats = self._untimed_table[np.array(rows, dtype=np.intp)[np.cumsum(changed) - 1]]
        floats ^= _timer_floats(times.astype(np.int64) & 0x3FFF)
        amplitude = 15.0 + 20.0 * perfusion
        perfusion_bits: _Ints = np.where(
            perfusion >= 1.0, GPRF, np.where(perfusion >= 0.4, GPRF | RPRF, RPRF)
        )  # _perfusion_bits
        return _Packets(
            probe_off=probe_off,
            silent=silent,
            step=np.where(rate > 0.0, rate, 0.0) / 60.0 / FRAME_RATE,  # max(0.0, rate), NaN included
            amplitude=np.where(amplitude < 90.0, amplitude, 90.0) * 256,  # min(90.0, amplitude)
            noise_scale=np.where(artifact, 8.0, 1.0),
            status=ALWAYS | np.where(probe_off, SNSA, 0) | np.where(artifact, OOT, 0),
            pulse_status=perfusion_bits | np.where(artifact, ARTF, 0),
            floats=floats,
        )

    def _displays(self, times: _Floats, probe_off: _Bools, spo2: _Ints, hr: _Ints) -> tuple[_Ints, _Ints]:
        """:meth:`_display` for consecutive packets (``spo2``/``hr`` clamped, read where the probe
        is on): a Python step only for the probe-off packets, which hold or lose the last reading."""
        spo2_d, hr_d = spo2.copy(), hr.copy()
        last_good, off_since = self._last_good, self._off_since
        for k in np.flatnonzero(probe_off).tolist():
            if k and not probe_off[k - 1]:
                last_good, off_since = (int(spo2[k - 1]), int(hr[k - 1])), None
            t = float(times[k])
            if off_since is None:
                off_since = t
            held = last_good is not None and t - off_since < _DISPLAY_HOLD
            spo2_d[k], hr_d[k] = last_good if held and last_good is not None else (MISSING_SPO2, MISSING_HR)
        if len(times) and not probe_off[-1]:
            last_good, off_since = (int(spo2[-1]), int(hr[-1])), None
        self._last_good, self._off_since = last_good, off_since
        return spo2_d, hr_d

    def _pulse_phases(self, probe_off: _Bools, steps: _Floats) -> tuple[_Floats, _Bools]:
        """The pulse phase after each frame and whether the frame carries the perfusion bits.

        The phase is a running sum that wraps at 1.0: the one part of a frame that depends on
        the one before. Between two wraps it is numpy's running sum (``add.accumulate`` adds one
        term at a time, in order, as ``phase += step`` does; the phase so far is added to the
        first term, the same sum; a probe-off frame adds 0.0, which leaves it as it is); each wrap
        is Python's ``%`` and the sum starts again from there, so numpy calls go by pulses, not
        frames. A pulse sets the perfusion bits for 12 frames from the wrap, cut short by a
        probe-off frame.
        """
        n = len(steps)
        added = np.where(probe_off, 0.0, steps)  # the terms, the running phase added to the first
        phases = np.empty(n)
        phase = self._phase
        wraps: list[int] = []
        k = 0
        while k < n:
            added[k] += phase
            sums = phases[k : k + _PHASE_WINDOW]
            np.add.accumulate(added[k : k + _PHASE_WINDOW], out=sums)
            r = int(sums.searchsorted(1.0))  # the first sum >= 1.0 (the sums never fall)
            if r == len(sums):
                phase, k = float(sums[-1]), k + r
                continue
            phase = sums[r] = float(sums[r]) % 1.0
            wraps.append(k + r)
            k += r + 1
        self._phase = phase
        # The perfusion runs: from the pulse left over, then from each wrap, to a probe-off frame.
        offs = np.flatnonzero(probe_off)
        starts = np.array(([0] if self._pulse_left else []) + wraps, dtype=np.int64)
        ends = starts + _PULSE_FRAMES
        if self._pulse_left:
            ends[0] = self._pulse_left
        if len(offs):
            after = np.searchsorted(offs, starts)
            ends = np.where(after < len(offs), np.minimum(ends, offs[np.minimum(after, len(offs) - 1)]), ends)
        ends = np.minimum(ends, n)
        edges = np.bincount(starts, minlength=n + 1) - np.bincount(ends, minlength=n + 1)
        pulse: _Bools = np.cumsum(edges[:n]) > 0
        last_off = int(offs[-1]) if len(offs) else -1
        if last_off > (wraps[-1] if wraps else -1):
            self._pulse_left = 0
        elif wraps:
            self._pulse_left = max(0, _PULSE_FRAMES - (n - wraps[-1]))
        else:
            self._pulse_left = max(0, self._pulse_left - n)
        return phases, pulse

    def _plethysmogram(
        self, phases: _Floats, probe_off: _Bools, amplitude: _Floats, noise_scale: _Floats
    ) -> _Ints:
        """The 16-bit pleth of each frame, with the random draws in _frames_until's order: a
        probe-off frame takes ``randint(-64, 64)``, any other one ``gauss`` value (pairs of them
        from Box-Muller, the second kept for the next frame)."""
        n = len(phases)
        words = self._words
        words.load(self._rng)
        spare: float | None = self._rng.gauss_next  # type: ignore[attr-defined]
        z = np.zeros(n)
        # The runs of frames drawn in pairs: (first frame, end, the pairs' first and second random()).
        drawn_runs: list[tuple[int, int, _Floats, _Floats]] = []
        pleth = np.zeros(n, dtype=np.int64)
        edges = [0, *(np.flatnonzero(np.diff(probe_off)) + 1).tolist(), n] if n else [0]
        for start, b in itertools.pairwise(edges):
            a = start
            if probe_off[a]:
                pleth[a:b] = 0x8000 - 64 + self._below_129(words, b - a)
                continue
            if spare is not None:
                z[a], spare, a = spare, None, a + 1
            count = b - a
            if count <= 0:
                continue
            pairs = (count + 1) // 2
            u = doubles(words.words(4 * pairs))
            first, then = u[0::2], u[1::2]
            x2pi = first * _tau
            g2rad = np.sqrt(-2.0 * np.log(1.0 - then))
            drawn = np.empty(2 * pairs)
            drawn[0::2] = np.cos(x2pi) * g2rad
            drawn[1::2] = np.sin(x2pi) * g2rad
            z[a:b] = drawn[:count]
            drawn_runs.append((a, b, first, then))
            if count % 2:
                spare = _sin(float(x2pi[-1])) * _sqrt(-2.0 * _log(1.0 - float(then[-1])))
        words.hand_back(self._rng, spare)
        if not n:
            return pleth
        wave = np.where(phases < 0.15, phases / 0.15, (1.0 - (phases - 0.15) / 0.85) ** 2)
        x = 0x6000 + amplitude * wave + (0.0 + z * 150.0) * noise_scale
        near = np.abs(x - np.rint(x)) < _NEAR_INTEGER  # where numpy's last bit could change int()
        pulsed = np.clip(x.astype(np.int64), 0, 0xFFFF)
        if probe_off.any():
            pulsed = np.where(probe_off, pleth, pulsed)
            near &= ~probe_off
        pleth = pulsed
        run_starts = [run[0] for run in drawn_runs]
        for f in np.flatnonzero(near).tolist():
            u1 = u2 = math.nan  # a value kept from an earlier pair: z is Python's already
            second = False
            i = bisect_right(run_starts, f) - 1
            if i >= 0 and f < drawn_runs[i][1]:
                a, _, first, then = drawn_runs[i]
                u1, u2, second = float(first[(f - a) // 2]), float(then[(f - a) // 2]), (f - a) % 2 == 1
            pleth[f] = self._exact_pleth(
                float(phases[f]),
                float(z[f]),
                u1,
                u2,
                second=second,
                amplitude=float(amplitude[f]),
                noise_scale=float(noise_scale[f]),
            )
        return pleth

    @staticmethod
    def _below_129(words: WordStream, count: int) -> _Ints:
        """``count`` draws of ``randint(-64, 64) + 64``: ``getrandbits(8)`` (a word's top byte)
        until it is below 129. Drawing only as many words as draws are still missing takes
        exactly the words the one-at-a-time loop takes, rejected ones included."""
        kept: list[_Ints] = []
        missing = count
        while missing:
            top = (words.words(missing) >> 24).astype(np.int64)
            good = top[top < 129]
            kept.append(good)
            missing -= len(good)
        return np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)

    @staticmethod
    def _exact_pleth(
        phase: float, z: float, u1: float, u2: float, *, second: bool, amplitude: float, noise_scale: float
    ) -> int:
        """One frame's pleth with Python's math, as _frames_until works it out (``u1`` NaN: ``z``
        is the value kept from an earlier pair, already Python's)."""
        if not math.isnan(u1):
            g2rad = _sqrt(-2.0 * _log(1.0 - u2))
            z = (_sin if second else _cos)(u1 * _tau) * g2rad
        wave = phase / 0.15 if phase < 0.15 else (1.0 - (phase - 0.15) / 0.85) ** 2
        pleth = int(0x6000 + amplitude * wave + (0.0 + z * 150.0) * noise_scale)
        return 0 if pleth < 0 else 0xFFFF if pleth > 0xFFFF else pleth

    def _state_now(self) -> tuple[tuple[Any, ...], Any]:
        """Everything the frames change, to go back to (:meth:`_settle`): the attributes and the
        random generator's state."""
        return tuple(getattr(self, name) for name in _REWOUND), self._rng.getstate()

    def _settle(self) -> None:
        """Drop the frames made ahead and not handed out yet: the state becomes that after the last
        one handed out (the state before them, then those frames again, one by one)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead.taken == len(ahead.times):
            return
        values, rng_state = ahead.before
        for name, value in zip(_REWOUND, values, strict=True):
            setattr(self, name, value)
        self._rng.setstate(rng_state)
        if ahead.taken:
            self._frames_until(ahead.times[ahead.taken - 1], bytearray())

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

    def _float_bytes(self, state: PatientState, t: float) -> tuple[int, ...]:
        """The packet's 25 FLOAT bytes; encoded again only when one of the values changed (three
        packets a second mostly repeat the one before)."""
        spo2_d, hr_d = self._display(state, t)
        if state.probe_off:
            spo2, hr = MISSING_SPO2, MISSING_HR
        else:
            spo2, hr = _clamp(state.spo2, 0, 100), _clamp(state.pulse_rate, 0, MISSING_HR - 1)
        stat2 = (0 if state.probe_off or state.artifact else STAT2_SPA) | (1 if self._low_battery else 0)
        return self._encoded_floats((hr, spo2, hr_d, spo2_d, int(t) & 0x3FFF, stat2))

    def _untimed_row(self, key: tuple[int, ...]) -> int:
        """The row of ``_untimed_table`` holding the 25 FLOAT bytes of ``key`` (hr, spo2, hr_d,
        spo2_d, stat2) with the timer at 0: encoded by the driver's encoder once per key (a
        session has a few dozen)."""
        row = self._untimed.get(key)
        if row is None:
            row = self._untimed[key] = len(self._untimed)
            self._untimed_table = np.vstack((self._untimed_table, _float_values(key, 0).to_bytes()))
        return row

    def _encoded_floats(self, key: tuple[int, ...]) -> tuple[int, ...]:
        """The 25 FLOAT bytes of ``key`` (hr, spo2, hr_d, spo2_d, timer, stat2), by the driver's
        encoder; encoded again only when the key is not the one before."""
        if key != self._float_key:
            self._float_key = key
            self._float_memo = _float_values(key[:4] + key[5:], key[4]).to_bytes()
        return self._float_memo

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
