"""Nellcor N-595 / NPB-290 / NPB-295 (and N-600x) real-time printout driver.

Sources: NPB-290/295 operator's manuals, "Data Port Protocol" appendix (key NPB29x in
``device-protocols.md`` §1.3, sample lines in ``tests/vectors/nellcor/``); OpenICE
``nellcor-n595.spec`` for the status codes, the ``*`` and ``---`` conventions and the N-595
extra lines (MDPNP @ 1ae7f72).

One ASCII line per reading (every 2 s on the NPB-290), CR LF or LF terminated::

    NPB-295 VERSION 2.0.0.0 CRC: XXXX SpO2 Limit: 70-100% PR Limit: 60-160BPM   <- header
    TIME %SPO2 BPM PA Status                                                     <- header
    12-NOV-98 14:00:05 100 120 50                                                <- data
    12-NOV-98 14:00:07 85* 120 50 SL                                             <- data
    12-NOV-98 14:00:09 --- --- --- SO                                            <- data
    \\_______________/ \\_/ \\_/ \\_/ \\_________/
     dd-MMM-yy HH:MM:SS SpO2 BPM PA  0..n two-letter status codes

The header pair repeats every 25 lines and whenever a value in it changes (new alarm limits):
it is skipped without an event, but its alarm limits are kept and put into the
``device_alarm`` detail. N-595 mode lines (``ADULT 0SAT-S ... MODE: NORMAL``) and its
interactive menu are skipped too. Anything else that is not a data line is a
``DecodeProblem``.

Values: ``---`` (any run of dashes) means no value -> None; a trailing ``*`` means the value is
outside its alarm limit: the value is kept and ``device_alarm`` is reported with
``detail={"param": "spo2" | "pulse_rate" | "spo2,pulse_rate", ...}``. The pulse amplitude (PA)
is decoded but not emitted: the vocabulary has no kind for a relative amplitude.

Status codes -> our vocabulary (OpenICE names the codes; the mapping is ours):

====  ==============================================  ===========================
AO    alarm off                                        alarm_silenced
AS    alarm silence                                    alarm_silenced
LB    low battery                                      low_battery
LM    loss of pulse with motion/interference           searching + artifact
LP    loss of pulse                                    searching
MO    motion / interference                            artifact
PH/PL pulse rate upper / lower limit alarm             device_alarm (pulse_rate)
PS    pulse search                                     searching
SH/SL saturation upper / lower limit alarm             device_alarm (spo2)
SD    sensor disconnect                                no_sensor
SO    sensor off                                       sensor_off
====  ==============================================  ===========================

LP is mapped to ``searching`` (an unreliable status) because it is the oximeter saying it
cannot find a pulse in the signal: the engine then raises a technical alarm at once instead
of reading the last numbers as physiology. Unknown codes are ignored.

Baud rate: **[unconfirmed]** in every source read. The class default is 9600 8N1, only a plausible
guess; set the rate chosen in the monitor's setup menu in the device's ``serial`` config
section, which overrides the class default. Flow control is
XON/XOFF (not part of :class:`SerialSettings`); no output at all while on battery (NPB-290).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from vitalwatch.drivers.base import LineSplitter, SerialSettings, StatusTracker
from vitalwatch.drivers.events import DecodeProblem, Event, Observation
from vitalwatch.drivers.plausibility import screened
from vitalwatch.drivers.vocabulary import KINDS

__all__ = ["STATUS_MAP", "NellcorDriver", "NellcorLine", "format_line", "parse_line"]

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

STATUS_MAP: dict[str, tuple[str, ...]] = {
    "AO": ("alarm_silenced",),
    "AS": ("alarm_silenced",),
    "LB": ("low_battery",),
    "LM": ("searching", "artifact"),
    "LP": ("searching",),
    "MO": ("artifact",),
    "PH": ("device_alarm",),
    "PL": ("device_alarm",),
    "PS": ("searching",),
    "SH": ("device_alarm",),
    "SL": ("device_alarm",),
    "SD": ("no_sensor",),
    "SO": ("sensor_off",),
}
_ALARM_PARAM = {"PH": "pulse_rate", "PL": "pulse_rate", "SH": "spo2", "SL": "spo2"}

_DATA = re.compile(
    rb"^\s*(\d{2})-([A-Z]{3})-(\d{2})\s+(\d{2}):(\d{2}):(\d{2})"
    rb"\s+(\S+)\s+(\S+)\s+(\S+)((?:\s+[A-Z]{2})*)\s*$"
)
_VALUE = re.compile(rb"^(?:(\d{1,3})(\*?)|(-+)(\*?))$")
_HEADER = re.compile(rb"VERSION|^\s*TIME\s+%SPO2|MODE:|Interactive Mode|^\s*\d\)\s")
_LIMITS = re.compile(rb"SpO2 Limit:\s*(\d+)-(\d+)%\s*PR Limit:\s*(\d+)-(\d+)")


@dataclass(frozen=True, slots=True, kw_only=True)
class NellcorLine:
    """One decoded data line; None values are the device's ``---``."""

    time: datetime | None
    spo2: int | None
    pulse_rate: int | None
    pa: int | None
    spo2_star: bool = False
    pulse_star: bool = False
    codes: tuple[str, ...] = ()


def _value(token: bytes) -> tuple[int | None, bool] | None:
    m = _VALUE.match(token)
    if m is None:
        return None
    if m.group(1) is not None:
        return int(m.group(1)), bool(m.group(2))
    return None, bool(m.group(4))


def parse_line(line: bytes) -> NellcorLine | None:
    """A data line, or None if the line is not one (headers are checked by the caller)."""
    m = _DATA.match(line)
    if m is None:
        return None
    spo2, pulse, pa = (_value(m.group(i)) for i in (7, 8, 9))
    if spo2 is None or pulse is None or pa is None:
        return None
    if spo2[0] is not None and spo2[0] > 100:
        # A saturation above 100 % is a corrupted line (lost spaces), never a reading.
        return None
    day, mon, yy, hh, mi, ss = m.group(1, 2, 3, 4, 5, 6)
    try:
        year = int(yy) + (1900 if int(yy) >= 70 else 2000)  # the manuals' own examples say 97, 98
        time: datetime | None = datetime(
            year, MONTHS.index(mon.decode()) + 1, int(day), int(hh), int(mi), int(ss)
        )
    except ValueError:
        time = None
    codes = tuple(c.decode() for c in m.group(10).split())
    return NellcorLine(
        time=time,
        spo2=spo2[0],
        pulse_rate=pulse[0],
        pa=pa[0],
        spo2_star=spo2[1],
        pulse_star=pulse[1],
        codes=codes,
    )


def format_line(line: NellcorLine) -> bytes:
    """Render a data line as the monitor prints it (used by the simulator), CR LF included."""
    stamp = line.time or datetime(2000, 1, 1)
    when = f"{stamp.day:02d}-{MONTHS[stamp.month - 1]}-{stamp.year % 100:02d} {stamp:%H:%M:%S}"

    def val(v: int | None, star: bool) -> str:
        # The manual's sample prints plain numbers with single spaces ("100 120 50").
        return ("---" if v is None else str(v)) + ("*" if star else "")

    parts = [when, val(line.spo2, line.spo2_star), val(line.pulse_rate, line.pulse_star), val(line.pa, False)]
    return (" ".join(parts + list(line.codes))).encode() + b"\r\n"


@screened
class NellcorDriver:
    """Sans-I/O decoder of the Nellcor real-time printout (see the module docstring)."""

    name: ClassVar[str] = "nellcor"
    serial: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)  # [unconfirmed]

    def __init__(self, *, max_line_bytes: int = 256) -> None:
        # The longest real line is the ~80-character header; 256 leaves room for N-600x
        # variants while a wrong baud rate (no LF ever) is caught within a quarter second.
        self._lines = LineSplitter(max_line_bytes)
        self._tracker = StatusTracker()
        self._limits: dict[str, str] = {}
        self._detail: dict[str, dict[str, str | int | float | bool]] = {}

    def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
        """Decode complete lines; headers are skipped, unknown lines become problems."""
        lines, problems = self._lines.feed(data)
        events: list[Event] = list(problems)
        for line in lines:
            events += self._line(line)
        return events

    def _line(self, raw: bytes) -> list[Event]:
        if not raw.strip():
            return []
        parsed = parse_line(raw)
        if parsed is None:
            if _HEADER.search(raw):
                self._header(raw)
                return []
            return [DecodeProblem("unrecognised_line", len(raw))]
        return self._data(parsed)

    def _header(self, raw: bytes) -> None:
        m = _LIMITS.search(raw)
        if m is not None:
            lo_s, hi_s, lo_p, hi_p = (g.decode() for g in m.groups())
            self._limits = {"spo2_limits": f"{lo_s}-{hi_s}", "pulse_rate_limits": f"{lo_p}-{hi_p}"}

    def _data(self, line: NellcorLine) -> list[Event]:
        codes: list[str] = []
        params: list[str] = []
        if line.spo2_star:
            params.append("spo2")
        if line.pulse_star:
            params.append("pulse_rate")
        device_codes: list[str] = []
        for code in line.codes:
            mapped = STATUS_MAP.get(code)
            if mapped is None:
                continue  # unknown to every source: ignoring beats a problem on every line
            device_codes.append(code)
            codes += mapped
            if code in _ALARM_PARAM:
                params.append(_ALARM_PARAM[code])
        if params:
            codes.append("device_alarm")
        detail: dict[str, dict[str, str | int | float | bool]] = {}
        if "device_alarm" in codes:
            alarm: dict[str, str | int | float | bool] = {"param": ",".join(dict.fromkeys(params))}
            alarm.update(self._limits)
            detail["device_alarm"] = alarm
        for status in ("alarm_silenced", "searching", "artifact"):
            if status in codes:
                detail[status] = {"device_code": ",".join(c for c in device_codes if status in STATUS_MAP[c])}
        events: list[Event] = list(self._reedge(codes, detail))
        for kind, value in (("spo2", line.spo2), ("pulse_rate", line.pulse_rate)):
            k = KINDS[kind]
            events.append(
                Observation(kind, None if value is None else float(value), k.unit, k.mdc, line.time)
            )
        return events

    def _reedge(
        self, codes: list[str], detail: dict[str, dict[str, str | int | float | bool]]
    ) -> list[Event]:
        """Like ``StatusTracker.update``, but a changed detail (another parameter now in alarm)
        is reported as off + on, so the receiver learns it."""
        events: list[Event] = []
        active = self._tracker.active
        for code, new in detail.items():
            if code in active and self._detail.get(code) != new:
                events += self._tracker.set(code, False)
        self._detail = detail
        events += self._tracker.update(codes, detail)
        return events

    def feed_eof(self) -> list[Event]:
        """An unterminated line is a problem; statuses all switch off."""
        events: list[Event] = list(self._lines.feed_eof())
        events += self._tracker.reset()
        self._detail = {}
        return events

    def data_to_send(self) -> bytes:
        """The printout needs no request (an XON is only for a stalled port)."""
        return b""

    def next_deadline(self) -> float | None:
        return None

    def on_timer(self, now: float) -> list[Event]:
        return []
