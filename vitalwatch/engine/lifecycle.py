"""Alarm occurrences and their lifecycle, after IEC 60601-1-8 and IHE ACM.

The rules say *what is true now* (a :class:`Finding` per occurrence key); this module turns
that into the transitions a nurse sees:

.. code-block:: text

            condition true                 ack                condition false
    (none) ───────────────▶ RAISED ─────────────▶ ACKNOWLEDGED ───────────────▶ CLEARED
                              │  ▲ renotify_s (unacked)  │ silence over, still true
                              │  └── RENOTIFIED ◀────────┘ (unacked again)
                              └── escalate_s (unacked) ──▶ ESCALATED (level 1, once)

- One occurrence per key ``(condition, parameter, device)``; ``device`` only for link_lost.
  The priority tiers of one condition (spo2_low MEDIUM and HIGH) share the occurrence: its
  priority is the highest tier true now. A rise in priority is a RENOTIFIED transition at the
  new priority that also cancels an acknowledgement, so a rise always notifies again. A fall
  is silent (the next transition carries the lower priority), except that a latched priority
  holds until acknowledged.
- Latching (per priority, physiological only; default HIGH): a latched occurrence whose
  condition ends stays active, and keeps re-notifying, until acknowledged; acknowledging it
  then clears it at once.
- Acknowledge silences re-notification for ``ack_silence_s`` (2 min, whatever the priority);
  if the condition still holds then, the occurrence re-notifies, counts as unacknowledged again
  and its escalation timer restarts.
- Texts tell what is true at the moment of the transition: a latched occurrence whose condition
  ended says so ("SpO2 low ended 2 min 05 s ago, lowest 84 %, latched until acknowledged"), in
  time relative to the transition (the engine has no wall clock); a CLEARED transition carries
  the highest priority the occurrence reached and says what is true now ("SpO2 low ended,
  lowest 84 %; now SpO2 97 %").
- ``seq`` is per bed and grows by one per transition, whatever the occurrence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from vitalwatch.engine.adoption import Orphans
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Priority
from vitalwatch.engine.table import AlarmTable
from vitalwatch.engine.vocabulary import LABELS

__all__ = [
    "AlarmBook",
    "Finding",
    "Occurrence",
    "OccurrenceKey",
]

OccurrenceKey = tuple[str, str | None, str | None]  # condition, parameter, device


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One condition found true by a rule at this instant, with what to tell the nurse."""

    condition: str
    category: Category
    parameter: str | None
    priority: Priority
    rule: str
    value: float | None
    unit: str | None
    limit: float | None
    message: str
    evidence: tuple[str, ...] = ()
    device: str | None = None
    extreme: str | None = None  # the worst value of the episode, e.g. "lowest 84 %"

    @property
    def key(self) -> OccurrenceKey:
        return (self.condition, self.parameter, self.device)


@dataclass(slots=True, kw_only=True)
class Occurrence:
    """The mutable life of one alarm occurrence."""

    alert_id: str
    finding: Finding  # the latest finding (value, message, evidence)
    priority: Priority  # highest priority reached
    rule: str  # the rule that set the priority
    onset_t: float
    present: bool = True
    acked: bool = False
    acked_by: str | None = None
    acked_t: float | None = None
    next_renotify: float | None = None
    escalate_at: float | None = None
    escalation_level: int = 0
    history: tuple[str, ...] = ()
    last: AlertTransition | None = None  # the latest transition emitted
    peak: Priority | None = None  # the highest priority ever reached (None: ``priority``)
    ended_t: float | None = None  # when the condition ended (a latched occurrence still active)
    closing: str | None = None  # why a clear happens other than the condition ending


Context = tuple[str, float]  # phase, phase_elapsed_s
# What is true now about a finding's parameter: a text ("SpO2 97 %") and the value, or Nones.
DescribeNow = Callable[[Finding], tuple[str | None, float | None]]


def _nothing_now(finding: Finding) -> tuple[str | None, float | None]:
    return None, None


def label_of(f: Finding) -> str:
    """The condition's short name, with the device for device-keyed conditions."""
    label = LABELS.get(f.condition, f.condition)
    return f"{label} ({f.device})" if f.device is not None and f.condition not in _PARAMETER_KEYED else label


_PARAMETER_KEYED = frozenset(c for c in LABELS if c not in ("link_lost", "driver_fault", "device_garbled"))


def ago(seconds: float) -> str:
    """'45 s', '2 min 05 s', for texts relative to the transition."""
    seconds = max(0, round(seconds))
    minutes, rest = divmod(seconds, 60)
    return f"{rest} s" if minutes == 0 else f"{minutes} min {rest:02d} s"


class AlarmBook:
    """Every active occurrence of one bed, the per-bed seq, and the lifecycle timers."""

    def __init__(
        self,
        table: AlarmTable,
        bed: str,
        id_factory: Callable[[], str],
        describe_now: DescribeNow = _nothing_now,
    ) -> None:
        self._table = table
        self._describe_now = describe_now
        self._bed = bed
        self._new_id = id_factory
        self._seq = 0
        self._active: dict[OccurrenceKey, Occurrence] = {}
        # Closed occurrences kept for explain(); bounded so a long-running daemon stays small.
        self._closed: dict[str, Occurrence] = {}
        self.max_closed = 256
        self.orphans = Orphans(dict(table.latching), self.next_seq)

    # ------------------------------------------------------------------ continuity
    @property
    def seq(self) -> int:
        """The seq of the latest transition of this bed (0 before the first)."""
        return self._seq

    def seed_seq(self, seq: int) -> None:
        """Continue numbering after ``seq`` (a restart: receivers drop a reused seq as a duplicate)."""
        self._seq = max(self._seq, seq)

    def next_seq(self) -> int:
        """Take the next seq (for a transition made outside the book: an adopted alarm's)."""
        self._seq += 1
        return self._seq

    def adopt(self, alarms: Iterable[AlertTransition], *, now: float, grace_s: float) -> None:
        """Continue ``alarms`` of an earlier process when found again (:mod:`.adoption`)."""
        self.orphans.add(alarms, now=now, grace_s=grace_s)

    def closed(self) -> Iterator[Occurrence]:
        """Closed occurrences kept for explain(), oldest first."""
        return iter(list(self._closed.values()))

    def load(self, *, seq: int, active: list[Occurrence], closed: list[Occurrence]) -> None:
        """Replace the whole book (a snapshot being restored; ``active`` in raise order)."""
        self._seq = seq
        self._active = {occ.finding.key: occ for occ in active}
        self._closed = {occ.alert_id: occ for occ in closed[-self.max_closed :]}

    # ------------------------------------------------------------------ queries
    @property
    def any_active(self) -> bool:
        """Whether any occurrence is active (without it, reconciling no findings changes nothing)."""
        return bool(self._active)

    def active(self) -> Iterator[Occurrence]:
        """Active occurrences in the order they were raised."""
        return iter(list(self._active.values()))

    def find(self, alert_id: str) -> Occurrence | None:
        """An active or recently closed occurrence by id."""
        for occ in self._active.values():
            if occ.alert_id == alert_id:
                return occ
        return self._closed.get(alert_id)

    def latest(self, occ: Occurrence, state: AlertState, now: float, ctx: Context) -> AlertTransition:
        """What a transition of ``occ`` in ``state`` looks like (without taking a seq)."""
        f = occ.finding
        priority, value, message = occ.priority, f.value, f.message
        if state is AlertState.CLEARED:
            priority = max(occ.priority, occ.peak or occ.priority, key=lambda p: p.rank)
            message, value = self._cleared_text(occ)
        elif not occ.present and occ.ended_t is not None:
            message = self._ended_text(occ, now)
        return AlertTransition(
            t=now,
            bed=self._bed,
            alert_id=occ.alert_id,
            seq=self._seq,
            state=state,
            priority=priority,
            category=f.category,
            condition=f.condition,
            parameter=f.parameter,
            value=value,
            unit=f.unit,
            limit=f.limit,
            phase=ctx[0],
            phase_elapsed_s=ctx[1],
            onset_t=occ.onset_t,
            message=message,
            rule=occ.rule,
            evidence=f.evidence,
            escalation_level=occ.escalation_level,
            acknowledged_by=occ.acked_by,
            acknowledged_t=occ.acked_t,
            device=f.device,
        )

    def _ended_text(self, occ: Occurrence, now: float) -> str:
        """A latched occurrence whose condition ended: when (relative), its worst, and that it holds."""
        f = occ.finding
        worst = f", {f.extreme}" if f.extreme else ""
        current, _ = self._describe_now(f)
        tail = f" (now {current})" if current else ""
        since = ago(now - (occ.ended_t or now))
        return f"{label_of(f)} ended {since} ago{worst}, latched until acknowledged{tail}"

    def _cleared_text(self, occ: Occurrence) -> tuple[str, float | None]:
        """A cleared occurrence: that it ended (or why it was closed), its worst, what is true now."""
        f = occ.finding
        worst = f", {f.extreme}" if f.extreme else ""
        current, value = self._describe_now(f)
        now_text = f"; now {current}" if current else ""
        if occ.closing is not None:
            return f"{label_of(f)}: {occ.closing}{worst}{now_text}", value
        return f"{label_of(f)} ended{worst}{now_text}", value

    # ------------------------------------------------------------------ transitions
    def _emit(self, occ: Occurrence, state: AlertState, now: float, ctx: Context) -> AlertTransition:
        self._seq += 1
        occ.history = (*occ.history[-31:], f"{now:.1f} {state.value} {occ.priority.value}")
        occ.last = replace(self.latest(occ, state, now, ctx), seq=self._seq)
        return occ.last

    def _latches(self, occ: Occurrence) -> bool:
        return occ.finding.category is Category.PHYSIOLOGICAL and self._table.latching.get(
            occ.priority, False
        )

    def _arm(self, occ: Occurrence, now: float) -> None:
        """Start the re-notify and escalation timers for an unacknowledged occurrence."""
        renotify = self._table.renotify_s.get(occ.priority, 0.0)
        escalate = self._table.escalate_s.get(occ.priority, 0.0)
        occ.next_renotify = now + renotify if renotify > 0 else None
        occ.escalate_at = now + escalate if escalate > 0 and occ.escalation_level == 0 else None

    def _close(self, key: OccurrenceKey) -> None:
        occ = self._active.pop(key)
        self._closed[occ.alert_id] = occ
        while len(self._closed) > self.max_closed:
            del self._closed[next(iter(self._closed))]

    def reconcile(
        self, findings: dict[OccurrenceKey, Finding], now: float, ctx: Context
    ) -> list[AlertTransition]:
        """Bring the occurrences in line with what is true now, then run the timers."""
        out: list[AlertTransition] = []
        for key, finding in findings.items():
            occ = self._active.get(key)
            if occ is None:
                out.extend(self._open(key, finding, now, ctx))
                continue
            occ.present = True
            occ.ended_t = None
            if finding.priority.rank > occ.priority.rank:
                occ.finding, occ.priority, occ.rule = finding, finding.priority, finding.rule
                if occ.peak is None or finding.priority.rank > occ.peak.rank:
                    occ.peak = finding.priority
                occ.acked, occ.acked_by, occ.acked_t = False, None, None
                self._arm(occ, now)
                out.append(self._emit(occ, AlertState.RENOTIFIED, now, ctx))
            elif finding.priority is occ.priority:
                occ.finding, occ.rule = finding, finding.rule
            elif self._latches(occ) and not occ.acked:
                occ.finding = finding  # latched: the priority reached holds until acknowledged
            else:
                # Only a lower tier is true now: follow it down silently (a fall is not news), so
                # that a later rise to the higher tier notifies again even after an acknowledgement.
                occ.finding, occ.priority, occ.rule = finding, finding.priority, finding.rule
                if not occ.acked:
                    self._arm(occ, now)
        for key, occ in list(self._active.items()):
            if key in findings:
                continue
            if occ.present:
                occ.ended_t = now
            occ.present = False
            if self._latches(occ) and not occ.acked:
                continue
            out.append(self._emit(occ, AlertState.CLEARED, now, ctx))
            self._close(key)
        out.extend(self._timers(now, ctx))
        return out

    def _open(self, key: OccurrenceKey, finding: Finding, now: float, ctx: Context) -> list[AlertTransition]:
        """A new occurrence: RAISED, or the continuation of an adopted alarm (:mod:`.adoption`)."""
        orphan = self.orphans.take(key) if self.orphans else None
        occ = Occurrence(
            alert_id=self._new_id() if orphan is None else orphan.last.alert_id,
            finding=finding,
            priority=finding.priority,
            rule=finding.rule,
            onset_t=now if orphan is None else orphan.last.onset_t,
            peak=finding.priority,
        )
        self._active[key] = occ
        self._arm(occ, now)
        if orphan is None:
            return [self._emit(occ, AlertState.RAISED, now, ctx)]
        out = [self._emit(occ, AlertState.RENOTIFIED, now, ctx)]
        if orphan.acked and orphan.last.acknowledged_by is not None:
            out.extend(self.acknowledge(occ.alert_id, orphan.last.acknowledged_by, now, ctx))
        return out

    def _timers(self, now: float, ctx: Context) -> list[AlertTransition]:
        out: list[AlertTransition] = []
        for occ in self._active.values():
            if occ.escalate_at is not None and now >= occ.escalate_at and not occ.acked:
                occ.escalate_at = None
                occ.escalation_level = 1
                out.append(self._emit(occ, AlertState.ESCALATED, now, ctx))
                # An escalation is itself a notification: the next re-notify counts from here.
                renotify = self._table.renotify_s.get(occ.priority, 0.0)
                occ.next_renotify = now + renotify if renotify > 0 else None
            elif occ.next_renotify is not None and now >= occ.next_renotify:
                if occ.acked:  # silence over and still active: unacknowledged again
                    occ.acked, occ.acked_by, occ.acked_t = False, None, None
                    self._arm(occ, now)
                else:
                    renotify = self._table.renotify_s.get(occ.priority, 0.0)
                    occ.next_renotify = now + renotify if renotify > 0 else None
                out.append(self._emit(occ, AlertState.RENOTIFIED, now, ctx))
        return out

    def acknowledge(self, alert_id: str, by: str, now: float, ctx: Context) -> list[AlertTransition]:
        """Acknowledge one occurrence (or ``"*"``: every active one not yet acknowledged)."""
        out: list[AlertTransition] = []
        for key, occ in list(self._active.items()):
            if alert_id not in ("*", occ.alert_id) or occ.acked:
                continue
            occ.acked, occ.acked_by, occ.acked_t = True, by, now
            occ.escalate_at = None
            renotify = self._table.renotify_s.get(occ.priority, 0.0)
            # The table: an acknowledgement silences re-notification for up to ack_silence_s (2 min),
            # for every priority that re-notifies at all.
            occ.next_renotify = now + (self._table.ack_silence_s or renotify) if renotify > 0 else None
            out.append(self._emit(occ, AlertState.ACKNOWLEDGED, now, ctx))
            if not occ.present:  # a latched occurrence whose condition already ended
                out.append(self._emit(occ, AlertState.CLEARED, now, ctx))
                self._close(key)
        return out

    def clear_all(self, now: float, ctx: Context) -> list[AlertTransition]:
        """End every occurrence (the session ended: a nurse action, so latches release too)."""
        out: list[AlertTransition] = []
        for key, occ in list(self._active.items()):
            occ.closing = "session ended"
            out.append(self._emit(occ, AlertState.CLEARED, now, ctx))
            self._close(key)
        return out
