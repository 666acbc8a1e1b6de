"""Alarms published by an earlier process that this engine has not found again yet ("orphans").

After a restart without a usable snapshot (or with alarms the alert journal saw after the
snapshot), the daemon hands the engine the alarms a station is still showing
(:meth:`BedEngine.adopt <vitalwatch.engine.session.BedEngine.adopt>`). The engine keeps them
here and, rather than raising a new alarm, continues each one when its rules find the same
condition again (same condition, parameter and device):

- the new occurrence takes the old ``alert_id`` and onset, and its first transition is a
  RENOTIFIED instead of a RAISED, so a station sees the same alarm go on; a journalled
  acknowledgement is applied again;
- an orphan acknowledged by a nurse is acknowledged (and, if it latches, cleared: it was only
  kept for the acknowledgement);
- an orphan not found again within the grace period is CLEARED at the next tick, except a
  latching one (physiological, latched priority, unacknowledged), which waits for a nurse;
- ending the session clears every orphan.

Orphans are not in the engine snapshot: they are still in the alert journal's active table,
and the next start hands them over again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Priority

__all__ = ["Orphan", "Orphans"]

OccurrenceKey = tuple[str, str | None, str | None]


@dataclass(slots=True)
class Orphan:
    """A published alarm waiting to be found again: its latest transition and whether it was acked."""

    last: AlertTransition
    acked: bool

    @property
    def key(self) -> OccurrenceKey:
        return (self.last.condition, self.last.parameter, self.last.device)


class Orphans:
    """The orphans of one bed; transitions take their ``seq`` from the bed's alarm book."""

    def __init__(self, latching: dict[Priority, bool], next_seq: Callable[[], int]) -> None:
        self._latching = latching
        self._next_seq = next_seq
        self._items: dict[str, Orphan] = {}
        self._grace_until = math.inf

    def add(self, alarms: Iterable[AlertTransition], *, now: float, grace_s: float) -> None:
        """Hold ``alarms`` until found again, or until ``now + grace_s`` (module docstring)."""
        for tr in alarms:
            self._items[tr.alert_id] = Orphan(tr, tr.acknowledged_by is not None)
        self._grace_until = now + grace_s

    def __bool__(self) -> bool:
        return bool(self._items)

    def latest(self) -> list[AlertTransition]:
        return [o.last for o in self._items.values()]

    def take(self, key: OccurrenceKey) -> Orphan | None:
        """The orphan of ``key``, removed (the engine continues it as a live occurrence)."""
        match = next((oid for oid, o in self._items.items() if o.key == key), None)
        return None if match is None else self._items.pop(match)

    def latches(self, orphan: Orphan) -> bool:
        tr = orphan.last
        return tr.category is Category.PHYSIOLOGICAL and bool(self._latching.get(tr.priority, False))

    def transition(self, alert_id: str, state: AlertState, now: float, phase: str) -> AlertTransition:
        orphan = self._items[alert_id]
        tr = replace(orphan.last, t=now, seq=self._next_seq(), state=state, phase=phase)
        orphan.last = tr
        if state is AlertState.CLEARED:
            del self._items[alert_id]
        return tr

    def acknowledge(self, alert_id: str, by: str, now: float, phase: str) -> list[AlertTransition]:
        out: list[AlertTransition] = []
        for oid, orphan in list(self._items.items()):
            if alert_id not in ("*", oid) or orphan.acked:
                continue
            orphan.acked = True
            orphan.last = replace(orphan.last, acknowledged_by=by, acknowledged_t=now)
            out.append(self.transition(oid, AlertState.ACKNOWLEDGED, now, phase))
            if self.latches(orphan):  # only kept for the ack: acknowledging ends it
                out.append(self.transition(oid, AlertState.CLEARED, now, phase))
        return out

    def expire(self, now: float, phase: str) -> list[AlertTransition]:
        """After the grace period: clear every orphan that does not wait for a nurse."""
        if now < self._grace_until:
            return []
        return [
            self.transition(oid, AlertState.CLEARED, now, phase)
            for oid, orphan in list(self._items.items())
            if not self.latches(orphan) or orphan.acked
        ]

    def clear_all(self, now: float, phase: str) -> list[AlertTransition]:
        return [self.transition(oid, AlertState.CLEARED, now, phase) for oid in list(self._items)]
