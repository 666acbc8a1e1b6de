"""BerryMed BCI protocol driver (BerryMed USB/Bluetooth oximeters and their OEM clones).

Source: BerryMed "BCI Protocol V1.2" PDF, github.com/zh2x/BCI_Protocol @ b0237a4 (key BCI in
``device-protocols.md`` §1.5). 5-byte packets, **100 packets per second**, no checksum; the
only framing is bit 7 (set in byte 1, clear in bytes 2-5).

Layout::

    byte 1  1 | beep | probe unplugged | no signal | signal strength (4 bits, 0-8)
    byte 2  0 | pleth (7 bits, 0-100, 0 = invalid)
    byte 3  0 | PR bit 7 | pulse search | no finger | bar graph (4 bits, 0 = invalid)
    byte 4  0 | PR bits 6..0
    byte 5  0 | SpO2 (7 bits, 0-100)

    invalid markers: pulse rate 0xFF (255), SpO2 0x7F (127) -> value None

Status mapping (our choice where the PDF only names the bit):

- byte 1 bit 5 "probe unplugged" -> ``no_sensor``
- byte 3 bit 4 "no finger" -> ``sensor_off``
- byte 3 bit 5 "pulse research" -> ``searching``
- byte 1 bit 4 "no signal" -> ``searching`` (no pulse signal to compute from, so the
  values are not valid: the engine must not read them as physiology)
- signal strength below ``low_signal_below`` (constructor option, default 2) ->
  ``low_signal_quality``; the PDF gives the 0-8 range but no threshold.

No checksum: a packet's values and statuses count only once the framing held for
:data:`~vitalwatch.drivers.base.CONSISTENT_FRAMES` packets in a row since the last undecodable
byte (``consistent_frames``; random bytes at a wrong baud rate frame single packets about 30
times a second and would read as flapping statuses and pulse 154); undecodable bytes also drop
the window's values.

Observations: the waveform rate is far more than an alarm engine wants, so the driver reports
``spo2`` and ``pulse_rate`` once per ``packets_per_report`` packets (default 100 = once per
second at the device's own rate), with the latest valid value seen in that window, or None
when there was none. Counting packets rather than reading ``now`` keeps the output the same
however the bytes are chunked. Statuses are reported as soon as they change.

The baud rate of the USB variant is not in the PDF **[unconfirmed]**. The class default is
9600 8N1 (the stream needs 500 bytes/s, 9600 baud carries 960); set the real rate in the
device's ``serial`` config section, which overrides this default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vitalwatch.drivers.base import (
    CONSISTENT_FRAMES,
    UNDECODABLE_REPORT_BYTES,
    SerialSettings,
    StatusTracker,
)
from vitalwatch.drivers.events import DecodeProblem, Event, Observation
from vitalwatch.drivers.plausibility import screened
from vitalwatch.drivers.vocabulary import KINDS

__all__ = ["BciDriver", "BciPacket", "LatestPerWindow", "decode_packet", "encode_packet"]

PACKET_LEN = 5
PULSE_INVALID = 0xFF
SPO2_INVALID = 0x7F


@dataclass(frozen=True, slots=True, kw_only=True)
class BciPacket:
    """One decoded 5-byte packet; ``pulse_rate``/``spo2`` None mean the device's invalid marker."""

    signal_strength: int = 0
    no_signal: bool = False
    probe_unplugged: bool = False
    beep: bool = False
    pleth: int = 0
    bar: int = 0
    no_finger: bool = False
    searching: bool = False
    pulse_rate: int | None = None
    spo2: int | None = None


def decode_packet(raw: bytes) -> BciPacket:
    """Decode one packet already known to be framed (bit 7 set only in byte 1)."""
    b1, b2, b3, b4, b5 = raw[:PACKET_LEN]
    pulse = ((b3 & 0x40) << 1) | (b4 & 0x7F)
    spo2 = b5 & 0x7F
    return BciPacket(
        signal_strength=b1 & 0x0F,
        no_signal=bool(b1 & 0x10),
        probe_unplugged=bool(b1 & 0x20),
        beep=bool(b1 & 0x40),
        pleth=b2 & 0x7F,
        bar=b3 & 0x0F,
        no_finger=bool(b3 & 0x10),
        searching=bool(b3 & 0x20),
        pulse_rate=None if pulse == PULSE_INVALID else pulse,
        # 101-126 cannot be a saturation either; treat them like the marker.
        spo2=None if spo2 == SPO2_INVALID or spo2 > 100 else spo2,
    )


def encode_packet(packet: BciPacket) -> bytes:
    """The inverse of :func:`decode_packet` (used by the simulator and the round-trip tests)."""
    pulse = PULSE_INVALID if packet.pulse_rate is None else packet.pulse_rate & 0xFF
    spo2 = SPO2_INVALID if packet.spo2 is None else packet.spo2 & 0x7F
    b1 = 0x80 | (packet.signal_strength & 0x0F)
    b1 |= 0x10 if packet.no_signal else 0
    b1 |= (0x20 if packet.probe_unplugged else 0) | (0x40 if packet.beep else 0)
    b3 = (packet.bar & 0x0F) | (0x10 if packet.no_finger else 0) | (0x20 if packet.searching else 0)
    b3 |= (pulse & 0x80) >> 1
    return bytes((b1, packet.pleth & 0x7F, b3, pulse & 0x7F, spo2))


def find_sync5(buffer: bytearray) -> tuple[int, int]:
    """Where the next complete sync-bit packet starts: ``(skipped, start)``.

    ``start`` is -1 when the buffer does not hold a whole packet yet; ``skipped`` counts the
    bytes before it that can never start one (so the caller can drop and report them).
    Shared with the old Contec protocol, which frames the same way.
    """
    i = 0
    while i < len(buffer):
        if not buffer[i] & 0x80:
            i += 1
            continue
        tail = buffer[i + 1 : i + PACKET_LEN]
        bad = next((k for k, b in enumerate(tail) if b & 0x80), None)
        if bad is not None:
            i += 1 + bad  # the next sync-bit byte may start a packet
            continue
        if len(tail) < PACKET_LEN - 1:
            return i, -1
        return i, i
    return i, -1


class LatestPerWindow:
    """Report the latest valid value once per ``n`` packets (device time, not wall time)."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("packets per report must be >= 1")
        self._n = n
        self._count = 0
        self._latest: dict[str, float] = {}

    def add(self, values: dict[str, float | None]) -> list[Observation] | None:
        """Record one packet's values; observations when a window closes, else None.

        The first packet closes a window at once, so a fresh connection reports without
        waiting a second.
        """
        for kind, value in values.items():
            if value is not None:
                self._latest[kind] = value
        self._count += 1
        if (self._count - 1) % self._n:
            return None
        out = [
            Observation(kind, self._latest.get(kind), KINDS[kind].unit, KINDS[kind].mdc) for kind in values
        ]
        self._latest.clear()
        return out

    def reset(self) -> None:
        self._count = 0
        self._latest.clear()

    def forget_values(self) -> None:
        """Drop the values seen so far in this window (the framing broke: they may be junk)."""
        self._latest.clear()


@screened
class BciDriver:
    """Sans-I/O decoder for the BCI 5-byte stream (see the module docstring)."""

    name: ClassVar[str] = "bci"
    serial: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)  # [unconfirmed], see above

    def __init__(
        self,
        *,
        packets_per_report: int = 100,
        low_signal_below: int = 2,
        consistent_frames: int = CONSISTENT_FRAMES,
    ) -> None:
        # 100 packets = 1 s at the BCI rate: the engine wants values, not waveform samples.
        self._window = LatestPerWindow(packets_per_report)
        if consistent_frames < 1:
            raise ValueError("consistent frames must be >= 1")
        self._trust_after = consistent_frames  # 1: every framed packet counts (unit tests)
        self._consistent = 0  # well-framed packets in a row since the last undecodable byte
        self._low_signal_below = low_signal_below
        self._buffer = bytearray()  # never more than one packet plus one byte: see feed()
        self._skipped = 0
        self._tracker = StatusTracker()
        self._codes: list[str] = []  # what the tracker holds, in the order given

    def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
        """Decode bytes; junk before a packet becomes ``DecodeProblem("resync", n)``.

        A long run of junk (wrong baud rate) is reported as it goes, one problem per
        ``UNDECODABLE_REPORT_BYTES``, not once when a packet finally comes.
        """
        events: list[Event] = []
        self._buffer += data
        while True:
            skipped, start = find_sync5(self._buffer)
            if skipped:
                self._skipped += skipped
                del self._buffer[:skipped]
                self._consistent = 0
                self._window.forget_values()
                while self._skipped >= UNDECODABLE_REPORT_BYTES:
                    events.append(DecodeProblem("resync", UNDECODABLE_REPORT_BYTES))
                    self._skipped -= UNDECODABLE_REPORT_BYTES
            if start < 0:
                break
            raw = bytes(self._buffer[:PACKET_LEN])
            del self._buffer[:PACKET_LEN]
            if self._skipped:
                events.append(DecodeProblem("resync", self._skipped))
                self._skipped = 0
            self._consistent += 1
            events += self._packet(decode_packet(raw))
        return events

    def _packet(self, packet: BciPacket) -> list[Event]:
        if self._consistent < self._trust_after:  # framing not established: no information
            return list(self._window.add({"spo2": None, "pulse_rate": None}) or [])
        codes: list[str] = []
        if packet.probe_unplugged:
            codes.append("no_sensor")
        if packet.no_finger:
            codes.append("sensor_off")
        if packet.searching or packet.no_signal:
            codes.append("searching")
        if packet.signal_strength < self._low_signal_below:
            codes.append("low_signal_quality")
        # Statuses repeat in all 100 packets/s: only ask the tracker when they change (the
        # tracker call was a sixth of the decode time, which sits near the 1000x bench target).
        events: list[Event] = []
        if codes != self._codes:
            events += self._tracker.update(codes)
            self._codes = codes
        values: dict[str, float | None] = {
            "spo2": None if packet.spo2 is None else float(packet.spo2),
            "pulse_rate": None if packet.pulse_rate is None else float(packet.pulse_rate),
        }
        events += self._window.add(values) or []
        return events

    def feed_eof(self) -> list[Event]:
        """Report leftover bytes, switch every status off and start over."""
        events: list[Event] = []
        left = self._skipped + len(self._buffer)
        if left:
            events.append(DecodeProblem("truncated_packet", left))
        self._buffer.clear()
        self._skipped = 0
        self._consistent = 0
        self._window.reset()
        events += self._tracker.reset()
        self._codes = []
        return events

    def data_to_send(self) -> bytes:
        """BCI devices stream unasked: nothing to send."""
        return b""

    def next_deadline(self) -> float | None:
        return None

    def on_timer(self, now: float) -> list[Event]:
        return []
