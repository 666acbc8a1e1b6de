"""Session continuity across a daemon restart: what is journalled, and how a restart resumes it.

The engine (``vitalwatch.engine``) has no snapshot/restore yet, so the daemon journals what it
can see from outside - the phase and when it started, the nurse's phase fields, the last
transition of every active alarm (which carries acknowledgements), the per-bed ``seq`` and the
alert-id counter - in the outbox database (:mod:`vitalwatch.outbox`), and resumes by:

1. seeding the engine's ``seq`` counter (so numbering continues: receivers de-duplicate on
   ``(alert_id, seq)`` and a reused seq would be dropped as a duplicate) and its id factory;
2. re-entering the journalled phase (the phase clock restarts, see below);
3. wrapping the engine in :class:`RestoringEngine`, which holds the restored active alarms as
   *orphans* until the fresh engine finds the same condition again (same condition,
   parameter and device): the engine's new occurrence is then *adopted* under the old
   ``alert_id`` (its RAISED becomes a RENOTIFIED of the old alarm, with the old onset, and a
   journalled acknowledgement is applied again), so the station sees the same alarm continue
   instead of a new one. Orphans are re-published (retained) at once by the publisher.
   An orphan the engine does not find again within ``grace_s`` is CLEARED, except a latching
   one (HIGH physiological, unacknowledged), which stays until a nurse acknowledges it.

What a restart does NOT restore (needs an engine ``snapshot()``/``restore()`` hook): sustain
timers (a condition must be sustained again for its full delay before it is adopted), the
baseline (collected anew; in infusion/recovery relative rules see an empty baseline until
then), re-notify/escalation timers and escalation level of orphans, the acknowledgement
silence timer (re-applied acks start a new silence), NIBP rule/overdue state, discharge state.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from vitalwatch.drivers import Event
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Output, Priority

__all__ = [
    "IdFactory",
    "RestoringEngine",
    "engine_seq",
    "seed_engine",
    "transition_from_json",
    "transition_to_json",
]

log = structlog.get_logger("vitalwatch.statestore")

OccurrenceKey = tuple[str, str | None, str | None]


def transition_to_json(tr: AlertTransition, *, utc: Callable[[float], datetime]) -> dict[str, Any]:
    """A transition as JSON; monotonic times also as UTC epochs so a later process can map them."""
    data = dataclasses.asdict(tr)
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
