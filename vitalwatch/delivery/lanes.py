"""Priority lanes: which unacknowledged alert transition goes to the broker next.

Undelivered transitions are grouped per ``alert_id``. Each alert's lane is the highest
priority among its undelivered transitions; the next transition sent is the oldest (lowest
``seq``) undelivered transition of the alert in the highest lane, oldest alert first within a
lane. So a new HIGH alarm goes out before a backlog of older LOW ones, while the transitions of
any one ``alert_id`` always leave in ``seq`` order (receivers order and de-duplicate per
``alert_id``, docs/mqtt.md).

In memory only: the durable copy of every entry is the outbox row in
:class:`vitalwatch.delivery.store.Store`, from which the lanes are refilled after a restart.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vitalwatch.delivery.commit import Commit

__all__ = ["Entry", "Lanes"]


@dataclass(slots=True)
class Entry:
    """One alert transition waiting for the broker's acknowledgement."""

    alert_id: str
    seq: int
    rank: int  # Priority.rank: high 3 ... info 0
    clears: bool  # the alarm ended: its retained topic is emptied
    payload: dict[str, Any]
    queued_at: float  # loop time it entered the outbox (for age and the unreachable alarm)
    persisted: Commit | None = None


@dataclass(slots=True)
class _Alert:
    entries: deque[Entry] = field(default_factory=deque)
    lane: int = 0


class Lanes:
    """Undelivered entries; the next one follows the lane rule in the module docstring."""

    def __init__(self) -> None:
        self._alerts: dict[str, _Alert] = {}
        self._heap: list[tuple[int, int, str]] = []  # (-lane, head seq, alert_id), lazily invalidated
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Entry]:
        for alert in self._alerts.values():
            yield from alert.entries

    def push(self, entry: Entry) -> None:
        alert = self._alerts.get(entry.alert_id)
        if alert is None:
            alert = self._alerts[entry.alert_id] = _Alert()
        if any(e.seq == entry.seq for e in alert.entries):
            return  # the same transition twice (restored and re-recorded): keep one
        alert.entries.append(entry)
        if len(alert.entries) > 1 and alert.entries[-2].seq > entry.seq:
            alert.entries = deque(sorted(alert.entries, key=lambda e: e.seq))
        alert.lane = max(alert.lane, entry.rank)
        self._count += 1
        heapq.heappush(self._heap, (-alert.lane, alert.entries[0].seq, entry.alert_id))

    def peek(self) -> Entry | None:
        while self._heap:
            neg_lane, head, alert_id = self._heap[0]
            alert = self._alerts.get(alert_id)
            if alert is None or not alert.entries or alert.entries[0].seq != head or alert.lane != -neg_lane:
                heapq.heappop(self._heap)
                continue
            return alert.entries[0]
        return None

    def pop(self, entry: Entry) -> None:
        """Remove ``entry`` (the one :meth:`peek` returned) after the broker acknowledged it."""
        alert = self._alerts[entry.alert_id]
        assert alert.entries and alert.entries[0] is entry, "only the head of an alert may leave"
        alert.entries.popleft()
        self._count -= 1
        if not alert.entries:
            del self._alerts[entry.alert_id]
            return
        alert.lane = max(e.rank for e in alert.entries)
        heapq.heappush(self._heap, (-alert.lane, alert.entries[0].seq, entry.alert_id))

    def oldest_queued_at(self) -> float | None:
        return min((a.entries[0].queued_at for a in self._alerts.values() if a.entries), default=None)
