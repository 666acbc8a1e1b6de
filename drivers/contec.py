"""Contec CMS50D+/CMS50E driver: the old 5-byte stream and the newer "V7" 9-byte protocol.

Sources: ``device-protocols.md`` §1.4; ATBRASK (github.com/atbrask/CMS50Dplus @ e916c59) for the
old protocol; HEADROTOR (github.com/headrotor/contec_data @ ab15668, real capture in
``tests/vectors/contec_berrymed/``) for V7; the Contec "Communication protocol of pulse
oximeter V7.0" (2010-07-08, table of contents and §3.2 "package format" as shown at
scribd.com/document/226223253) for the V7 high-bit byte; titinho11/CMS50E-raw-ppg-data README
for the V7 rate (60 packets/s).

Old protocol (CMS50D+ fw ~4.5), **19200 baud, 8 data bits, odd parity, 1 stop, XON/XOFF**;
the device streams 5-byte packets at 60 Hz without being asked::

    byte 1  1 | beep | dropping SpO2 | finger out | signal strength (4 bits)
    byte 2  0 | pleth (7 bits)
    byte 3  0 | PR bit 7 | searching | probe error | bar graph (4 bits)
    byte 4  0 | PR bits 6..0
    byte 5  0 | SpO2 (7 bits)

Its invalid markers are **[unconfirmed]**; by analogy with BerryMed BCI (same layout) pulse
0xFF and SpO2 0x7F (and SpO2 > 100) become None.

New "V7" protocol (newer CMS50D+, CMS50E), **115200 8N1**. Host commands are 9 bytes
``7D 81 op 80 80 80 80 80 80``: ``A1`` starts the real-time stream, ``AF`` is the keep-alive
HEADROTOR sends every 100 packets (about every 1.7 s). Device packets: byte 0 is the packet
type (bit 7 clear); byte 1 is the Contec "high byte" (bit 7 set, bits 0..6 = bit 7 of data
bytes 2..8); data bytes have bit 7 set as a sync marker and carry 7 bits each::

    01 E0 85 B3 96 C1 E1 FF FF           (real capture: pulse 65, SpO2 97)
    |  |  |  |  |  |  |  +--+-- d7 d8: FF FF on every captured packet, meaning [unconfirmed]
    |  |  |  |  |  |  +-- d6 SpO2 (0x61 = 97)
    |  |  |  |  |  +-- d5 pulse rate (0x41 = 65); bit 7 from the high byte, so up to 254
    |  |  |  |  +-- d4 second waveform/bar value [unconfirmed]
    |  |  |  +-- d3 pleth
    |  |  +-- d2 status-like byte, 0x05 in the capture, meaning [unconfirmed]
    |  +-- high byte: 0xE0 = bits 5 and 6 -> d7 and d8 carry bit 7 (0xFF 0xFF)
    +-- packet type 0x01 = real-time data

HEADROTOR reads byte 1 instead as a validity code: ``E0`` valid, ``E1`` pulse/SpO2 not valid,
``E2`` nothing valid. Both readings agree on every captured packet. With
``v7_validity_flags=True`` (default) the driver honours HEADROTOR's reading as well: high-byte
bit 0 -> ``searching`` and bit 1 -> ``sensor_off``, and SpO2/pulse are None while either is
set. Pulse 0xFF and SpO2 0x7F/0xFF (or > 100) are None in any case. Other packet types (info
replies to A7, A2, ... and stored-data download) are skipped without events.

``protocol="auto"`` (default) decodes both packet shapes, which cannot be confused: an old
packet is one high byte then four low ones, a V7 real-time packet one low byte then eight high
ones. It sends the V7 start command and keep-alives until three old packets in a row say the
device speaks the old protocol (until three V7 packets lock it to V7, info replies count as
resync junk). The line settings still have to match the device:
:meth:`ContecDriver.serial_for` gives them per protocol, and the device's ``serial`` config
section must say 19200/odd for an old device (the class default is the V7 115200 8N1).

Observations: ``spo2`` and ``pulse_rate`` once per ``packets_per_report`` packets (default 60,
one second at 60 Hz), latest valid value in the window or None.

Neither protocol has a checksum, so a packet counts only once the framing has held for
:data:`~vitalwatch.drivers.base.CONSISTENT_FRAMES` packets in a row since the last undecodable
byte (its values and statuses before that are ignored: random bytes at a wrong baud rate would
otherwise read as SpO2 17 or pulse 200); undecodable bytes also drop the window's values.

Speed: runs of back-to-back V7 real-time packets are decoded in bulk (a compiled regex finds
the run, the validity bits of all its high bytes are checked with one ``translate``, and only
the packets that close a report window are read), because decoding 60 packets/s one by one in
Python reached only ~140x the 115200-baud line rate (target 1000x, ``python -m bench``). The
result is the same as packet by packet (``tests/drivers/test_contec_fastpath.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

from vitalwatch.drivers.base import (
    CONSISTENT_FRAMES,
    UNDECODABLE_REPORT_BYTES,
    Parity,
    SerialSettings,
    StatusTracker,
)
from vitalwatch.drivers.events import DecodeProblem, Event, Observation
from vitalwatch.drivers.plausibility import screened
from vitalwatch.drivers.vocabulary import KINDS

__all__ = [
    "KEEP_ALIVE",
    "START_REALTIME",
    "ContecDriver",
    "OldPacket",
    "V7Packet",
    "decode_old",
    "decode_v7",
    "encode_old",
    "encode_v7",
    "v7_command",
]

ContecProtocol = Literal["auto", "old", "new"]

OLD_LEN = 5
V7_LEN = 9
V7_REALTIME = 0x01
OLD_SERIAL = SerialSettings(baudrate=19200, parity=Parity.ODD)
NEW_SERIAL = SerialSettings(baudrate=115200)

# Fast path (see ContecDriver._bulk_v7): a run of back-to-back V7 real-time packets, matched in C.
# At 115200 baud the device sends 11,520 bytes/s; decoding packet by packet in Python reached
# only ~140x that, so whole runs are handled with slices and one loop per report window.
_V7_RUN = re.compile(rb"(?:\x01[\x80-\xff]{8})+")
# High byte -> validity class (bit 0 searching, bit 1 sensor off), as one byte per packet.
_V7_CLASS = bytes(h & 0x03 for h in range(256))
_CLASS_BYTES = tuple(bytes((c,)) for c in range(4))
_SPO2 = KINDS["spo2"]
_PULSE = KINDS["pulse_rate"]


def v7_command(op: int) -> bytes:
    """A 9-byte V7 host command ``7D 81 op 80 80 80 80 80 80``."""
    return bytes((0x7D, 0x81, op, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80))


START_REALTIME = v7_command(0xA1)
KEEP_ALIVE = v7_command(0xAF)


@dataclass(frozen=True, slots=True, kw_only=True)
class OldPacket:
    """One old-protocol live packet (field names after ATBRASK)."""

    signal_strength: int = 0
    finger_out: bool = False
    dropping_spo2: bool = False
    beep: bool = False
    pleth: int = 0
    bar: int = 0
    probe_error: bool = False
    searching: bool = False
    pulse_rate: int | None = None
    spo2: int | None = None


def decode_old(raw: bytes) -> OldPacket:
    """Decode one framed old packet; invalid markers [unconfirmed] become None."""
    b1, b2, b3, b4, b5 = raw[:OLD_LEN]
    pulse = ((b3 & 0x40) << 1) | (b4 & 0x7F)
    spo2 = b5 & 0x7F
    return OldPacket(
        signal_strength=b1 & 0x0F,
        finger_out=bool(b1 & 0x10),
        dropping_spo2=bool(b1 & 0x20),
        beep=bool(b1 & 0x40),
        pleth=b2 & 0x7F,
        bar=b3 & 0x0F,
        probe_error=bool(b3 & 0x10),
        searching=bool(b3 & 0x20),
        pulse_rate=None if pulse == 0xFF else pulse,
        spo2=None if spo2 == 0x7F or spo2 > 100 else spo2,
    )


def encode_old(packet: OldPacket) -> bytes:
    """Inverse of :func:`decode_old` (simulator and round-trip tests)."""
    pulse = 0xFF if packet.pulse_rate is None else packet.pulse_rate & 0xFF
    spo2 = 0x7F if packet.spo2 is None else packet.spo2 & 0x7F
    b1 = 0x80 | (packet.signal_strength & 0x0F) | (0x10 if packet.finger_out else 0)
    b1 |= (0x20 if packet.dropping_spo2 else 0) | (0x40 if packet.beep else 0)
    b3 = (packet.bar & 0x0F) | (0x10 if packet.probe_error else 0) | (0x20 if packet.searching else 0)
    b3 |= (pulse & 0x80) >> 1
    return bytes((b1, packet.pleth & 0x7F, b3, pulse & 0x7F, spo2))


@dataclass(frozen=True, slots=True, kw_only=True)
class V7Packet:
    """The seven 8-bit data values of a V7 real-time packet, high bits restored.

    ``data`` is d2..d8 as drawn in the module docstring; the properties name the fields
    whose meaning is known from the capture.
    """

    data: tuple[int, int, int, int, int, int, int]

    @property
    def status(self) -> int:
        return self.data[0]

    @property
    def pleth(self) -> int:
        return self.data[1]

    @property
    def pulse_raw(self) -> int:
        return self.data[3]

    @property
    def spo2_raw(self) -> int:
        return self.data[4]

    @property
    def high_byte(self) -> int:
        """Byte 1 as sent: 0x80 plus bit 7 of each data byte."""
        return 0x80 | sum(1 << k for k, d in enumerate(self.data) if d & 0x80)


def decode_v7(raw: bytes) -> V7Packet:
    """Restore the data bytes of a framed 9-byte real-time packet from its high byte."""
    high = raw[1]
    d = tuple((raw[2 + k] & 0x7F) | (0x80 if high & (1 << k) else 0) for k in range(7))
    return V7Packet(data=(d[0], d[1], d[2], d[3], d[4], d[5], d[6]))


def encode_v7(packet: V7Packet) -> bytes:
    """Inverse of :func:`decode_v7`: type, high byte, then data bytes with bit 7 set."""
    return bytes((V7_REALTIME, packet.high_byte, *(0x80 | (d & 0x7F) for d in packet.data)))


def _latest_valid(run: bytes, first: int, last: int) -> tuple[float | None, float | None]:
    """Latest valid (SpO2, pulse) among packets ``first..last`` of a run, scanning backwards.

    Only for packets whose validity flags are clear; the invalid markers are the ones
    ``_v7_events`` applies (pulse 0xFF; SpO2 0x7F, 0xFF or above 100).
    """
    spo2: float | None = None
    pulse: float | None = None
    for k in range(last, first - 1, -1):
        at = k * V7_LEN
        high = run[at + 1]
        if pulse is None:
            value = (run[at + 5] & 0x7F) | ((high & 0x08) << 4)
            if value != 0xFF:
                pulse = float(value)
        if spo2 is None:
            value = (run[at + 6] & 0x7F) | ((high & 0x10) << 3)
            if value <= 100:
                spo2 = float(value)
        if spo2 is not None and pulse is not None:
            break
    return spo2, pulse


@screened
class ContecDriver:
    """Sans-I/O driver for both Contec CMS50 protocols (see the module docstring)."""

    name: ClassVar[str] = "contec"
    # Streams frames many times a second by design: the link reads it in longer batches
    # (vitalwatch.drivers.sends_waveform_rate).
    waveform_rate: ClassVar[bool] = True
    serial: ClassVar[SerialSettings] = NEW_SERIAL

    def __init__(
        self,
        *,
        protocol: ContecProtocol = "auto",
        packets_per_report: int = 60,
        keepalive_interval: float = 1.5,
        restart_after: float = 5.0,
        v7_validity_flags: bool = True,
        low_signal_below: int = 2,
        consistent_frames: int = CONSISTENT_FRAMES,
    ) -> None:
        if protocol not in ("auto", "old", "new"):
            raise ValueError(f"protocol must be 'auto', 'old' or 'new', not {protocol!r}")
        self.protocol: ContecProtocol = protocol
        # The protocol seen on the wire; fixed from the start unless "auto".
        self.detected: Literal["old", "new"] | None = None if protocol == "auto" else protocol
        if packets_per_report < 1:
            raise ValueError("packets per report must be >= 1")
        if consistent_frames < 1:
            raise ValueError("consistent frames must be >= 1")
        # Packets in a row a value needs before it counts (1: every framed packet, as in tests of
        # single packets; the default is the documented CONSISTENT_FRAMES).
        self._trust_after = consistent_frames
        # Report window (same rule as bci.LatestPerWindow, kept inline so the V7 fast path can
        # advance it by a whole run): packet k (1-based) closes a window when (k - 1) % n == 0.
        self._per_report = packets_per_report
        self._count = 0
        self._latest_spo2: float | None = None
        self._latest_pulse: float | None = None
        # Validity class of the last V7 packet given to the tracker (None: unknown, e.g. after
        # an old packet), so a run whose packets all share it needs no tracker call at all.
        self._v7_class: int | None = 0
        # HEADROTOR sends AF every 100 packets (~1.7 s at 60 Hz); 1.5 s stays inside that.
        self._keepalive_interval = keepalive_interval
        # No real-time packet for this long: the device dropped the stream, ask again.
        self._restart_after = restart_after
        self._validity_flags = v7_validity_flags
        self._low_signal_below = low_signal_below
        self._tracker = StatusTracker()
        self._buffer = bytearray()  # bounded: at most one V7 packet is ever kept, see _scan
        self._skipped = 0
        self._run: tuple[str, int] = ("", 0)
        self._consistent = 0  # well-framed packets in a row since the last undecodable byte
        self._outgoing = bytearray(START_REALTIME if self._speaks_v7() else b"")
        self._next_keepalive: float | None = None
        self._last_data: float | None = None
        self._last_start: float | None = None

    @classmethod
    def serial_for(cls, protocol: ContecProtocol) -> SerialSettings:
        """Line settings for a protocol: old 19200 8O1, new/auto 115200 8N1."""
        return OLD_SERIAL if protocol == "old" else NEW_SERIAL

    def _speaks_v7(self) -> bool:
        return self.detected != "old"

    # -- receiving ---------------------------------------------------------------------

    def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
        """Decode bytes; skipped junk is reported once as ``DecodeProblem("resync", n)``."""
        self._buffer += data
        return self._scan(now)

    def _scan(self, now: float) -> list[Event]:
        events: list[Event] = []
        buf = self._buffer
        old_ok = self.detected != "new"
        new_ok = self.detected != "old"
        while buf:
            if new_ok and buf[0] == V7_REALTIME:
                # Fast path: a run of whole real-time packets (what a V7 device sends all day).
                # The slow path below would decode exactly these bytes the same way.
                match = _V7_RUN.match(buf)
                if match is not None:
                    end = match.end()
                    packets = bytes(buf[:end])
                    del buf[:end]
                    events += self._v7_run(packets, now)
                    continue
            if buf[0] & 0x80:
                if old_ok:
                    tail = buf[1:OLD_LEN]
                    if all(not b & 0x80 for b in tail):
                        if len(tail) < OLD_LEN - 1:
                            break  # could still be an old packet: wait for more bytes
                        raw = bytes(buf[:OLD_LEN])
                        del buf[:OLD_LEN]
                        self._consistent += 1
                        events += self._good("old", self._old_events(decode_old(raw)), now)
                        continue
                self._skip(1, events)
                continue
            if not new_ok:
                self._skip(1, events)
                continue
            run = 0
            while run < V7_LEN - 1 and 1 + run < len(buf) and buf[1 + run] & 0x80:
                run += 1
            complete = run == V7_LEN - 1 or 1 + run < len(buf)
            if not complete:
                break  # wait for the rest of this packet
            if buf[0] == V7_REALTIME and run == V7_LEN - 1:
                raw = bytes(buf[:V7_LEN])
                del buf[:V7_LEN]
                self._consistent += 1
                events += self._good("new", self._v7_events(decode_v7(raw)), now)
            elif self.detected == "new" and run > 0:
                del buf[: 1 + run]  # an info packet (reply to A7, A2, ...): not ours to decode
            else:
                self._skip(1, events)
        return events

    def _skip(self, n: int, events: list[Event]) -> None:
        """Drop junk; a long run of it (wrong baud rate) is reported per ``UNDECODABLE_REPORT_BYTES``."""
        del self._buffer[:n]
        self._skipped += n
        self._run = ("", 0)
        self._consistent = 0  # the framing broke: trust nothing until it holds again
        self._latest_spo2 = self._latest_pulse = None
        if self._skipped >= UNDECODABLE_REPORT_BYTES:
            events.append(DecodeProblem("resync", self._skipped))
            self._skipped = 0

    def _good(self, kind: Literal["old", "new"], events: list[Event], now: float) -> list[Event]:
        """Bookkeeping around one decoded packet: resync report, auto-detection, liveness."""
        out: list[Event] = []
        if self._skipped:
            out.append(DecodeProblem("resync", self._skipped))
            self._skipped = 0
        self._last_data = now
        name, count = self._run
        self._run = (kind, count + 1 if name == kind else 1)
        if self.detected is None and self._run[1] >= 3:
            self.detected = kind  # three clean packets in a row: not a chance match in junk
            if kind == "old":
                self._outgoing.clear()
        return out + events

    def _v7_run(self, run: bytes, now: float) -> list[Event]:
        """Decode back-to-back V7 real-time packets; same events as one ``_good`` per packet.

        Packets whose validity class (high-byte bits 0-1) equals the one the tracker already
        holds change no status, so a stretch of them only advances the report window
        (:meth:`_advance`); a packet that changes the class goes through ``_v7_events``.
        """
        events: list[Event] = []
        if self._skipped:
            events.append(DecodeProblem("resync", self._skipped))
            self._skipped = 0
        total = len(run) // V7_LEN
        classes = run[1::V7_LEN].translate(_V7_CLASS) if self._validity_flags else None
        base = self._consistent
        pos = 0
        while pos < total and base + pos < self._trust_after:  # not trusted yet: one by one
            self._consistent = base + pos + 1
            at = pos * V7_LEN
            events += self._v7_events(decode_v7(run[at : at + V7_LEN]))
            pos += 1
        while pos < total:
            current = self._v7_class
            stop = pos
            if current is not None:
                if classes is None:
                    stop = total  # without validity flags every packet is class 0
                else:
                    rest = classes[pos:]
                    stop = pos + len(rest) - len(rest.lstrip(_CLASS_BYTES[current]))
            if stop > pos:
                events += self._advance(run, pos, stop, valid=current == 0)
                pos = stop
                continue
            at = pos * V7_LEN
            self._consistent = base + pos + 1
            events += self._v7_events(decode_v7(run[at : at + V7_LEN]))
            pos += 1
        self._consistent = base + total
        self._last_data = now
        name, count = self._run
        self._run = ("new", (count if name == "new" else 0) + total)
        if self.detected is None and self._run[1] >= 3:
            self.detected = "new"
        return events

    def _advance(self, run: bytes, lo: int, hi: int, *, valid: bool) -> list[Event]:
        """Packets ``lo..hi-1`` of ``run`` through the report window, statuses unchanged."""
        events: list[Event] = []
        n = self._per_report
        # Packets closing a window: packet k (1-based overall) does when (k - 1) % n == 0.
        close = lo + (-self._count) % n
        start = lo
        while close < hi:
            if valid:
                spo2, pulse = _latest_valid(run, start, close)
                if spo2 is not None:
                    self._latest_spo2 = spo2
                if pulse is not None:
                    self._latest_pulse = pulse
            events += self._close_window()
            start = close + 1
            close += n
        if valid and start < hi:
            spo2, pulse = _latest_valid(run, start, hi - 1)
            if spo2 is not None:
                self._latest_spo2 = spo2
            if pulse is not None:
                self._latest_pulse = pulse
        self._count += hi - lo
        return events

    def _close_window(self) -> list[Event]:
        out: list[Event] = [
            Observation("spo2", self._latest_spo2, _SPO2.unit, _SPO2.mdc),
            Observation("pulse_rate", self._latest_pulse, _PULSE.unit, _PULSE.mdc),
        ]
        self._latest_spo2 = self._latest_pulse = None
        return out

    def _old_events(self, packet: OldPacket) -> list[Event]:
        if self._consistent < self._trust_after:
            return self._report(None, None, None)  # framing not established: no information
        codes: list[str] = []
        if packet.finger_out:
            codes.append("sensor_off")
        if packet.probe_error:
            codes.append("sensor_fault")
        if packet.searching:
            codes.append("searching")
        if packet.signal_strength < self._low_signal_below:
            codes.append("low_signal_quality")
        self._v7_class = None  # the tracker now holds old-protocol codes
        return self._report(codes, packet.spo2, packet.pulse_rate)

    def _v7_events(self, packet: V7Packet) -> list[Event]:
        if self._consistent < self._trust_after:
            return self._report(None, None, None)  # framing not established: no information
        codes: list[str] = []
        pulse: int | None = packet.pulse_raw
        spo2: int | None = packet.spo2_raw
        self._v7_class = 0
        if self._validity_flags:
            high = packet.high_byte
            if high & 0x02:
                codes.append("sensor_off")
            if high & 0x01:
                codes.append("searching")
            if high & 0x03:
                pulse = spo2 = None
            self._v7_class = high & 0x03
        if pulse == 0xFF:
            pulse = None
        if spo2 is not None and (spo2 in (0x7F, 0xFF) or spo2 > 100):
            spo2 = None
        return self._report(codes, spo2, pulse)

    def _report(self, codes: list[str] | None, spo2: int | None, pulse: int | None) -> list[Event]:
        """One packet's statuses (None: leave them as they are), values and report window."""
        events: list[Event] = list(self._tracker.update(codes)) if codes is not None else []
        if spo2 is not None:
            self._latest_spo2 = float(spo2)
        if pulse is not None:
            self._latest_pulse = float(pulse)
        self._count += 1
        if (self._count - 1) % self._per_report == 0:
            events += self._close_window()
        return events

    def feed_eof(self) -> list[Event]:
        """Report leftover bytes, switch statuses off, forget the detected protocol."""
        events: list[Event] = []
        left = self._skipped + len(self._buffer)
        if left:
            events.append(DecodeProblem("truncated_packet", left))
        self._buffer.clear()
        self._skipped = 0
        self._run = ("", 0)
        self._consistent = 0
        self._count = 0
        self._latest_spo2 = self._latest_pulse = None
        self._last_data = None
        self._last_start = None
        self._next_keepalive = None
        if self.protocol == "auto":
            self.detected = None
        self._outgoing = bytearray(START_REALTIME if self._speaks_v7() else b"")
        events += self._tracker.reset()
        self._v7_class = 0
        return events

    # -- sending -----------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """The V7 start command first, then keep-alives (nothing for an old device)."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def next_deadline(self) -> float | None:
        """Keep-alive time; 0.0 before the first ``on_timer`` so the schedule can start."""
        if not self._speaks_v7():
            return None
        return 0.0 if self._next_keepalive is None else self._next_keepalive

    def on_timer(self, now: float) -> list[Event]:
        """Queue a keep-alive when due, and the start command again if the stream died."""
        if not self._speaks_v7():
            return []
        if self._next_keepalive is None:
            self._next_keepalive = now + self._keepalive_interval
            self._last_start = now
            return []
        if now >= self._next_keepalive:
            self._outgoing += KEEP_ALIVE
            self._next_keepalive = now + self._keepalive_interval
            last = max(self._last_data or 0.0, self._last_start or 0.0)
            if now - last >= self._restart_after:
                self._outgoing += START_REALTIME
                self._last_start = now
        return []
