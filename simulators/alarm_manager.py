"""A hospital alarm manager double: an asyncio MLLP/TCP server that takes IHE PCD-04 (ORU^R40).

For tests, the benchmark and ``vitalwatch demo --alarm-manager``. It reads what VitalWatch's
alert reporter sends with an independent HL7 parser (python-hl7, not our encoder's code), keeps
every message as it arrived (:attr:`AlarmManagerDouble.received`) and the ones it accepted
(:attr:`AlarmManagerDouble.accepted`), and answers each one as told:

====================  ==========================================================================
behaviour             what the double does with the next message
====================  ==========================================================================
``ack``               accepts it and answers ``MSA|AA`` (the default)
``ae`` / ``ar``       refuses it: ``MSA|AE`` (application error) / ``MSA|AR`` (reject), with MSA-3
``drop``              closes the connection at once: no answer, not accepted
``ack_lost``          accepts it, then closes the connection before answering (the ACK is lost,
                      so the sender must resend and the manager de-duplicates)
``stall``             never answers and keeps the connection open (a hung manager)
====================  ==========================================================================

:meth:`~AlarmManagerDouble.script` queues behaviours for the next messages; afterwards
:attr:`~AlarmManagerDouble.default` applies. :meth:`~AlarmManagerDouble.outage` stops listening
(connections refused) until :meth:`~AlarmManagerDouble.start` is called again on the same port.
Like a real manager it de-duplicates on ``(alert id, update counter)``: a copy of an accepted
report is acknowledged again but not accepted twice (:attr:`~AlarmManagerDouble.duplicates`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import hl7

from vitalwatch.drivers.mllp import MllpDeframer, encode_block

__all__ = ["AlarmManagerDouble", "Behaviour", "Report"]


class Behaviour(enum.StrEnum):
    ACK = "ack"
    AE = "ae"
    AR = "ar"
    DROP = "drop"
    ACK_LOST = "ack_lost"
    STALL = "stall"


@dataclass(frozen=True, slots=True)
class Report:
    """One ORU^R40 as the double received it, parsed by python-hl7."""

    text: str
    message: hl7.Message
    control_id: str  # MSH-10
    alert_id: str  # OBR-3.2
    counter: int  # OBR-3.1
    answered: str | None  # MSA-1 sent back (None: dropped or stalled)
    at: float  # loop time of arrival

    @property
    def key(self) -> tuple[str, int]:
        return self.alert_id, self.counter

    def field(self, key: str) -> str:
        """One value by python-hl7 accessor (``"OBX3.F5"``, ``"OBR.F3.R1.C2"``), which unescapes it."""
        return str(self.message[key])

    def facet(self, name: str) -> str:
        """OBX-5 of the OBX whose OBX-3 name is ``name`` (``MDC_ATTR_EVENT_PHASE``), or ""."""
        for segment in self.message.segments("OBX"):
            if str(segment[3][0][1]) == name:
                return str(self.message.unescape(str(segment[5])))
        return ""


class AlarmManagerDouble:
    """An MLLP/TCP server on loopback answering ORU^R40 messages (module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        on_report: Callable[[Report], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._on_report = on_report
        self.default = Behaviour.ACK
        self._script: deque[Behaviour] = deque()
        self.received: list[Report] = []
        self.accepted: list[Report] = []
        self.duplicates = 0
        self.connections = 0
        self.unparsable = 0
        self._keys: set[tuple[str, int]] = set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Condition()

    # ------------------------------------------------------------------ control
    def script(self, *behaviours: Behaviour | str) -> None:
        """Answer the next messages this way, in order; then :attr:`default` again."""
        self._script.extend(Behaviour(b) for b in behaviours)

    async def start(self) -> None:
        """Listen (again) on ``port`` (a free one the first time if 0)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]

    async def outage(self) -> None:
        """Stop listening and cut every connection: the manager is down until :meth:`start`."""
        if self._server is not None:
            self._server.close()
            self._server = None
        await self.drop_connections()

    async def drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def stop(self) -> None:
        await self.outage()

    async def __aenter__(self) -> AlarmManagerDouble:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for(
        self, check: Callable[[], bool], *, within: float = 20.0, what: str = "condition"
    ) -> None:
        """Until ``check()`` holds (re-checked on every message); TimeoutError names ``what``."""
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(check)
        except TimeoutError:
            raise TimeoutError(
                f"alarm manager double: no {what} within {within} s "
                f"(received {len(self.received)}, accepted {len(self.accepted)})"
            ) from None

    def accepted_keys(self) -> list[tuple[str, int]]:
        return [r.key for r in self.accepted]

    # ------------------------------------------------------------------ serving
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        deframer = MllpDeframer()
        stalled = False  # told to stall: read on (until the sender gives up), never answer again
        try:
            while data := await reader.read(65536):
                for block in deframer.feed(data):
                    if not isinstance(block, bytes) or stalled:
                        continue
                    action = await self._message(block, writer)
                    if action is Behaviour.DROP:
                        return
                    stalled = action is Behaviour.STALL
        except (OSError, ConnectionError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _message(self, block: bytes, writer: asyncio.StreamWriter) -> Behaviour:
        """Handle one message: ACK (answered), DROP (close the connection) or STALL (never answer)."""
        text = block.decode("utf-8")
        loop_time = asyncio.get_running_loop().time()
        behaviour = self._script.popleft() if self._script else self.default
        try:
            message = hl7.parse(text)
            control = str(message["MSH.F10"])
            alert_id = str(message["OBR.F3.R1.C2"])
            counter = int(str(message["OBR.F3.R1.C1"]))
        except (KeyError, IndexError, ValueError, hl7.ParseException):
            self.unparsable += 1
            writer.write(encode_block(_ack(text, "AR", "not an ORU^R40 this double can read").encode()))
            return Behaviour.ACK
        answer = {
            Behaviour.ACK: "AA",
            Behaviour.ACK_LOST: "AA",
            Behaviour.AE: "AE",
            Behaviour.AR: "AR",
        }.get(behaviour)
        report = Report(text, message, control, alert_id, counter, answer, loop_time)
        async with self._changed:
            self.received.append(report)
            if answer == "AA":
                if report.key in self._keys:
                    self.duplicates += 1  # a resend after a lost ACK: acknowledged, not taken twice
                else:
                    self._keys.add(report.key)
                    self.accepted.append(report)
                    if self._on_report is not None:
                        self._on_report(report)
            self._changed.notify_all()
        if behaviour in (Behaviour.DROP, Behaviour.ACK_LOST):
            return Behaviour.DROP
        if behaviour is Behaviour.STALL:
            return Behaviour.STALL
        reason = "" if answer == "AA" else f"double told to answer {answer}"
        with contextlib.suppress(OSError, ConnectionError):
            writer.write(encode_block(_ack(text, answer or "AE", reason).encode()))
            await writer.drain()
        return Behaviour.ACK


def _ack(text: str, code: str, reason: str) -> str:
    """A plain original-mode ACK built from the raw MSH (works even when python-hl7 could not parse)."""
    msh = text.split("\r", 1)[0].split("|")
    msh += [""] * (13 - len(msh))
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    lines = [
        "|".join(
            [
                "MSH",
                "^~\\&",
                msh[4],
                msh[5],
                msh[2],
                msh[3],
                now,
                "",
                "ACK^R40^ACK",
                f"AM{msh[9]}",
                "P",
                "2.6",
            ]
        ),
        "|".join(["MSA", code, msh[9]] + ([reason] if reason else [])),
    ]
    return "\r".join(lines) + "\r"
