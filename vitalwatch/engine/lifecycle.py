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
- Acknowledge silences re-notification for ``max(ack_silence_s, renotify_s)`` (so an ack never
  makes a MEDIUM re-notify sooner than it would have); if the condition still holds then, the
  occurrence re-notifies, counts as unacknowledged again and its escalation timer restarts.
- ``seq`` is per bed and grows by one per transition, whatever the occurrence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Priority
from vitalwatch.engine.snapshot import encode_number
from vitalwatch.engine.table import AlarmTable
from vitalwatch.engine.vocabulary import CONDITIONS, PHASES

if TYPE_CHECKING:
    from vitalwatch.engine.snapshot import StateReader

__all__ = [
    "AlarmBook",
    "Finding",
    "Occurrence",
    "OccurrenceKey",
    "transition_from_state",
    "transition_to_state",
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

    @property
    def key(self) -> OccurrenceKey:
        return (self.condition, self.parameter, self.device)

    def to_state(self) -> dict[str, Any]:
        """Snapshot form (:mod:`vitalwatch.engine.snapshot`)."""
        return {
            "condition": self.condition,
            "category": self.category.value,
            "parameter": self.parameter,
            "priority": self.priority.value,
            "rule": self.rule,
            "value": encode_number(self.value),
            "unit": self.unit,
            "limit": encode_number(self.limit),
            "message": self.message,
            "evidence": list(self.evidence),
            "device": self.device,
        }

    @classmethod
    def from_state(cls, r: StateReader) -> Finding:
        return cls(
            condition=r.text("condition", CONDITIONS),
            category=r.enum("category", Category),
            parameter=r.opt_text("parameter"),
            priority=r.enum("priority", Priority),
            rule=r.text("rule"),
            value=r.opt_number("value"),
            unit=r.opt_text("unit"),
            limit=r.opt_number("limit"),
            message=r.timed_text("message"),
            evidence=r.timed_texts("evidence"),
            device=r.opt_text("device"),
        )


def transition_to_state(tr: AlertTransition) -> dict[str, Any]:
    """An AlertTransition in snapshot form (enums as their values, NaN/inf as strings)."""
    return {
        "t": tr.t,
        "bed": tr.bed,
        "alert_id": tr.alert_id,
        "seq": tr.seq,
        "state": tr.state.value,
        "priority": tr.priority.value,
        "category": tr.category.value,
        "condition": tr.condition,
        "parameter": tr.parameter,
        "value": encode_number(tr.value),
        "unit": tr.unit,
        "limit": encode_number(tr.limit),
        "phase": tr.phase,
        "phase_elapsed_s": tr.phase_elapsed_s,
        "onset_t": tr.onset_t,
        "message": tr.message,
        "rule": tr.rule,
        "evidence": list(tr.evidence),
        "escalation_level": tr.escalation_level,
        "acknowledged_by": tr.acknowledged_by,
        "acknowledged_t": tr.acknowledged_t,
        "device": tr.device,
    }


def transition_from_state(r: StateReader) -> AlertTransition:
    """The inverse of :func:`transition_to_state`, times moved by the reader's clock shift."""
    return AlertTransition(
        t=r.when("t"),
        bed=r.text("bed"),
        alert_id=r.text("alert_id"),
        seq=r.integer("seq", 1),
        state=r.enum("state", AlertState),
        priority=r.enum("priority", Priority),
        category=r.enum("category", Category),
        condition=r.text("condition", CONDITIONS),
        parameter=r.opt_text("parameter"),
        value=r.opt_number("value"),
        unit=r.opt_text("unit"),
        limit=r.opt_number("limit"),
        phase=r.text("phase", PHASES),
        phase_elapsed_s=r.number("phase_elapsed_s"),
        onset_t=r.when("onset_t"),
        message=r.timed_text("message"),
        rule=r.text("rule"),
        evidence=r.timed_texts("evidence"),
        escalation_level=r.integer("escalation_level"),
        acknowledged_by=r.opt_text("acknowledged_by"),
        acknowledged_t=r.opt_when("acknowledged_t"),
        device=r.opt_text("device"),
    )


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

    def to_state(self) -> dict[str, Any]:
        """Snapshot form (:mod:`vitalwatch.engine.snapshot`)."""
        return {
            "alert_id": self.alert_id,
            "finding": self.finding.to_state(),
            "priority": self.priority.value,
            "rule": self.rule,
            "onset_t": self.onset_t,
            "present": self.present,
            "acked": self.acked,
            "acked_by": self.acked_by,
            "acked_t": self.acked_t,
            "next_renotify": self.next_renotify,
            "escalate_at": self.escalate_at,
            "escalation_level": self.escalation_level,
            "history": list(self.history),
            "last": transition_to_state(self.last) if self.last is not None else None,
        }

    @classmethod
    def from_state(cls, r: StateReader) -> Occurrence:
        last = r.opt_child("last")
        return cls(
            alert_id=r.text("alert_id"),
            finding=Finding.from_state(r.child("finding")),
            priority=r.enum("priority", Priority),
            rule=r.text("rule"),
            onset_t=r.when("onset_t"),
            present=r.flag("present"),
            acked=r.flag("acked"),
            acked_by=r.opt_text("acked_by"),
            acked_t=r.opt_when("acked_t"),
            next_renotify=r.opt_when("next_renotify"),
            escalate_at=r.opt_when("escalate_at"),
            escalation_level=r.integer("escalation_level"),
            history=r.history("history"),
            last=transition_from_state(last) if last is not None else None,
        )


Context = tuple[str, float]  # phase, phase_elapsed_s


class AlarmBook:
    """Every active occurrence of one bed, the per-bed seq, and the lifecycle timers."""

    def __init__(self, table: AlarmTable, bed: str, id_factory: Callable[[], str]) -> None:
        self._table = table
        self._bed = bed
        self._new_id = id_factory
        self._seq = 0
        self._active: dict[OccurrenceKey, Occurrence] = {}
        # Closed occurrences kept for explain(); bounded so a long-running daemon stays small.
        self._closed: dict[str, Occurrence] = {}
        self._max_closed = 256

    # ------------------------------------------------------------------ snapshot
    def snapshot(self) -> dict[str, Any]:
        """The seq counter, the active occurrences in raise order, and the closed ones kept for explain()."""
        return {
            "seq": self._seq,
            "active": [occ.to_state() for occ in self._active.values()],
            "closed": [occ.to_state() for occ in self._closed.values()],
        }

    def restore_state(self, r: StateReader) -> None:
        self._seq = r.integer("seq")
        self._active = {}
        for c in r.children("active"):
            occ = Occurrence.from_state(c)
            if occ.finding.key in self._active:
                raise ValueError(
                    f"engine snapshot: {c.path}: a second active occurrence of {occ.finding.key}"
                )
            self._active[occ.finding.key] = occ
        self._closed = {}
        for c in r.children("closed", self._max_closed):
            occ = Occurrence.from_state(c)
            self._closed[occ.alert_id] = occ

    # ------------------------------------------------------------------ queries
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
        return AlertTransition(
            t=now,
            bed=self._bed,
            alert_id=occ.alert_id,
            seq=self._seq,
            state=state,
            priority=occ.priority,
            category=f.category,
            condition=f.condition,
            parameter=f.parameter,
            value=f.value,
            unit=f.unit,
            limit=f.limit,
            phase=ctx[0],
            phase_elapsed_s=ctx[1],
            onset_t=occ.onset_t,
            message=f.message,
            rule=occ.rule,
            evidence=f.evidence,
            escalation_level=occ.escalation_level,
            acknowledged_by=occ.acked_by,
            acknowledged_t=occ.acked_t,
            device=f.device,
        )

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
        while len(self._closed) > self._max_closed:
            del self._closed[next(iter(self._closed))]

    def reconcile(
        self, findings: dict[OccurrenceKey, Finding], now: float, ctx: Context
    ) -> list[AlertTransition]:
        """Bring the occurrences in line with what is true now, then run the timers."""
        out: list[AlertTransition] = []
        for key, finding in findings.items():
            occ = self._active.get(key)
            if occ is None:
                occ = Occurrence(
                    alert_id=self._new_id(),
                    finding=finding,
                    priority=finding.priority,
                    rule=finding.rule,
                    onset_t=now,
                )
                self._active[key] = occ
                self._arm(occ, now)
                out.append(self._emit(occ, AlertState.RAISED, now, ctx))
                continue
            occ.present = True
            if finding.priority.rank > occ.priority.rank:
                occ.finding, occ.priority, occ.rule = finding, finding.priority, finding.rule
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
            occ.present = False
            if self._latches(occ) and not occ.acked:
                continue
            out.append(self._emit(occ, AlertState.CLEARED, now, ctx))
            self._close(key)
        out.extend(self._timers(now, ctx))
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
            occ.next_renotify = now + max(self._table.ack_silence_s, renotify) if renotify > 0 else None
            out.append(self._emit(occ, AlertState.ACKNOWLEDGED, now, ctx))
            if not occ.present:  # a latched occurrence whose condition already ended
                out.append(self._emit(occ, AlertState.CLEARED, now, ctx))
                self._close(key)
        return out

    def clear_all(self, now: float, ctx: Context) -> list[AlertTransition]:
        """End every occurrence (the session ended: a nurse action, so latches release too)."""
        out: list[AlertTransition] = []
        for key, occ in list(self._active.items()):
            out.append(self._emit(occ, AlertState.CLEARED, now, ctx))
            self._close(key)
        return out
