"""One bed as the daemon runs it: the engine resumed from the store, and everything around it.

.. code-block:: text

    serial bytes ─▶ DeviceLink ─▶ driver.feed ─▶ BedSession ─▶ BedEngine (validity, rules, alarm book)
                     │ tap: recording journal      │ observers: phase journal, session record
                     │                             │ watchers: snapshot writer
                     ▼                             ▼ sink
                   (recording)               BedPublisher ─▶ outbox (FULL commit) ─▶ MQTT alert
                                                   ▲ port: status, commands, unreachable, alert sent
                                             BedRuntime (this class)

Everything is built once, in the constructor, in the order it needs (the daemon passes the
link factory: a serial port, or a route on a network HL7 listener): the engine (from the
snapshot, or fresh and seeded from the alert journal, with the journal's active alarms handed
over for adoption), the snapshot writer and the session record, the publisher (its ``port``
is this object), the bed session with its links, sink, observers, taps and watchers, and the
command handler on the session. Nothing is patched in afterwards.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog

from vitalwatch.bed import BedSession, InputTap, LinkFactory
from vitalwatch.config import BedConfig, Config
from vitalwatch.continuity.journal_loss import RecoveredSession, next_id_epoch
from vitalwatch.continuity.recording import BedJournal
from vitalwatch.continuity.statestore import (
    SNAPSHOT_AFTER_S,
    IdFactory,
    Resumed,
    SnapshotRejected,
    SnapshotWriter,
    resume_from_snapshot,
    transition_from_json,
)
from vitalwatch.delivery.commands import CommandHandler
from vitalwatch.delivery.payloads import (
    WallClock,
    discharge_doc,
    iso_utc,
    prompts_payload,
    readiness_payload,
    status_payload,
    vital_payload,
)
from vitalwatch.delivery.publisher import BedPublisher
from vitalwatch.delivery.store import Store
from vitalwatch.delivery.trend import PUBLISH_EVERY_S, WINDOW_S, TrendBook
from vitalwatch.drivers import Observation
from vitalwatch.engine.discharge import NURSE_CONFIRMS
from vitalwatch.engine.outputs import AlertTransition, Output, PhaseChanged, StatusChanged
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.validity import NIBP_KINDS
from vitalwatch.link.contract import Link
from vitalwatch.ops.local_alarms import LocalAlarms
from vitalwatch.ops.metrics import COMMANDS
from vitalwatch.ops.prompts import Prompt, PromptBook
from vitalwatch.ops.readiness import ReadinessItem, readiness_items
from vitalwatch.record.recent import recent_trend
from vitalwatch.record.sessionlog import SessionDb, SessionLog
from vitalwatch.wake_grid import next_multiple

__all__ = ["BedRuntime", "make_engine"]

log = structlog.get_logger("vitalwatch.ops.daemon")

# How often the session record's, the readiness check's and the trend's timers run: at the
# whole seconds of the loop clock, every fourth of the daemon's ticks. None of them is on the
# alarm path (the engine's tick still runs at every tick), and running them at every tick was
# most of the ticker's CPU, the budget that matters on a Raspberry Pi (docs/performance.md).
TIMERS_EVERY_S = 1.0


def make_engine(config: Config, bed: BedConfig, *, id_factory: Callable[[], str] | None = None) -> BedEngine:
    """The clinical engine for one bed, with its device roles."""
    return BedEngine(
        config.alarms,
        bed=bed.id,
        devices={d.id: d.role for d in bed.devices},
        id_factory=id_factory,
        older_adult=bed.age_band == "older_adult",
    )


class BedRuntime:
    """One bed's engine, session, publisher, command handler, snapshot writer and session record.

    Implements the publisher's port (:class:`vitalwatch.delivery.publisher.BedPort`) and the
    command handler's journal (:class:`vitalwatch.delivery.commands.CommandJournal`).
    """

    def __init__(
        self,
        config: Config,
        bed_cfg: BedConfig,
        *,
        links: LinkFactory[Link],
        store: Store,
        sessions: SessionDb,
        wall: WallClock,
        local_alarms: LocalAlarms,
        journal: BedJournal | None,
        now: float,
        before_input: Callable[[float], None] | None = None,
        recovered: RecoveredSession | None = None,
    ) -> None:
        self.config, self.bed, self.store, self.wall = config, bed_cfg.id, store, wall
        self.local_alarms = local_alarms
        loop = asyncio.get_running_loop()
        bed = self.bed
        meta = store.meta(bed)
        if recovered is not None and not meta:
            meta = self._recovered_meta(recovered)
        ids = IdFactory(
            bed,
            int(meta.get("id_counter", 0)),
            on_new=lambda n: store.put_meta(bed, {"id_counter": n}, sync="NORMAL"),
        )
        # "Now" as an epoch through the same mapping the payloads use to print times: sampling
        # time.time() apart from ``now`` skews every restored onset by the scheduling delay
        # between the two samples (20 ms seen under load), so an onset would not survive exactly.
        epoch_now = self.wall.utc(now).timestamp()
        restored = [transition_from_json(d, mono_now=now, epoch_now=epoch_now) for d in store.active(bed)]
        pending = store.pending(bed)
        seq = max([int(meta.get("seq", 0))] + [r.seq for r in pending] + [t.seq for t in restored])
        id_factory = journal.ids(ids) if journal is not None else ids
        resumed = self._resume_snapshot(
            bed_cfg, id_factory, restored, journal_seq=seq, now=now, epoch_now=epoch_now
        )
        if resumed is not None:
            engine = resumed.engine
            restored, seq = resumed.orphans, resumed.seq
        else:
            engine = make_engine(config, bed_cfg, id_factory=id_factory)
            engine.seed(seq=seq)
            if recovered is not None:
                engine = self._recovered_engine(
                    engine, recovered, id_factory, seq=seq, now=now, epoch_now=epoch_now
                )
        # Shown as active again at once, and continued under their ids when found again.
        engine.adopt(restored, now=now, grace_s=config.state.restore_grace_s)
        self.engine = engine
        self.snapshots = SnapshotWriter(
            bed,
            engine.snapshot,
            lambda blob, epoch: store.put_snapshot(bed, blob, written=epoch),
            clock=loop.time,
            epoch=lambda t: wall.utc(t).timestamp(),
            after_s=SNAPSHOT_AFTER_S,
        )
        self.record = SessionLog(sessions, bed, wall=wall.utc, baseline=lambda: engine.baseline)
        self.publisher = BedPublisher(
            config.mqtt, site=config.site, bed=bed, wall=wall, port=self, store=store
        )
        self.prompts = self._restore_prompts(meta.get("prompts"), now=now, epoch_now=epoch_now)
        self._timers_due = float("-inf")  # the first tick runs them
        self._readiness_sent: tuple[str, list[dict[str, Any]]] | None = None
        self.trend = TrendBook()
        self._trend_at = float("-inf")
        taps: list[InputTap] = [journal] if journal is not None else []
        self.session = BedSession(
            bed_cfg,
            engine,
            links=links,
            sink=self.publisher,
            vital_payload=self._vital,
            observers=[self._journal_phase, self.record.output, self._session_output],
            recorder=self._observation,
            taps=taps,
            watchers=[self.snapshots],
            prompt=self._open,
            before_input=before_input,
        )
        self.commands = CommandHandler(
            site=config.site,
            bed=bed,
            target=self.session,
            clock=loop.time,
            journal=self,
            seen=store.requests(bed),
        )
        self.publisher.restore(pending, engine.active_alarms())
        phase = meta.get("phase")
        if isinstance(phase, str) and phase != engine.phase:
            # No snapshot, or a phase change journalled after it: the journal's phase wins.
            self.session.set_phase(phase, now)
            start = meta.get("phase_start_epoch")
            if isinstance(start, int | float):
                engine.seed(seq=seq, phase_elapsed_s=max(0.0, epoch_now - start), now=now)
                # set_phase above journalled "now" as the start: put the real start back, or a
                # second restart would count the phase from the first restart.
                store.put_meta(bed, {"phase_start_epoch": start})
        if self.engine.phase != "ended":
            self._seed_trend(sessions, now, epoch_now)
        # The restored prompts (or none) replace whatever the broker still holds for this bed.
        self._publish_prompts()
        if restored or pending or phase or resumed is not None:
            log.info(
                "session.resumed",
                bed=bed,
                phase=engine.phase,
                active=len(engine.active_alarms()),
                undelivered=len(pending),
                seq=seq,
                snapshot=resumed is not None,
            )

    def _restore_prompts(self, state: Any, *, now: float, epoch_now: float) -> PromptBook:
        """The prompts open when the last process stopped, journalled with the phase (a bad entry
        is logged and dropped: the engine's rule that needed the reading still runs)."""
        try:
            if state is not None and not isinstance(state, dict):
                raise ValueError("the journalled prompts must be an object")
            book = PromptBook.restore(self.bed, state, now=now, epoch_now=epoch_now)
        except ValueError as exc:
            log.warning("prompts.not_restored", bed=self.bed, reason=str(exc))
            return PromptBook(self.bed)
        if book.open_prompts():
            log.info("prompts.restored", bed=self.bed, open=[p.prompt_id for p in book.open_prompts()])
        return book

    def _recovered_meta(self, recovered: RecoveredSession) -> dict[str, Any]:
        """A lost journal's session values, from the session record: journalled again at once."""
        meta: dict[str, Any] = {
            "phase": recovered.phase,
            "phase_start_epoch": recovered.phase_start_epoch,
            "id_counter": next_id_epoch(recovered.id_counter),
            "seq": recovered.seq,
        }
        self.store.put_meta(self.bed, meta)
        return meta

    def _recovered_engine(
        self,
        engine: BedEngine,
        recovered: RecoveredSession,
        id_factory: Callable[[], str],
        *,
        seq: int,
        now: float,
        epoch_now: float,
    ) -> BedEngine:
        """A fresh engine in the recorded phase since its recorded start, with the recorded baseline.

        Before the bed session exists, so the phase change is not journalled as starting now
        (:meth:`_recovered_meta` journalled the real start) and the session record, which
        resumes its own open session, sees no new phase. The baseline goes in through the
        engine's public snapshot/restore; a snapshot it refuses keeps the engine without it.
        """
        engine.set_phase(recovered.phase, now)
        engine.seed(seq=seq, phase_elapsed_s=max(0.0, epoch_now - recovered.phase_start_epoch), now=now)
        parts = recovered.baseline
        if recovered.phase == "baseline" or all(v is None for v in parts.values()):
            return engine
        state = engine.snapshot(now)
        state["frozen_baseline"] = replace(
            engine.baseline,
            systolic=parts["systolic"],
            diastolic=parts["diastolic"],
            spo2=parts["spo2"],
            pulse_rate=parts["pulse_rate"],
        ).to_state()
        try:
            return BedEngine.restore(self.config.alarms, state, id_factory, now=now)
        except ValueError as exc:
            log.warning("journal.baseline_not_recovered", bed=self.bed, reason=str(exc))
            return engine

    def _resume_snapshot(
        self,
        bed_cfg: BedConfig,
        id_factory: Callable[[], str],
        journal_active: list[AlertTransition],
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

    def tick(self, now: float) -> None:
        """The engine's timers at every tick, the session record's and the documents' once a
        second (the daemon's one ticker calls this).

        The session record's after the engine's tick, in input order: the tick may wait for an
        alert's commit (vitalwatch.bed), and a minute must not close before its last values."""
        self.session.tick(now)
        if now >= self._timers_due - 1e-3:  # a loop timer may run a hair before its time
            self._timers_due = next_multiple(now, TIMERS_EVERY_S)
            self.session.then(functools.partial(self._timers, now))

    def _timers(self, now: float) -> None:
        self.record.tick(now)
        self._publish_readiness(now)  # republished only when it changed
        # Half a period early at most: these run at whole seconds, a hair either side.
        if now - self._trend_at >= PUBLISH_EVERY_S - TIMERS_EVERY_S / 2:
            self._publish_trend(now)

    # -- prompts and readiness (the chairside session) -----------------------------------
    def _observation(self, device: str, obs: Observation, now: float, valid: bool) -> None:
        """Every observation: the session record, and a valid NIBP reading closes open prompts."""
        self.record.observation(device, obs, now, valid)
        # Between sessions nothing is recorded, nor trended; a kind's first value goes out at once.
        if self.engine.phase != "ended" and self.trend.observation(device, obs.kind, obs.value, valid, now):
            self._publish_trend(now)
        if valid and obs.kind in NIBP_KINDS:
            closed = self.prompts.reading(now)
            if closed:
                for prompt in closed:
                    self.record.nurse_event("prompt_closed", {"kind": prompt.kind, "by": "reading"}, now)
                self._prompts_changed(now)

    def _session_output(self, out: Output) -> None:
        """Phase and status edges: the status now (discharge readiness), prompts end with the session."""
        if isinstance(out, PhaseChanged | StatusChanged):
            self.publisher.status_due()
        if isinstance(out, PhaseChanged) and out.phase == "ended" and self.prompts.clear():
            self._prompts_changed(out.t)
        if isinstance(out, PhaseChanged) and "ended" in (out.phase, out.previous):
            self.trend.clear()  # a session ended or a new one began: no other patient's trend
            self._publish_trend(out.t)

    def _open(self, reason: str, now: float) -> Prompt:
        prompt = self.prompts.open(reason, now)
        self.record.nurse_event("prompt", {"kind": prompt.kind, "reason": reason}, now)
        log.info("nurse.prompt_opened", bed=self.bed, prompt_id=prompt.prompt_id, kind=prompt.kind)
        self._prompts_changed(now)
        return prompt

    def _prompts_changed(self, now: float) -> None:
        """Journal the open prompts with the bed's session values (fsynced, like the phase), so a
        restart asks the nurse again for what is still needed and never for what was done; then
        publish them."""
        state = self.prompts.to_state(now=now, epoch_now=self.wall.utc(now).timestamp())
        self.store.put_meta(self.bed, {"prompts": state})
        self._publish_prompts()

    def _publish_prompts(self) -> None:
        prompts = [
            {
                "prompt_id": p.prompt_id,
                "kind": p.kind,
                "text": p.text,
                "reason": p.reason,
                "opened_utc": iso_utc(self.wall.utc(p.opened_t)),
                "then": p.then,
            }
            for p in self.prompts.open_prompts()
        ]
        doc = prompts_payload(site=self.config.site, bed=self.bed, prompts=prompts, sent_at=datetime.now(UTC))
        self.publisher.document(self.publisher.topics.prompts, doc, compare={"prompts": prompts})

    def readiness(self, now: float) -> list[ReadinessItem]:
        """The pre-infusion readiness items of this bed as of ``now``."""
        gates = {rule.id for rule in self.engine.table.rules if rule.type == "nibp_gate"}
        return readiness_items(
            devices=[dev.id for dev in self.session.config.devices],
            links=self.session.link_states(),
            last_valid=self.session.last_valid,
            now=now,
            baseline=self.engine.baseline,
            settings=self.engine.table.baseline,
            broker_connected=self.publisher.connected,
            outbox_pending=self.publisher.pending,
            advisories=[tr.message for tr in self.engine.active_alarms() if tr.rule in gates],
        )

    def _publish_readiness(self, now: float) -> None:
        items = [item.to_dict() for item in self.readiness(now)]
        key = (self.engine.phase, items)
        if key == self._readiness_sent:
            return  # unchanged: not even built (it was a third of the ticker's CPU, once a second)
        self._readiness_sent = key
        doc = readiness_payload(
            site=self.config.site,
            bed=self.bed,
            phase=self.engine.phase,
            items=items,
            sent_at=datetime.now(UTC),
        )
        self.publisher.document(
            self.publisher.topics.readiness, doc, compare={"phase": doc["phase"], "items": items}
        )

    # -- the trend document (a station that opens mid-session draws it at once) ----------
    def _seed_trend(self, sessions: SessionDb, now: float, epoch_now: float) -> None:
        """The open session's last minutes from the session record, so a restart keeps the trend."""
        conn = sessions.read()
        try:
            found = recent_trend(conn, self.bed, epoch_now=epoch_now, window_s=WINDOW_S)
        finally:
            conn.close()
        self.trend.seed(found.points, found.latest, now)

    def _publish_trend(self, now: float) -> None:
        """The retained trend, or an empty retained message when there is no session or nothing known."""
        self._trend_at = now
        doc = None
        if self.engine.phase != "ended":
            doc = self.trend.document(
                site=self.config.site, bed=self.bed, now=now, utc=self.wall.utc, sent_at=datetime.now(UTC)
            )
        compare = {} if doc is None else {k: v for k, v in doc.items() if k != "sent_utc"}
        self.publisher.document(self.publisher.topics.trend, doc, compare=compare)

    # -- session observer ----------------------------------------------------------------
    def _journal_phase(self, out: Output) -> None:
        """Persist what the journal-only resume needs: the phase and when it began (UTC)."""
        if isinstance(out, PhaseChanged):
            self.store.put_meta(
                self.bed, {"phase": out.phase, "phase_start_epoch": self.wall.utc(out.t).timestamp()}
            )

    def _vital(self, device: str, obs: Observation, now: float, valid: bool) -> dict[str, Any]:
        return vital_payload(
            kind=obs.kind,
            value=obs.value,
            unit=obs.unit,
            quality="valid" if valid else "invalid",
            measured_at=self.wall.utc(now),
            device=device,
        )

    # -- BedPort (the publisher asks) ----------------------------------------------------
    def status(self, state: str, heartbeat: int) -> dict[str, Any]:
        now = asyncio.get_running_loop().time()
        elapsed = self.engine.phase_elapsed(now)
        return status_payload(
            state=state,
            site=self.config.site,
            bed=self.bed,
            phase=self.engine.phase,
            links=self.session.link_states(),
            heartbeat=heartbeat,
            sent_at=datetime.now(UTC),
            phase_minutes=None if elapsed is None else elapsed / 60.0,
            paused=self.engine.paused,
            technical=[alarm for alarm, bed in self.local_alarms.active if bed in (self.bed, "*")],
            discharge=self._discharge(now),
        )

    def _discharge(self, now: float) -> dict[str, Any] | None:
        checklist = self.engine.discharge_checklist(now)
        if not checklist:
            return None
        return discharge_doc(
            all(c.met for c in checklist),
            [c.text for c in checklist if c.met],
            [c.text for c in checklist if not c.met],
            NURSE_CONFIRMS,
        )

    def command(self, payload: bytes, *, retained: bool = False) -> dict[str, Any]:
        result = self.commands.handle(payload, retained=retained)
        COMMANDS.labels(self.bed, "ok" if result["ok"] else result["error"]["code"]).inc()
        return result

    def unreachable(self, stuck: bool) -> None:
        self.local_alarms.set("broker_unreachable", self.bed, stuck)

    def alert_sent(self) -> None:
        self.snapshots.alert_sent()

    # -- SessionDesk (the command handler asks and reports) ------------------------------
    def readiness_open(self, now: float) -> list[str]:
        return [item.text for item in self.readiness(now) if not item.ok]

    def age_band(self, band: str | None, now: float) -> None:
        """A new session's age band; without one the bed's configured band, never the last patient's."""
        self.session.set_age_band(band or self.session.config.age_band, now)

    def session_event(self, kind: str, data: dict[str, Any], now: float) -> None:
        self.record.nurse_event(kind, data, now)

    def open_prompt(self, reason: str, now: float) -> str:
        return self._open(reason, now).prompt_id

    def prompt_done(self, prompt_id: str, by: str, now: float) -> bool:
        prompt = self.prompts.done(prompt_id)
        if prompt is None:
            return False
        self.record.nurse_event("prompt_done", {"kind": prompt.kind, "by": by}, now)
        self._prompts_changed(now)
        return True

    def remember_request(self, request_id: str) -> None:
        self.store.remember_request(self.bed, request_id)

    def phase_fields(self, fields: dict[str, Any]) -> None:
        """Dose and planned length from the nurse's phase command: journal and session record."""
        self.store.put_meta(self.bed, {"phase_fields": fields})
        self.record.phase_fields(fields)
