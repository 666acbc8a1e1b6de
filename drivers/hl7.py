"""HL7 v2 ORU^R01 (IHE PCD-01) driver: vital signs from a patient monitor, answered with HL7 ACKs.

Facts and their sources are in device-protocols.md §3 (GE B40/B20 HL7 Reference Manual
2062665-001 "GEB40", Philips Efficia CM Data Export Guide "EFFICIA", python-hl7 "PYHL7", and the
sample messages under ``tests/vectors/hl7/``).

Message layout (PCD-01; GEB40 p.15-19, samples)::

    MSH|^~\\&|<app>|<fac>|<rcv app>|<rcv fac>|<MSH-7 time>||ORU^R01^ORU_R01|<MSH-10 id>|P|2.6|...
    PID|...                  patient identifiers: never read, never carried into events
    PV1|...
    OBR|1|...|182777000^monitoring of patient^SCT|||<OBR-7 time>
    OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X   header row (OBX-2 empty)
    OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.150456|97|262688^MDC_DIM_PERCENT^MDC||DEMO|||R|||<time>
        2  3 code^name^system             4 sub-id     5 value 6 unit           8 flags 11 status 14 obs. time

Decoding rules (each one a decision; options in brackets):

- Framing: MLLP blocks (:mod:`vitalwatch.drivers.mllp`) or plain text. ``framing="auto"`` reads
  plain "MSH to MSH" text until the first 0x0B, then MLLP for good; a plain message is complete at
  the next MSH, after ``plain_idle_s`` without bytes (via ``on_timer``), or at end of input.
- Segment ends CR, LF or CRLF are all accepted (samples come with all three, §5.10); delimiters are
  read from each message's MSH-1/MSH-2 (§3.7). Parsing is python-hl7 ``hl7.parse``; escapes
  (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh..\\ \\.br\\``) are decoded here, not with ``hl7.unescape``,
  which turns ``\\XC3A9\\`` into "Ã©" instead of "é" and logs whole field contents on bad sequences.
- Observations are matched on the numeric MDC code in OBX-3.1 (names vary and are sometimes
  wrong, §3.3) through :func:`vocabulary.kind_for_mdc`; both NIBP families 1500xx and 1503xx.
  [``map_mdil``] Philips MDIL codes (``0002-4bb8`` SpO2 ...) are mapped too (EFFICIA p.3-17).
  [``sub_id_fallback``] When OBX-3.1 is unknown but OBX-3.2 names a mapped code and OBX-4 ends with
  that code, the OBX-4 code is used: the northern monitor sends ``150031^MDC_PRESS_CUFF_SYS`` with
  sub-id ``1.1.9.150301`` (two sources agree, so this is not a guess about one wrong digit).
- Only ``NM`` rows carry values; header rows (empty OBX-2) and other types are skipped.
- ``value=None`` for: empty OBX-5 (Philips, Comen), OBX-11 ``X``/``W`` (invalid / wrong, EFFICIA
  p.3-18), a sentinel [``invalid_values``, default -100 from the northern sample], or a non-finite
  number. Never a number for those.
- OBX-5 is read in time linear in its length: an NM longer than ``MAX_NUMBER_CHARS`` (32) is not a
  number (the message is rejected like any malformed value) and the pattern cannot backtrack.
  A value that overflows on unit conversion (``1`` and 308 zeros kPa) is a ``non_finite`` problem.
- OBX-8 containing ``DEMO`` (Mindray VS900) switches the ``demo`` status on for the device.
- Units: OBX-6 (code or name: MDC, UCUM, Philips MDIL, common text) must resolve to the kind's
  unit. kPa -> mm[Hg] and degF -> Cel are converted (exact factors); an unknown or mismatching unit
  drops that observation with a DecodeProblem (never a wrong number). An empty OBX-6 is taken as
  the kind's unit (the 11073 code defines it).
- ``device_time`` is OBX-14, else OBR-7, else MSH-7 (HL7 DTM; aware when an offset is given,
  naive otherwise). For NIBP it is the measurement time, older than MSH-7 (Mindray sample).
- Plausibility (:mod:`vitalwatch.drivers.plausibility`, applied to every driver's output): a value
  outside its kind's range (temperature 384.5 next to 38.5 in the northern sample, SpO2 150, the
  unit code 262688 shifted into OBX-5) becomes an ``implausible:<kind>`` problem and ``value=None``.
- Message size: ``max_block_bytes`` defaults to :data:`DEFAULT_MAX_MESSAGE_BYTES` (64 KiB), see there.

Acknowledgements (§3.4, GEB40 p.25): every message with a readable MSH gets an original-mode ACK
in ``data_to_send()``, framed like the message came: ``MSA|AA|<MSH-10>``; or ``MSA|AE|<MSH-10>|
<reason>`` plus ``ERR`` when the message cannot be processed (python-hl7 cannot parse it, a segment
name is not three letters/digits, a mapped NM value is not a number [``reject_malformed``], or an
unsupported type). An AE'd message yields no observations: GE resends on AE (3 tries in total), so
accepting part of it would double-count. The ACK MSH uses the message's own delimiters, swaps
sender and receiver, MSH-9 ``ACK^<trigger>^ACK``, MSH-7 from ``clock`` or, by default, copied from
the message (keeps the driver deterministic), MSH-10 ``VW<n>``. Enhanced-mode MSH-15/16 are ignored
(GE accepts AA like CA). Messages of type ACK are never answered. An ACK that cannot be written
(an echoed field holds a character the ``encoding`` cannot encode, or an MLLP control byte) is not
sent and is reported as an ``ack_not_sent`` problem. ``encoding`` must be a text codec that
writes ASCII unchanged (checked when the driver is built, so ``check-config`` names it).

Supported types: ORU^R01, ORF^R04 (Philips query response, same OBX rows), and ORU^R40 (PCD-04
alerts) [``alarms``]: decoded into ``device_alarm`` on/off with the alert text, priority, type and
phase in the detail; attributes are found by the name in OBX-3.2 (the MDC attribute codes are
[unconfirmed], §3.6) and answered with an ACK (IHE says ORA^R41, [unconfirmed]).

Serial settings: 9600 8N1 is a default, [unconfirmed] (Efficia serial settings are not in the
notes); the configuration overrides it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import hl7

from vitalwatch.drivers.base import OptionError, SerialSettings, StatusTracker
from vitalwatch.drivers.events import DecodeProblem, Event, Observation
from vitalwatch.drivers.mllp import SB, MllpDeframer, PlainSplitter, can_frame, encode_block
from vitalwatch.drivers.plausibility import MAX_NUMBER_CHARS, screened
from vitalwatch.drivers.vocabulary import KINDS, kind_for_mdc

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Delimiters",
    "Hl7Driver",
    "build_ack",
    "check_encoding",
    "escape",
    "msh_fields",
    "parse_ack",
    "parse_nm",
    "parse_ts",
    "unescape",
]

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
"""The largest HL7 message (MLLP block or plain message) the driver accepts by default.

A PCD-01 vital-signs message is 0.5-3 KB (every sample under ``tests/vectors/hl7/`` is below
2.4 KB; a monitor with all numerics, alarms and device rows stays well under 10 KB). 64 KiB is
more than 20 times that, so no real message is cut, while a hostile or runaway block is dropped
as ``block_too_long`` after 64 KiB instead of 1 MiB: decoding a full 64 KiB message takes tens
of milliseconds, not seconds, so one device cannot stall every bed's alarm evaluation. A site
with unusually large messages raises it with the ``max_block_bytes`` option.
"""

# Reference names of the MDC codes we map (for the sub-id fallback; GEB40 and the samples).
MDC_NAMES: dict[int, str] = {
    150456: "MDC_PULS_OXIM_SAT_O2",
    149530: "MDC_PULS_OXIM_PULS_RATE",
    150488: "MDC_BLD_PERF_INDEX",
    150021: "MDC_PRESS_BLD_NONINV_SYS",
    150022: "MDC_PRESS_BLD_NONINV_DIA",
    150023: "MDC_PRESS_BLD_NONINV_MEAN",
    150301: "MDC_PRESS_CUFF_SYS",
    150302: "MDC_PRESS_CUFF_DIA",
    150303: "MDC_PRESS_CUFF_MEAN",
    149546: "MDC_PULS_RATE_NON_INV",
    147842: "MDC_ECG_HEART_RATE",
    151562: "MDC_RESP_RATE",
    150344: "MDC_TEMP",
}

# Philips MDIL observation codes (EFFICIA p.3-17).
MDIL_KINDS: dict[str, str] = {
    "0002-4bb8": "spo2",
    "0002-4a05": "nibp_systolic",
    "0002-4a06": "nibp_diastolic",
    "0002-4a07": "nibp_mean",
    "0002-480a": "pulse_rate",
    "0002-4182": "heart_rate",
    "0002-5000": "resp_rate",
}

# OBX-6 tokens (component 1 or 2) -> (UCUM unit, scale, offset): value_ucum = value * scale + offset.
_UNIT_TABLE: dict[str, tuple[str, float, float]] = {}
for _tokens, _conv in (
    (("262688", "MDC_DIM_PERCENT", "%", "0004-0220"), ("%", 1.0, 0.0)),
    (("264864", "MDC_DIM_BEAT_PER_MIN", "bpm", "/min", "{beats}/min", "0004-0aa0"), ("/min", 1.0, 0.0)),
    (("264928", "MDC_DIM_RESP_PER_MIN", "rpm", "{breaths}/min", "0004-0ae0"), ("/min", 1.0, 0.0)),
    (("266016", "MDC_DIM_MMHG", "mmHg", "mm[Hg]", "0004-0f20"), ("mm[Hg]", 1.0, 0.0)),
    (("MDC_DIM_KILO_PASCAL", "MDC_DIM_KILO_PA", "kPa"), ("mm[Hg]", 760.0 / 101.325, 0.0)),
    (("268192", "MDC_DIM_DEGC", "Cel", "degC", "°C", "0004-1710"), ("Cel", 1.0, 0.0)),
    (("MDC_DIM_FAHR", "[degF]", "degF", "°F"), ("Cel", 5.0 / 9.0, -32.0 * 5.0 / 9.0)),
):
    for _token in _tokens:
        _UNIT_TABLE[_token.lower()] = _conv

# HL7 NM: optional sign, digits with an optional decimal point. Possessive quantifiers and one
# alternative per shape: no backtracking, so matching is linear (the old ``\d+\.?\d*`` was
# quadratic: 40,000 digits and a letter took seconds). Only ever applied to <= MAX_NUMBER_CHARS.
_NM = re.compile(r"[+-]?+(?:\d++(?:\.\d*+)?+|\.\d++)")
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_DTM = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:(\d{2})(?:\.(\d{1,6}))?)?(?:([+-])(\d{2})(\d{2}))?"
)
_INVALID_STATUS = frozenset({"X", "W"})
_TYPES = {("ORU", "R01"), ("ORF", "R04"), ("ORU", "R40")}

# HL7 v2.5+ table 0357 message error condition codes used in ERR-3.
_ERR_SEGMENT = ("100", "Segment sequence error")
_ERR_DATA_TYPE = ("102", "Data type error")
_ERR_UNSUPPORTED = ("200", "Unsupported message type")
_ERR_INTERNAL = ("207", "Application internal error")


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The five delimiters of one message, read from its MSH-1/MSH-2 (§3.7)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent

    @classmethod
    def from_msh(cls, text: str) -> Delimiters | None:
        """Delimiters of a message starting ``MSH``, or None when MSH-1/MSH-2 are unusable."""
        if len(text) < 5 or not text.startswith("MSH"):
            return None
        field = text[3]
        end = text.find(field, 4)
        enc = text[4:end] if end >= 0 else ""
        if field.isalnum() or field in "\r\n " or not 1 <= len(enc) <= 4:
            return None
        if len(set(enc + field)) != len(enc) + 1 or any(c.isalnum() or c in "\r\n " for c in enc):
            return None
        defaults = "^~\\&"
        enc = enc + defaults[len(enc) :]
        if len(set(enc + field)) != 5:
            return None
        return cls(field, enc[0], enc[1], enc[2], enc[3])


def unescape(text: str, d: Delimiters, encoding: str = "utf-8") -> str:
    """Decode HL7 escape sequences (§3.7); unknown or formatting sequences are dropped.

    ``\\Xhh..\\`` is decoded as bytes in the message's encoding, so multi-byte UTF-8 comes out whole.
    An escape character without its closing partner is kept literally.
    """
    esc = d.escape
    if esc not in text:
        return text
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition, "E": esc}
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        end = text.find(esc, i + 1) if c == esc else -1
        if end < 0:
            out.append(c)
            i += 1
            continue
        seq = text[i + 1 : end]
        i = end + 1
        if seq in simple:
            out.append(simple[seq])
        elif seq in (".br", ".sp"):
            out.append("\n")
        elif seq.startswith("X") and len(seq) % 2 == 1 and re.fullmatch(r"[0-9A-Fa-f]*", seq[1:]):
            out.append(bytes.fromhex(seq[1:]).decode(encoding, errors="replace"))
        # \H\ \N\ .in .ti .sk .ce .fi .nf \Cxxyy\ \Mxxyyzz\ and unknown sequences carry no text.
    return "".join(out)


def escape(text: str, d: Delimiters) -> str:
    """Escape delimiters and control characters for one field value (writes ``\\X0D\\``, upper hex)."""
    table = {
        d.escape: f"{d.escape}E{d.escape}",
        d.field: f"{d.escape}F{d.escape}",
        d.component: f"{d.escape}S{d.escape}",
        d.repetition: f"{d.escape}R{d.escape}",
        d.subcomponent: f"{d.escape}T{d.escape}",
    }
    out: list[str] = []
    for c in text:
        if c in table:
            out.append(table[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"{d.escape}X{ord(c):02X}{d.escape}")
        else:
            out.append(c)
    return "".join(out)


_MAX_DTM_CHARS = 32  # YYYYMMDDHHMMSS.SSSSSS+ZZZZ is 25 characters


def parse_ts(text: str) -> datetime | None:
    """HL7 DTM ``YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`` -> datetime (aware with an offset), or None."""
    text = text.strip()
    if len(text) > _MAX_DTM_CHARS:
        return None
    m = _DTM.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, sec, frac, sign, tzh, tzm = m.groups()
    try:
        tz = None
        if sign is not None:
            offset = timedelta(hours=int(tzh), minutes=int(tzm))
            tz = timezone(-offset if sign == "-" else offset)
        return datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(sec or 0),
            int((frac or "0").ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError:
        return None


def parse_nm(text: str) -> float | None:
    """An HL7 NM value as a float, or None when it is not one (too long, not numeric, not finite).

    Linear in ``len(text)``: the length bound comes first, then one non-backtracking match.
    """
    if len(text) > MAX_NUMBER_CHARS or _NM.fullmatch(text) is None:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _pick(node: Any, index: int) -> Any:
    if isinstance(node, str):
        return node if index == 1 else ""
    return node[index - 1] if index <= len(node) else ""


def _raw(segment: Any, field: int, component: int = 1, repetition: int = 1, sub: int = 1) -> str:
    """The raw (still escaped) text at one position of a python-hl7 segment; "" when absent."""
    if field >= len(segment):
        return ""
    node = _pick(_pick(_pick(segment[field], repetition), component), sub)
    while not isinstance(node, str):
        node = node[0] if node else ""
    return node


def _repetitions(segment: Any, field: int) -> list[str]:
    """First component of every repetition of a field (raw)."""
    if field >= len(segment):
        return []
    value = segment[field]
    if len(value) and not isinstance(value[0], str):
        return [_raw(segment, field, 1, r) for r in range(1, len(value) + 1)]
    return [_raw(segment, field)]


def parse_ack(payload: bytes) -> tuple[str, str, str] | None:
    """``(MSA-1 code, MSA-2 control id, MSA-3 text)`` of an ACK message, or None if there is none."""
    text = payload.decode("utf-8", errors="replace").replace("\r\n", "\r").replace("\n", "\r")
    d = Delimiters.from_msh(text.strip())
    if d is None:
        return None
    for line in text.split("\r"):
        if line.startswith("MSA" + d.field):
            parts = line.split(d.field)
            parts += [""] * (4 - len(parts))
            return parts[1], unescape(parts[2], d), unescape(parts[3], d)
    return None


def check_encoding(encoding: str) -> None:
    """OptionError unless ``encoding`` is a text codec that reads and writes ASCII unchanged.

    MLLP framing, segment names and delimiters are ASCII bytes, so an encoding that writes them
    differently (UTF-16, EBCDIC) could never decode a message nor frame an ACK; an unknown name
    would fail on the first message instead of at start-up.
    """
    probe = "MSH|^~\\&\r"
    try:
        written = probe.encode(encoding)
        bytes(range(256)).decode(encoding, errors="replace")
    except LookupError:
        raise OptionError("encoding", f"unknown text encoding {encoding!r}") from None
    except (UnicodeError, TypeError, ValueError) as exc:
        reason = f"{encoding!r} cannot be used for HL7 text ({type(exc).__name__})"
        raise OptionError("encoding", reason) from None
    if written != probe.encode("ascii"):
        raise OptionError("encoding", f"{encoding!r} does not write ASCII unchanged (HL7 framing is ASCII)")


class _Rejected(Exception):
    """Internal: the message cannot be processed; becomes an AE and a DecodeProblem."""

    def __init__(self, reason: str, err: tuple[str, str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.err = err


# Where a segment can start in a debug dump: after a segment end (CR, LF), an MLLP start or end
# byte, or a form feed (some gateways separate messages with one).
_SEGMENT_BREAK = re.compile(rb"([\r\n\x0b\x1c\x0c])")
# Segments a debug dump may show as they are: the message header and acknowledgement, and the
# order and observation segments that carry the measurements being debugged. Every other
# segment, known or not (PID, PV1, NK1, IN1, a site's own Z-segments ...), is blanked after its
# name: a list of what to keep cannot miss a new identifying segment, a list of what to drop can.
_SAFE_SEGMENTS = frozenset({b"MSH", b"SFT", b"MSA", b"ERR", b"EVN", b"ORC", b"OBR", b"OBX", b"TQ1"})


def _scrub_segment(segment: bytes) -> bytes:
    """One segment with everything after its name and separator blanked, unless it is safe.

    The field separator is whatever byte follows the name (MSH-1 may declare ``#`` or any other),
    so ``PID#...`` is recognised as well as ``PID|...``.
    """
    name = segment[:3]
    if len(segment) > 3 and name.isalnum() and name.isupper() and not segment[3:4].isalnum():
        if name in _SAFE_SEGMENTS:
            return segment
        return name + segment[3:4] + b"<scrubbed>"
    return b"<scrubbed>" if segment.strip() else segment


@screened
class Hl7Driver:
    """Sans-I/O HL7 v2 receiver: MLLP (or plain) bytes in, observations out, ACKs to send."""

    name: ClassVar[str] = "hl7"
    serial: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)  # [unconfirmed], see docstring

    @staticmethod
    def scrub(raw: bytes) -> bytes:
        """Raw bytes with every segment but the measurement ones blanked, for debug dumps.

        PID, PD1, PV1, NK1, IN1, MRG ... carry names, identifiers, addresses and insurance
        numbers; only MSH, MSA, ERR, EVN, ORC, OBR, OBX, SFT and TQ1 are kept. Segments are found
        by the message's own separators, wherever they start (after CR, LF, an MLLP byte or a
        form feed), and a piece that is not a whole segment is blanked too.
        """
        if not raw:
            return raw
        head = b""
        if raw[:1] not in b"\r\n\x0b\x1c\x0c" and not raw.startswith(b"MSH"):
            # The dump may start inside a segment (even one that looks like "ENT|..."): drop that part.
            found = _SEGMENT_BREAK.search(raw)
            raw = raw[found.start() :] if found else b""
            head = b"<partial>"
        pieces = _SEGMENT_BREAK.split(raw)
        # split() with a group keeps the separators at the odd positions: scrub the segments only.
        return head + b"".join(p if i % 2 else _scrub_segment(p) for i, p in enumerate(pieces))

    def __init__(
        self,
        *,
        framing: str = "auto",
        max_block_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        ff_terminates: bool = True,
        plain_idle_s: float = 1.0,
        invalid_values: Iterable[float] | str = (-100.0,),
        encoding: str = "utf-8",
        map_mdil: bool = True,
        sub_id_fallback: bool = True,
        reject_malformed: bool = True,
        alarms: bool = True,
        ack: bool = True,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if framing not in ("auto", "mllp", "none"):
            raise OptionError("framing", f"must be 'auto', 'mllp' or 'none', not {framing!r}")
        check_encoding(encoding)
        if isinstance(invalid_values, str):  # from the command line: "-100,-1"
            invalid_values = [float(v) for v in invalid_values.split(",") if v.strip()]
        self._mode = framing
        self._mllp = MllpDeframer(max_block_bytes=max_block_bytes, ff_terminates=ff_terminates)
        self._plain = PlainSplitter(max_message_bytes=max_block_bytes)
        self._plain_idle_s = plain_idle_s
        self._last_rx: float | None = None
        self._invalid = frozenset(float(v) for v in invalid_values)
        self._encoding = encoding
        self._map_mdil = map_mdil
        self._sub_id_fallback = sub_id_fallback
        self._reject_malformed = reject_malformed
        self._alarms = alarms
        self._ack = ack
        self._clock = clock
        self._status = StatusTracker()
        self._outbox = bytearray()
        self._acks_sent = 0

    # -- Driver protocol -------------------------------------------------------------------------

    def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
        """Decode bytes; completed messages become events and queue their ACK."""
        self._last_rx = now
        if self._mode == "auto":
            k = data.find(SB)
            if k < 0:
                return self._handle(self._plain.feed(data))
            # The plain message before the first SB is answered plain, as it came: its ACK is
            # queued before the switch to MLLP.
            events = self._handle(self._plain.feed(data[:k]) + self._plain.flush())
            self._mode = "mllp"
            return events + self._handle(self._mllp.feed(data[k:]))
        if self._mode == "mllp":
            return self._handle(self._mllp.feed(data))
        return self._handle(self._plain.feed(data))

    def feed_eof(self) -> list[Event]:
        """End of input: flush a plain message, report an open block, switch statuses off."""
        framed: list[bytes | DecodeProblem] = []
        framed += self._plain.flush()
        framed += self._mllp.feed_eof()
        events = self._handle(framed)
        events += self._status.reset()
        self._last_rx = None
        return events

    def data_to_send(self) -> bytes:
        """Queued ACKs (and forget them)."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def next_deadline(self) -> float | None:
        """In plain framing, when a buffered message counts as complete (the line went idle)."""
        if self._mode == "mllp" or self._last_rx is None or not self._plain.pending():
            return None
        return self._last_rx + self._plain_idle_s

    def on_timer(self, now: float) -> list[Event]:
        """Flush a plain message once the line has been idle for ``plain_idle_s``."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        return self._handle(self._plain.flush())

    # -- messages --------------------------------------------------------------------------------

    def _handle(self, framed: list[bytes | DecodeProblem]) -> list[Event]:
        events: list[Event] = []
        for item in framed:
            if isinstance(item, DecodeProblem):
                events.append(item)
            else:
                events += self._message(item)
        return events

    def _message(self, payload: bytes) -> list[Event]:
        try:
            text = payload.decode(self._encoding, errors="replace")
        except UnicodeError:  # a codec that refuses even with errors="replace" (idna, ...)
            return [DecodeProblem(f"not_decodable:{self._encoding}", len(payload))]
        text = text.replace("\r\n", "\r").replace("\n", "\r").strip(" \t\r\x0c")
        d = Delimiters.from_msh(text)
        if d is None:
            return [DecodeProblem("not_hl7", len(payload))]
        msh_raw = msh_fields(text, d)  # MSH-1 is the separator itself: index k = MSH-(k+1)
        msg_type = msh_raw[8].split(d.component)
        msg_type += [""] * (2 - len(msg_type))
        if msg_type[0] == "ACK":
            return [DecodeProblem("unexpected_ack", len(payload))]
        try:
            if (msg_type[0], msg_type[1]) not in _TYPES:
                raise _Rejected(f"unsupported message type {msg_type[0]}^{msg_type[1]}", _ERR_UNSUPPORTED)
            try:
                message = hl7.parse(text)
            except Exception as exc:  # python-hl7 raises assorted errors on malformed text
                raise _Rejected("unparseable message", _ERR_INTERNAL) from exc
            for segment in message:
                if not _SEGMENT_ID.fullmatch(_raw(segment, 0)):
                    raise _Rejected("bad segment name", _ERR_SEGMENT)
            if msg_type[1] == "R40":
                events: list[Event] = self._alarm(message, d) if self._alarms else []
            else:
                events = self._observations(message, d)
        except _Rejected as rejected:
            problems = self._queue_ack(msh_raw, d, "AE", rejected.reason, rejected.err)
            return [DecodeProblem(f"rejected: {rejected.reason}", len(payload)), *problems]
        return events + self._queue_ack(msh_raw, d, "AA", "", None)

    def _observations(self, message: Any, d: Delimiters) -> list[Event]:
        """Observations of an ORU^R01 / ORF^R04; raises _Rejected for unreadable mapped values."""
        found: list[Event] = []
        demo = False
        mapped = 0
        msh_time = parse_ts(_raw(message[0], 7))
        obr_time: datetime | None = None
        for segment in message:
            name = _raw(segment, 0)
            if name == "OBR":
                obr_time = parse_ts(_raw(segment, 7))
                continue
            if name != "OBX" or _raw(segment, 2) != "NM":
                continue
            target = self._kind(segment, d)
            if target is None:
                continue
            kind, mdc = target
            mapped += 1
            flags = [unescape(f, d, self._encoding).strip().upper() for f in _repetitions(segment, 8)]
            demo = demo or "DEMO" in flags
            event = self._observation(segment, d, kind, mdc)
            if event is None:
                continue
            if isinstance(event, Observation) and event.device_time is None:
                event = Observation(event.kind, event.value, event.unit, event.mdc, obr_time or msh_time)
            found.append(event)
        if not mapped:
            return found
        return [*self._status.set("demo", demo), *found]

    def _kind(self, segment: Any, d: Delimiters) -> tuple[str, int | None] | None:
        """(kind, MDC code) of an OBX row, or None when we do not map it."""
        code_text = unescape(_raw(segment, 3, 1), d, self._encoding).strip()
        if code_text.isdigit():
            code = int(code_text)
            kind = kind_for_mdc(code)
            if kind is not None:
                return kind, code
            if self._sub_id_fallback:
                sub_id = _raw(segment, 4).rsplit(".", 1)[-1]
                if sub_id.isdigit():
                    alt = int(sub_id)
                    alt_kind = kind_for_mdc(alt)
                    if alt_kind is not None and _raw(segment, 3, 2).strip() == MDC_NAMES.get(alt):
                        return alt_kind, alt
            return None
        if self._map_mdil:
            kind_name = MDIL_KINDS.get(code_text.lower())
            if kind_name is not None:
                return kind_name, KINDS[kind_name].mdc
        return None

    def _observation(self, segment: Any, d: Delimiters, kind: str, mdc: int | None) -> Event | None:
        unit = KINDS[kind].unit
        device_time = parse_ts(_raw(segment, 14))
        status = _raw(segment, 11).strip().upper()
        value_text = unescape(_raw(segment, 5), d, self._encoding).strip()
        if status in _INVALID_STATUS or not value_text:
            return Observation(kind, None, unit, mdc, device_time)
        parsed = parse_nm(value_text)
        if parsed is None:
            if self._reject_malformed:
                raise _Rejected(f"OBX-5 of {kind} is not a number", _ERR_DATA_TYPE)
            return DecodeProblem(f"bad_value:{kind}", len(value_text))
        value = parsed
        if value in self._invalid:
            return Observation(kind, None, unit, mdc, device_time)
        conversion = self._unit(segment, d)
        if conversion is None:
            conversion = (unit, 1.0, 0.0)
        elif conversion[0] == "":
            return DecodeProblem(f"unknown_unit:{kind}", 0)
        if conversion[0] != unit:
            return DecodeProblem(f"unit_mismatch:{kind}", 0)
        _, scale, offset = conversion
        if scale != 1.0 or offset != 0.0:
            value = round(value * scale + offset, 2)
            if not math.isfinite(value):  # 1e308 kPa overflows: never hand on inf
                return DecodeProblem(f"non_finite:{kind}", len(value_text))
        return Observation(kind, value, unit, mdc, device_time)

    def _unit(self, segment: Any, d: Delimiters) -> tuple[str, float, float] | None:
        """Unit conversion for OBX-6; None when empty, ("", ...) when not recognised."""
        tokens = [unescape(_raw(segment, 6, c), d, self._encoding).strip() for c in (1, 2)]
        if not any(tokens):
            return None
        for token in tokens:
            conv = _UNIT_TABLE.get(token.lower())
            if conv is not None:
                return conv
        return ("", 1.0, 0.0)

    def _alarm(self, message: Any, d: Delimiters) -> list[Event]:
        """ORU^R40: the alert's on/off edge as ``device_alarm`` (attributes found by OBX-3.2 name)."""
        detail: dict[str, str | int | float | bool] = {}
        for segment in message:
            if _raw(segment, 0) != "OBX" or not _raw(segment, 2):
                continue
            name = _raw(segment, 3, 2).upper()
            value = unescape(_raw(segment, 5), d, self._encoding).strip()
            for key, marker in (
                ("phase", "EVENT_PHASE"),
                ("state", "ALERT_STATE"),
                ("priority", "PRIORITY"),
                ("type", "ALERT_TYPE"),
                ("source", "ALERT_SOURCE"),
            ):
                if marker in name:
                    detail[key] = value[:40]
                    break
            else:
                if "_EVT_" in name and "text" not in detail:
                    detail["text"] = value[:80]
        if not detail:
            return []
        active = detail.get("phase") not in ("end", "stop") and detail.get("state") not in ("inactive",)
        events: list[Event] = []
        events += self._status.set("device_alarm", active, detail)
        return events

    def _queue_ack(
        self, msh: list[str], d: Delimiters, code: str, reason: str, err: tuple[str, str] | None
    ) -> list[DecodeProblem]:
        """Queue an original-mode ACK built with the message's own delimiters.

        The ACK echoes fields of the message (MSH-10 must come back unchanged in MSA-2), so a
        hostile or broken message can make it unsendable: a character the configured encoding
        cannot write, or an MLLP control byte (0x0B, 0x1C) that would end the block early. Such
        an ACK is not sent (the sender retries or gives up, as for a lost ACK) and the returned
        ``ack_not_sent`` problem says why.
        """
        if not self._ack:
            return []
        when = self._clock().strftime("%Y%m%d%H%M%S%z") if self._clock is not None else msh[6]
        text = build_ack(msh, d, code, reason, err, control_id=f"VW{self._acks_sent + 1}", when=when)
        try:
            payload = text.encode(self._encoding)
        except UnicodeError:
            return [DecodeProblem(f"ack_not_sent: not encodable in {self._encoding}", len(text))]
        if self._mode == "mllp":
            if not can_frame(payload):
                return [DecodeProblem("ack_not_sent: MLLP control byte in an echoed field", len(payload))]
            payload = encode_block(payload)
        self._acks_sent += 1
        self._outbox += payload
        return []


def msh_fields(text: str, d: Delimiters) -> list[str]:
    """The MSH line split on the field separator, padded so index k is MSH-(k+1) up to MSH-12."""
    msh_raw = text.split("\r", 1)[0].split(d.field)
    return msh_raw + [""] * (13 - len(msh_raw))


def build_ack(
    msh: list[str],
    d: Delimiters,
    code: str,
    reason: str,
    err: tuple[str, str] | None,
    *,
    control_id: str,
    when: str,
) -> str:
    """An original-mode ACK (MSH, MSA, ERR when ``err``) answering the message whose MSH is ``msh``.

    Uses the message's own delimiters, swaps sender and receiver, and echoes MSH-10 in MSA-2;
    ``err`` is an HL7 table 0357 (code, text) pair for ERR-3. Segments end with CR.
    """
    f, c = d.field, d.component
    trigger = msh[8].split(c)[1] if c in msh[8] else ""
    lines = [
        f.join(
            [
                "MSH",
                d.encoding_characters,
                msh[4],  # receiving application -> sending application
                msh[5],
                msh[2],
                msh[3],
                when,
                "",
                f"ACK{c}{trigger}{c}ACK",
                control_id,
                msh[10] or "P",
                msh[11] or "2.6",
            ]
        ),
        f.join(["MSA", code, msh[9]] + ([escape(reason, d)] if reason else [])),
    ]
    if err is not None:
        lines.append(
            f.join(
                [
                    "ERR",
                    "",
                    "",
                    f"{err[0]}{c}{escape(err[1], d)}{c}HL70357",
                    "E",
                    "",
                    "",
                    "",
                    escape(reason, d),
                ]
            )
        )
    return "\r".join(lines) + "\r"
