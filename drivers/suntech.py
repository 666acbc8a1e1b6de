"""SunTech Advantage OEM NIBP module: start a cuff cycle, poll the cuff pressure, read the result.

Sources: SUNTECH = github.com/ak-git/DesktopFX @ dac58a3ce0edf84840d245db14c3a990a4ec607b
(``NIBPRequest.java`` for the command bytes, ``NIBPProtocolByte.java`` for framing and checksum,
``NIBPBytesInterceptorTest``/``NIBPConverterTest`` for the replies and the BP-data layout quoted
from the module manual); summarised in device-protocols.md §2.1 and §2.4.

Layout::

    host -> module   3A  cmd ...  CHK
    module -> host   3E  LEN  data ...  CHK      LEN = whole packet incl. start and CHK (3..67)
    CHK is the byte that makes the sum of every byte of the packet 0 mod 256.

    START_BP            3A 20 A6
    GET_CUFF_PRESSURE   3A 79 05 00 48   ->  3E 05 lo hi CHK        cuff mmHg, u16 LSB first
    GET_BP_DATA         3A 79 03 00 4A   ->  24-byte BP data (below)
    (unsolicited, end of a cycle)        <-  3E 04 4B 73            'K' = measurement complete

    BP data (24 bytes):
    3E 18 | SYS u16le | DIA u16le | beats u8 | BP status u8 | TC[0..7] | HR u8 | spare |
          MAP u16le | error code u8 | spare spare | CHK

The cycle the driver runs (the host drives it; the module never volunteers a result)::

    start_measurement() -> 3A 20 A6 queued ........ "measuring" on (next on_timer)
    every poll_interval_s: GET_CUFF_PRESSURE ...... cuff_pressure observations (at most 1/s)
    3E 04 4B 73 received -> GET_BP_DATA queued
    BP data, error 0 ............................... nibp_systolic/diastolic/mean/pulse_rate, "measuring" off
    BP data, error != 0 ............................ "cuff_error" on (detail error_code), "measuring" off
    no result within cycle_timeout_s ............... "cuff_error" on (detail reason=timeout), "measuring" off

[unconfirmed] in the notes, chosen here and documented in docs/devices.md:

- Line settings: 9600 baud is in SUNTECH; 8N1 is assumed.
- The meaning of the BP status byte, the test codes and the error codes is not known: any
  non-zero error code is a failed measurement, reported with the raw code in the detail and
  never as a blood pressure. The BP status byte is carried in the detail unchanged.
- ``cuff_error`` stays on until the next successful result (not the next start), so the engine
  keeps seeing "the last cycle failed" while a retry is running.
- No abort command is known (the "pneumatics all closed" command holds pressure rather than
  releasing it), so a timed-out cycle is only reported, never commanded.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from vitalwatch.drivers.base import SerialSettings, StatusTracker
from vitalwatch.drivers.events import DecodeProblem, Event, Observation
from vitalwatch.drivers.plausibility import screened
from vitalwatch.drivers.vocabulary import KINDS

__all__ = [
    "COMPLETE_PACKET",
    "GET_BP_DATA",
    "GET_CUFF_PRESSURE",
    "START_BP",
    "SuntechDriver",
    "SuntechResult",
    "checksum",
    "decode_bp_data",
    "encode_bp_data",
    "encode_cuff_pressure",
    "encode_reply",
    "split_commands",
]

REPLY_START = 0x3E  # '>'
COMMAND_START = 0x3A  # ':'
# NIBPProtocolByte.MAX_CAPACITY: the longest reply the reference reader accepts. Also our buffer bound.
MAX_PACKET = 0x43
MIN_PACKET = 3  # start, length, checksum
BP_DATA_LENGTH = 24

START_BP = bytes.fromhex("3A20A6")
GET_CUFF_PRESSURE = bytes.fromhex("3A79050048")
GET_BP_DATA = bytes.fromhex("3A7903004A")
COMPLETE_PACKET = bytes.fromhex("3E044B73")


def checksum(body: bytes) -> int:
    """The byte that makes ``sum(body + checksum) % 256 == 0`` (SUNTECH ``checkCRC``)."""
    return (-sum(body)) & 0xFF


def encode_reply(data: bytes) -> bytes:
    """Frame module->host data: ``3E LEN data CHK`` (used by the simulator)."""
    body = bytes([REPLY_START, len(data) + 3]) + data
    return body + bytes([checksum(body)])


def encode_cuff_pressure(mmhg: int) -> bytes:
    """The reply to GET_CUFF_PRESSURE: pressure as u16 LSB first."""
    return encode_reply(max(0, min(0xFFFF, mmhg)).to_bytes(2, "little"))


@dataclass(frozen=True, slots=True)
class SuntechResult:
    """The fields of one BP-data packet, as the module reports them."""

    systolic: int
    diastolic: int
    mean: int
    heart_rate: int
    error_code: int = 0
    beats: int = 0
    bp_status: int = 0
    test_codes: bytes = bytes(8)


def encode_bp_data(result: SuntechResult) -> bytes:
    """The 24-byte BP-data reply for ``result`` (inverse of :func:`decode_bp_data`)."""
    data = (
        result.systolic.to_bytes(2, "little")
        + result.diastolic.to_bytes(2, "little")
        + bytes([result.beats, result.bp_status])
        + result.test_codes[:8].ljust(8, b"\0")
        + bytes([result.heart_rate, 0])
        + result.mean.to_bytes(2, "little")
        + bytes([result.error_code, 0, 0])
    )
    return encode_reply(data)


def decode_bp_data(packet: bytes) -> SuntechResult:
    """Fields of a checked 24-byte BP-data packet (offsets from the layout in the module docstring)."""
    return SuntechResult(
        systolic=int.from_bytes(packet[2:4], "little"),
        diastolic=int.from_bytes(packet[4:6], "little"),
        beats=packet[6],
        bp_status=packet[7],
        test_codes=bytes(packet[8:16]),
        heart_rate=packet[16],
        mean=int.from_bytes(packet[18:20], "little"),
        error_code=packet[20],
    )


def split_commands(data: bytes) -> list[bytes]:
    """Host commands the simulator understands, found in a byte stream (unknown bytes skipped)."""
    known = (START_BP, GET_CUFF_PRESSURE, GET_BP_DATA)
    found: list[bytes] = []
    i = 0
    while i < len(data):
        for cmd in known:
            if data.startswith(cmd, i):
                found.append(cmd)
                i += len(cmd)
                break
        else:
            i += 1
    return found


class _Phase(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"  # start command queued, clock not seen yet
    MEASURING = "measuring"  # polling cuff pressure, waiting for 'K'
    AWAITING_RESULT = "awaiting_result"  # GET_BP_DATA sent


def _obs(kind: str, value: float | None) -> Observation:
    k = KINDS[kind]
    return Observation(kind, value, k.unit, k.mdc)


@screened
class SuntechDriver:
    """Runs SunTech Advantage cuff cycles and decodes their replies (sans-I/O)."""

    name: ClassVar[str] = "suntech"
    serial: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)

    def __init__(
        self,
        *,
        interval_s: float | None = None,
        poll_interval_s: float = 1.0,
        min_cuff_report_s: float = 1.0,
        cycle_timeout_s: float = 180.0,
        result_retry_s: float = 2.0,
        max_junk_report: int = 1024,
    ) -> None:
        """``interval_s`` starts a cycle every so many seconds (None: only on start_measurement).

        ``cycle_timeout_s`` (180 s) is longer than any adult cuff cycle including a re-inflation;
        ``max_junk_report`` bounds how long a run of non-packet bytes goes unreported.
        """
        if interval_s is not None and interval_s <= 0:
            raise ValueError("interval_s must be positive or None")
        if poll_interval_s <= 0 or cycle_timeout_s <= 0 or result_retry_s <= 0:
            raise ValueError("poll_interval_s, cycle_timeout_s and result_retry_s must be positive")
        self._interval = interval_s
        self._poll_interval = poll_interval_s
        self._min_cuff_report = min_cuff_report_s
        self._timeout = cycle_timeout_s
        self._retry = result_retry_s
        self._max_junk = max_junk_report
        self._buf = bytearray()
        self._out = bytearray()
        self._junk = 0
        self._quiet = 0  # bytes of a rejected packet that should not be reported again as junk
        self._phase = _Phase.IDLE
        self._now: float | None = None
        self._cycle_start = 0.0
        self._next_poll = 0.0
        self._requested_at = 0.0
        self._last_cuff: float | None = None
        self._next_auto: float | None = None
        self._status = StatusTracker()

    # -- commands -------------------------------------------------------------------------
    def start_measurement(self) -> None:
        """Queue START_BP; ignored while a cycle runs (a second start could abort it)."""
        if self._phase is not _Phase.IDLE:
            return
        self._out += START_BP
        self._phase = _Phase.STARTING

    def data_to_send(self) -> bytes:
        """Commands queued by start_measurement and by the driver's own timers."""
        if not self._out:  # asked after every read and timer, and almost always empty
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- timers ---------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """Now for a pending start, the next poll/retry/timeout while measuring, else the auto cycle."""
        # Asked at every step of a replay: the usual phase, IDLE with the next cycle known, comes first.
        phase = self._phase
        if phase is _Phase.IDLE and self._next_auto is not None and self._interval is not None:
            return self._next_auto
        due_now = self._now if self._now is not None else 0.0
        match phase:
            case _Phase.STARTING:
                return due_now
            case _Phase.MEASURING:
                return min(self._next_poll, self._cycle_start + self._timeout)
            case _Phase.AWAITING_RESULT:
                return min(self._requested_at + self._retry, self._cycle_start + self._timeout)
            case _Phase.IDLE:
                if self._interval is None:
                    return None
                return self._next_auto if self._next_auto is not None else due_now

    def on_timer(self, now: float) -> list[Event]:
        """Begin a started cycle, poll the cuff, retry the result request, or time the cycle out."""
        self._now = now
        events: list[Event] = []
        if self._phase is _Phase.IDLE and self._interval is not None:
            # The first auto cycle waits one interval: a reconnect must not inflate the cuff at once.
            if self._next_auto is None:
                self._next_auto = now + self._interval
            elif now >= self._next_auto:
                self._next_auto = now + self._interval
                self.start_measurement()
        if self._phase is _Phase.STARTING:
            self._phase = _Phase.MEASURING
            self._cycle_start = now
            self._next_poll = now + self._poll_interval
            self._last_cuff = None
            events += self._status.set("measuring", True)
        if self._phase in (_Phase.MEASURING, _Phase.AWAITING_RESULT) and (
            now >= self._cycle_start + self._timeout
        ):
            events += self._fail({"reason": "timeout", "seconds": self._timeout})
        elif self._phase is _Phase.MEASURING and now >= self._next_poll:
            self._out += GET_CUFF_PRESSURE
            self._next_poll += self._poll_interval
            if self._next_poll <= now:  # the link was late: do not burst the missed polls
                self._next_poll = now + self._poll_interval
        elif self._phase is _Phase.AWAITING_RESULT and now >= self._requested_at + self._retry:
            self._out += GET_BP_DATA
            self._requested_at = now
        return events

    # -- bytes in -------------------------------------------------------------------------
    def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
        """Decode replies; junk and bad checksums become DecodeProblems, never exceptions."""
        self._now = now
        events: list[Event] = []
        self._buf += data
        while self._buf:
            if self._buf[0] != REPLY_START:
                idx = self._buf.find(REPLY_START)
                skipped = len(self._buf) if idx < 0 else idx
                del self._buf[:skipped]
                self._count_junk(skipped, events)
                continue
            if len(self._buf) < 2:
                break
            length = self._buf[1]
            if not MIN_PACKET <= length <= MAX_PACKET:
                del self._buf[:1]
                self._count_junk(1, events)
                continue
            if len(self._buf) < length:
                break
            packet = bytes(self._buf[:length])
            self._flush_junk(events)
            if sum(packet) & 0xFF:
                # Drop only the start byte: a corrupt length may hide the next real packet inside.
                events.append(DecodeProblem("bad_checksum", length))
                del self._buf[:1]
                self._quiet = length - 1
                continue
            del self._buf[:length]
            self._quiet = 0
            events += self._packet(packet, now)
        return events

    def feed_eof(self) -> list[Event]:
        """Report a partial packet and any junk, end any cycle, switch every status off."""
        events: list[Event] = []
        self._flush_junk(events)
        if self._buf:
            events.append(DecodeProblem("truncated_packet", len(self._buf)))
            self._buf.clear()
        self._phase = _Phase.IDLE
        self._quiet = 0
        events += self._status.reset()
        return events

    # -- internals ------------------------------------------------------------------------
    def _count_junk(self, n: int, events: list[Event]) -> None:
        quiet = min(n, self._quiet)
        self._quiet -= quiet
        self._junk += n - quiet
        if self._junk >= self._max_junk:
            self._flush_junk(events)

    def _flush_junk(self, events: list[Event]) -> None:
        if self._junk:
            events.append(DecodeProblem("junk", self._junk))
            self._junk = 0

    def _packet(self, packet: bytes, now: float) -> list[Event]:
        length = len(packet)
        if length == 5:
            return self._cuff_pressure(int.from_bytes(packet[2:4], "little"), now)
        if packet == COMPLETE_PACKET:
            # Also when idle: a cycle started from the module's front panel still has a result.
            if self._phase is _Phase.IDLE:
                self._cycle_start = now
            self._phase = _Phase.AWAITING_RESULT
            self._out += GET_BP_DATA
            self._requested_at = now
            return []
        if length == BP_DATA_LENGTH:
            return self._result(decode_bp_data(packet))
        return [DecodeProblem("unknown_packet", length)]

    def _cuff_pressure(self, mmhg: int, now: float) -> list[Event]:
        if self._phase is not _Phase.MEASURING:
            return []  # a late answer after the cycle ended says nothing new
        if self._last_cuff is not None and now - self._last_cuff < self._min_cuff_report:
            return []
        self._last_cuff = now
        return [_obs("cuff_pressure", float(mmhg))]

    def _result(self, result: SuntechResult) -> list[Event]:
        self._phase = _Phase.IDLE
        if result.error_code:
            return self._fail({"error_code": result.error_code, "bp_status": result.bp_status})
        events: list[Event] = [
            _obs("nibp_systolic", float(result.systolic)),
            _obs("nibp_diastolic", float(result.diastolic)),
            _obs("nibp_mean", float(result.mean)),
            _obs("nibp_pulse_rate", float(result.heart_rate)),
        ]
        events += self._status.set("cuff_error", False)
        events += self._status.set("measuring", False)
        return events

    def _fail(self, detail: dict[str, str | int | float | bool]) -> list[Event]:
        self._phase = _Phase.IDLE
        events: list[Event] = list(self._status.set("cuff_error", True, detail))
        events += self._status.set("measuring", False)
        return events
