"""MLLP block framing for HL7 v2 (bytes -> message payloads), plus a plain "MSH to MSH" splitter.

Layout (HL7 Minimal Lower Layer Protocol; device-protocols.md §3.1: HL7EU, GE B40 HL7 Reference
Manual p.18, Philips Efficia CM Data Export Guide p.3-3, python-hl7 ``client.py``)::

    +------+--------------------------------------+------+------+
    | 0x0B |  HL7 message (segments end with CR)  | 0x1C | 0x0D |
    |  SB  |  payload, UTF-8                      |  EB  |  CR  |
    +------+--------------------------------------+------+------+

This module only finds blocks; :mod:`vitalwatch.drivers.hl7` turns a payload into readings and
:func:`encode_block` is the inverse the simulator uses (model: websockets ``frames.py`` vs
``protocol.py``). Line noise never raises:

- bytes outside a block (other than CR/LF/FF/space between blocks) -> ``DecodeProblem("garbage")``
  and we hunt for the next SB; a run that never reaches an SB is reported as it goes, one
  problem per ``UNDECODABLE_REPORT_BYTES``, so a line on the wrong baud rate shows at once;
- an SB inside a block means the sender restarted: the unfinished block is reported as
  ``truncated_block`` and the new one is read;
- a block longer than ``max_block_bytes`` -> ``block_too_long``, its tail is discarded up to the
  next SB;
- end of input inside a block -> ``unterminated_block``.

Lenient on purpose:

- FF (0x0C) ends a block like EB CR when ``ff_terminates`` is true. The only source is a comment in
  python-hl7 ``client.read_stream`` ("usually should be broken up by EB, but I have seen FF
  separating messages") **[unconfirmed]**; FF cannot occur unescaped inside HL7 text, so accepting
  it costs nothing.
- EB not followed by CR still ends the block (EB is unambiguous; the byte after it is read as the
  start of whatever follows).

:class:`PlainSplitter` handles HL7 text without MLLP (files, some serial exports): a message starts
at ``MSH`` at the beginning of a segment and ends where the next one starts, at end of input, or
when the caller flushes it after the line went idle.
"""

from __future__ import annotations

from vitalwatch.drivers.base import UNDECODABLE_REPORT_BYTES
from vitalwatch.drivers.events import DecodeProblem

__all__ = [
    "CR",
    "DEFAULT_MAX_BLOCK_BYTES",
    "EB",
    "FF",
    "SB",
    "MllpDeframer",
    "PlainSplitter",
    "can_frame",
    "encode_block",
]

SB = 0x0B  # start block (VT)
EB = 0x1C  # end block (FS)
CR = 0x0D
FF = 0x0C

# A full GE B40 PCD-01 message with 50 OBX rows is about 6 KB; waveform ORUs (PCD-06) can reach
# a few hundred KB. 1 MiB is far above any real monitor message and still bounds memory when a
# sender on the wrong baud rate never produces an EB.
DEFAULT_MAX_BLOCK_BYTES = 1024 * 1024

# Whitespace tolerated between blocks without a complaint (some senders add LF after EB CR).
_BETWEEN_BLOCKS = b"\r\n\x0c\t "

Framed = bytes | DecodeProblem


def can_frame(payload: bytes) -> bool:
    """Whether ``payload`` fits in an MLLP block (it must not contain SB or EB)."""
    return SB not in payload and EB not in payload


def encode_block(payload: bytes) -> bytes:
    """Wrap one HL7 message in an MLLP block; ValueError when :func:`can_frame` says it cannot be."""
    if not can_frame(payload):
        raise ValueError("MLLP payload must not contain 0x0B or 0x1C")
    return bytes([SB]) + payload + bytes([EB, CR])


class _GarbageCount:
    """Bytes skipped outside any message, reported per ``UNDECODABLE_REPORT_BYTES`` and at the next message.

    Runs of only the whitespace senders put between blocks are not reported at all.
    """

    def __init__(self) -> None:
        self.skipped = 0
        self.significant = False

    def add(self, chunk: bytes | bytearray, out: list[Framed]) -> None:
        if not chunk:
            return
        self.skipped += len(chunk)
        if chunk.strip(_BETWEEN_BLOCKS):
            self.significant = True
        if self.significant:
            while self.skipped >= UNDECODABLE_REPORT_BYTES:
                out.append(DecodeProblem("garbage", UNDECODABLE_REPORT_BYTES))
                self.skipped -= UNDECODABLE_REPORT_BYTES

    def flush(self, out: list[Framed]) -> None:
        if self.significant and self.skipped:
            out.append(DecodeProblem("garbage", self.skipped))
        self.skipped = 0
        self.significant = False


class MllpDeframer:
    """Incremental MLLP deframer: ``feed(bytes)`` -> payloads (bytes) and ``DecodeProblem``s."""

    def __init__(self, *, max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES, ff_terminates: bool = True) -> None:
        self._max = max_block_bytes
        self._ff = ff_terminates
        self._block = bytearray()
        self._in_block = False
        self._eb_seen = False  # EB was the last byte; a CR may follow
        self._discarding = False  # tail of an over-long block, already reported
        self._garbage = _GarbageCount()  # bytes outside blocks since the last block

    @property
    def in_block(self) -> bool:
        """True while a block has started and not ended (a network listener bounds how long)."""
        return self._in_block

    def feed(self, data: bytes) -> list[Framed]:
        """Payloads of the blocks completed by ``data`` and problems, in stream order."""
        out: list[Framed] = []
        i = 0
        n = len(data)
        while i < n:
            if self._eb_seen:
                self._eb_seen = False
                if data[i] == CR:
                    i += 1
                continue
            if not self._in_block:
                j = data.find(SB, i)
                end = n if j < 0 else j
                if not self._discarding:
                    self._garbage.add(data[i:end], out)
                if j < 0:
                    break
                self._garbage.flush(out)
                self._discarding = False
                self._in_block = True
                i = j + 1
                continue
            i = self._read_block(data, i, out)
        return out

    def _read_block(self, data: bytes, i: int, out: list[Framed]) -> int:
        """Consume block bytes from ``data[i:]``; returns the next index to read."""
        n = len(data)
        k_eb = data.find(EB, i)
        stop = n if k_eb < 0 else k_eb
        k_ff = data.find(FF, i, stop) if self._ff else -1
        if k_ff >= 0:
            stop = k_ff
        k_sb = data.find(SB, i, stop)
        if k_sb >= 0:
            # The sender started over: what we had is a truncated message.
            out.append(DecodeProblem("truncated_block", len(self._block) + k_sb - i))
            self._block.clear()
            return k_sb + 1
        self._block += data[i:stop]
        if len(self._block) > self._max:
            out.append(DecodeProblem("block_too_long", len(self._block)))
            self._block.clear()
            self._in_block = False
            self._discarding = True
            return stop
        if stop == n:
            return n
        out.append(bytes(self._block))
        self._block.clear()
        self._in_block = False
        self._eb_seen = stop == k_eb
        return stop + 1

    def feed_eof(self) -> list[DecodeProblem]:
        """End of input: an open block is unterminated; pending garbage is reported. Resets."""
        out: list[Framed] = []
        self._garbage.flush(out)
        if self._in_block:
            out.append(DecodeProblem("unterminated_block", len(self._block)))
        self._block.clear()
        self._in_block = False
        self._eb_seen = False
        self._discarding = False
        return [p for p in out if isinstance(p, DecodeProblem)]


class PlainSplitter:
    """Splits un-framed HL7 text into messages at each ``MSH`` that begins a segment.

    Without MLLP there is no end marker, so the last message is only complete at the next
    ``MSH``, at :meth:`flush` (the driver calls it when the line has been idle) or at end of input.
    """

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_BLOCK_BYTES) -> None:
        self._max = max_message_bytes
        self._buf = bytearray()
        self._scan = 0  # where to look for the next segment-start MSH
        self._garbage = _GarbageCount()
        # Is the first buffered byte at the start of a line (stream start, or after a dropped CR/LF)?
        self._line_start = True

    def pending(self) -> bool:
        """True when a message may be waiting for :meth:`flush`."""
        return bool(self._buf.strip(_BETWEEN_BLOCKS))

    def feed(self, data: bytes) -> list[Framed]:
        """Messages completed by ``data`` (a following MSH was seen) and problems."""
        out: list[Framed] = []
        self._buf += data
        while True:
            start = self._find_msh(0)
            if start < 0:
                # No message start yet: keep only what could still become a segment-start "MSH".
                self._drop(len(self._buf) - self._tail_keep(), out)
                self._scan = 0
                break
            if start > 0:
                self._drop(start, out)
            self._garbage.flush(out)
            nxt = self._find_msh(max(1, self._scan))
            if nxt < 0:
                self._scan = max(1, len(self._buf) - 3)
                break
            out.append(bytes(self._buf[:nxt]))
            del self._buf[:nxt]
            self._scan = 0
            self._line_start = True
        if len(self._buf) > self._max:
            out.append(DecodeProblem("message_too_long", len(self._buf)))
            self._buf.clear()
            self._scan = 0
        return out

    def _drop(self, count: int, out: list[Framed]) -> None:
        """Discard ``count`` leading bytes that are not part of a message (counted as garbage)."""
        if count <= 0:
            return
        chunk = bytes(self._buf[:count])
        del self._buf[:count]
        self._line_start = chunk[-1] in (CR, 0x0A)
        self._garbage.add(chunk, out)

    def _tail_keep(self) -> int:
        """How many trailing bytes might be the beginning of a segment-start ``MSH``."""
        for keep in (3, 2, 1):
            if len(self._buf) >= keep and b"MSH".startswith(bytes(self._buf[-keep:])):
                return keep
        return 0

    def _find_msh(self, start: int) -> int:
        """Index of the next ``MSH`` at a segment start (after CR or LF, or at 0), or -1."""
        buf = self._buf
        pos = start
        while True:
            k = buf.find(b"MSH", pos)
            if k < 0:
                return -1
            if (k == 0 and self._line_start) or (k > 0 and buf[k - 1] in (CR, 0x0A)):
                return k
            pos = k + 1

    def flush(self) -> list[Framed]:
        """Emit whatever is buffered as the last message (or garbage when it is not one)."""
        out: list[Framed] = []
        data = bytes(self._buf)
        self._buf.clear()
        self._scan = 0
        line_start, self._line_start = self._line_start, True
        if line_start and data.lstrip(_BETWEEN_BLOCKS).startswith(b"MSH"):
            self._garbage.flush(out)
            out.append(data)
            return out
        self._garbage.add(data, out)
        self._garbage.flush(out)
        return out
