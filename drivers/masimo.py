"""Masimo "ASCII 1" serial output (Rad-8, Radical-5, Radical-7 incl. "color", Rad-87) and Rad-8 trend lines.

Link: RS-232 9600 8N1, no handshake, null-modem cable (RAD8MAN p.7-3; ``device-protocols.md`` §1.2).
The device talks, the host never answers: one line per second (MDPNP ``poxrad_discrete.h``).

Layout (tokens separated by spaces; which tokens appear, and their widths, vary by model)::

    MM/DD/YY HH:MM:SS SN=<10> SPO2=<3>% BPM=<3> PI=<2.2>% SPCO=<2.1>% SPMET=<2.1>% DESAT=<2>
        PIDELTA=<±2> [PVI=<3>] [SPHB=<2.1>] ALARM=<hex> EXC=<hex> [EXC1=<hex>] CR LF

    Rad-8       ... ALARM=0000 EXC=000800                      (YAHNATAN capture)
    Radical-5   09/15/10 15:10:29 SPO2=097% BPM=064 PI=11.82% ALARM=20 EXC=800   (MDPNP, no SN)
    Radical-7   ... PVI=027 ALARM=0000 EXC=000820              (MDPNP)
    "color"     ... PI=00.55 (no %) SPHB=--.- SPOC=-- RESVD=--- ... ALARM=000000 EXC=0000C00 EXC1=00000000
                                                               (NMENON comments)
    Trend       09/21/08 09:56:12 SpO2=097 PR=069 PI=04.69 EXC=800:SET     (RAD8MAN p.4-24, 2 s apart)

So the decoder parses ``KEY=VALUE`` tokens, strips ``%``, and reads ALARM/EXC as hex of any width.
A value filled with dashes (``---%``, ``--.--%``) is the device saying "no value": ``value=None``.

Decoded: SPO2 (trend: SpO2) -> ``spo2``, BPM (trend: PR) -> ``pulse_rate``, PI -> ``perfusion_index``;
PVI, SPHB, SPCO, SPMET -> ``pvi``, ``sphb``, ``spco``, ``spmet`` only when the token is present.
SN, DESAT, PIDELTA, SPOC, RESVD and EXC1 are accepted and ignored (no documented meaning for EXC1).

EXC bits -> status codes (MDPNP ``exceptionmessage()``; the low 12 bits agree with RAD8MAN p.4-24):

=========  ============================  ======================
bit        Masimo name                   status
=========  ============================  ======================
0x000001   No Sensor                     no_sensor
0x000002   Defective Sensor              sensor_fault
0x000004   Low Perfusion                 low_perfusion
0x000008   Pulse Search                  searching
0x000010   Interference                  interference
0x000020   Sensor Off                    sensor_off
0x000040   Ambient Light                 ambient_light
0x000080   Unrecognized Sensor           sensor_fault
0x000100   Incompatible Sensor           sensor_fault
0x000400   Low Signal IQ                 low_signal_quality
0x000800   Masimo SET (normal running)   (none)
0x001000   No Cable                      sensor_fault
0x002000   Cable Life Expired            sensor_fault
0x004000   Incompatible Cable            sensor_fault
0x008000   Unrecognized Cable            sensor_fault
0x010000   Defective Cable               sensor_fault
0x020000   Sensor Calibrating            calibrating
0x040000   Sensor Life Expired           sensor_fault  (our choice: "expired sensor" per vocabulary)
0x080000   Emitter Temp Out of Range     sensor_fault  (our choice: a sensor hardware condition)
0x100000   Sensor Current Limit          sensor_fault  (our choice, as above)
=========  ============================  ======================

0x200 and 0x800000 are reserved; 0x200000/0x400000 (SpCO/SpMET low confidence) concern only those two
values and have no status code yet, so they are ignored. ``sensor_fault`` carries ``faults`` (which ones).

ALARM bits are a different table (MDPNP ``alarmmessage()``, confirmed for the low 6 bits by NMENON's
experiments on a Rad-8); decoding ALARM with the EXC table (as YAHNATAN does) is wrong:
0x10 alarm active -> ``device_alarm`` with ``alarms`` listing the limit bits set (0x1 spo2_high, 0x2
spo2_low, 0x4 pr_high, 0x8 pr_low, 0x100 spco_high, 0x200 spco_low, 0x400 spmet_high, 0x800 spmet_low,
0x1000 desat_index, 0x2000 pi_rate_of_change); 0x20 -> ``alarm_silenced``; 0x40 -> ``low_battery``.

Statuses are edges (StatusTracker), so a change of *which* alarm sounds while ``device_alarm`` stays on
is not reported again; the detail is that of the first line where it switched on.

Trend lines print a missing value as ``000`` / ``00.00`` (RAD8MAN sample: ``SpO2=000 PR=000 PI=00.00``
while ``OffPat``), not dashes. A real SpO2 or pulse rate of 0 is impossible while the device shows one,
so by default 0 in a trend line is ``None`` (``trend_zero_is_missing=False`` keeps the zeros). ASCII 1
lines use dashes for missing, so a 0 there is kept as a number.

``device_time`` is the line's ``MM/DD/YY HH:MM:SS`` prefix as a naive datetime (the monitor's local
clock, 20YY); None when the prefix is absent or not a real date. Statuses of a line come before its
observations. Lines that do not parse become ``DecodeProblem`` and decoding goes on with the next line.
A value outside its plausible range (SpO2 998 %, pulse 703/min: a corrupted digit) is an
``implausible:<kind>`` problem and ``value=None`` (:mod:`vitalwatch.drivers.plausibility`); the
line's other values are kept.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import ClassVar, TypeVar

from vitalwatch.drivers.base import LineSplitter, SerialSettings, StatusTracker
from vitalwatch.drivers.events import DecodeProblem, Event, Observation
from vitalwatch.drivers.plausibility import MAX_NUMBER_CHARS, screened
from vitalwatch.drivers.vocabulary import KINDS

__all__ = ["MasimoDriver", "encode_line"]

# The longest real line (Radical-7 "color", NMENON) is about 200 bytes; 512 leaves room for a model
# with more fields while a stream without line feeds (wrong baud rate, ASCII 2 binary) is cut off
# after about half a second at 9600 baud instead of growing the buffer.
DEFAULT_MAX_LINE_BYTES = 512

# (bit, status code, Masimo name); names go into the detail of sensor_fault.
_EXC_BITS: tuple[tuple[int, str, str], ...] = (
    (0x000001, "no_sensor", "no_sensor"),
    (0x000002, "sensor_fault", "defective_sensor"),
    (0x000004, "low_perfusion", "low_perfusion"),
    (0x000008, "searching", "pulse_search"),
    (0x000010, "interference", "interference"),
    (0x000020, "sensor_off", "sensor_off"),
    (0x000040, "ambient_light", "ambient_light"),
    (0x000080, "sensor_fault", "unrecognized_sensor"),
    (0x000100, "sensor_fault", "incompatible_sensor"),
    (0x000400, "low_signal_quality", "low_signal_iq"),
    (0x001000, "sensor_fault", "no_cable"),
    (0x002000, "sensor_fault", "cable_life_expired"),
    (0x004000, "sensor_fault", "incompatible_cable"),
    (0x008000, "sensor_fault", "unrecognized_cable"),
    (0x010000, "sensor_fault", "defective_cable"),
    (0x020000, "calibrating", "sensor_calibrating"),
    (0x040000, "sensor_fault", "sensor_life_expired"),
    (0x080000, "sensor_fault", "emitter_temp_out_of_range"),
    (0x100000, "sensor_fault", "sensor_current_limit"),
)

_ALARM_ACTIVE = 0x10
_ALARM_SILENCED = 0x20
_ALARM_LOW_BATTERY = 0x40
_ALARM_LIMITS: tuple[tuple[int, str], ...] = (
    (0x0001, "spo2_high"),
    (0x0002, "spo2_low"),
    (0x0004, "pr_high"),
    (0x0008, "pr_low"),
    (0x0100, "spco_high"),
    (0x0200, "spco_low"),
    (0x0400, "spmet_high"),
    (0x0800, "spmet_low"),
    (0x1000, "desat_index"),
    (0x2000, "pi_rate_of_change"),
)

# Token key (upper-cased) -> observation kind, in the order observations are emitted.
_FIELDS: dict[str, str] = {
    "SPO2": "spo2",
    "BPM": "pulse_rate",
    "PR": "pulse_rate",  # trend download spelling
    "PI": "perfusion_index",
    "PVI": "pvi",
    "SPHB": "sphb",
    "SPCO": "spco",
    "SPMET": "spmet",
}
_ORDER = ("spo2", "pulse_rate", "perfusion_index", "pvi", "sphb", "spco", "spmet")
# (kind, unit, MDC code) in emission order.
_EMIT = tuple((kind, KINDS[kind].unit, KINDS[kind].mdc) for kind in _ORDER)

# Memos of pure functions of one token's text: a device repeats the same tokens line after line
# (SN=..., SPCO=--.-%, ALARM=0000, EXC=000800, most SPO2= and BPM= values), and looking a token
# up costs far less than validating and parsing it again. Only results are kept, never a
# rejection (a bad token is judged again, as before). Each memo is emptied when it reaches
# _MEMO_LIMIT entries, so a stream of ever-new tokens costs the parsing it always did and
# bounded memory, and results never depend on what is in a memo.
_MEMO_LIMIT = 4096
_TOKENS: dict[str, tuple[str, str]] = {}  # token -> (upper-cased key, value text)
_VALUES: dict[str, float | None] = {}  # value text -> _value()
_DATES: dict[str, tuple[int, int, int]] = {}  # MM/DD/YY -> (year, month, day) as numbers
_Detail = dict[str, dict[str, str | int | float | bool]]
# (EXC text, ALARM text) -> _statuses()
_STATUSES: dict[tuple[str | None, str | None], tuple[tuple[str, ...], _Detail]] = {}

_TIMESTAMP = re.compile(rb"\d\d/\d\d/\d\d \d\d:\d\d:\d\d ")
_DATE = re.compile(r"\d\d/\d\d/\d\d\Z")
_TIME = re.compile(r"\d\d:\d\d:\d\d\Z")
_NUMBER = re.compile(r"\d++(?:\.\d++)?+\Z")  # possessive: linear, and only on <= MAX_NUMBER_CHARS
_DASH_FILL = frozenset("-.")
_HEX = re.compile(r"[0-9A-Fa-f]+\Z")
_PRINTABLE = re.compile(rb"[\x20-\x7e]*\Z")
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")


class _BadLine(Exception):
    """Internal: why one line was rejected (becomes a DecodeProblem, never escapes the driver)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@screened
class MasimoDriver:
    """Sans-I/O decoder for Masimo ASCII 1 lines (and Rad-8 trend download lines)."""

    name: ClassVar[str] = "masimo"
    serial: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)

    def __init__(
        self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, trend_zero_is_missing: bool = True
    ) -> None:
        if max_line_bytes < 64:
            raise ValueError("max_line_bytes must be at least 64 (a Masimo line is up to ~200 bytes)")
        self._lines = LineSplitter(max_line_bytes)
        self._status = StatusTracker()
        # The codes of the last line handed to the tracker (it only reports edges, so the same
        # codes again report nothing and skip it); () whenever the tracker is empty.
        self._codes: tuple[str, ...] = ()
        self._trend_zero_is_missing = trend_zero_is_missing

    def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
        """Decode complete lines in ``data``; ``now`` is unused (the device needs no timers)."""
        lines, problems = self._lines.feed(data)
        events: list[Event] = list(problems)
        for line in lines:
            events += self._decode(line)
        return events

    def feed_eof(self) -> list[Event]:
        """An unterminated last line is a problem; every status switches off with the link."""
        events: list[Event] = list(self._lines.feed_eof())
        events += self._status.reset()
        self._codes = ()
        return events

    def data_to_send(self) -> bytes:
        """Masimo ASCII 1 is output-only: nothing to send."""
        return b""

    def next_deadline(self) -> float | None:
        """No timers: the device talks on its own every second."""
        return None

    def on_timer(self, now: float) -> list[Event]:
        """No timers (silence is detected by the link, not here)."""
        return []

    def _decode(self, line: bytes) -> list[Event]:
        """One line (without CR/LF) -> statuses (changes) then observations, or problems."""
        if not line.strip():
            # A cooked tty turns CR LF into a blank line (YAHNATAN); not noise.
            return []
        events: list[Event] = []
        # Resync inside a line: noise glued in front of a timestamped line (the first line after
        # the cable is plugged in) is skipped and reported, and the line itself still decodes.
        match = _TIMESTAMP.search(line)
        if match is not None and match.start() > 0:
            events.append(DecodeProblem("garbage_before_line", match.start()))
            line = line[match.start() :]
        try:
            device_time, fields = _split(line)
            events += self._interpret(device_time, fields)
        except _BadLine as bad:
            events.append(DecodeProblem(bad.reason, len(line)))
        return events

    def _interpret(self, device_time: datetime | None, fields: dict[str, str]) -> list[Event]:
        trend = "PR" in fields and "BPM" not in fields
        values: dict[str, float | None] = {}
        for key, kind in _FIELDS.items():
            raw = fields.get(key)
            if raw is None:
                continue
            value = _VALUES[raw] if raw in _VALUES else _remember(_VALUES, raw, _value(raw))
            if trend and value == 0 and self._trend_zero_is_missing:
                value = None
            values[kind] = value
        if "spo2" not in values or "pulse_rate" not in values:
            raise _BadLine("missing_spo2_or_bpm")
        exc_alarm = (fields.get("EXC"), fields.get("ALARM"))
        known = _STATUSES.get(exc_alarm)
        if known is None:
            known = _remember(_STATUSES, exc_alarm, _statuses(*exc_alarm))
        codes, detail = known
        events: list[Event] = []
        if codes != self._codes:
            events += self._status.update(codes, detail)
            self._codes = codes
        for kind, unit, mdc in _EMIT:
            if kind in values:
                events.append(Observation(kind, values[kind], unit, mdc, device_time))
        return events


_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(memo: dict[_K, _V], key: _K, value: _V) -> _V:
    """Keep ``value`` in ``memo`` (emptied first when full; see _MEMO_LIMIT) and return it."""
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value
    return value


def _statuses(exc_text: str | None, alarm_text: str | None) -> tuple[tuple[str, ...], _Detail]:
    """The status codes (each once, in report order) and their detail for a line's EXC and ALARM
    fields (None: the field is absent); raises _BadLine("bad_hex") for EXC first, then ALARM."""
    exc = _hex(exc_text.partition(":")[0]) if exc_text is not None else 0
    alarm = _hex(alarm_text) if alarm_text is not None else 0

    codes: list[str] = []
    detail: _Detail = {}
    faults: list[str] = []
    for bit, code, masimo_name in _EXC_BITS:
        if exc & bit:
            codes.append(code)
            if code == "sensor_fault":
                faults.append(masimo_name)
    if faults:
        detail["sensor_fault"] = {"faults": ",".join(faults)}
    if alarm & _ALARM_ACTIVE:
        codes.append("device_alarm")
        detail["device_alarm"] = {"alarms": ",".join(n for bit, n in _ALARM_LIMITS if alarm & bit)}
    if alarm & _ALARM_SILENCED:
        codes.append("alarm_silenced")
    if alarm & _ALARM_LOW_BATTERY:
        codes.append("low_battery")
    return tuple(dict.fromkeys(codes)), detail


def _split(line: bytes) -> tuple[datetime | None, dict[str, str]]:
    """Printable ASCII line -> (device time, {UPPER KEY: value}); raises _BadLine."""
    if _PRINTABLE.match(line) is None:
        raise _BadLine("not_ascii")
    tokens = line.decode("ascii").split()
    device_time: datetime | None = None
    if len(tokens) >= 2 and _DATE.match(tokens[0]) and _TIME.match(tokens[1]):
        device_time = _device_time(tokens[0], tokens[1])
        tokens = tokens[2:]
    fields: dict[str, str] = {}
    for token in tokens:
        parsed = _TOKENS.get(token)
        if parsed is None:
            key, sep, value = token.partition("=")
            if not sep or _KEY.match(key) is None:
                raise _BadLine("bad_token")
            parsed = _remember(_TOKENS, token, (key.upper(), value))
        key, value = parsed
        if key in fields:
            raise _BadLine("duplicate_key")
        fields[key] = value
    return device_time, fields


def _device_time(date: str, time: str) -> datetime | None:
    """``MM/DD/YY`` ``HH:MM:SS`` -> naive datetime (20YY), None if not a real date/time.

    The date's numbers are memoised (a day's lines share one date); whether the date exists is
    still for ``datetime`` to say, with the time, on every line.
    """
    ymd = _DATES.get(date)
    if ymd is None:
        ymd = _remember(_DATES, date, (2000 + int(date[6:8]), int(date[0:2]), int(date[3:5])))
    try:
        return datetime(*ymd, int(time[0:2]), int(time[3:5]), int(time[6:8]))
    except ValueError:
        return None


def _value(raw: str) -> float | None:
    """``098%``, ``03.60``, ``--.-%`` -> number or None; raises _BadLine for anything else.

    Linear in the token: a value longer than ``MAX_NUMBER_CHARS`` is refused before any matching,
    and the dash fill is checked with set operations (the old ``[-.]*-[-.]*`` regex was quadratic).
    """
    text = raw[:-1] if raw.endswith("%") else raw
    if len(text) > MAX_NUMBER_CHARS:
        raise _BadLine("bad_value")
    if _NUMBER.match(text):
        return float(text)
    if "-" in text and _DASH_FILL.issuperset(text):
        return None
    raise _BadLine("bad_value")


def _hex(raw: str) -> int:
    if _HEX.match(raw) is None:
        raise _BadLine("bad_hex")
    return int(raw, 16)


def encode_line(
    *,
    when: datetime,
    spo2: int | None,
    pulse_rate: int | None,
    perfusion_index: float | None,
    exc: int = 0x800,
    alarm: int = 0,
    serial_number: str | None = "0000056661",
    model: str = "rad8",
    pvi: int | None = None,
    spco: float | None = None,
    spmet: float | None = None,
    desat: int | None = None,
    pi_delta: int | None = None,
) -> bytes:
    """One ASCII 1 line as the device prints it (the simulator's encoder, the decoder's mirror).

    ``model`` picks the layout: ``"rad8"`` (YAHNATAN capture, byte-exact), ``"radical5"`` (no SN,
    ``ALARM=20 EXC=800`` widths, MDPNP) or ``"radical7"`` (adds PVI, MDPNP). None prints the device's
    dash fill. The extra keyword arguments (pvi, spco, spmet, desat, pi_delta) default to dashes.
    """
    stamp = when.strftime("%m/%d/%y %H:%M:%S")
    spo2_text = "---" if spo2 is None else f"{spo2:03d}"
    pr_text = "---" if pulse_rate is None else f"{pulse_rate:03d}"
    pi_text = "--.--" if perfusion_index is None else f"{perfusion_index:05.2f}"
    if model == "radical5":
        line = f"{stamp} SPO2={spo2_text}% BPM={pr_text} PI={pi_text}% ALARM={alarm:02X} EXC={exc:03X}\r\n"
        return line.encode("ascii")
    if model not in ("rad8", "radical7"):
        raise ValueError(f"unknown Masimo model layout {model!r} (rad8, radical5, radical7)")
    sn = "----------" if serial_number is None else serial_number
    spco_text = "--.-" if spco is None else f"{spco:04.1f}"
    spmet_text = "--.-" if spmet is None else f"{spmet:04.1f}"
    desat_text = "--" if desat is None else f"{desat:02d}"
    delta_text = "+--" if pi_delta is None else f"{pi_delta:+03d}"
    parts = [
        stamp,
        f"SN={sn}",
        f"SPO2={spo2_text}%",
        f"BPM={pr_text}",
        f"PI={pi_text}%",
        f"SPCO={spco_text}%",
        f"SPMET={spmet_text}%",
        f"DESAT={desat_text}",
        f"PIDELTA={delta_text}",
    ]
    if model == "radical7":
        parts.append("PVI=---" if pvi is None else f"PVI={pvi:03d}")
    parts += [f"ALARM={alarm:04X}", f"EXC={exc:06X}"]
    return (" ".join(parts) + "\r\n").encode("ascii")
