"""Datascope ACCUTORR 3 ASCII command set: poll ``P`` for SpO2, pulse, the last NIBP and status bytes.

Source: ACCUTORR = Datascope ACCUTORR 3 operating manual pp.1-53/1-54 (rev. 08/24/90), OCR text
on manualslib.de; summarised in device-protocols.md §2.2 and §2.4. Sample:
``tests/vectors/nibp/accutorr3_patient_data_example_manual.txt``.

Layout (host sends one letter, the monitor answers a line)::

    host:    P<CR>
    monitor: P:SaO2,PR,SYS,MEAN,DIA,ST0,ST1,ST2,MIN<CR><LF>
             e.g.  P:--,85,120, 45, 80,000,010,000, 5
             SYS, MEAN, DIA in that order (not sys/dia/mean); "--" = no value;
             MIN = minutes since the last NIBP measurement
    host:    C<CR>   monitor: >            (prompt)

    ST0 bits 0-7: no sensor, sensor off, interference, pulse search, pulse level weak, no pulse,
                  check sensor site, PR under 30
    ST1 bits 0-7: PR over 250, SaO2 uncalibrated, alarm overlapped, RAM test failure,
                  ROM test failure, offset mismatch, filter mismatch, system test in progress
    ST2 bits 0-1: NIBP cuff overpressure, NIBP motion artifact (bits 2-7 unused)

[unconfirmed], chosen here and documented in docs/devices.md:

- How a status byte is printed. Default ``status_format="decimal"`` (a byte as 3 decimal
  digits 000-255 fits the 3-digit fields exactly); ``"binary"`` (digits are bits, MSB first),
  ``"octal"`` and ``"hex"`` are options. The manual's ``010`` is bits 1 and 3 in decimal.
- Whether a command needs a CR: ``command_suffix="\\r"`` by default, because a monitor that
  acts on the bare letter ignores or rejects the CR harmlessly, while one that waits for Enter
  would never answer a bare letter.
- Link settings: 9600 8N1 assumed.
- Spaces inside fields (the OCR shows ``, 45``) are tolerated; a leading ``>`` prompt is stripped.

A new NIBP measurement is detected when the "minutes since last NIBP" counter goes down (the
counter restarts at 0 after each measurement) or when SYS/MEAN/DIA differ from the previous
poll. Two measurements with identical values within one counter minute cannot be told apart.
On the first poll after connecting, a BP is reported only if the counter reads 0, so an old
reading on the screen is not announced as new (``report_initial_nibp=True`` reports it anyway).
A new measurement whose fields are ``--`` (failed cycle) gives the three NIBP observations
with ``value=None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from vitalwatch.drivers.base import LineSplitter, SerialSettings, StatusTracker
from vitalwatch.drivers.events import DecodeProblem, Event, Observation
from vitalwatch.drivers.plausibility import screened
from vitalwatch.drivers.vocabulary import KINDS

__all__ = [
    "STATUS_BITS",
    "AccutorrDriver",
    "PatientData",
    "StatusFormat",
    "encode_patient_data",
    "format_status",
    "parse_patient_data",
    "parse_status",
]

StatusFormat = Literal["decimal", "binary", "octal", "hex"]
_RADIX: dict[str, int] = {"decimal": 10, "binary": 2, "octal": 8, "hex": 16}
FIELD_COUNT = 9

# (status byte, bit) -> (vocabulary status code, condition name for the detail)
STATUS_BITS: dict[tuple[int, int], tuple[str, str]] = {
    (0, 0): ("no_sensor", "no_sensor"),
    (0, 1): ("sensor_off", "sensor_off"),
    (0, 2): ("interference", "interference"),
    (0, 3): ("searching", "pulse_search"),
    (0, 4): ("low_perfusion", "pulse_level_weak"),
    (0, 5): ("searching", "no_pulse"),
    (0, 6): ("low_signal_quality", "check_sensor_site"),
    (0, 7): ("device_alarm", "pr_under_30"),
    (1, 0): ("device_alarm", "pr_over_250"),
    (1, 1): ("device_fault", "sao2_uncalibrated"),
    (1, 2): ("device_alarm", "alarm_overlapped"),
    (1, 3): ("device_fault", "ram_test_failure"),
    (1, 4): ("device_fault", "rom_test_failure"),
    (1, 5): ("device_fault", "offset_mismatch"),
    (1, 6): ("device_fault", "filter_mismatch"),
    (1, 7): ("calibrating", "system_test_in_progress"),
    (2, 0): ("cuff_overpressure", "nibp_cuff_overpressure"),
    (2, 1): ("cuff_error", "nibp_motion_artifact"),  # the cuff cycle failed; SpO2 stays trusted
}

PatientData = tuple[int | None, int | None, int | None, int | None, int | None, int, int, int, int | None]
"""SaO2, PR, SYS, MEAN, DIA, ST0, ST1, ST2, minutes since last NIBP (None = ``--``)."""


def parse_status(text: str, status_format: StatusFormat = "decimal") -> int:
    """A status field as an int; ValueError when it is not a number in that format or > 255."""
    if not (text.isascii() and text.isalnum()):
        raise ValueError("not a status field")  # int() would also take "+1", " 1" and "1_0"
    value = int(text, _RADIX[status_format])
    if not 0 <= value <= 0xFF:
        raise ValueError(f"status byte out of range: {value}")
    return value


def format_status(value: int, status_format: StatusFormat = "decimal") -> str:
    """The inverse of :func:`parse_status` (simulator side)."""
    match status_format:
        case "decimal":
            return f"{value:03d}"
        case "binary":
            return f"{value:08b}"
        case "octal":
            return f"{value:03o}"
        case "hex":
            return f"{value:02X}"


def _number(text: str) -> int | None:
    if text and set(text) == {"-"}:
        return None
    if not text.isdigit():
        raise ValueError("not a number")
    return int(text)


def parse_patient_data(line: bytes, status_format: StatusFormat = "decimal") -> PatientData | None:
    """Fields of a ``P:`` reply, None for any other line; ValueError for a damaged ``P:`` line."""
    text = line.decode("ascii", errors="replace").replace(" ", "").lstrip(">")
    if not text.startswith("P:"):
        return None
    fields = text[2:].split(",")
    if len(fields) != FIELD_COUNT:
        raise ValueError("wrong field count")
    sao2, pr, sys_, mean, dia = (_number(f) for f in fields[:5])
    st0, st1, st2 = (parse_status(f, status_format) for f in fields[5:8])
    return (sao2, pr, sys_, mean, dia, st0, st1, st2, _number(fields[8]))


def encode_patient_data(data: PatientData, status_format: StatusFormat = "decimal") -> bytes:
    """A ``P:`` reply line with CR LF (used by the simulator; inverse of parse_patient_data)."""

    def num(v: int | None) -> str:
        return " --" if v is None else f"{v:3d}"

    sao2, pr, sys_, mean, dia, st0, st1, st2, minutes = data
    fields = [num(v) for v in (sao2, pr, sys_, mean, dia)]
    fields += [format_status(s, status_format) for s in (st0, st1, st2)]
    fields.append(" --" if minutes is None else f"{minutes:3d}")
    return ("P:" + ",".join(fields) + "\r\n").encode("ascii")


def _obs(kind: str, value: int | None) -> Observation:
    k = KINDS[kind]
    return Observation(kind, None if value is None else float(value), k.unit, k.mdc)


@screened
class AccutorrDriver:
    """Polls an ACCUTORR 3 with ``P`` and turns the replies into observations and statuses."""

    name: ClassVar[str] = "accutorr"
    serial: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)

    def __init__(
        self,
        *,
        poll_interval_s: float = 5.0,
        status_format: StatusFormat = "decimal",
        command_suffix: str = "\r",
        report_initial_nibp: bool = False,
        max_line_bytes: int = 256,
    ) -> None:
        """``max_line_bytes``: a ``P:`` line is under 50 bytes; 256 leaves room for other replies."""
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be positive")
        if status_format not in _RADIX:
            raise ValueError(f"status_format must be one of {sorted(_RADIX)}")
        self._poll_interval = poll_interval_s
        self._format: StatusFormat = status_format
        self._suffix = command_suffix.encode("ascii")
        self._lines = LineSplitter(max_line_bytes)
        self._out = bytearray()
        self._next_poll: float | None = None
        self._status = StatusTracker()
        self._first = True
        self._report_initial = report_initial_nibp
        self._last_minutes: int | None = None
        self._last_bp: tuple[int | None, int | None, int | None] | None = None

    def data_to_send(self) -> bytes:
        """The queued ``P`` polls."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_deadline(self) -> float | None:
        """Due at once before the first poll (0.0), then every poll_interval_s."""
        return 0.0 if self._next_poll is None else self._next_poll

    def on_timer(self, now: float) -> list[Event]:
        """Queue a ``P`` poll when due."""
        if self._next_poll is None or now >= self._next_poll:
            self._out += b"P" + self._suffix
            self._next_poll = now + self._poll_interval
        return []

    def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
        """Decode reply lines; damaged ``P:`` lines and over-long lines become DecodeProblems."""
        lines, line_problems = self._lines.feed(data)
        events: list[Event] = list(line_problems)
        for line in lines:
            try:
                parsed = parse_patient_data(line, self._format)
            except ValueError:
                events.append(DecodeProblem("bad_patient_data", len(line)))
                continue
            if parsed is not None:
                events += self._patient_data(parsed)
        return events

    def feed_eof(self) -> list[Event]:
        """Report an unterminated line and switch every status off."""
        events: list[Event] = list(self._lines.feed_eof())
        events += self._status.reset()
        self._first = True
        return events

    def _patient_data(self, data: PatientData) -> list[Event]:
        sao2, pr, sys_, mean, dia, st0, st1, st2, minutes = data
        events: list[Event] = [_obs("spo2", sao2), _obs("pulse_rate", pr)]
        bp = (sys_, mean, dia)
        if self._is_new_nibp(minutes, bp):
            events += [_obs("nibp_systolic", sys_), _obs("nibp_diastolic", dia), _obs("nibp_mean", mean)]
        self._first = False
        self._last_minutes = minutes
        self._last_bp = bp
        codes, detail = self._codes((st0, st1, st2))
        events += self._status.update(codes, detail)
        return events

    def _is_new_nibp(self, minutes: int | None, bp: tuple[int | None, int | None, int | None]) -> bool:
        if minutes is None:
            return False  # no NIBP taken since power-on
        if self._first:
            return minutes == 0 or self._report_initial
        if self._last_minutes is None or minutes < self._last_minutes:
            return True
        return bp != self._last_bp

    @staticmethod
    def _codes(
        status: tuple[int, int, int],
    ) -> tuple[list[str], Mapping[str, Mapping[str, str]]]:
        codes: list[str] = []
        conditions: dict[str, list[str]] = {}
        for (byte, bit), (code, condition) in STATUS_BITS.items():
            if status[byte] >> bit & 1:
                codes.append(code)
                conditions.setdefault(code, []).append(condition)
        detail = {code: {"condition": ",".join(names)} for code, names in conditions.items()}
        return codes, detail
