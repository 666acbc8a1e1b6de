"""The daemon: one TaskGroup with a link per device, a publisher per bed and one ticker.

SIGTERM (systemd) or SIGINT cancels the group; each ``async with`` closes its port or client
on the way out and each publisher says ``offline`` before it goes. Nothing here decides
anything clinical: that is the engine's job.

At start the outbox database (``{state.directory}/vitalwatch.sqlite3``) is opened and each
bed's session resumed from it (:mod:`vitalwatch.continuity.statestore`): the engine continues from its
last snapshot (baseline, sustain/re-notify/escalation timers, NIBP rule state, active alarms),
reconciled with the alert journal, or - without a usable snapshot - from the journal alone;
undelivered alerts are queued again, the seq and alert-id counters continue, the phase is
re-entered and the alarms that were active are shown again under their ids. Local technical
alarms (broker unreachable, persistence degraded) go to the log, a metric and
``mqtt.local_alarm_command``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import REGISTRY
from prometheus_client import start_http_server as start_metrics_server
from structlog.contextvars import bound_contextvars

from vitalwatch.bed import BedSession, Engine
from vitalwatch.config import BedConfig, Config
from vitalwatch.continuity.recording import BedJournal, RecordingEngine, open_journals, write_meta
from vitalwatch.continuity.statestore import (
    SNAPSHOT_AFTER_S,
    IdFactory,
    RestoringEngine,
    Resumed,
    SnapshotRejected,
    SnapshottingEngine,
    SnapshotWriter,
    resume_from_snapshot,
    seed_engine,
    transition_from_json,
)
from vitalwatch.delivery.alarm_manager import UNREACHABLE_ALARM, AlertReporters
from vitalwatch.delivery.commands import CommandHandler
from vitalwatch.delivery.payloads import WallClock, status_payload, vital_payload
from vitalwatch.delivery.publisher import BedPublisher
from vitalwatch.delivery.store import DB_NAME, Store
from vitalwatch.drivers import Observation
from vitalwatch.engine.outputs import Output, PhaseChanged
from vitalwatch.engine.session import BedEngine
from vitalwatch.errors import StartupError
from vitalwatch.link.device_link import DeviceLink
from vitalwatch.link.mllp_listener import MllpHub, link_timeout_of
from vitalwatch.link.mllp_routing import is_mllp_url
from vitalwatch.ops.housekeeping import DaemonCollector, Housekeeping
from vitalwatch.ops.metrics import (
    BROKER_UNREACHABLE,
    BROKER_UNREACHABLE_ALARMS,
    COMMANDS,
    PERSISTENCE_DEGRADED,
    PERSISTENCE_FAILURES,
)
from vitalwatch.ops.statelock import StateLock
from vitalwatch.ops.supervise import supervise
from vitalwatch.record.sessionlog import SESSIONS_DB_NAME, SessionDb, SessionLog

__all__ = ["Daemon", "LocalAlarms", "make_engine", "run_daemon"]

log = structlog.get_logger("vitalwatch.ops.daemon")

# How often the engine's timers run (sustain, renotify, overdue, silent link). Alarm
# delays are whole seconds; a quarter second keeps the added latency well below that.
TICK_S = 0.25
# `vitalwatch status` asks the running daemon here (inside the state directory).
STATUS_SOCKET = "status.sock"


# A local alarm command that has not finished by then is left behind (and logged): a hung
# buzzer script must not pile up processes.
LOCAL_COMMAND_TIMEOUT_S = 10.0


def make_engine(config: Config, bed: BedConfig, *, id_factory: Callable[[], str] | None = None) -> Engine:
    """The clinical engine for one bed, with its device roles."""
    engine: Engine = BedEngine(
        config.alarms, bed=bed.id, devices={d.id: d.role for d in bed.devices}, id_factory=id_factory
    )
    return engine


class LocalAlarms:
    """Technical alarms signalled at the gateway itself: log event, metric, local command.

    For when the normal alert path is the thing that is broken (broker unreachable) or at risk
    (persistence degraded): the command can sound a buzzer or light an LED on the Pi.
    """

    def __init__(self, command: tuple[str, ...] | None) -> None:
        self._command = command
        self.active: set[tuple[str, str]] = set()
        self.history: list[tuple[str, str, bool]] = []  # (alarm, bed, raised) for tests and status
        self._tasks: set[asyncio.Task[None]] = set()

    def set(self, alarm: str, bed: str, raised: bool) -> None:
        key = (alarm, bed)
        if raised == (key in self.active):
            return
        (self.active.add if raised else self.active.discard)(key)
        self.history.append((alarm, bed, raised))
        if alarm == "broker_unreachable":
            BROKER_UNREACHABLE.labels(bed).set(1 if raised else 0)
            if raised:
                BROKER_UNREACHABLE_ALARMS.labels(bed).inc()
        elif alarm == "persistence_degraded":
            PERSISTENCE_DEGRADED.set(1 if raised else 0)
            if raised:
                PERSISTENCE_FAILURES.inc()
        log.log(
            40 if raised else 20, "local_alarm." + ("raised" if raised else "cleared"), alarm=alarm, bed=bed
        )
        if self._command:
            task = asyncio.get_running_loop().create_task(self._run(alarm, bed, raised))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, alarm: str, bed: str, raised: bool) -> None:
        assert self._command
        env = {
            **os.environ,
            "VITALWATCH_ALARM": alarm,
            "VITALWATCH_ALARM_STATE": "raised" if raised else "cleared",
            "VITALWATCH_BED": bed,
        }
        try:
            proc = await asyncio.create_subprocess_exec(*self._command, env=env)
        except OSError as exc:
            log.error("local_alarm.command_failed", alarm=alarm, error=str(exc))
            return
        try:
            async with asyncio.timeout(LOCAL_COMMAND_TIMEOUT_S):
                code = await proc.wait()
        except TimeoutError:
            log.error("local_alarm.command_timeout", alarm=alarm)
            return
        if code != 0:
            log.error("local_alarm.command_failed", alarm=alarm, exit_code=code)


class Daemon:
    """Everything `vitalwatch run` starts, reachable for tests and `vitalwatch demo`."""

    def __init__(self, config: Config, *, record_dir: Path | None = None) -> None:
        self.config = config
        loop = asyncio.get_running_loop()
        self.started_at = loop.time()
        self.wall = WallClock(loop.time(), datetime.now(UTC))
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.journals: dict[str, BedJournal] = {}
        if record_dir is not None:
            write_meta(record_dir, config)
            self.journals = open_journals(record_dir, config.beds)
        self.beds: dict[str, BedSession] = {}
        self.publishers: dict[str, BedPublisher] = {}
        self.commands: dict[str, CommandHandler] = {}
        # Monotonic time each bed's current phase began: the status says exact minutes in phase.
        self.phase_start: dict[str, float] = {}
        self.local_alarms = LocalAlarms(config.mqtt.local_alarm_command)
        self.store = Store(config.state.directory / DB_NAME, on_health=self._on_persistence)
        # IHE PCD-04 to hospital alarm managers: one more consumer of the store's journalled transitions.
        self.reporters = AlertReporters(
            config, self.store, on_unreachable=lambda up: self.local_alarms.set(UNREACHABLE_ALARM, "*", up)
        )
        self.sessions = SessionDb(config.state.directory / SESSIONS_DB_NAME)
        self.records: dict[str, SessionLog] = {}
        self.snapshots: dict[str, SnapshotWriter] = {}
        # Network HL7 senders: one listener per mllp:// address, shared by the devices routed on it.
        self.mllp = MllpHub(link_timeout_s=link_timeout_of(config.alarms))
        for bed_cfg in config.beds:
            self._add_bed(bed_cfg, loop.time())

    def _on_persistence(self, ok: bool, reason: str) -> None:
        self.local_alarms.set("persistence_degraded", "*", not ok)

    def _add_bed(self, bed_cfg: BedConfig, now: float) -> None:
        """Build one bed's engine, session, publisher and command handler, resumed from the journal."""
        bed, store, config = bed_cfg.id, self.store, self.config
        meta = store.meta(bed)
        ids = IdFactory(
            bed,
            int(meta.get("id_counter", 0)),
            on_new=lambda n: store.put_meta(bed, {"id_counter": n}, sync="NORMAL"),
        )
        epoch_now = time.time()
        restored = [transition_from_json(d, mono_now=now, epoch_now=epoch_now) for d in store.active(bed)]
        pending = store.pending(bed)
        seq = max([int(meta.get("seq", 0))] + [r.seq for r in pending] + [t.seq for t in restored])
        journal = self.journals.get(bed)
        id_factory = journal.ids(ids) if journal is not None else ids
        resumed = self._resume_snapshot(
            bed_cfg, id_factory, restored, journal_seq=seq, now=now, epoch_now=epoch_now
        )
        if resumed is not None:
            base: Any = resumed.engine
            restored, seq = resumed.orphans, resumed.seq
        else:
            base = make_engine(config, bed_cfg, id_factory=id_factory)
            seed_engine(base, seq=seq, phase_elapsed_s=None, now=now)
        engine = RestoringEngine(base, restored, now=now, grace_s=config.state.restore_grace_s)
        loop = asyncio.get_running_loop()
        writer = SnapshotWriter(
            bed,
            engine.snapshot,
            lambda blob, epoch: store.put_snapshot(bed, blob, written=epoch),
            clock=loop.time,
            after_s=SNAPSHOT_AFTER_S,
        )
        self.snapshots[bed] = writer
        snapshotting = SnapshottingEngine(engine, writer)
        recorded: Engine = RecordingEngine(snapshotting, journal) if journal is not None else snapshotting
        record = SessionLog(
            self.sessions, bed, wall=self.wall.utc, baseline=lambda: getattr(base, "baseline", None)
        )
        self.records[bed] = record
        session = BedSession(
            bed_cfg,
            recorded,
            vital_payload=self._vital,
            observers=[self._journal(bed), record.output],
            recorder=record.observation,
        )
        publisher = BedPublisher(
            config.mqtt,
            site=config.site,
            bed=bed,
            wall=self.wall,
            status=self._status_fn(session),
            store=store,
            commands=self._command_fn(bed, session),
            on_unreachable=lambda up: self.local_alarms.set("broker_unreachable", bed, up),
            on_alert_sent=writer.alert_sent,
        )
        session.sink = publisher
        # Shown as active again at once: the snapshot's alarms and the journal's orphans.
        publisher.restore(pending, engine.active_alarms())
        if resumed is not None:
            self.phase_start[bed] = base.phase_starts.get(base.phase, now)
        phase = meta.get("phase")
        if isinstance(phase, str) and phase != session.engine.phase:
            # No snapshot, or a phase change journalled after it: the journal's phase wins.
            session.set_phase(phase, now)
            start = meta.get("phase_start_epoch")
            if isinstance(start, int | float):
                seed_engine(base, seq=seq, phase_elapsed_s=max(0.0, epoch_now - start), now=now)
                self.phase_start[bed] = now - max(0.0, epoch_now - start)
                # set_phase above journalled "now" as the start: put the real start back, or a
                # second restart would count the phase from the first restart.
                store.put_meta(bed, {"phase_start_epoch": start})
        self.phase_start.setdefault(bed, now)  # a new engine starts its session in baseline now
        if restored or pending or phase or resumed is not None:
            log.info(
                "session.resumed",
                bed=bed,
                phase=session.engine.phase,
                active=len(engine.active_alarms()),
                undelivered=len(pending),
                seq=seq,
                snapshot=resumed is not None,
            )
        for dev in bed_cfg.devices:
            session.links[dev.id] = (
                self.mllp.link(dev, session, tap=journal)
                if is_mllp_url(dev.url)
                else DeviceLink(dev, session, tap=journal)
            )
        self.beds[bed] = session
        self.publishers[bed] = publisher

    def _resume_snapshot(
        self,
        bed_cfg: BedConfig,
        id_factory: Callable[[], str],
        journal_active: list[Any],
        *,
        journal_seq: int,
        now: float,
        epoch_now: float,
    ) -> Resumed | None:
        """The bed's engine from its stored snapshot, or None (no snapshot, or a refused one)."""
        stored = self.store.snapshot(bed_cfg.id)
        if stored is None:
            return None
        written, blob = stored
        try:
            resumed = resume_from_snapshot(
                self.config.alarms,
                blob,
                bed=bed_cfg.id,
                devices={d.id: d.role for d in bed_cfg.devices},
                id_factory=id_factory,
                now=now,
                written_epoch=written,
                epoch_now=epoch_now,
                journal_active=journal_active,
                journal_seq=journal_seq,
            )
        except SnapshotRejected as exc:
            log.warning("session.snapshot_rejected", bed=bed_cfg.id, reason=exc.reason)
            return None
        log.info(
            "session.snapshot_restored",
            bed=bed_cfg.id,
            phase=resumed.engine.phase,
            outage_s=round(resumed.outage_s, 1),
            active=len(resumed.engine.active_alarms()),
            journal_newer=[tr.alert_id for tr in resumed.orphans],
            journal_cleared=resumed.dropped,
            seq=resumed.seq,
        )
        return resumed

    def _journal(self, bed: str) -> Callable[[Output], None]:
        """Persist what the engine cannot restore by itself yet: the phase and when it began."""

        def observe(out: Output) -> None:
            if isinstance(out, PhaseChanged):
                self.phase_start[bed] = out.t
                self.store.put_meta(
                    bed, {"phase": out.phase, "phase_start_epoch": self.wall.utc(out.t).timestamp()}
                )

        return observe

    def _phase_fields(self, bed: str, fields: dict[str, Any]) -> None:
        """Dose and planned length from the nurse's phase command: journal and session record."""
        self.store.put_meta(bed, {"phase_fields": fields})
        self.records[bed].phase_fields(fields)

    def _command_fn(self, bed: str, session: BedSession) -> Callable[[bytes], dict[str, Any]]:
        loop = asyncio.get_running_loop()
        handler = CommandHandler(
            site=self.config.site,
            bed=bed,
            clock=loop.time,
            acknowledge=session.acknowledge,
            set_phase=session.set_phase,
            request_nibp=session.request_nibp,
            is_active=session.is_active,
            active_ids=lambda: [t.alert_id for t in session.engine.active_alarms()],
            remember=lambda rid: self.store.remember_request(bed, rid),
            store_phase_fields=lambda fields: self._phase_fields(bed, fields),
            seen=self.store.requests(bed),
        )
        self.commands[bed] = handler

        def handle(payload: bytes) -> dict[str, Any]:
            result = handler.handle(payload)
            COMMANDS.labels(bed, "ok" if result["ok"] else result["error"]["code"]).inc()
            return result

        return handle

    def _vital(self, device: str, obs: Observation, now: float, valid: bool) -> dict[str, Any]:
        return vital_payload(
            kind=obs.kind,
            value=obs.value,
            unit=obs.unit,
            quality="valid" if valid else "invalid",
            measured_at=self.wall.utc(now),
            device=device,
        )

    def _status_fn(self, session: BedSession) -> Any:
        loop = asyncio.get_running_loop()

        def status(state: str, heartbeat: int) -> dict[str, Any]:
            start = self.phase_start.get(session.bed)
            return status_payload(
                state=state,
                site=self.config.site,
                bed=session.bed,
                phase=session.engine.phase,
                links=session.link_states(),
                heartbeat=heartbeat,
                sent_at=datetime.now(UTC),
                phase_minutes=None if start is None else (loop.time() - start) / 60.0,
                technical=[alarm for alarm, bed in self.local_alarms.active if bed in (session.bed, "*")],
            )

        return status

    async def _ticker(self) -> None:
        """Every bed's engine and session-record timers, TICK_S apart, from one task.

        One task for all beds, not one per bed: each wake-up is event-loop overhead, and four
        per-bed tickers at 4 Hz were about 6 % of the daemon's CPU at real device rates
        (docs/performance.md, footprint).
        """
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for bed_id, session in self.beds.items():
                with bound_contextvars(bed=bed_id):
                    session.tick(now)
                    self.records[bed_id].tick(now)
            await asyncio.sleep(TICK_S)

    async def run(self, housekeeping: Housekeeping | None = None) -> None:
        """Run every task until cancelled; the database is closed on the way out."""
        hk = housekeeping or Housekeeping(self, status_socket=self.config.state.directory / STATUS_SOCKET)
        collector = self._start_metrics(hk)
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
                start(hk.run(), "housekeeping")
                hk.ready()
                log.info("daemon.ready", beds=len(self.beds), site=self.config.site)
        finally:
            hk.notifier.stopping()
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


async def run_daemon(
    config: Config, *, stop: asyncio.Event | None = None, record_dir: Path | None = None
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then shut down cleanly."""
    lock = StateLock(config.state.directory)
    # Before anything is opened: a second daemon must not touch the journal at all.
    if not lock.acquire():
        log.warning("state.lock_unavailable", path=str(lock.path))
    try:
        await _run_until_stopped(config, stop or asyncio.Event(), record_dir)
    finally:
        lock.release()
    log.info("daemon.stopped")


async def _run_until_stopped(config: Config, stop: asyncio.Event, record_dir: Path | None) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    daemon = Daemon(config, record_dir=record_dir)
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
