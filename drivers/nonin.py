"""Nonin binary serial data formats #2, #7 and #8 (Onyx II 9560, OEM III module, WristOx2 3150).

Sources: NONIN9560 = Nonin "Onyx II Model 9560 ... OEM Specification and Technical Information"
(pp.4-5 commands, pp.8-11 format #2, pp.12-15 format #7, pp.16-17 format #8); PUFFER = the Apache-2.0
OEM III driver in pez-globo/pufferfish-software (bit 6 = SNSD, sync rule, HR formula). Summary and
links in ``device-protocols.md`` §1.1.

Layout::

    format #2 frame (5 bytes, 25 frames = 1 packet, 75 frames/s = 3 packets/s)
      01 | STATUS | PLETH | FLOAT | CHK          CHK = sum(bytes 1-4) mod 256
    format #7 frame (5 bytes, same packet and FLOAT layout, no 0x01 start byte)
      STATUS | PLETH MSB | PLETH LSB | FLOAT | CHK
    STATUS (active high): b7 always 1 | b6 SNSD (OEM III; reserved on 9560) | b5 ARTF | b4 OOT
                          | b3 SNSA | b2 RPRF | b1 GPRF | b0 SYNC (frame 1 of a packet only)
    FLOAT by frame (1-based): 1 HR MSB, 2 HR LSB, 3 SpO2, 4 SREV, 6/7 TMR, 8 STAT2 (b5 SPA, b0 LOW BAT),
      9 SpO2-D, 10 SpO2 fast, 11 SpO2 B-B, 14/15 E-HR, 16 E-SpO2, 17 E-SpO2-D, 20/21 HR-D, 22/23 E-HR-D
    HR (9 bits) = ((MSB & 0x03) << 7) | (LSB & 0x7F); missing HR 511, missing SpO2 127

    format #8 packet (4 bytes, once a second, no checksum, display values)
      STATUS (b7 1, b5 OOT, b4 LPRF, b3 MPRF, b2 ARTF, b1 HR8, b0 HR7) | HR6..0 | SpO2 | STATUS2 (b5 SPA,
      b3 SNSA, b0 LOW BAT)

    select format (9560, host → device, first 5 s only): 02 70 02 02 ZZ 03   ZZ = 02, 07, 08 or 0D
      reply: ACK 06 or NAK 15

Decisions (each one a documented choice, not a spec fact):

- **Recording values, not display values.** Formats #2/#7 report HR (frames 1-2) and SpO2 (frame 3),
  the 4-beat "recording" values that update every 1/3 s and go to the missing marker at once when the
  finger comes out. The "-D" display values hold the last reading for 10 s after finger removal, so
  an alarm engine reading them would see a stale normal SpO2 on a patient with no sensor. Format #8
  only has display values, so there a value is reported as ``None`` while SNSA is set (SNSA gating).
- **Observation rate.** Values are decoded when frame 3 of a packet arrives (3 times a second for
  #2/#7) but reported at most once per one-second slot of ``now`` (``report_interval``): the slot grid
  starts at the first report, so a jittery 1/3 s packet clock still yields one report per second.
  A change between "value" and "no value" (``None``) is reported at once and restarts the grid, so a
  finger coming out is never delayed. Format #8 packets already come once a second and are all reported.
- **Pleth** samples are not observations (75/s would drown the engine); :attr:`NoninDriver.pleth_samples`
  counts them so a caller can see the waveform is flowing.
- **Statuses.** SNSD → ``no_sensor`` (only with ``bit6_is_snsd``; bit 6 is reserved on the 9560, where
  it reads 0, so the default True is harmless there), SNSA → ``sensor_off``, ARTF → ``artifact``
  (``cause=pulse_artifact``), OOT → ``artifact`` (``cause=out_of_track``), perfusion red (RPRF=1, GPRF=0)
  → ``low_perfusion``, STAT2 LOW BAT → ``low_battery``. ARTF and the perfusion bits are only set during
  the ~12 frames of a pulse, so they are latched from one pulse to the next (cleared after 4 s without
  a pulse or when the sensor is off) rather than switching on and off three times a second. Yellow
  (marginal) perfusion is not a status.
- **ACK/NAK.** With ``request_format=True`` the driver queues the select-format command at its first
  ``on_timer``. For ``reply_window`` seconds after that, a 06 byte where a frame would start is taken
  as the ACK and produces nothing (:attr:`NoninDriver.format_acknowledged` becomes True); 15 (NAK) is a
  ``DecodeProblem("format_select_nak", 1)``: the device keeps its stored format and the decoder will
  report the mismatch as sync problems too.
- **Sync** (PUFFER ``FrameReceiver``): hunt one byte at a time for a frame-1 (SYNC bit) with a good
  checksum (#2 also needs the 0x01 start byte; #7, which has none, also needs the next frame to be
  valid). Skipped bytes are one ``DecodeProblem("unsynced", n)`` when sync is found. Once in sync a bad
  frame is ``bad_checksum``/``bad_frame`` (5 bytes dropped) and the decoder hunts again.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from vitalwatch.drivers.base import SerialSettings, StatusTracker
from vitalwatch.drivers.events import DecodeProblem, Event, Observation
from vitalwatch.drivers.plausibility import screened
from vitalwatch.drivers.vocabulary import KINDS

__all__ = [
    "ACK",
    "FRAMES_PER_PACKET",
    "FRAME_RATE",
    "MISSING_HR",
    "MISSING_SPO2",
    "NAK",
    "FloatValues",
    "NoninDriver",
    "decode_hr",
    "encode_frame",
    "encode_packet8",
    "hr_bytes",
    "select_format_command",
]

ACK = 0x06
NAK = 0x15
MISSING_HR = 511
MISSING_SPO2 = 127
FRAMES_PER_PACKET = 25
FRAME_RATE = 75.0  # frames per second for formats #2 and #7 (NONIN9560 p.8)

# STATUS bits of formats #2/#7 (NONIN9560 p.9; bit 6 from PUFFER Types.h).
SYNC = 0x01
GPRF = 0x02
RPRF = 0x04
SNSA = 0x08
OOT = 0x10
ARTF = 0x20
SNSD = 0x40
ALWAYS = 0x80
# STAT2 (FLOAT byte of frame 8).
STAT2_LOW_BAT = 0x01
STAT2_SPA = 0x20
# Format #8 STATUS and STATUS2 bits (NONIN9560 p.16).
F8_ARTF = 0x04
F8_MPRF = 0x08
F8_LPRF = 0x10
F8_OOT = 0x20
F8_SNSA = 0x08

_FORMAT_CODES = {2: 0x02, 7: 0x07, 8: 0x08, 13: 0x0D}
_SUPPORTED_FORMATS = (2, 7, 8)
# ARTF/perfusion are per pulse; a pulse at least every 4 s (HR >= 15) keeps the latch alive.
_PULSE_STALE_FRAMES = int(4 * FRAME_RATE)


def select_format_command(fmt: int) -> bytes:
    """The 9560 "select data format" command ``02 70 02 02 ZZ 03`` (NONIN9560 p.4)."""
    try:
        code = _FORMAT_CODES[fmt]
    except KeyError:
        raise ValueError(f"Nonin data format must be one of {sorted(_FORMAT_CODES)}, not {fmt!r}") from None
    return bytes((0x02, 0x70, 0x02, 0x02, code, 0x03))


def decode_hr(msb: int, lsb: int) -> int:
    """9-bit HR: MSB carries HR8..HR7 in bits 1-0, LSB HR6..HR0 (not ``msb << 8 | lsb``)."""
    return ((msb & 0x03) << 7) | (lsb & 0x7F)


def hr_bytes(hr: int) -> tuple[int, int]:
    """The (MSB, LSB) FLOAT bytes that :func:`decode_hr` turns back into ``hr`` (0-511)."""
    if not 0 <= hr <= MISSING_HR:
        raise ValueError(f"HR {hr} does not fit 9 bits")
    return (hr >> 7) & 0x03, hr & 0x7F


def encode_frame(fmt: int, status: int, pleth: int, float_byte: int) -> bytes:
    """One format #2 or #7 frame with its checksum (bit 7 of STATUS is forced on)."""
    status |= ALWAYS
    if fmt == 2:
        body = bytes((0x01, status, pleth & 0xFF, float_byte & 0x7F))
    elif fmt == 7:
        body = bytes((status, (pleth >> 8) & 0xFF, pleth & 0xFF, float_byte & 0x7F))
    else:
        raise ValueError(f"format {fmt} has no 5-byte frames")
    return body + bytes((sum(body) & 0xFF,))


def encode_packet8(status: int, hr: int, spo2: int, status2: int) -> bytes:
    """One format #8 packet; ``status`` carries the flag bits, HR8/HR7 are filled in from ``hr``."""
    msb, lsb = hr_bytes(hr)
    return bytes(((status & 0x7C) | ALWAYS | msb, lsb, spo2 & 0x7F, status2 & 0x7F))


@dataclass(frozen=True, slots=True, kw_only=True)
class FloatValues:
    """Everything a format #2/#7 packet carries in its 25 FLOAT bytes (the encoder's input)."""

    hr: int = MISSING_HR
    spo2: int = MISSING_SPO2
    hr_d: int = MISSING_HR
    spo2_d: int = MISSING_SPO2
    e_hr: int = MISSING_HR
    e_spo2: int = MISSING_SPO2
    e_spo2_d: int = MISSING_SPO2
    e_hr_d: int = MISSING_HR
    spo2_fast: int = MISSING_SPO2
    spo2_bb: int = MISSING_SPO2
    rev: int = 0x30
    timer: int = 0
    stat2: int = 0

    def to_bytes(self) -> tuple[int, ...]:
        """The 25 FLOAT bytes, frame 1 first (reserved frames are 0)."""
        out = [0] * FRAMES_PER_PACKET
        out[0], out[1] = hr_bytes(self.hr)
        out[2] = self.spo2 & 0x7F
        out[3] = self.rev & 0x7F
        out[5], out[6] = (self.timer >> 7) & 0x7F, self.timer & 0x7F
        out[7] = self.stat2 & 0x7F
        out[8] = self.spo2_d & 0x7F
        out[9] = self.spo2_fast & 0x7F
        out[10] = self.spo2_bb & 0x7F
        out[13], out[14] = hr_bytes(self.e_hr)
        out[15] = self.e_spo2 & 0x7F
        out[16] = self.e_spo2_d & 0x7F
        out[19], out[20] = hr_bytes(self.hr_d)
        out[21], out[22] = hr_bytes(self.e_hr_d)
        return tuple(out)


def _hr_value(hr: int) -> float | None:
    return None if hr == MISSING_HR else float(hr)


def _spo2_value(spo2: int) -> float | None:
    # 127 is the missing marker; 101-126 cannot be a saturation, so they are not a number either.
    return None if spo2 > 100 else float(spo2)


_UNSET = object()
# The status codes of a frame, in the order reported, by (no_sensor, sensor_off, artifact,
# low_perfusion, low_battery): built once, so a frame costs a lookup, not a list.
# The codes of a plain frame, by low_battery.
_PLAIN_CODES = {False: (), True: ("low_battery",)}
# The STATUS bits that make a frame more than "between pulses, all well".
_EVENTFUL = SNSD | SNSA | OOT | ARTF | RPRF | GPRF
# Bulk frame checks (NoninDriver._whole_frames): STATUS -> its bit 7 and SYNC bit; those bits of
# a packet's frames (bit 7 always, SYNC on frame 1 only).
_SHAPE_BITS = bytes(b & (ALWAYS | SYNC) for b in range(256))
_PACKET_SHAPE = bytes((ALWAYS | SYNC,)) + bytes((ALWAYS,)) * (FRAMES_PER_PACKET - 1)
# The STATUS values of a quiet read (NoninDriver._quiet_frames): no bit but SYNC and a green or
# yellow pulse (GPRF, with or without RPRF); and which of them are pulse frames.
_QUIET_STATUSES = bytes(
    s for s in range(ALWAYS, 256) if not s & ~(ALWAYS | SYNC | GPRF | RPRF) and (s & (GPRF | RPRF)) != RPRF
)
_PULSE_FRAME = bytes(1 if b & (GPRF | RPRF) else 0 for b in range(256))
_LOW_BAT_BIT = bytes(b & STAT2_LOW_BAT for b in range(256))
_LANE_MASKS: dict[int, int] = {}
# Times the widened frames: each frame's fourth lane becomes the sum of its first four lanes (the
# bytes the checksum covers). A lane sum is at most 4 x 255, so no lane carries into the next.
_SUM_OF_FOUR_LANES = 1 + (1 << 16) + (1 << 32) + (1 << 48)


def _lane_masks(count: int) -> int:
    """For ``count`` frames widened to 16-bit lanes: the low byte of each frame's first lane."""
    mask = _LANE_MASKS.get(count)
    if mask is None:
        mask = _LANE_MASKS[count] = int.from_bytes(b"\xff" + bytes(9), "little") * _repunit(count)
    return mask


def _repunit(count: int) -> int:
    """1 in the lowest bit of each of ``count`` 80-bit frame lanes."""
    return int.from_bytes((b"\x01" + bytes(9)) * count, "little")


# Bit 7 and the SYNC bit of 40 packets' frames: a read of up to 39 packets takes its pattern as a slice.
_SHAPES = _PACKET_SHAPE * 40


def _shape_pattern(index: int, count: int) -> bytes:
    """Bit 7 and the SYNC bit of the STATUS of ``count`` frames from frame ``index`` (0-based) of a packet."""
    if index + count <= len(_SHAPES):
        return _SHAPES[index : index + count]
    return (_PACKET_SHAPE * ((index + count) // FRAMES_PER_PACKET + 1))[index : index + count]


# One Observation per (kind, value), handed out again by every report of that value: a value comes
# from one or two bytes (SpO2 0-100, HR 0-510, or None), so there are a few hundred at most, and an
# Observation is frozen, so a shared one is the same event as a freshly built equal one.
_OBSERVATIONS: dict[tuple[str, float | None], Observation] = {}


def _observation(kind: str, value: float | None) -> Observation:
    observation = _OBSERVATIONS.get((kind, value))
    if observation is None:
        spec = KINDS[kind]
        observation = _OBSERVATIONS[kind, value] = Observation(kind, value, spec.unit, spec.mdc)
    return observation


_CODE_NAMES = ("no_sensor", "sensor_off", "artifact", "low_perfusion", "low_battery")
_CODE_SETS: dict[tuple[bool, ...], tuple[str, ...]] = {
    flags: tuple(name for name, on in zip(_CODE_NAMES, flags, strict=True) if on)
    for flags in itertools.product((False, True), repeat=len(_CODE_NAMES))
}


@screened
class NoninDriver:
    """Decoder for Nonin binary formats #2, #7 and #8; see the module docstring for the choices."""

    name: ClassVar[str] = "nonin"
    # Streams frames many times a second by design: the link reads it in longer batches
    # (vitalwatch.drivers.sends_waveform_rate).
    waveform_rate: ClassVar[bool] = True
    serial: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)

    def __init__(
        self,
        *,
        data_format: int = 2,
        request_format: bool = False,
        bit6_is_snsd: bool = True,
        report_interval: float = 1.0,
        reply_window: float = 5.0,
        # A wrong baud rate gives an endless unsyncable stream: report it in pieces of this size
        # instead of counting forever (one report every ~1 s of 9600-baud noise).
        max_unsynced_bytes: int = 1024,
    ) -> None:
        if data_format not in _SUPPORTED_FORMATS:
            raise ValueError(f"data_format must be one of {_SUPPORTED_FORMATS}, not {data_format!r}")
        if report_interval < 0:
            raise ValueError("report_interval must be >= 0")
        self._fmt = data_format
        self._size = 4 if data_format == 8 else 5
        self._bit6_is_snsd = bit6_is_snsd
        self._interval = report_interval
        self._reply_window = reply_window
        self._max_unsynced = max(1, max_unsynced_bytes)
        self._request_pending = request_format
        self._reply_until = float("-inf")
        self._out = bytearray()
        self.format_acknowledged = False
        self.pleth_samples = 0
        self._tracker = StatusTracker()
        # The codes of the last frame: 75 frames/s repeat the same bits, and the tracker only
        # reports edges, so an unchanged set skips it (most of the per-frame status cost).
        self._last_codes: tuple[str, ...] = ()
        self._reset_stream()

    def _reset_stream(self) -> None:
        """Forget everything learned from the byte stream (new connection or end of input)."""
        self._buf = bytearray()
        self._synced = False
        self._unsynced = 0
        self._index = 0
        self._floats = [0] * FRAMES_PER_PACKET
        self._in_pulse = False
        self._pulse_artifact = False
        self._low_perfusion = False
        self._frames_since_pulse = 0
        self._low_battery = False
        # The STATUS of the last frame when _whole_frames judged it, else -1 (any other path).
        self._previous_status = -1
        self._last: dict[str, object] = {}
        self._due: dict[str, float] = {}

    def device_byte_rate(self) -> float:
        """#2 and #7: 75 frames of 5 bytes a second (375 B/s); #8: one 4-byte packet a second."""
        return 4.0 if self._fmt == 8 else FRAME_RATE * self._size

    # -- Driver protocol -------------------------------------------------------------------

    def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
        """Decode bytes received at ``now``; noise becomes ``DecodeProblem`` events, never exceptions."""
        events: list[Event] = []
        self._buf += data
        buf = self._buf
        if self._synced and self._size == 5 and now > self._reply_until:
            # The common read of a healthy device: whole frames from the start of the buffer, judged
            # at once, what the loop below would do first (and all it would do when they pass).
            whole = len(buf) // 5
            if whole and self._whole_frames(buf, 0, whole, now, events):
                del buf[: 5 * whole]
                return events
        pos = 0
        size = self._size
        while True:
            if now <= self._reply_until and pos < len(buf) and buf[pos] in (ACK, NAK):
                # The device answers the select-format command between frames (NONIN9560 p.4).
                self._reply_until = float("-inf")
                if buf[pos] == ACK:
                    self.format_acknowledged = True
                else:
                    events.append(DecodeProblem("format_select_nak", 1))
                pos += 1
                continue
            if self._synced:
                if len(buf) - pos < size:
                    break
                if size == 5 and now > self._reply_until:
                    whole = (len(buf) - pos) // 5
                    if self._whole_frames(buf, pos, whole, now, events):
                        pos += 5 * whole
                        continue
                    good = self._good_frames(buf, pos, now, events)
                    if good != pos:
                        pos = good
                        continue
                events += self._decode_unit(bytes(buf[pos : pos + size]), now)
                pos += size
                continue
            need = 2 * size if self._fmt == 7 else size
            if len(buf) - pos < need:
                break
            if self._is_sync_start(buf, pos):
                events += self._flush_unsynced()
                self._synced = True
                self._index = 0
                continue
            pos += 1
            self._unsynced += 1
            if self._unsynced >= self._max_unsynced:
                events += self._flush_unsynced()
        del buf[:pos]
        return events

    def feed_eof(self) -> list[Event]:
        """The port closed: report skipped and half-received bytes, switch every status off."""
        if not self._synced:
            self._unsynced += len(self._buf)  # never part of a frame we had locked on to
            self._buf.clear()
        events: list[Event] = list(self._flush_unsynced())
        if self._buf:
            events.append(DecodeProblem("truncated_frame", len(self._buf)))
        events += self._tracker.reset()
        self._last_codes = ()
        self._reset_stream()
        return events

    def data_to_send(self) -> bytes:
        """The select-format command once ``on_timer`` has queued it, else nothing."""
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_deadline(self) -> float | None:
        """0.0 (now) while a requested select-format command is still to be queued, else None."""
        return 0.0 if self._request_pending else None

    def on_timer(self, now: float) -> list[Event]:
        """Queue the select-format command on the first call (``request_format=True`` only)."""
        if self._request_pending:
            self._request_pending = False
            self._out += select_format_command(self._fmt)
            self._reply_until = now + self._reply_window
        return []

    # -- framing ---------------------------------------------------------------------------

    def _flush_unsynced(self) -> list[Event]:
        if not self._unsynced:
            return []
        count, self._unsynced = self._unsynced, 0
        return [DecodeProblem("unsynced", count)]

    def _frame_ok(self, frame: bytes | bytearray) -> bool:
        """Shape and checksum of one #2/#7 frame (FLOAT is 0-127, STATUS has bit 7 set)."""
        if (sum(frame[:4]) & 0xFF) != frame[4] or frame[3] & 0x80:
            return False
        if self._fmt == 2:
            return frame[0] == 0x01 and bool(frame[1] & ALWAYS)
        return bool(frame[0] & ALWAYS)

    def _is_sync_start(self, buf: bytearray, pos: int) -> bool:
        if self._fmt == 8:
            return bool(buf[pos] & ALWAYS) and not (buf[pos + 1] | buf[pos + 2] | buf[pos + 3]) & 0x80
        frame = buf[pos : pos + 5]
        status = frame[1] if self._fmt == 2 else frame[0]
        if not (status & SYNC and self._frame_ok(frame)):
            return False
        if self._fmt == 7:
            # No start byte in #7: a lone frame-shaped window inside pleth data is too easy to hit,
            # so the next frame must check out as well (and must not be another frame 1).
            nxt = buf[pos + 5 : pos + 10]
            return self._frame_ok(nxt) and not nxt[0] & SYNC
        return True

    def _decode_unit(self, unit: bytes, now: float) -> list[Event]:
        if self._fmt == 8:
            if not unit[0] & ALWAYS or (unit[1] | unit[2] | unit[3]) & 0x80:
                self._synced = False
                return [DecodeProblem("bad_frame", 4)]
            return self._packet8(unit, now)
        if (sum(unit[:4]) & 0xFF) != unit[4]:
            self._synced = False
            return [DecodeProblem("bad_checksum", 5)]
        if not self._frame_ok(unit):
            self._synced = False
            return [DecodeProblem("bad_frame", 5)]
        status = unit[1] if self._fmt == 2 else unit[0]
        events: list[Event] = []
        if status & SYNC and self._index != 0:
            # A frame 1 before frame 25: frames were lost; start the new packet here.
            events.append(DecodeProblem("short_packet", self._index * 5))
            self._index = 0
        elif not status & SYNC and self._index == 0:
            self._synced = False
            return [DecodeProblem("missing_sync", 5)]
        events += self._frame(self._index, status, unit[3], now)
        self._index = (self._index + 1) % FRAMES_PER_PACKET
        return events

    def _whole_frames(self, buf: bytearray, pos: int, count: int, now: float, events: list[Event]) -> bool:
        """Decode ``count`` #2/#7 frames from ``pos`` at once when every one of them is well formed
        and simply the next of its packet; False, having changed nothing, when any one is not.

        The common case (a healthy device, whole frames per read) checked without a Python step
        per frame: the checksums as lanes of one big integer (each byte widened to 16 bits and the
        four lanes a checksum covers summed by one multiplication, which cannot carry into the next
        lane), the shape bits with ``bytes`` methods. A quiet read (:meth:`_quiet_frames`) then
        changes no status at all; in any other, only the frames where something can happen go
        through the status machine (:meth:`_status_runs`). Events and state are exactly the
        frame-by-frame loop's (:meth:`_good_frames`), which judges the whole read whenever this
        declines.
        """
        if count < 1:
            return False
        chunk = bytes(buf[pos : pos + 5 * count])
        floats_in = chunk[3::5]
        if not floats_in.isascii():
            return False  # a FLOAT byte with bit 7 set
        wide = bytearray(10 * count)
        wide[0::2] = chunk
        lanes = int.from_bytes(wide, "little")
        if ((lanes * _SUM_OF_FOUR_LANES >> 48) ^ (lanes >> 64)) & _lane_masks(count):
            return False  # a checksum: the low byte of a frame's sum is not its fifth byte
        fmt2 = self._fmt == 2
        statuses = chunk[1::5] if fmt2 else chunk[0::5]
        index = self._index
        if fmt2 and chunk[0::5] != b"\x01" * count:
            return False
        if statuses.translate(_SHAPE_BITS) != _shape_pattern(index, count):
            return False  # bit 7 off, or a SYNC bit off its frame 1: the careful path says which problem
        # Frame 8's battery bit cuts the runs only when it changes in this read (rarely).
        sevens = floats_in[(7 - index) % FRAMES_PER_PACKET :: FRAMES_PER_PACKET]
        steady = sevens.translate(_LOW_BAT_BIT) == (b"\x01" if self._low_battery else b"\x00") * len(sevens)
        if (
            steady
            and not statuses.translate(None, _QUIET_STATUSES)
            and not (self._pulse_artifact or self._low_perfusion)
            and self._last_codes == _PLAIN_CODES[self._low_battery]
        ):  # as _plain_ok()
            self._quiet_frames(statuses, floats_in, now, events)
        else:
            self._status_runs(statuses, floats_in, steady, now, events)
        # The FLOAT byte of each frame position, from the last packet's worth of frames.
        floats = self._floats
        last = min(count, FRAMES_PER_PACKET)
        at = (index + count - last) % FRAMES_PER_PACKET
        upto = min(last, FRAMES_PER_PACKET - at)
        floats[at : at + upto] = floats_in[count - last : count - last + upto]
        floats[: last - upto] = floats_in[count - last + upto :]
        self._previous_status = statuses[-1]
        self._index = (index + count) % FRAMES_PER_PACKET
        self.pleth_samples += count
        return True

    def _quiet_frames(self, statuses: bytes, floats_in: bytes, now: float, events: list[Event]) -> None:
        """A quiet read's meaning, with no step per frame: no status can change, only the pulse count.

        Quiet: every STATUS is plain or a green/yellow pulse (:data:`_QUIET_STATUSES`), the battery
        bit stays as it is, and no latch is on with the reported set plain (:meth:`_plain_ok`).
        :meth:`_frame_statuses` then reports nothing for any frame (a pulse frame clears latches that
        are already off; a plain one only counts, and passing the stale limit clears them again), so
        what is left is where the last pulse frame was, and the reports of frame 3.
        """
        count = len(statuses)
        last_pulse = statuses.translate(_PULSE_FRAME).rfind(1)
        if last_pulse < 0:
            self._frames_since_pulse += count
            self._in_pulse = False
        else:
            self._frames_since_pulse = count - 1 - last_pulse
            self._in_pulse = last_pulse == count - 1
        floats = self._floats
        for frame in range((2 - self._index) % FRAMES_PER_PACKET, count, FRAMES_PER_PACKET):
            lsb = floats_in[frame - 1] if frame >= 1 else floats[1]
            msb = floats_in[frame - 2] if frame >= 2 else floats[0]
            events += self._report("spo2", _spo2_value(floats_in[frame]), now)
            events += self._report("pulse_rate", _hr_value(decode_hr(msb, lsb)), now)

    def _status_runs(
        self, statuses: bytes, floats_in: bytes, steady: bool, now: float, events: list[Event]
    ) -> None:
        """A read's meaning by runs of one STATUS: only the frames where something can happen go
        through the status machine: a change of STATUS, frame 8 (the battery bit, unless ``steady``:
        it changes nowhere in the read) and frame 3 (the report); the frames in between repeat the
        frame before them, which only counts frames since the last pulse (:meth:`_same_status_frames`)."""
        index = self._index
        floats = self._floats
        previous = self._previous_status  # that of the frame before, if this path judged it
        first = 0
        for status, run in itertools.groupby(statuses):
            stop = first + len(list(run))
            frame = first
            while frame < stop:
                at = (index + frame) % FRAMES_PER_PACKET
                # a piece of the run: it starts at frame 8 (battery bit) or ends at frame 3 (report)
                to_report = (2 - at) % FRAMES_PER_PACKET + 1
                to_battery = (7 - at) % FRAMES_PER_PACKET or FRAMES_PER_PACKET
                if steady:
                    to_battery = FRAMES_PER_PACKET
                end_piece = min(stop, frame + to_report, frame + to_battery)
                same = status == previous
                if at == 7 and not steady:
                    low_battery = bool(floats_in[frame] & STAT2_LOW_BAT)
                    same = same and low_battery == self._low_battery
                    self._low_battery = low_battery
                repeats = end_piece - frame
                if not same:
                    events += self._frame_statuses(status)
                    repeats -= 1
                if repeats:
                    events += self._same_status_frames(status, repeats)
                previous = status
                frame = end_piece
                if (index + frame - 1) % FRAMES_PER_PACKET == 2:
                    spo2 = floats_in[frame - 1]
                    lsb = floats_in[frame - 2] if frame >= 2 else floats[1]
                    msb = floats_in[frame - 3] if frame >= 3 else floats[0]
                    events += self._report("spo2", _spo2_value(spo2), now)
                    events += self._report("pulse_rate", _hr_value(decode_hr(msb, lsb)), now)
            first = stop

    def _same_status_frames(self, status: int, count: int) -> list[Event]:
        """What :meth:`_frame_statuses` makes of ``count`` more frames with the status of the frame
        just judged (and the same battery bit): a pulse frame again changes nothing; any other
        counts one more frame since the last pulse, and only the one that passes the stale limit
        can change a status."""
        if status & (RPRF | GPRF):
            return []
        since = self._frames_since_pulse
        if since <= _PULSE_STALE_FRAMES < since + count:
            self._frames_since_pulse = _PULSE_STALE_FRAMES
            events = self._frame_statuses(status)  # the frame past the limit
            self._frames_since_pulse += since + count - _PULSE_STALE_FRAMES - 1
            return events
        self._frames_since_pulse = since + count
        return []

    def _good_frames(self, buf: bytearray, pos: int, now: float, events: list[Event]) -> int:
        """Decode the well-formed #2/#7 frames from ``pos`` in one loop; return where it stopped.

        The common case at 75 frames/s: a frame with a good checksum and shape that is simply
        the next one of its packet (SYNC exactly on frame 1). Its meaning is :meth:`_frame`'s,
        without :meth:`_decode_unit`'s per-frame copies and calls; any other frame stops the
        loop, and :meth:`_decode_unit` judges it as before.
        """
        self._previous_status = -1  # the frames below are judged one by one
        fmt2 = self._fmt == 2
        last = len(buf) - 5
        start = pos
        index = self._index
        floats = self._floats
        # Whether a plain frame (no status bit that matters) changes nothing but the pulse count:
        # true while no pulse artifact or low perfusion is latched and the reported set is plain.
        # Only _frame_statuses and frame 8's battery bit change that, so it is worked out again
        # after them; the plain frames' count is handed over before _frame_statuses reads it.
        plain_ok = self._plain_ok()
        plain = 0
        while pos <= last:
            b0, b1, b2, b3, b4 = buf[pos : pos + 5]
            if (b0 + b1 + b2 + b3) & 0xFF != b4 or b3 & 0x80:
                break
            status = b1 if fmt2 else b0
            if (fmt2 and b0 != 0x01) or not status & ALWAYS or bool(status & SYNC) != (index == 0):
                break
            floats[index] = b3
            if index == 7:
                self._low_battery = bool(b3 & STAT2_LOW_BAT)
                plain_ok = self._plain_ok()
            if plain_ok and not status & _EVENTFUL:
                plain += 1  # what _frame_statuses does with a plain frame, and no edge
            else:
                if plain:
                    self._frames_since_pulse += plain
                    self._in_pulse = False
                    plain = 0
                changed = self._frame_statuses(status)
                if changed:
                    events += changed
                plain_ok = self._plain_ok()
            if index == 2:
                hr = decode_hr(floats[0], floats[1])
                events += self._report("spo2", _spo2_value(floats[2]), now)
                events += self._report("pulse_rate", _hr_value(hr), now)
            index = (index + 1) % FRAMES_PER_PACKET
            pos += 5
        if plain:
            self._frames_since_pulse += plain
            self._in_pulse = False
        self._index = index
        self.pleth_samples += (pos - start) // 5
        return pos

    def _plain_ok(self) -> bool:
        """Whether a frame without status bits would leave every status as it is (see _good_frames)."""
        return (
            not (self._pulse_artifact or self._low_perfusion)
            and self._last_codes == _PLAIN_CODES[self._low_battery]
        )

    # -- meaning ---------------------------------------------------------------------------

    def _frame(self, index: int, status: int, float_byte: int, now: float) -> list[Event]:
        self._previous_status = -1
        self.pleth_samples += 1
        self._floats[index] = float_byte
        if index == 7:
            self._low_battery = bool(float_byte & STAT2_LOW_BAT)
        events: list[Event] = list(self._frame_statuses(status))
        if index == 2:
            hr = decode_hr(self._floats[0], self._floats[1])
            events += self._report("spo2", _spo2_value(self._floats[2]), now)
            events += self._report("pulse_rate", _hr_value(hr), now)
        return events

    def _frame_statuses(self, status: int) -> list[Event]:
        no_sensor = self._bit6_is_snsd and bool(status & SNSD)
        sensor_off = bool(status & SNSA)
        perfusion = status & (RPRF | GPRF)
        if perfusion:
            if not self._in_pulse:
                self._pulse_artifact = False  # a new pulse judges artifact afresh
            self._pulse_artifact |= bool(status & ARTF)
            self._low_perfusion = perfusion == RPRF
            self._frames_since_pulse = 0
        else:
            if status & ARTF:
                self._pulse_artifact = True
            self._frames_since_pulse += 1
        self._in_pulse = bool(perfusion)
        if self._frames_since_pulse > _PULSE_STALE_FRAMES or sensor_off or no_sensor:
            self._pulse_artifact = False
            self._low_perfusion = False
        out_of_track = bool(status & OOT)
        artifact = out_of_track or self._pulse_artifact
        key = _CODE_SETS[no_sensor, sensor_off, artifact, self._low_perfusion, self._low_battery]
        if key == self._last_codes:
            return []  # same set as the last frame: the tracker would report no edge
        self._last_codes = key
        detail: dict[str, dict[str, str | int | float | bool]] = {}
        if artifact:
            detail["artifact"] = {"cause": "out_of_track" if out_of_track else "pulse_artifact"}
        return list(self._tracker.update(key, detail))

    def _packet8(self, unit: bytes, now: float) -> list[Event]:
        status, status2 = unit[0], unit[3]
        sensor_off = bool(status2 & F8_SNSA)
        codes: list[str] = []
        detail: dict[str, dict[str, str | int | float | bool]] = {}
        if sensor_off:
            codes.append("sensor_off")
        if status & (F8_OOT | F8_ARTF):
            codes.append("artifact")
            detail["artifact"] = {"cause": "out_of_track" if status & F8_OOT else "pulse_artifact"}
        if status & F8_LPRF:
            codes.append("low_perfusion")
        if status2 & STAT2_LOW_BAT:
            codes.append("low_battery")
        events: list[Event] = list(self._tracker.update(codes, detail))
        # Display values hold the last reading for 10 s after finger removal: gate them on SNSA.
        spo2 = None if sensor_off else _spo2_value(unit[2])
        hr = None if sensor_off else _hr_value(decode_hr(status, unit[1]))
        events += self._report("spo2", spo2, now, gated=False)
        events += self._report("pulse_rate", hr, now, gated=False)
        return events

    def _report(self, kind: str, value: float | None, now: float, *, gated: bool = True) -> Sequence[Event]:
        """One observation, unless this kind was already reported in the current one-second slot."""
        last = self._last.get(kind, _UNSET)
        due = self._due.get(kind)
        transition = last is _UNSET or (last is None) != (value is None)
        if gated and not transition and due is not None and now < due:
            return []
        if transition or due is None or due + self._interval <= now:
            self._due[kind] = now + self._interval
        else:
            self._due[kind] = due + self._interval
        self._last[kind] = value
        return [_observation(kind, value)]
