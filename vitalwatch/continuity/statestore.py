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
   the engine's ``adopt`` as an orphan (its takeover below: same ``alert_id``, the ack
   re-applied). An alarm active only in the snapshot was cleared after it (the CLEARED row is
   journalled) and is dropped.
4. ``seq`` continues after the larger of the snapshot's and the journal's (``meta.seq`` and
   undelivered rows). The daemon's :class:`IdFactory` stays the id factory. A phase journalled
   after the snapshot (``meta.phase`` differs) is entered again, as in the journal-only resume.

**Journal-only resume** (no snapshot, or a refused one): the daemon

1. seeds the engine's ``seq`` counter (so numbering continues: receivers de-duplicate on
   ``(alert_id, seq)`` and a reused seq would be dropped as a duplicate) and its id factory;
2. re-enters the journalled phase (the phase clock restarts from the journalled start);
3. hands the restored active alarms to ``BedEngine.adopt``, which holds them as
   *orphans* until the fresh engine finds the same condition again (same condition,
   parameter and device): the engine's new occurrence is then *adopted* under the old
   ``alert_id`` (its RAISED becomes a RENOTIFIED of the old alarm, with the old onset, and a
   journalled acknowledgement is applied again), so the station sees the same alarm continue
   instead of a new one. Orphans are re-published (retained) at once by the publisher.
   An orphan the engine does not find again within ``grace_s`` is CLEARED, except a latching
   one (HIGH physiological, unacknowledged), which stays until a nurse acknowledges it.

   That resume loses what only the engine knew: sustain timers (a condition must be sustained
   again before it is adopted), the baseline, re-notify/escalation timers, NIBP rule state.

An adopted alarm lives in the engine under its published id and onset, so the engine's next
snapshot stores it as published (:mod:`vitalwatch.engine.adoption`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from vitalwatch.engine.outputs import (
    AlertTransition,
    Output,
    PhaseChanged,
    StatusChanged,
)
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import AlarmTable
from vitalwatch.engine.transition_codec import TIME_FIELDS, transition_from_dict, transition_to_dict

__all__ = [
    "MAX_OUTAGE_S",
    "SNAPSHOT_AFTER_S",
    "SNAPSHOT_INTERVAL_S",
    "IdFactory",
    "Resumed",
    "SnapshotRejected",
    "SnapshotWriter",
    "decode_snapshot",
    "encode_snapshot",
    "outage_s",
    "resume_from_snapshot",
    "transition_from_json",
    "transition_to_json",
]

log = structlog.get_logger("vitalwatch.continuity.statestore")


def transition_to_json(tr: AlertTransition, *, utc: Callable[[float], datetime]) -> dict[str, Any]:
    """A transition for the alert journal: the codec's dict, plus its monotonic times as UTC
    epochs (``_epoch``) so a later process can map them onto its own clock."""
    data = transition_to_dict(tr)
    data["_epoch"] = {
        "t": utc(tr.t).timestamp(),
        "onset_t": utc(tr.onset_t).timestamp(),
        "acknowledged_t": utc(tr.acknowledged_t).timestamp() if tr.acknowledged_t is not None else None,
    }
    return data


def transition_from_json(data: dict[str, Any], *, mono_now: float, epoch_now: float) -> AlertTransition:
    """The inverse of :func:`transition_to_json`, with times mapped onto this process's clock."""
    epochs = data.get("_epoch") or {}
    times = {
        key: mono_now - (epoch_now - float(epochs[key])) for key in TIME_FIELDS if epochs.get(key) is not None
    }
    return transition_from_dict(data, times=times)


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


# ---------------------------------------------------------------------- engine snapshot

# Without an alarm transition or phase change, a snapshot is written at most this often (and
# only when the engine was fed anything): what a kill can lose is under a minute of sustain
# timer and baseline collection, against SD-card writes (the write budget in docs/operations.md).
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
    seq = max(journal_seq, engine.seq)
    engine.seed(seq=seq)
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
        epoch: Callable[[float], float] | None = None,
        interval_s: float = SNAPSHOT_INTERVAL_S,
        after_s: float = 0.0,
    ) -> None:
        self.bed = bed
        # The UTC epoch of a ``clock`` time, through the mapping the restore uses (the daemon's
        # WallClock). The snapshot's times are ages as of the ``now`` it was taken at, so the
        # written epoch must be that instant's, not time.time() after the encoding: under load
        # the gap (over 100 ms seen) moved every restored onset by as much.
        self._epoch = epoch
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

    def engine_fed(self, outputs: list[Output], now: float, *, tick: bool) -> None:
        """The bed session called the engine (it watches every call): what came out, and when.

        A tick alone only moves the clock, not a change worth writing; every tick still runs
        the periodic check.
        """
        if not tick:
            self.fed(outputs)
            return
        if outputs:
            self.fed(outputs)
        self.tick(now)

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
        written = self._epoch(now) if self._epoch is not None else time.time() - (self._clock() - now)
        fut = self._inflight = self._put(blob, written)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, fut: asyncio.Future[bool | None]) -> None:
        if self._again and not fut.cancelled():
            self.write()

    async def close(self) -> None:
        """Clean shutdown: wait for the write in flight, then store a last snapshot.

        A write still scheduled is cancelled (the last one covers it): its timer would
        otherwise fire after the store has shut down.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._scheduled = None, False
        if self._inflight is not None:
            await asyncio.gather(self._inflight, return_exceptions=True)
        self._again = False
        last = self.write()
        if last is not None:
            await asyncio.gather(last, return_exceptions=True)
