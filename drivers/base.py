"""The driver contract, serial settings, and two helpers every family uses.

A driver is a sans-I/O protocol object (model: h11 ``Connection``, websockets
``protocol``): it never imports ``serial``, ``asyncio``, ``aiomqtt`` or ``time``. The
service's link pumps bytes in and writes what the driver wants to send:

.. code-block:: text

    bytes from port ──▶ feed(data, now) ──▶ [Observation | DeviceStatus | DecodeProblem]
    port ◀── data_to_send() ◀── (ACKs, polls, start commands queued by the driver)
    next_deadline() ──▶ the link calls on_timer(now) then (keep-alives, poll intervals)

``now`` is the caller's monotonic clock in seconds: the driver only uses it for its own
timers (polling, keep-alive). Replays pass virtual time, so the same bytes at the same
times always give the same events.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event

__all__ = [
    "UNDECODABLE_REPORT_BYTES",
    "Driver",
    "LineSplitter",
    "MeasurementStarter",
    "OptionError",
    "Parity",
    "SerialSettings",
    "StatusTracker",
]

# A stream that never makes a valid frame (wrong baud rate, wrong device) is reported as it
# goes, one problem per this many skipped bytes, not once at the end of input: at 9600 baud
# that is about one a second, so the log, the metrics and `vitalwatch decode` show it at once.
# Reports fall at fixed multiples of the bytes skipped, so they do not depend on how the
# stream was chunked.
UNDECODABLE_REPORT_BYTES = 1024

# Protocols without a checksum (BCI, old Contec: 5-byte packets framed by bit 7 alone; V7
# Contec: a type byte then 8 bytes with bit 7 set) trust a packet's values and statuses only
# once this many well-framed packets came back to back since the last undecodable byte. Random
# bytes (a wrong baud rate, a bad cable) frame one 5-byte packet about once in 32 positions
# but five in a row only about once in 32^5 (3e-8): at 1000 bytes/s once in ~9 h, where a
# single frame would pass 30 times a second. A real device at 60-100 packets/s reaches five in
# 50-85 ms, so a clean line loses nothing but the first few packets after a glitch.
CONSISTENT_FRAMES = 5


class OptionError(ValueError):
    """A driver option with an unusable value; ``option`` names it for the configuration error."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


class Parity(enum.StrEnum):
    """Serial parity, named as pyserial spells it."""

    NONE = "N"
    EVEN = "E"
    ODD = "O"


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialSettings:
    """Line settings a device family uses by default (the config may override them)."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: Parity = Parity.NONE
    stopbits: int = 1

    def bytes_per_second(self) -> float:
        """Line rate in bytes/s: start bit + data bits + parity + stop bits per byte."""
        bits = 1 + self.bytesize + (0 if self.parity is Parity.NONE else 1) + self.stopbits
        return self.baudrate / bits


@runtime_checkable
class Driver(Protocol):
    """What the link needs from every driver family."""

    name: ClassVar[str]
    serial: ClassVar[SerialSettings]

    def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
        """Decode bytes received at monotonic time ``now``; never raises on bad input."""
        ...

    def feed_eof(self) -> list[Event]:
        """The port closed: report what is left in the buffer as a problem, reset state."""
        ...

    def data_to_send(self) -> bytes:
        """Bytes the driver wants written to the device (and forgets once returned)."""
        ...

    def next_deadline(self) -> float | None:
        """When ``on_timer`` wants to be called next, or None for never."""
        ...

    def on_timer(self, now: float) -> list[Event]:
        """Run the driver's own timers (poll, keep-alive, timeouts)."""
        ...


@runtime_checkable
class DeviceClocked(Protocol):
    """A driver whose device sends at its own pace, far below the serial line rate.

    Offline tools (``vitalwatch decode``) give bytes the time they would have arrived at; a device
    that sends 375 bytes a second on a 9600-baud line would otherwise be replayed 2.5 times too
    fast, and a driver that reports at most once per second of ``now`` would report too little.
    """

    def device_byte_rate(self) -> float:
        """Bytes per second the device sends in its configured format."""
        ...


@runtime_checkable
class MeasurementStarter(Protocol):
    """An NIBP driver that can ask its device for a new measurement."""

    def start_measurement(self) -> None:
        """Queue the device command that starts a cuff cycle in ``data_to_send()``."""
        ...


class StatusTracker:
    """Turns "the set of conditions in this frame" into on/off ``DeviceStatus`` changes.

    Devices repeat their status bits in every frame; the engine wants edges. Keeping the
    last set here means every driver reports statuses the same way.
    """

    def __init__(self) -> None:
        self._active: dict[str, Mapping[str, str | int | float | bool]] = {}

    @property
    def active(self) -> frozenset[str]:
        return frozenset(self._active)

    def update(
        self,
        codes: Iterable[str],
        detail: Mapping[str, Mapping[str, str | int | float | bool]] | None = None,
    ) -> list[DeviceStatus]:
        """Report codes that switched on (in the order given) and off (sorted)."""
        detail = detail or {}
        now_active = list(dict.fromkeys(codes))
        changes: list[DeviceStatus] = []
        for code in now_active:
            if code not in self._active:
                changes.append(DeviceStatus(code, True, dict(detail.get(code, {}))))
        for code in sorted(set(self._active) - set(now_active)):
            changes.append(DeviceStatus(code, False))
        self._active = {code: detail.get(code, {}) for code in now_active}
        return changes

    def set(
        self, code: str, on: bool, detail: Mapping[str, str | int | float | bool] | None = None
    ) -> list[DeviceStatus]:
        """Switch one code without touching the others (for event-driven protocols like NIBP)."""
        if on and code not in self._active:
            self._active[code] = dict(detail or {})
            return [DeviceStatus(code, True, dict(detail or {}))]
        if not on and code in self._active:
            del self._active[code]
            return [DeviceStatus(code, False)]
        return []

    def reset(self) -> list[DeviceStatus]:
        """Everything off (used at end of input)."""
        return self.update(())


class LineSplitter:
    """Bounded line framing for ASCII protocols: splits on LF, strips CR.

    A device on the wrong baud rate or a loose connector produces an endless stream without
    line feeds; the bound turns that into a ``DecodeProblem`` instead of unbounded memory.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self._buffer = bytearray()
        self._max = max_line_bytes
        self._discarding = False

    def feed(self, data: bytes) -> tuple[list[bytes], list[DecodeProblem]]:
        """Complete lines (without CR/LF) and problems for over-long lines."""
        lines: list[bytes] = []
        problems: list[DecodeProblem] = []
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            if self._discarding:
                # Tail of an over-long line already reported: the next line starts clean.
                self._discarding = False
                continue
            lines.append(line)
        if len(self._buffer) > self._max:
            problems.append(DecodeProblem("line_too_long", len(self._buffer)))
            self._buffer.clear()
            self._discarding = True
        return lines, problems

    def feed_eof(self) -> list[DecodeProblem]:
        """Whatever is left is an unterminated line."""
        left = len(self._buffer)
        self._buffer.clear()
        self._discarding = False
        return [DecodeProblem("truncated_line", left)] if left else []
