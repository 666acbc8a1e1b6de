"""The daemon: one TaskGroup with a link per device, a publisher per bed and one ticker.

SIGTERM (systemd) or SIGINT cancels the group; each ``async with`` closes its port or client
on the way out and each publisher says ``offline`` before it goes. Nothing here decides
anything clinical: that is the engine's job.

At start the outbox database (``{state.directory}/vitalwatch.sqlite3``) is opened and each
bed's session resumed from it (:mod:`vitalwatch.continuity.statestore`): the engine continues from its
last snapshot (baseline, sustain/re-notify/escalation timers, NIBP rule state, active alarms),
reconciled with the alert journal, or - without a usable snapshot - from the journal alone;
undelivered alerts are queued again, the seq and alert-id counters continue, the phase is
re-entered and the alarms that were active are shown again under their ids. A journal that is
missing, empty or damaged is moved aside first and the sessions recovered from the session
record (:mod:`vitalwatch.continuity.journal_loss`). Local technical alarms (broker unreachable,
persistence degraded, journal lost, daemon stalled) go to the log, a metric where there is one,
the status payload and ``mqtt.local_alarm_command``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import signal
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import REGISTRY
from prometheus_client import start_http_server as start_metrics_server
from structlog.contextvars import bind_contextvars, bound_contextvars

from vitalwatch.bed import BedSession
from vitalwatch.config import BedConfig, Config, DeviceConfig
from vitalwatch.continuity.journal_loss import JOURNAL_LOST_ALARM, check_journal, recover_session
from vitalwatch.continuity.recording import BedJournal, open_journals, write_meta
from vitalwatch.continuity.statestore import SnapshotWriter
from vitalwatch.delivery.alarm_manager import UNREACHABLE_ALARM, AlertReporters
from vitalwatch.delivery.commands import CommandHandler
from vitalwatch.delivery.payloads import WallClock
from vitalwatch.delivery.publisher import BedPublisher
from vitalwatch.delivery.store import DB_NAME, Store
from vitalwatch.errors import StartupError
from vitalwatch.link.contract import Link
from vitalwatch.link.device_link import DeviceLink, LinkListener
from vitalwatch.link.mllp_listener import MllpHub, link_timeout_of
from vitalwatch.link.mllp_routing import is_mllp_url
from vitalwatch.ops.bed_runtime import BedRuntime, make_engine
from vitalwatch.ops.housekeeping import DaemonCollector, Housekeeping
from vitalwatch.ops.local_alarms import LocalAlarms
from vitalwatch.ops.stall import StallGuard
from vitalwatch.ops.statelock import StateLock
from vitalwatch.ops.supervise import supervise
from vitalwatch.record.sessionlog import SESSIONS_DB_NAME, SessionDb, SessionLog
from vitalwatch.registry.receipting import ReceiptLink
from vitalwatch.wake_grid import next_multiple, sleep_until

__all__ = ["Daemon", "LocalAlarms", "make_engine", "run_daemon"]

log = structlog.get_logger("vitalwatch.ops.daemon")

# How often the engine's timers run (sustain, renotify, overdue, silent link). Alarm
# delays are whole seconds; a quarter second keeps the added latency well below that. The
# ticks fall on multiples of it on the loop clock (vitalwatch.wake_grid), the instants the
# device links read their streaming ports, so a tick costs the loop no wake-up of its own.
TICK_S = 0.25
# `vitalwatch status` asks the running daemon here (inside the state directory).
STATUS_SOCKET = "status.sock"


def _bed_context(bed_id: str) -> contextvars.Context:
    """A copy of the current context with ``bed`` bound for structlog (every log line of a tick)."""
    context = contextvars.copy_context()
    context.run(bind_contextvars, bed=bed_id)
    return context


class Daemon:
    """Everything `vitalwatch run` starts, reachable for tests and `vitalwatch demo`."""

    def __init__(self, config: Config, *, record_dir: Path | None = None, freeze_gc: bool = False) -> None:
        self.config = config
        # The process is the daemon alone (``vitalwatch run``): freeze the start-up objects
        # at READY (freeze_startup_objects). Off when a test runs daemons inside its own process.
        self.freeze_gc = freeze_gc
        loop = asyncio.get_running_loop()
        self.started_at = loop.time()
        self.wall = WallClock(loop.time(), datetime.now(UTC))
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.journals: dict[str, BedJournal] = {}
        if record_dir is not None:
            write_meta(record_dir, config)
            self.journals = open_journals(record_dir, config.beds)
        # Each bed's runtime, and its parts by bed id (for tests, status and housekeeping).
        self.runtimes: dict[str, BedRuntime] = {}
        self.beds: dict[str, BedSession[Link]] = {}
        self.publishers: dict[str, BedPublisher] = {}
        self.commands: dict[str, CommandHandler] = {}
        self.local_alarms = LocalAlarms(config.mqtt.local_alarm_command)
        # The daemon's own stalls: every input passes it before an engine (vitalwatch.ops.stall).
        self.stall = StallGuard(self.beds.values, self.local_alarms)
        state = config.state.directory
        # Before the journal is opened: a lost or damaged one is moved aside and the sessions
        # are recovered from the session record (vitalwatch.continuity.journal_loss).
        self.journal_loss = check_journal(state / DB_NAME, record=state / SESSIONS_DB_NAME)
        if self.journal_loss is not None:
            self.local_alarms.set(JOURNAL_LOST_ALARM, "*", True)
        self.store = Store(state / DB_NAME, on_health=self._on_persistence)
        # IHE PCD-04 to hospital alarm managers: one more consumer of the store's journalled transitions.
        self.reporters = AlertReporters(
            config, self.store, on_unreachable=lambda up: self.local_alarms.set(UNREACHABLE_ALARM, "*", up)
        )
        self.sessions = SessionDb(config.state.directory / SESSIONS_DB_NAME)
        # Session records and alert transitions kept until a downstream consumer receipts them.
        self.receipts = receipt_link(config, self.store, self.sessions.path)
        self.records: dict[str, SessionLog] = {}
        self.snapshots: dict[str, SnapshotWriter] = {}
        # Network HL7 senders: one listener per mllp:// address, shared by the devices routed on it.
        self.mllp = MllpHub(link_timeout_s=link_timeout_of(config.alarms))
        for bed_cfg in config.beds:
            self._add_bed(bed_cfg, loop.time())

    def _on_persistence(self, ok: bool, reason: str) -> None:
        self.local_alarms.set("persistence_degraded", "*", not ok)

    def _add_bed(self, bed_cfg: BedConfig, now: float) -> None:
        """One bed, resumed from the store and wired in its constructor (:mod:`.bed_runtime`)."""
        journal = self.journals.get(bed_cfg.id)

        def link(dev: DeviceConfig, listener: LinkListener) -> Link:
            """A serial port, or a route on a network HL7 listener (mllp://)."""
            if is_mllp_url(dev.url):
                return self.mllp.link(dev, listener, tap=journal)
            return DeviceLink(dev, listener, tap=journal)

        recovered = None
        if self.journal_loss is not None:
            recovered = recover_session(self.config.state.directory / SESSIONS_DB_NAME, bed_cfg.id)
            log.error(
                "journal.lost",
                file=str(self.journal_loss.path),
                reason=self.journal_loss.reason,
                moved_to=str(self.journal_loss.moved_to) if self.journal_loss.moved_to else None,
                bed=bed_cfg.id,
                recovered_from="session record" if recovered is not None else None,
                phase=recovered.phase if recovered is not None else None,
                seq_after=recovered.seq if recovered is not None else None,
                lost_active=list(recovered.active) if recovered is not None else [],
            )
        runtime = BedRuntime(
            self.config,
            bed_cfg,
            links=link,
            store=self.store,
            sessions=self.sessions,
            wall=self.wall,
            local_alarms=self.local_alarms,
            journal=journal,
            now=now,
            before_input=self.stall.check,
            recovered=recovered,
        )
        bed = bed_cfg.id
        self.runtimes[bed] = runtime
        self.beds[bed] = runtime.session
        self.publishers[bed] = runtime.publisher
        self.commands[bed] = runtime.commands
        self.records[bed] = runtime.record
        self.snapshots[bed] = runtime.snapshots

    async def _ticker(self) -> None:
        """Every bed's engine and session-record timers at every multiple of TICK_S, from one task.

        One task for all beds, not one per bed: each wake-up is event-loop overhead, and four
        per-bed tickers at 4 Hz were about 6 % of the daemon's CPU at real device rates
        (docs/performance.md, footprint).
        """
        loop = asyncio.get_running_loop()
        # Each bed's tick runs in a logging context with the bed bound, built once: binding and
        # unbinding it at every tick was a tenth of the ticker's CPU.
        contexts = {bed_id: _bed_context(bed_id) for bed_id in self.runtimes}
        while True:
            now = loop.time()
            for bed_id, runtime in self.runtimes.items():
                context = contexts.get(bed_id)
                if context is None:  # a bed added since the ticker started
                    context = contexts[bed_id] = _bed_context(bed_id)
                context.run(runtime.tick, now)
            await sleep_until(next_multiple(loop.time(), TICK_S))

    async def run(self, housekeeping: Housekeeping | None = None) -> None:
        """Run every task until cancelled; the database is closed on the way out."""
        hk = housekeeping or Housekeeping(self, status_socket=self.config.state.directory / STATUS_SOCKET)
        collector = self._start_metrics(hk)
        # Before anything is journalled: from which outbox row on alerts wait for a receipt.
        await self.store.alert_receipts(self.config.registry.alert_receipts)
        try:
            async with asyncio.TaskGroup() as group:

                def start(coro: Coroutine[Any, Any, None], name: str) -> None:
                    self.tasks[name] = group.create_task(coro, name=name)

                for bed_id, session in self.beds.items():
                    with bound_contextvars(bed=bed_id):
                        start(self.publishers[bed_id].run(), f"publisher[{bed_id}]")
                        for dev_id, link in session.links.items():
                            # Supervised: an exception that escapes one link must not cancel the
                            # group (every other bed); it is reported and the link started again.
                            name = f"device[{bed_id}/{dev_id}]"
                            start(supervise(name, link.run, link.task_crashed), name)
                start(self._ticker(), "ticker")
                start(self.reporters.run(), "alert-reporters")
                if self.receipts is not None:  # records and/or alerts, until receipted downstream
                    start(self.receipts.run(), "receipts")
                start(hk.run(), "housekeeping")
                if self.freeze_gc:
                    freeze_startup_objects()
                hk.ready()
                log.info("daemon.ready", beds=len(self.beds), site=self.config.site)
        finally:
            hk.notifier.stopping()
            for session in self.beds.values():  # inputs waiting for an alert's commit: handle them now
                session.catch_up()
            if collector is not None:
                REGISTRY.unregister(collector)
            for journal in self.journals.values():
                journal.close()
            for writer in self.snapshots.values():  # the last engine state, for the next start
                await writer.close()
            now = asyncio.get_running_loop().time()
            for record in self.records.values():
                record.close(now)
            await asyncio.to_thread(self.sessions.close)
            await asyncio.to_thread(self.store.close)

    def _start_metrics(self, hk: Housekeeping) -> DaemonCollector | None:
        """Prometheus on loopback by default (metrics are for engineers, not an alert path)."""
        cfg = self.config.metrics
        if not cfg.enabled:
            return None
        try:
            start_metrics_server(cfg.port, addr=cfg.address)
        except OSError as exc:
            raise StartupError(
                f"metrics.port: cannot listen on {cfg.address}:{cfg.port}: {exc.strerror or exc}"
                " (another program uses it? change [metrics] port or set enabled = false)"
            ) from None
        collector = DaemonCollector(hk)
        REGISTRY.register(collector)
        log.info("metrics.listening", address=cfg.address, port=cfg.port)
        return collector


def receipt_link(config: Config, store: Store, sessions_db: Path) -> ReceiptLink | None:
    """The receipts connection with a ledger per kind configured in ``[registry]`` (None: neither)."""
    from vitalwatch.registry.alert_receipts import AlertLedger
    from vitalwatch.registry.offer import RecordLedger
    from vitalwatch.registry.receipting import Ledger

    ledgers: list[Ledger] = []
    if config.registry.receipts:
        ledgers.append(RecordLedger.for_daemon(config, sessions_db))
    if config.registry.alert_receipts:
        ledgers.append(AlertLedger.for_daemon(config, store))
    return ReceiptLink(config.mqtt, ledgers) if ledgers else None


def freeze_startup_objects() -> None:
    """Collect once, then leave everything built at start-up out of later garbage collections.

    Imports, configuration, drivers, tables and the engines' start-up state live as long as
    the daemon, but every full collection walked them all again: 27-46 ms with the event loop
    stopped, about every 20 s while alarms flowed (docs/performance.md, alarm latency). With a
    CPU quota (a Raspberry Pi's budget) such a pause also used up the period's share and the
    daemon was throttled for the rest of it. The collection first, so no garbage is frozen.
    """
    gc.collect()
    gc.freeze()


async def run_daemon(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    record_dir: Path | None = None,
    freeze_gc: bool = False,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then shut down cleanly.

    ``freeze_gc``: this process is the daemon alone (:func:`freeze_startup_objects` at READY).
    """
    lock = StateLock(config.state.directory)
    # Before anything is opened: a second daemon must not touch the journal at all.
    if not lock.acquire():
        log.warning("state.lock_unavailable", path=str(lock.path))
    try:
        await _run_until_stopped(config, stop or asyncio.Event(), record_dir, freeze_gc)
    finally:
        lock.release()
    log.info("daemon.stopped")


async def _run_until_stopped(
    config: Config, stop: asyncio.Event, record_dir: Path | None, freeze_gc: bool
) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    daemon = Daemon(config, record_dir=record_dir, freeze_gc=freeze_gc)
    main = asyncio.create_task(daemon.run(), name="daemon")
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("daemon.stopping")
        main.cancel()
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
