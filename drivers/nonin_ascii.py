"""Nonin ASCII serial output ``SPO2=XXX HR=YYY`` (7500/7500FO, Avant 9600, 8500, 2500, 8600V, BT4000).

Sources (``device-protocols.md`` §1.1 "Nonin ASCII output"): the 7500FO manual p.29 (9600 baud, 8 data
bits, 2 stop bits, CR/LF, one line a second, ``*`` after ON/STANDBY is pressed, an ASCII header with
model, time and date sent first); Avant 9600 manual p.32 (`` F`` when DIP switch 8 selects fast
values); BT4000 manual p.35 (``SPO2=--- HR=---`` when there is no data); 8500/2500 manuals (9 data
bits with the 9th at mark: reads fine as 8N1; ``---``); 8600V manual p.25 (``HH:MM:SS `` prefix).

Layout (one line a second, CR LF)::

    [HH:MM:SS ]SPO2=XXX HR=YYY[ *][ F]
      XXX  0-100, or --- (no data)        YYY  pulse rate (3 digits), or --- (no data)

Decisions:

- Each data line gives one ``spo2`` and one ``pulse_rate`` observation; ``---`` (any number of
  dashes) is ``None``. A value outside its plausible range (SpO2 above 100, pulse 999) is an
  ``implausible:<kind>`` problem and ``None`` (:mod:`vitalwatch.drivers.plausibility`).
  The device already paces lines at 1/s, so no rate limit.
- These models send no status bits, so this driver never emits ``DeviceStatus``; a finger out only
  shows as ``---`` → ``None``. (Use the binary ``nonin`` driver where the device offers it.)
- The ``*`` event marker and the `` F`` fast-values flag are accepted and not reported (the event
  vocabulary has no place for them; fast values are still SpO2/HR).
- The 8600V ``HH:MM:SS`` prefix is skipped: without a date it cannot make ``device_time``.
- Digits may be zero- or space-padded (``SPO2= 97``) **[unconfirmed]**: both are accepted.
- The header line (model, time, date; exact text **[unconfirmed]**) and any other printable line
  that does not mention ``SPO2`` or ``HR=`` is skipped *without* a problem event, because every
  power-on sends one; lines that do mention them but do not parse, and lines with control or
  non-ASCII bytes (wrong baud rate), are ``DecodeProblem("bad_line", n)``.
"""

from __future__ import annotations

import re
from typing import ClassVar

from vitalwatch.drivers.base import LineSplitter, SerialSettings
from vitalwatch.drivers.events import DecodeProblem, Event, Observation
from vitalwatch.drivers.plausibility import screened
from vitalwatch.drivers.vocabulary import KINDS

__all__ = ["NoninAsciiDriver", "encode_line"]

_LINE = re.compile(
    rb"^(?:\d{1,2}:\d{2}:\d{2}\s+)?"  # 8600V time-of-day prefix
    rb"SPO2=\s*(?P<spo2>\d{1,3}|-{1,3})\s+"
    rb"HR=\s*(?P<hr>\d{1,3}|-{1,3})"
    rb"(?P<tail>(?:\s*[*F])*)\s*$"
)


def encode_line(
    spo2: int | None,
    hr: int | None,
    *,
    event: bool = False,
    fast: bool = False,
    clock: str | None = None,
) -> bytes:
    """One output line with CR LF (zero-padded to 3 digits; ``None`` becomes ``---``)."""
    s = "---" if spo2 is None else f"{spo2:03d}"
    h = "---" if hr is None else f"{hr:03d}"
    text = f"{clock} " if clock else ""
    text += f"SPO2={s} HR={h}"
    if event:
        text += " *"
    if fast:
        text += " F"
    return text.encode("ascii") + b"\r\n"


def _number(raw: bytes) -> float | None:
    """``097`` -> 97.0, dashes -> None; the range check is the plausibility screen's (one table)."""
    if raw.startswith(b"-"):
        return None
    return float(int(raw))


def _printable(line: bytes) -> bool:
    return all(0x20 <= b < 0x7F or b == 0x09 for b in line)


@screened
class NoninAsciiDriver:
    """Decoder for the Nonin ``SPO2=XXX HR=YYY`` once-a-second ASCII output."""

    name: ClassVar[str] = "nonin-ascii"
    # 7500 and Avant 9600 send 2 stop bits; an 8N1 reader also works (the extra stop bit is idle line).
    serial: ClassVar[SerialSettings] = SerialSettings(baudrate=9600, stopbits=2)

    def __init__(self, *, max_line_bytes: int = 256) -> None:
        # A data line is ~30 bytes; 256 leaves room for a long header and still bounds a
        # wrong-baud-rate stream that never sends LF.
        self._lines = LineSplitter(max_line_bytes)
        self.header_lines = 0
        self.event_markers = 0

    def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
        """Decode complete lines; partial lines wait for their LF."""
        lines, problems = self._lines.feed(data)
        events: list[Event] = list(problems)
        for line in lines:
            events += self._line(line)
        return events

    def feed_eof(self) -> list[Event]:
        """An unterminated last line is reported, not decoded (it may be cut short)."""
        return list(self._lines.feed_eof())

    def data_to_send(self) -> bytes:
        """This output is one-way: nothing to send."""
        return b""

    def next_deadline(self) -> float | None:
        """No timers."""
        return None

    def on_timer(self, now: float) -> list[Event]:
        """No timers."""
        return []

    def _line(self, line: bytes) -> list[Event]:
        stripped = line.strip()
        if not stripped:
            return []
        match = _LINE.match(stripped)
        if match is None:
            upper = stripped.upper()
            if _printable(stripped) and b"SPO2" not in upper and b"HR=" not in upper:
                self.header_lines += 1  # the power-on header (model, time, date)
                return []
            return [DecodeProblem("bad_line", len(line))]
        if b"*" in match["tail"]:
            self.event_markers += 1
        spo2 = _number(match["spo2"])
        hr = _number(match["hr"])
        k_spo2, k_hr = KINDS["spo2"], KINDS["pulse_rate"]
        return [
            Observation("spo2", spo2, k_spo2.unit, k_spo2.mdc),
            Observation("pulse_rate", hr, k_hr.unit, k_hr.mdc),
        ]
