"""HL7 v2 multi-parameter monitor simulator: IHE PCD-01 ORU^R01 over MLLP, waiting for ACKs.

What it sends (shaped like the Mindray VS900 sample, device-protocols.md §3.2):

.. code-block:: text

    every period_s (1 s):   ORU^R01  OBX 150456 SpO2 %, 149530 pulse /min, 150488 perfusion index %
    every nibp_interval_s:  ORU^R01  OBX 150301/150302/150303 cuff sys/dia/mean mmHg, 149546 pulse,
                            OBX-14 = the measurement time (end of the cuff cycle), OBX-17 ^APERIODIC

    <SB> MSH|^~\\&|VITALWATCH_SIM^<EUI-64>^EUI-64||||<now>||ORU^R01^ORU_R01|<id>|P|2.6|||NE|AL|| ...
         PID|||SIM-0001^^^VITALWATCH^PI||SIMULATED^PATIENT     (a fake identifier: must never reach events)
         PV1||I|CHAIR^^1
         OBR|1|<id>^VITALWATCH_SIM|<id>^VITALWATCH_SIM|182777000^monitoring of patient^SCT|||<now>
         OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X
         OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.150456|97|262688^MDC_DIM_PERCENT^MDC|||||R|||<t>
         ...  <EB><CR>

MSH-10 control ids increase from 1. Acknowledgement handling follows the GE B40 manual (GEB40
p.25, §3.4): one message in flight; AA/CA = done; AE/CE = send the same message again, at most
``max_tries`` (3) attempts in total; AR/CR = give up on it (GE also drops the connection); no ACK
within ``ack_timeout_s`` counts like AE (the timeout value is [unconfirmed]). An ACK with an empty
MSA-2 is taken as answering the message in flight (only one can be). ``wait_for_ack=False``
sends everything without waiting, for hosts that never answer.

Markers: ``probe_off`` or ``artifact`` -> the oximeter rows carry OBX-11 ``X`` and an empty OBX-5
(the Philips "invalid" convention, EFFICIA p.3-18); ``cuff_error`` -> the NIBP rows the same way;
``silent`` -> nothing at all.

Options for a networked monitor (``vitalwatch simulate --connect mllp://HOST:PORT``): ``eui64``
(MSH-3; by default 16 hex digits drawn from the seed), ``location`` (PV1-3, ``CHAIR^^1``), and
``resp_rate`` (adds an OBX 151562 MDC_RESP_RATE row, /min, to every vitals message).
"""

from __future__ import annotations

import random
import re
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from vitalwatch.drivers.base import SerialSettings
from vitalwatch.drivers.hl7 import Hl7Driver, parse_ack
from vitalwatch.drivers.mllp import MllpDeframer, encode_block
from vitalwatch.simulators.base import PatientState, Scenario

__all__ = ["Hl7Simulator", "ObxRow", "build_oru"]

_APP = "VITALWATCH_SIM"


@dataclass(frozen=True, slots=True)
class ObxRow:
    """One numeric OBX row: value text "" with status "X" means invalid."""

    code: int
    name: str
    value: str
    unit_code: int
    unit_name: str
    status: str
    sub_id: str
    observed: str  # HL7 DTM
    aperiodic: bool = False


def build_oru(
    control_id: str, sent: str, device_id: str, rows: list[ObxRow], *, location: str = "CHAIR^^1"
) -> bytes:
    """A PCD-01 ORU^R01 message (CR segment ends, no MLLP framing); ``location`` is PV1-3."""
    segments = [
        f"MSH|^~\\&|{_APP}^{device_id}^EUI-64||||{sent}||ORU^R01^ORU_R01|{control_id}|P|2.6|||NE|AL||"
        "UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
        "PID|||SIM-0001^^^VITALWATCH^PI||SIMULATED^PATIENT",
        f"PV1||I|{location}",
        f"OBR|1|{control_id}^{_APP}|{control_id}^{_APP}|182777000^monitoring of patient^SCT|||{sent}",
        "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X",
    ]
    for n, row in enumerate(rows, start=2):
        tail = "|||^APERIODIC" if row.aperiodic else ""
        segments.append(
            f"OBX|{n}|NM|{row.code}^{row.name}^MDC|{row.sub_id}|{row.value}|"
            f"{row.unit_code}^{row.unit_name}^MDC|||||{row.status}|||{row.observed}{tail}"
        )
    return ("\r".join(segments) + "\r").encode("utf-8")


class Hl7Simulator:
    """A bedside monitor exporting PCD-01 over a serial line with MLLP framing."""

    device: ClassVar[str] = "hl7"
    serial: ClassVar[SerialSettings] = Hl7Driver.serial

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        *,
        nibp_interval_s: float = 300.0,
        nibp_cycle_s: float = 40.0,
        period_s: float = 1.0,
        wait_for_ack: bool = True,
        ack_timeout_s: float = 3.0,
        max_tries: int = 3,
        queue_limit: int = 32,
        start: str = "2024-01-01T08:00:00+00:00",
        eui64: str | None = None,
        location: str = "CHAIR^^1",
        resp_rate: bool = False,
    ) -> None:
        self._scenario = scenario
        if eui64 is not None and not re.fullmatch(r"[0-9A-Fa-f]{16}", eui64):
            raise ValueError(f"eui64 must be 16 hex digits, got {eui64!r}")
        self.device_id = eui64.upper() if eui64 is not None else f"{random.Random(seed).getrandbits(64):016X}"
        self.location = location
        self._resp_rate = resp_rate
        self._nibp_interval = nibp_interval_s
        self._period = period_s
        self._wait = wait_for_ack
        self._ack_timeout = ack_timeout_s
        self._max_tries = max_tries
        # Bounded: a host that never answers must not make the simulator grow without end.
        self._queue: deque[tuple[str, bytes]] = deque(maxlen=queue_limit)
        self._start = datetime.fromisoformat(start)
        self._next_tick = 0.0
        self._next_nibp = nibp_cycle_s  # first cuff cycle starts at 0 and ends here
        self._control = 0
        self._in_flight: tuple[str, bytes] | None = None
        self._tries = 0
        self._sent_at = 0.0
        self._resend = False
        self._last_now = 0.0
        self._deframer = MllpDeframer()
        self.acked = 0
        self.errors = 0  # AE/CE answers
        self.resent = 0
        self.dropped = 0

    # -- message content --------------------------------------------------------------------

    def _ts(self, t: float) -> str:
        return (self._start + timedelta(seconds=t)).strftime("%Y%m%d%H%M%S%z")

    def _enqueue(self, t: float, rows: list[ObxRow]) -> None:
        self._control += 1
        control = str(self._control)
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        message = build_oru(control, self._ts(t), self.device_id, rows, location=self.location)
        self._queue.append((control, message))

    def _vitals(self, t: float, s: PatientState) -> list[ObxRow]:
        bad = s.probe_off or s.artifact
        ts = self._ts(t)
        spo2 = "" if bad else str(round(min(100.0, max(0.0, s.spo2))))
        pulse = "" if bad else str(round(max(0.0, s.pulse_rate)))
        pi = "" if bad else f"{max(0.0, s.perfusion_index):.2f}"
        status = "X" if bad else "R"
        rows = [
            ObxRow(150456, "MDC_PULS_OXIM_SAT_O2", spo2, 262688, "MDC_DIM_PERCENT", status,
                   "1.3.1.150456", ts),
            ObxRow(149530, "MDC_PULS_OXIM_PULS_RATE", pulse, 264864, "MDC_DIM_BEAT_PER_MIN", status,
                   "1.3.1.149530", ts),
            ObxRow(150488, "MDC_BLD_PERF_INDEX", pi, 262688, "MDC_DIM_PERCENT", status, "1.3.1.150488", ts),
        ]  # fmt: skip
        if self._resp_rate:
            rate = str(round(max(0.0, s.resp_rate)))
            rows.append(
                ObxRow(151562, "MDC_RESP_RATE", rate, 264928, "MDC_DIM_RESP_PER_MIN", "R", "1.2.1.151562", ts)
            )
        return rows

    def _nibp(self, t: float, s: PatientState) -> list[ObxRow]:
        bad = s.cuff_error
        ts = self._ts(t)
        status = "X" if bad else "R"

        def v(x: float) -> str:
            return "" if bad else str(round(max(0.0, x)))

        mmhg = (266016, "MDC_DIM_MMHG")
        return [
            ObxRow(150301, "MDC_PRESS_CUFF_SYS", v(s.systolic), *mmhg, status, "1.1.9.150301", ts, True),
            ObxRow(150302, "MDC_PRESS_CUFF_DIA", v(s.diastolic), *mmhg, status, "1.1.9.150302", ts, True),
            ObxRow(150303, "MDC_PRESS_CUFF_MEAN", v(s.mean), *mmhg, status, "1.1.9.150303", ts, True),
            ObxRow(149546, "MDC_PULS_RATE_NON_INV", v(s.pulse_rate), 264864, "MDC_DIM_BEAT_PER_MIN", status,
                   "1.1.9.149546", ts, True),
        ]

    # -- DeviceSimulator protocol ---------------------------------------------------------------

    def poll(self, now: float) -> bytes:
        """Messages due by ``now``: one in flight at a time unless ``wait_for_ack`` is off."""
        self._last_now = now
        while self._next_tick <= now or self._next_nibp <= now:
            if self._next_tick <= self._next_nibp:
                t, self._next_tick = self._next_tick, self._next_tick + self._period
                state = self._scenario.state_at(t)
                if not state.silent:
                    self._enqueue(t, self._vitals(t, state))
            else:
                t, self._next_nibp = self._next_nibp, self._next_nibp + self._nibp_interval
                state = self._scenario.state_at(t)
                if not state.silent:
                    self._enqueue(t, self._nibp(t, state))
        if self._scenario.state_at(now).silent:
            return b""
        out = bytearray()
        if self._in_flight is not None:
            timed_out = now - self._sent_at >= self._ack_timeout
            if self._resend or timed_out:
                self._resend = False
                if self._tries >= self._max_tries:
                    self.dropped += 1
                    self._in_flight = None
                else:
                    out += self._transmit(self._in_flight, now, again=True)
        while self._queue and (self._in_flight is None or not self._wait):
            out += self._transmit(self._queue.popleft(), now, again=False)
            if not self._wait:
                self._in_flight = None
        return bytes(out)

    def _transmit(self, message: tuple[str, bytes], now: float, *, again: bool) -> bytes:
        if again:
            self._tries += 1
            self.resent += 1
        else:
            self._tries = 1
        self._in_flight = message
        self._sent_at = now
        return encode_block(message[1])

    def receive(self, data: bytes, now: float) -> None:
        """ACKs from the host: settle, resend or give up on the message in flight."""
        for item in self._deframer.feed(data):
            if not isinstance(item, bytes) or self._in_flight is None:
                continue
            ack = parse_ack(item)
            if ack is None:
                continue
            code, control, _text = ack
            if control and control != self._in_flight[0]:
                continue  # a late answer to an earlier attempt
            if code in ("AA", "CA"):
                self.acked += 1
                self._in_flight = None
            elif code in ("AE", "CE"):
                self.errors += 1
                if self._tries < self._max_tries:
                    self._resend = True
                else:
                    self.dropped += 1
                    self._in_flight = None
            else:
                self.dropped += 1
                self._in_flight = None

    def next_deadline(self) -> float | None:
        """The next tick, NIBP result, resend, or ACK timeout."""
        times = [self._next_tick, self._next_nibp]
        if self._in_flight is not None:
            times.append(self._last_now if self._resend else self._sent_at + self._ack_timeout)
        elif self._queue:
            times.append(self._last_now)
        return min(times)
