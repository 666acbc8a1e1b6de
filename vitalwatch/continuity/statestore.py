"""Session continuity across a daemon restart: the engine snapshot, the alert journal, and how they combine.

Two records survive a restart, both in the outbox database (:mod:`vitalwatch.delivery.store`):

- the **engine snapshot** (``BedEngine.snapshot()``, zlib-compressed JSON, one row per bed,
  ``synchronous=NORMAL``): the whole engine - phase and phase clock, baseline, held samples,
  sustain timers, NIBP rule state, every active alarm with its re-notify/escalation/ack-silence
  timers, the per-bed ``seq``. :class:`SnapshotWriter` writes it after every batch of outputs
  holding an ``AlertTransition``, ``PhaseChanged`` or ``StatusChanged``, at most every
  :data:`SNAPSHOT_INTERVAL_S` otherwise while the engine was fed anything, and at clean
  shutdown;
- the **alert journal**: every transition (outbox row + ``active`` table + ``seq``), committed
  with ``synchronous=FULL`` before it is published, plus session values in ``meta`` (phase,
  phase start, nurse's phase fields, alert-id counter).

A snapshot is submitted to the writer thread only *after* the alert rows of the batch it
follows (the next loop iteration, and the writer runs in submission order), so the journal is
never older than the snapshot; it can be newer (a kill between the two commits, or a power cut
that lost the NORMAL snapshot commit but not the FULL alert commit).

**Resume rule** (:func:`resume_from_snapshot`):

1. The snapshot is refused - ``session.snapshot_rejected`` with the reason, and the
   journal-only resume below is used - when it cannot be decoded, ``BedEngine.restore`` raises
   ``ValueError`` (another version, a corrupt field), or its bed or devices (id -> role) differ
   from the configuration.
2. Otherwise the engine is restored with ``elapsed_outage_s`` = the wall-clock gap since the
   snapshot was written, clamped to ``[0, MAX_OUTAGE_S]`` (24 h): the wall clock may step
   (NTP, an RTC-less Pi booting in 1970); a negative gap counts as none, and a gap beyond a
   day is not a session that should continue anyway, so counting one day is enough to make
   every phase/overdue/re-notify clock expire.
3. The journal decides which alarms are active and what their latest transition is. An alarm
   active in both with the same ``seq`` is the snapshot's (all its timers). An alarm the
   journal shows with a newer ``seq`` (an acknowledgement, re-notify or rise journalled after
   the snapshot), or active only in the journal, is taken out of the snapshot and handed to
   :class:`RestoringEngine` as an orphan (its takeover below: same ``alert_id``, the ack
   re-applied). An alarm active only in the snapshot was cleared after it (the CLEARED row is
   journalled) and is dropped.
4. ``seq`` continues after the larger of the snapshot's and the journal's (``meta.seq`` and
   undelivered rows). The daemon's :class:`IdFactory` stays the id factory. A phase journalled
   after the snapshot (``meta.phase`` differs) is entered again, as in the journal-only resume.

**Journal-only resume** (no snapshot, or a refused one): the daemon

1. seeds the engine's ``seq`` counter (so numbering continues: receivers de-duplicate on
   ``(alert_id, seq)`` and a reused seq would be dropped as a duplicate) and its id factory;
2. re-enters the journalled phase (the phase clock restarts from the journalled start);
3. wraps the engine in :class:`RestoringEngine`, which holds the restored active alarms as
   *orphans* until the fresh engine finds the same condition again (same condition,
   parameter and device): the engine's new occurrence is then *adopted* under the old
   ``alert_id`` (its RAISED becomes a RENOTIFIED of the old alarm, with the old onset, and a
   journalled acknowledgement is applied again), so the station sees the same alarm continue
   instead of a new one. Orphans are re-published (retained) at once by the publisher.
   An orphan the engine does not find again within ``grace_s`` is CLEARED, except a latching
   one (HIGH physiological, unacknowledged), which stays until a nurse acknowledges it.

   That resume loses what only the engine knew: sustain timers (a condition must be sustained
   again before it is adopted), the baseline, re-notify/escalation timers, NIBP rule state.

An adopted alarm lives in the engine under the engine's own id; :meth:`RestoringEngine.snapshot`
writes it under the published id and onset, so the next restart restores it as published.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import json
import math
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from vitalwatch.drivers import Event
from vitalwatch.engine.outputs import (
    AlertState,
    AlertTransition,
    Category,
    Output,
    PhaseChanged,
    Priority,
    StatusChanged,
)
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import AlarmTable

__all__ = [
    "MAX_OUTAGE_S",
    "SNAPSHOT_AFTER_S",
    "SNAPSHOT_INTERVAL_S",
    "IdFactory",
    "RestoringEngine",
    "Resumed",
    "SnapshotRejected",
    "SnapshotWriter",
    "SnapshottingEngine",
    "decode_snapshot",
    "encode_snapshot",
    "engine_seq",
    "outage_s",
    "resume_from_snapshot",
    "seed_engine",
    "transition_from_json",
    "transition_to_json",
]

log = structlog.get_logger("vitalwatch.continuity.statestore")

OccurrenceKey = tuple[str, str | None, str | None]


# AlertTransition's fields, looked up once: transition_to_json runs on the alarm path.
_TRANSITION_FIELDS = tuple(f.name for f in dataclasses.fields(AlertTransition))


def transition_to_json(tr: AlertTransition, *, utc: Callable[[float], datetime]) -> dict[str, Any]:
    """A transition as JSON; monotonic times also as UTC epochs so a later process can map them.

    Field by field rather than ``dataclasses.asdict``: asdict deep-copies every value
    recursively, 0.15 ms per alert on the alarm path (docs/performance.md); the fields are
    immutable scalars, enums and one tuple (made a list), so the result is the same.
    """
    data = {name: getattr(tr, name) for name in _TRANSITION_FIELDS}
    data["evidence"] = list(tr.evidence)
    data["_epoch"] = {
        "t": utc(tr.t).timestamp(),
        "onset_t": utc(tr.onset_t).timestamp(),
        "acknowledged_t": utc(tr.acknowledged_t).timestamp() if tr.acknowledged_t is not None else None,
    }
    return data


def transition_from_json(data: dict[str, Any], *, mono_now: float, epoch_now: float) -> AlertTransition:
    """The inverse of :func:`transition_to_json`, with times mapped onto this process's clock."""
    names = {f.name for f in dataclasses.fields(AlertTransition)}
    values = {k: v for k, v in data.items() if k in names}
    epochs = data.get("_epoch") or {}
    for key in ("t", "onset_t", "acknowledged_t"):
        if epochs.get(key) is not None:
            values[key] = mono_now - (epoch_now - float(epochs[key]))
    values["state"] = AlertState(values["state"])
    values["priority"] = Priority(values["priority"])
    values["category"] = Category(values["category"])
    values["evidence"] = tuple(values.get("evidence") or ())
    return AlertTransition(**values)


class IdFactory:
    """Alert ids ``{bed}-{UTC second}-{n}``: sortable by time, unique across restarts.

    ``n`` continues from the journalled counter; the UTC part keeps ids unique even if the
    journal was lost. ``on_new`` journals the counter.
    """

    def __init__(self, bed: str, start: int = 0, on_new: Callable[[int], object] | None = None) -> None:
        self.bed = bed
        self.count = start
        self.on_new = on_new

    def __call__(self) -> str:
        self.count += 1
        if self.on_new is not None:
            self.on_new(self.count)
        return f"{self.bed}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{self.count:04d}"


def engine_seq(engine: object) -> int | None:
    """The engine's per-bed seq counter (private today: ``BedEngine._book._seq``)."""
    book = getattr(engine, "_book", None)
    seq = getattr(book, "_seq", None)
    return seq if isinstance(seq, int) else None


def seed_engine(engine: object, *, seq: int, phase_elapsed_s: float | None, now: float) -> None:
    """Continue the seq numbering and the phase clock (until the engine has ``restore()``)."""
    book = getattr(engine, "_book", None)
    if book is not None and hasattr(book, "_seq"):
        book._seq = max(book._seq, seq)
    if phase_elapsed_s is not None and hasattr(engine, "_phase_start"):
        engine._phase_start = now - phase_elapsed_s


@dataclass(slots=True)
class _Orphan:
    last: AlertTransition
    acked: bool


def _key(tr: AlertTransition) -> OccurrenceKey:
    return (tr.condition, tr.parameter, tr.device)


class RestoringEngine:
    """Wraps the engine after a restart: restored alarms keep their ids (module docstring)."""

    def __init__(
        self,
        engine: Any,
        restored: list[AlertTransition],
        *,
        now: float,
        grace_s: float,
        latching: dict[Priority, bool] | None = None,
    ) -> None:
        self.engine = engine
        self._grace_until = now + grace_s
        self._latching = (
            latching
            if latching is not None
            else dict(getattr(getattr(engine, "table", None), "latching", {}) or {})
        )
        self._orphans: dict[str, _Orphan] = {
            tr.alert_id: _Orphan(tr, tr.acknowledged_by is not None) for tr in restored
        }
        self._alias: dict[str, tuple[str, float]] = {}  # engine id -> (restored id, its onset)
        self._fallback_seq = itertools.count((engine_seq(engine) or 0) + 1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    @property
    def phase(self) -> str:
        return str(self.engine.phase)

    @property
    def orphans(self) -> list[AlertTransition]:
        return [o.last for o in self._orphans.values()]

    # ------------------------------------------------------------------ Engine protocol
    def observe(self, device: str, event: Event, now: float) -> list[Output]:
        return self._translate(self.engine.observe(device, event, now), now)

    def bytes_seen(self, device: str, now: float) -> None:
        self.engine.bytes_seen(device, now)

    def link(self, device: str, up: bool, now: float) -> list[Output]:
        return self._translate(self.engine.link(device, up, now), now)

    def set_phase(self, phase: str, now: float) -> list[Output]:
        out = self._translate(self.engine.set_phase(phase, now), now)
        if phase == "ended":  # the session ended: every alarm ends, latched ones too
            for alert_id in list(self._orphans):
                out.append(self._orphan_transition(alert_id, AlertState.CLEARED, now))
        return out

    def acknowledge(self, alert_id: str, by: str, now: float) -> list[Output]:
        reverse = {old: eid for eid, (old, _) in self._alias.items()}
        out = self._translate(self.engine.acknowledge(reverse.get(alert_id, alert_id), by, now), now)
        for oid, orphan in list(self._orphans.items()):
            if alert_id not in ("*", oid) or orphan.acked:
                continue
            orphan.acked = True
            orphan.last = replace(orphan.last, acknowledged_by=by, acknowledged_t=now)
            out.append(self._orphan_transition(oid, AlertState.ACKNOWLEDGED, now))
            if self._latches(orphan):  # only kept for the ack: acknowledging ends it
                out.append(self._orphan_transition(oid, AlertState.CLEARED, now))
        return out

    def tick(self, now: float) -> list[Output]:
        out = self._translate(self.engine.tick(now), now)
        if now >= self._grace_until:
            for oid, orphan in list(self._orphans.items()):
                if not self._latches(orphan) or orphan.acked:
                    out.append(self._orphan_transition(oid, AlertState.CLEARED, now))
        return out

    def active_alarms(self) -> list[AlertTransition]:
        mine = [self._rename(tr) for tr in self.engine.active_alarms()]
        return [*self.orphans, *mine]

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The wrapped engine's snapshot with adopted alarms under their published id and onset.

        Orphans are not in it: they are still in the alert journal's ``active`` table, and the
        next restart hands them to a new :class:`RestoringEngine` again.
        """
        state: dict[str, Any] = self.engine.snapshot(now)
        alarms = state.get("alarms") or {}
        for occ in [*alarms.get("active", []), *alarms.get("closed", [])]:
            found = self._alias.get(occ.get("alert_id"))
            if found is None:
                continue
            for item in (occ, occ.get("last")):
                if isinstance(item, dict):
                    item["alert_id"], item["onset_t"] = found
        return state

    def knows(self, alert_id: str) -> bool:
        """Whether ``alert_id`` is an active alarm (for validating a nurse's ack)."""
        return any(tr.alert_id == alert_id for tr in self.active_alarms())

    # ------------------------------------------------------------------ internals
    def _latches(self, orphan: _Orphan) -> bool:
        tr = orphan.last
        return tr.category is Category.PHYSIOLOGICAL and bool(self._latching.get(tr.priority, False))

    def _take_seq(self) -> int:
        seq = engine_seq(self.engine)
        if seq is None:
            return next(self._fallback_seq)
        seq += 1
        self.engine._book._seq = seq
        return seq

    def _orphan_transition(self, alert_id: str, state: AlertState, now: float) -> AlertTransition:
        orphan = self._orphans[alert_id]
        tr = replace(orphan.last, t=now, seq=self._take_seq(), state=state, phase=self.phase)
        orphan.last = tr
        if state is AlertState.CLEARED:
            del self._orphans[alert_id]
            log.info("restore.orphan_cleared", alert_id=alert_id)
        return tr

    def _rename(self, tr: AlertTransition) -> AlertTransition:
        found = self._alias.get(tr.alert_id)
        return tr if found is None else replace(tr, alert_id=found[0], onset_t=found[1])

    def _translate(self, outputs: list[Output], now: float) -> list[Output]:
        result: list[Output] = []
        for out in outputs:
            if not isinstance(out, AlertTransition):
                result.append(out)
                continue
            eid = out.alert_id
            if eid not in self._alias and out.state is AlertState.RAISED:
                match = next((oid for oid, o in self._orphans.items() if _key(o.last) == _key(out)), None)
                if match is not None:
                    orphan = self._orphans.pop(match)
                    self._alias[eid] = (match, orphan.last.onset_t)
                    log.info("restore.adopted", alert_id=match, engine_id=eid)
                    result.append(
                        replace(out, alert_id=match, state=AlertState.RENOTIFIED, onset_t=orphan.last.onset_t)
                    )
                    if orphan.acked and orphan.last.acknowledged_by is not None:
                        result.extend(
                            self._translate(
                                self.engine.acknowledge(eid, orphan.last.acknowledged_by, now), now
                            )
                        )
                    continue
            result.append(self._rename(out))
            if out.state is AlertState.CLEARED:
                self._alias.pop(eid, None)
        return result


# ---------------------------------------------------------------------- engine snapshot

# Without an alarm transition or phase change, a snapshot is written at most this often (and
# only when the engine was fed anything): what a kill can lose is under a minute of sustain
# timer and baseline collection, against SD-card writes (issue 7 §8, docs/operations.md).
SNAPSHOT_INTERVAL_S = 60.0
# How long after an alarm transition or phase change the daemon writes the snapshot. A snapshot
# is milliseconds of JSON + zlib on the event loop (json.dumps holds the GIL, so a thread would
# not free the loop): taken at once it ran before the publisher sent the alert it followed
# (alarm latency p50 2.4 -> 11 ms, docs/performance.md). The alert row itself is journalled
# FULL before it is sent; the publisher calls SnapshotWriter.alert_sent right after it offers
# the alert, and this delay is only the fallback when no alert goes out (broker down, a phase).
SNAPSHOT_AFTER_S = 0.05
# The largest outage counted (wall-clock gap since the snapshot); module docstring, rule 2.
MAX_OUTAGE_S = 24 * 3600.0
# Outputs after which the snapshot is written at once (what a restart must not get wrong).
_SNAPSHOT_NOW = (AlertTransition, PhaseChanged, StatusChanged)


class SnapshotRejected(ValueError):
    """A stored snapshot that cannot be used; ``reason`` is what the log event says."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_snapshot(state: Mapping[str, Any]) -> bytes:
    """Strict JSON, zlib-compressed: a snapshot is mostly repeated keys and similar numbers,
    so it shrinks about tenfold, and bytes are what an SD card pays for."""
    text = json.dumps(state, separators=(",", ":"), allow_nan=False)
    return zlib.compress(text.encode(), 6)


def decode_snapshot(blob: bytes) -> Any:
    """The inverse of :func:`encode_snapshot`; :class:`SnapshotRejected` when it is not one."""
    try:
        return json.loads(zlib.decompress(blob))
    except (zlib.error, UnicodeDecodeError, ValueError) as exc:
        raise SnapshotRejected(f"undecodable: {exc}") from None


def outage_s(written_epoch: float, epoch_now: float) -> float:
    """The wall-clock gap since the snapshot, clamped to ``[0, MAX_OUTAGE_S]`` (docstring, rule 2)."""
    gap = epoch_now - written_epoch
    if not math.isfinite(gap):
        return 0.0
    return min(max(gap, 0.0), MAX_OUTAGE_S)


@dataclass(slots=True)
class Resumed:
    """What :func:`resume_from_snapshot` built: the engine and what the journal adds to it."""

    engine: BedEngine
    orphans: list[AlertTransition]  # journalled alarms the snapshot does not have (rule 3)
    dropped: list[str]  # snapshot alarms the journal shows cleared
    seq: int
    outage_s: float


def resume_from_snapshot(
    table: AlarmTable,
    blob: bytes,
    *,
    bed: str,
    devices: Mapping[str, str],
    id_factory: Callable[[], str] | None,
    now: float,
    written_epoch: float,
    epoch_now: float,
    journal_active: list[AlertTransition],
    journal_seq: int,
) -> Resumed:
    """The engine restored from ``blob`` and reconciled with the alert journal (module docstring).

    Raises :class:`SnapshotRejected` (never anything else for a bad snapshot) when it cannot be
    used; the caller then falls back to the journal-only resume.
    """
    state = decode_snapshot(blob)
    if not isinstance(state, dict):
        raise SnapshotRejected(f"not an object: {type(state).__name__}")
    if state.get("bed") != bed:
        raise SnapshotRejected(f"bed changed: snapshot {state.get('bed')!r}, config {bed!r}")
    if state.get("devices") != dict(devices):
        raise SnapshotRejected(
            f"devices changed: snapshot {state.get('devices')!r}, config {dict(devices)!r}"
        )
    gap = outage_s(written_epoch, epoch_now)

    def restore(data: dict[str, Any]) -> BedEngine:
        try:
            return BedEngine.restore(table, data, id_factory, now=now, elapsed_outage_s=gap)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # ValueError is the documented refusal; the others would be a hole in its checks,
            # and a bad snapshot must never stop the daemon from starting.
            raise SnapshotRejected(str(exc) or type(exc).__name__) from None

    engine = restore(state)
    mine = {tr.alert_id: tr for tr in engine.active_alarms()}
    journal = {tr.alert_id: tr for tr in journal_active}
    journal_wins = {aid for aid, tr in journal.items() if aid not in mine or tr.seq > mine[aid].seq}
    dropped = sorted(aid for aid in mine if aid not in journal or aid in journal_wins)
    if dropped:
        # Restore again without them (the state was validated above, so its shape is known).
        trimmed = copy.deepcopy(state)
        alarms = trimmed["alarms"]
        alarms["active"] = [o for o in alarms["active"] if o["alert_id"] not in dropped]
        engine = restore(trimmed)
    seq = max(journal_seq, engine_seq(engine) or 0)
    seed_engine(engine, seq=seq, phase_elapsed_s=None, now=now)
    orphans = sorted((journal[aid] for aid in journal_wins), key=lambda tr: tr.seq)
    return Resumed(
        engine,
        orphans,
        [aid for aid in dropped if aid not in journal_wins],
        seq,
        gap,
    )


class SnapshotWriter:
    """When one bed's engine snapshot is written, and writing it (module docstring).

    ``take(now)`` returns the snapshot; ``put(blob, epoch)`` stores it and returns the store's
    future. At most one write is in flight: a request meanwhile is remembered and served by
    one fresh snapshot when it finishes, so a stalled SD card never queues a pile of them.
    """

    def __init__(
        self,
        bed: str,
        take: Callable[[float], Mapping[str, Any]],
        put: Callable[[bytes, float], asyncio.Future[bool | None]],
        *,
        clock: Callable[[], float],
        interval_s: float = SNAPSHOT_INTERVAL_S,
        after_s: float = 0.0,
    ) -> None:
        self.bed = bed
        # Delay of the write after an alarm/phase batch: 0 = the next loop turn. The daemon
        # passes SNAPSHOT_AFTER_S so the publisher sends the alert before the loop pays for it.
        self.after_s = after_s
        self._take = take
        self._put = put
        self._clock = clock
        self.interval_s = interval_s
        self._changed = False
        self._last_write = clock()
        self._scheduled = False
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._inflight: asyncio.Future[bool | None] | None = None
        self._again = False
        self.writes = 0
        self.bytes_written = 0

    def fed(self, outputs: list[Output]) -> None:
        """The engine was called and returned ``outputs``: write soon if any of them matters."""
        self._changed = True
        if any(isinstance(o, _SNAPSHOT_NOW) for o in outputs) and not self._scheduled:
            # After the current callback: the bed session dispatches these outputs first, so
            # their alert rows are submitted to the writer thread before the snapshot is.
            self._scheduled = True
            loop = asyncio.get_running_loop()
            if self.after_s > 0:
                self._timer = loop.call_later(self.after_s, self._scheduled_write)
            else:
                self._timer = loop.call_soon(self._scheduled_write)

    def alert_sent(self) -> None:
        """The publisher has just offered an alert to the broker: a pending snapshot is due now.

        So the snapshot that holds a new alarm's timers is stored right after the alert went
        out, not ``after_s`` later: a daemon killed just after a station saw the alarm still
        resumes it with its re-notify timer (tests/integration/test_delivery_faults.py).
        """
        if self._scheduled:
            if self._timer is not None:
                self._timer.cancel()
            self._scheduled_write()

    def tick(self, now: float) -> None:
        """Periodic check (every engine tick): write when something changed a while ago."""
        if self._changed and now - self._last_write >= self.interval_s:
            self.write()

    def _scheduled_write(self) -> None:
        self._scheduled = False
        self._timer = None
        self.write()

    def write(self) -> asyncio.Future[bool | None] | None:
        """Take and store a snapshot now (or right after the write in flight); never raises."""
        if self._inflight is not None and not self._inflight.done():
            self._again = True
            return self._inflight
        now = self._clock()
        self._changed = self._again = False
        self._last_write = now
        try:
            blob = encode_snapshot(self._take(now))
        except Exception as exc:  # a snapshot bug must not take the bed's alarms down with it
            log.error("session.snapshot_failed", bed=self.bed, error=repr(exc))
            return None
        self.writes += 1
        self.bytes_written += len(blob)
        fut = self._inflight = self._put(blob, time.time())
        fut.add_done_callback(self._done)
        return fut

    def _done(self, fut: asyncio.Future[bool | None]) -> None:
        if self._again and not fut.cancelled():
            self.write()

    async def close(self) -> None:
        """Clean shutdown: wait for the write in flight, then store a last snapshot."""
        if self._inflight is not None:
            await asyncio.gather(self._inflight, return_exceptions=True)
        self._again = False
        last = self.write()
        if last is not None:
            await asyncio.gather(last, return_exceptions=True)


class SnapshottingEngine:
    """Wraps the bed's engine so every call tells the :class:`SnapshotWriter` what came out."""

    def __init__(self, engine: Any, writer: SnapshotWriter) -> None:
        self.engine = engine
        self.writer = writer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    @property
    def phase(self) -> str:
        return str(self.engine.phase)

    def _fed(self, outputs: list[Output]) -> list[Output]:
        self.writer.fed(outputs)
        return outputs

    def observe(self, device: str, event: Event, now: float) -> list[Output]:
        return self._fed(self.engine.observe(device, event, now))

    def bytes_seen(self, device: str, now: float) -> None:
        self.engine.bytes_seen(device, now)

    def link(self, device: str, up: bool, now: float) -> list[Output]:
        return self._fed(self.engine.link(device, up, now))

    def set_phase(self, phase: str, now: float) -> list[Output]:
        return self._fed(self.engine.set_phase(phase, now))

    def acknowledge(self, alert_id: str, by: str, now: float) -> list[Output]:
        return self._fed(self.engine.acknowledge(alert_id, by, now))

    def tick(self, now: float) -> list[Output]:
        outputs: list[Output] = self.engine.tick(now)
        if outputs:  # a tick alone only moves the clock: not a change worth writing
            self.writer.fed(outputs)
        self.writer.tick(now)
        return outputs

    def active_alarms(self) -> list[AlertTransition]:
        result: list[AlertTransition] = self.engine.active_alarms()
        return result
