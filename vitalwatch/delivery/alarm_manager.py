"""IHE PCD-04 to a hospital alarm manager: every journalled alert transition, over MLLP/TCP.

Each ``[[alert_reporters]]`` entry is one :class:`AlertReporter`, as durable as the MQTT path:

- **Journalled first.** The reporter is a :class:`~vitalwatch.delivery.store.JournalTap` of the
  daemon's store: when :meth:`~vitalwatch.delivery.store.Store.record` journals a transition for
  MQTT, the reporter's encoded ORU^R40 (:mod:`vitalwatch.delivery.pcd04`) is written in the same
  fsynced transaction (``report_outbox``). It is sent once that commit is done (or after
  ``PERSIST_WAIT_S``, as for MQTT: a stalled SD card must not hold an alert back).
- **Marked delivered only after the ACK.** One message is in flight at a time; MSA-1 ``AA`` (or
  ``CA``) whose MSA-2 is our MSH-10 marks it delivered. ``AE``/``AR`` (``CE``/``CR``) is a NAK:
  the same bytes go again after a capped, jittered backoff. No ACK within ``ack_timeout_s``
  (a stalled manager keeps TCP open), a dropped connection or a reply that is not an ACK closes
  the connection; the message is sent again on the next one. Nothing later overtakes it.
- **In order, no duplicates.** Priority lanes as for MQTT (:mod:`vitalwatch.delivery.lanes`):
  the reports of one alert leave strictly in update-counter order, a higher-priority alert's
  before an older lower one's. Each transition gets its ``(alert id, update counter)`` once, at
  journal time; a transition journalled again (after a restart) is not reported again, and a
  resend is byte-for-byte the same message (same MSH-10) for the manager to drop.
- **Its own technical alarm.** Reports undeliverable for ``unreachable_alarm_s`` (down, stalled,
  or refusing) raise ``alarm_manager_unreachable`` (:class:`AlertReporters` calls the daemon's
  local alarms); it clears once a report is accepted again.
- **Its own metrics** (``vitalwatch_pcd04_*``, :mod:`vitalwatch.ops.metrics`).
- After a restart the reports not yet accepted are loaded from the journal and sent again, and
  each alert's update counter continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars

from vitalwatch.config import AlertReporterConfig, Config
from vitalwatch.delivery.broker import client_tls_context
from vitalwatch.delivery.commit import Commit
from vitalwatch.delivery.lanes import Entry, Lanes
from vitalwatch.delivery.payloads import priority_rank
from vitalwatch.delivery.pcd04 import control_id, oru_r40
from vitalwatch.delivery.store import ReportRow, Store
from vitalwatch.delivery.watchdog import UnreachableWatchdog
from vitalwatch.delivery.writer import Work
from vitalwatch.drivers.events import DecodeProblem
from vitalwatch.drivers.hl7 import parse_ack
from vitalwatch.drivers.mllp import MllpDeframer, encode_block
from vitalwatch.link.device_link import backoff_delay
from vitalwatch.ops.metrics import (
    PCD04_ACK_LATENCY,
    PCD04_DELIVERED,
    PCD04_DISCONNECTS,
    PCD04_NAKS,
    PCD04_OLDEST_AGE,
    PCD04_PENDING,
    PCD04_UNREACHABLE,
    PCD04_UNREACHABLE_ALARMS,
)
from vitalwatch.ops.supervise import supervise

__all__ = ["ACCEPTED", "UNREACHABLE_ALARM", "AlertReporter", "AlertReporters"]

log = structlog.get_logger("vitalwatch.delivery.alarm_manager")

# The local technical alarm raised while reports cannot be delivered.
UNREACHABLE_ALARM = "alarm_manager_unreachable"
# MSA-1 codes that mean "accepted": original mode AA, enhanced mode commit accept CA.
ACCEPTED = frozenset({"AA", "CA"})
# How long a report waits for its SQLite commit before it is sent anyway (as the MQTT path).
PERSIST_WAIT_S = 2.0
# Reconnect and NAK backoff cap: a restarted manager is used again within seconds.
MAX_BACKOFF_S = 10.0
# Alerts that ended, remembered so a re-journalled final transition is not reported twice.
KEEP_ENDED = 1000
READ_CHUNK = 65536


class _BadReply(Exception):
    """The manager answered something that is not an ACK to our message: the connection is closed."""


class AlertReporter:
    """One alarm manager: journal tap, MLLP/TCP client, unreachable watchdog (module docstring)."""

    def __init__(
        self,
        cfg: AlertReporterConfig,
        *,
        site: str,
        store: Store,
        on_unreachable: Callable[[bool], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self._site = site
        self._store = store
        self._rng = rng or random.Random()
        self._on_unreachable = on_unreachable
        self._lanes = Lanes()
        self._wake = asyncio.Event()
        # alert_id -> (last update counter, last seq) of every alert that has not ended.
        self._alerts: dict[str, tuple[int, int]] = store.report_counters(cfg.id)
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._fresh: list[Entry] = []  # journalled, waiting for journalled() to hand their commit
        self._pending_gauge = PCD04_PENDING.labels(cfg.id)
        self._watchdog = UnreachableWatchdog(
            self._lanes,
            bed="*",
            limit_s=cfg.unreachable_alarm_s,
            on_change=self._unreachable_changed,
            oldest_age=PCD04_OLDEST_AGE.labels(cfg.id),
            destination="alarm_manager",
        )
        self.delivered = 0
        self.naks = 0
        now = asyncio.get_running_loop().time()
        for row in store.report_pending(cfg.id):
            self._enqueue(self._entry(row, now))
        store.add_tap(self)

    # ------------------------------------------------------------------ state
    @property
    def pending(self) -> int:
        """Reports not yet accepted by the alarm manager."""
        return len(self._lanes)

    @property
    def connected(self) -> bool:
        return self._watchdog.connected

    @property
    def unreachable(self) -> bool:
        """The ``alarm_manager_unreachable`` technical alarm of this reporter is on."""
        return self._watchdog.unreachable

    def _unreachable_changed(self, stuck: bool) -> None:
        PCD04_UNREACHABLE.labels(self.cfg.id).set(1 if stuck else 0)
        if stuck:
            PCD04_UNREACHABLE_ALARMS.labels(self.cfg.id).inc()
        if self._on_unreachable is not None:
            self._on_unreachable(stuck)

    # ------------------------------------------------------------------ journal tap (loop thread)
    def journal(self, bed: str, payload: dict[str, Any]) -> Work | None:
        """This reporter's ORU^R40 for one transition, written with its outbox row (or None: seen)."""
        alert_id = str(payload["alert_id"])
        seq = int(payload["seq"])
        last = self._alerts.get(alert_id)
        if alert_id in self._ended or (last is not None and seq <= last[1]):
            return None  # the same transition journalled again (a restart): reported already
        counter = 0 if last is None else last[0] + 1
        final = payload.get("state") == "cleared"
        message = oru_r40(payload, counter=counter, cfg=self.cfg, site=self._site, now=datetime.now(UTC))
        row = ReportRow(bed, alert_id, seq, counter, priority_rank(payload.get("priority")), final, message)
        if final:
            self._alerts.pop(alert_id, None)
            self._ended[alert_id] = None
            while len(self._ended) > KEEP_ENDED:
                self._ended.popitem(last=False)
        else:
            self._alerts[alert_id] = (counter, seq)
        self._fresh.append(self._entry(row, asyncio.get_running_loop().time()))
        return Store.report_row(self.cfg.id, row)

    def journalled(self, persisted: Commit) -> None:
        """Queue what :meth:`journal` just built; it is sent once ``persisted`` is done."""
        for entry in self._fresh:
            entry.persisted = persisted
            self._enqueue(entry)
        self._fresh.clear()

    @staticmethod
    def _entry(row: ReportRow, now: float) -> Entry:
        body = {"bed": row.bed, "counter": row.counter, "message": row.message}
        return Entry(row.alert_id, row.seq, row.rank, row.final, body, now)

    def _enqueue(self, entry: Entry) -> None:
        self._lanes.push(entry)
        self._pending_gauge.set(len(self._lanes))
        self._wake.set()

    # ------------------------------------------------------------------ connection
    async def run(self) -> None:
        """Connect, send, reconnect; until cancelled."""
        with bound_contextvars(reporter=self.cfg.id):
            watchdog = asyncio.create_task(self._watchdog.run(), name=f"pcd04-unreachable[{self.cfg.id}]")
            attempt = 0
            try:
                while True:
                    if await self._connection():
                        attempt = 0
                    await asyncio.sleep(backoff_delay(attempt, self._rng, cap=MAX_BACKOFF_S))
                    attempt += 1
            finally:
                watchdog.cancel()

    async def _connection(self) -> bool:
        """One connection from connect to failure; True if it was established."""
        cfg = self.cfg
        try:
            async with asyncio.timeout(cfg.ack_timeout_s):
                reader, writer = await asyncio.open_connection(
                    cfg.host,
                    cfg.port,
                    ssl=client_tls_context(cfg.tls),
                    server_hostname=cfg.host if cfg.tls else None,
                )
        except (OSError, TimeoutError) as exc:
            PCD04_DISCONNECTS.labels(cfg.id, "connect_failed").inc()
            log.warning(
                "alarm_manager.connect_failed",
                host=cfg.host,
                port=cfg.port,
                error=str(exc) or type(exc).__name__,
            )
            return False
        self._watchdog.connection(True)
        log.info("alarm_manager.connected", host=cfg.host, port=cfg.port, pending=self.pending)
        try:
            await self._serve(reader, writer)
        except TimeoutError:
            PCD04_DISCONNECTS.labels(cfg.id, "ack_timeout").inc()
            log.warning("alarm_manager.ack_timeout", timeout_s=cfg.ack_timeout_s, pending=self.pending)
        except _BadReply as exc:
            PCD04_DISCONNECTS.labels(cfg.id, "bad_reply").inc()
            log.warning("alarm_manager.bad_reply", reason=str(exc), pending=self.pending)
        except (OSError, ConnectionError) as exc:
            PCD04_DISCONNECTS.labels(cfg.id, "closed").inc()
            log.warning(
                "alarm_manager.disconnected", error=str(exc) or type(exc).__name__, pending=self.pending
            )
        finally:
            self._watchdog.connection(False)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send the lanes' head, one at a time, until the connection fails (raises)."""
        replies: asyncio.Queue[bytes | None] = asyncio.Queue()
        reading = asyncio.create_task(self._read(reader, replies), name=f"pcd04-read[{self.cfg.id}]")
        naks = 0
        try:
            while True:
                entry = self._lanes.peek()
                if entry is None:
                    self._wake.clear()
                    waiter = asyncio.create_task(self._wake.wait())
                    try:
                        done, _ = await asyncio.wait({waiter, reading}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
                    if reading in done:
                        raise ConnectionError("closed by the alarm manager")
                    continue
                if await self._send(entry, writer, replies):
                    naks = 0
                    continue
                await asyncio.sleep(backoff_delay(naks, self._rng, cap=MAX_BACKOFF_S))
                naks += 1
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

    async def _read(self, reader: asyncio.StreamReader, replies: asyncio.Queue[bytes | None]) -> None:
        """Deframe what the manager sends; None once the connection is gone."""
        deframer = MllpDeframer()
        try:
            while data := await reader.read(READ_CHUNK):
                for framed in deframer.feed(data):
                    if isinstance(framed, DecodeProblem):
                        log.warning("alarm_manager.bad_frame", problem=framed.reason, size=framed.length)
                    else:
                        replies.put_nowait(framed)
        except (OSError, ConnectionError) as exc:
            log.info("alarm_manager.read_failed", error=str(exc) or type(exc).__name__)
        finally:
            replies.put_nowait(None)

    async def _send(
        self, entry: Entry, writer: asyncio.StreamWriter, replies: asyncio.Queue[bytes | None]
    ) -> bool:
        """Offer one report; True when accepted, False on a NAK (the caller backs off and resends)."""
        if entry.persisted is not None:
            try:
                async with asyncio.timeout(PERSIST_WAIT_S):
                    await entry.persisted  # a wait of its own: giving up cancels nothing shared
            except TimeoutError:
                log.warning("persistence.slow", alert_id=entry.alert_id, seq=entry.seq)
            entry.persisted = None
        counter = int(entry.payload["counter"])
        expected = control_id(entry.alert_id, counter)
        offered = time.monotonic()
        async with asyncio.timeout(self.cfg.ack_timeout_s):
            writer.write(encode_block(str(entry.payload["message"]).encode("utf-8")))
            await writer.drain()
            code, text = await self._reply(replies, expected)
        PCD04_ACK_LATENCY.labels(self.cfg.id).observe(time.monotonic() - offered)
        if code not in ACCEPTED:
            self.naks += 1
            PCD04_NAKS.labels(self.cfg.id, code if code in ("AE", "AR", "CE", "CR") else "other").inc()
            # MSA-3 is the manager's own text; cut short, it never holds our patient data.
            log.warning(
                "alarm_manager.nak", code=code, alert_id=entry.alert_id, counter=counter, text=text[:120]
            )
            return False
        self._lanes.pop(entry)
        self._watchdog.progress()
        self.delivered += 1
        PCD04_DELIVERED.labels(self.cfg.id).inc()
        self._pending_gauge.set(len(self._lanes))
        self._store.report_delivered(self.cfg.id, str(entry.payload["bed"]), entry.alert_id, entry.seq)
        log.info("alert.reported", alert_id=entry.alert_id, counter=counter)
        return True

    async def _reply(self, replies: asyncio.Queue[bytes | None], expected: str) -> tuple[str, str]:
        """(MSA-1, MSA-3) of the ACK to ``expected``; ACKs to other ids (late ones) are skipped."""
        while True:
            reply = await replies.get()
            if reply is None:
                raise ConnectionError("closed by the alarm manager before its ACK")
            ack = parse_ack(reply)
            if ack is None:
                raise _BadReply("not an HL7 ACK (no MSH/MSA)")
            code, acked, text = ack
            if acked == expected:
                return code, text
            log.warning("alarm_manager.stray_ack", acked=acked[:80], expected=expected)


class AlertReporters:
    """Every configured alarm manager, and the one ``alarm_manager_unreachable`` alarm they share.

    Built with the daemon's store (each reporter taps it); :meth:`run` runs each reporter under
    :func:`~vitalwatch.ops.supervise.supervise`, so a bug in one never stops the daemon's MQTT path.
    """

    def __init__(self, config: Config, store: Store, *, on_unreachable: Callable[[bool], None]) -> None:
        self._on_unreachable = on_unreachable
        self._stuck: dict[str, bool] = {}
        self.raised = False
        self.reporters: dict[str, AlertReporter] = {
            cfg.id: AlertReporter(
                cfg, site=config.site, store=store, on_unreachable=functools.partial(self._changed, cfg.id)
            )
            for cfg in config.alert_reporters
        }

    def _changed(self, reporter: str, stuck: bool) -> None:
        self._stuck[reporter] = stuck
        raised = any(self._stuck.values())
        if raised != self.raised:
            self.raised = raised
            self._on_unreachable(raised)

    async def run(self) -> None:
        """Run every reporter until cancelled (returns at once when none is configured)."""
        async with asyncio.TaskGroup() as group:
            for rid, reporter in self.reporters.items():
                group.create_task(
                    supervise(f"alert-reporter[{rid}]", reporter.run, lambda exc: None),
                    name=f"alert-reporter[{rid}]",
                )
