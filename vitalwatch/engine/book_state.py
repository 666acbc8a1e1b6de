"""The alarm book in snapshot form: findings, occurrences and their latest transitions.

Kept apart from :mod:`vitalwatch.engine.lifecycle` so the lifecycle module is about what a
nurse sees happen to an alarm, and this one about how it is written down and read back
(format and clock rules: :mod:`vitalwatch.engine.snapshot`). Transitions go through the one
codec, :mod:`vitalwatch.engine.transition_codec`; only the strict checks of a snapshot are added.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vitalwatch.engine.lifecycle import AlarmBook, Finding, Occurrence
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Priority
from vitalwatch.engine.snapshot import StateReader, encode_number
from vitalwatch.engine.transition_codec import TRANSITION_FIELDS, transition_from_dict, transition_to_dict
from vitalwatch.engine.vocabulary import CONDITIONS, PHASES

__all__ = ["book_from_state", "book_to_state", "transition_from_state", "transition_to_state"]


def finding_to_state(f: Finding) -> dict[str, Any]:
    return {
        "condition": f.condition,
        "category": f.category.value,
        "parameter": f.parameter,
        "priority": f.priority.value,
        "rule": f.rule,
        "value": encode_number(f.value),
        "unit": f.unit,
        "limit": encode_number(f.limit),
        "message": f.message,
        "evidence": list(f.evidence),
        "device": f.device,
        "extreme": f.extreme,
    }


def finding_from_state(r: StateReader) -> Finding:
    return Finding(
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
        extreme=r.opt_text("extreme") if r.has("extreme") else None,  # absent in older snapshots
    )


def transition_to_state(tr: AlertTransition) -> dict[str, Any]:
    """A transition in snapshot form: the codec's dict, NaN/inf as strings (strict JSON)."""
    return transition_to_dict(tr, number=encode_number)


# How the snapshot reader checks each transition field (times are moved by the reader's shift).
_READ: dict[str, Callable[[StateReader, str], Any]] = {
    "t": StateReader.when,
    "bed": StateReader.text,
    "alert_id": StateReader.text,
    "seq": lambda r, k: r.integer(k, 1),
    "state": lambda r, k: r.enum(k, AlertState),
    "priority": lambda r, k: r.enum(k, Priority),
    "category": lambda r, k: r.enum(k, Category),
    "condition": lambda r, k: r.text(k, CONDITIONS),
    "parameter": StateReader.opt_text,
    "value": StateReader.opt_number,
    "unit": StateReader.opt_text,
    "limit": StateReader.opt_number,
    "phase": lambda r, k: r.text(k, PHASES),
    "phase_elapsed_s": StateReader.number,
    "onset_t": StateReader.when,
    "message": StateReader.timed_text,
    "rule": StateReader.text,
    "evidence": StateReader.timed_texts,
    "escalation_level": StateReader.integer,
    "acknowledged_by": StateReader.opt_text,
    "acknowledged_t": StateReader.opt_when,
    "device": StateReader.opt_text,
}
assert tuple(_READ) == TRANSITION_FIELDS, "a new AlertTransition field needs its snapshot check"


def transition_from_state(r: StateReader) -> AlertTransition:
    """The inverse of :func:`transition_to_state`: every field checked, times on the new clock."""
    return transition_from_dict({name: read(r, name) for name, read in _READ.items()})


def occurrence_to_state(occ: Occurrence) -> dict[str, Any]:
    return {
        "alert_id": occ.alert_id,
        "finding": finding_to_state(occ.finding),
        "priority": occ.priority.value,
        "rule": occ.rule,
        "onset_t": occ.onset_t,
        "present": occ.present,
        "acked": occ.acked,
        "acked_by": occ.acked_by,
        "acked_t": occ.acked_t,
        "next_renotify": occ.next_renotify,
        "escalate_at": occ.escalate_at,
        "escalation_level": occ.escalation_level,
        "history": list(occ.history),
        "last": transition_to_state(occ.last) if occ.last is not None else None,
        "peak": occ.peak.value if occ.peak is not None else None,
        "ended_t": occ.ended_t,
        "closing": occ.closing,
    }


def occurrence_from_state(r: StateReader) -> Occurrence:
    last = r.opt_child("last")
    return Occurrence(
        alert_id=r.text("alert_id"),
        finding=finding_from_state(r.child("finding")),
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
        # Added later (absent in older snapshots): the peak priority, when a latched one ended.
        peak=r.enum("peak", Priority) if r.has("peak") and r.raw("peak") is not None else None,
        ended_t=r.opt_when("ended_t") if r.has("ended_t") else None,
        closing=r.opt_text("closing") if r.has("closing") else None,
    )


def book_to_state(book: AlarmBook) -> dict[str, Any]:
    """The seq counter, the active occurrences in raise order, and the closed ones kept for explain()."""
    return {
        "seq": book.seq,
        "active": [occurrence_to_state(occ) for occ in book.active()],
        "closed": [occurrence_to_state(occ) for occ in book.closed()],
    }


def book_from_state(book: AlarmBook, r: StateReader) -> None:
    """Load ``book`` from :func:`book_to_state`'s form; ValueError naming the field when it is bad."""
    seq = r.integer("seq")
    active: list[Occurrence] = []
    keys = set()
    for c in r.children("active"):
        occ = occurrence_from_state(c)
        if occ.finding.key in keys:
            raise ValueError(f"engine snapshot: {c.path}: a second active occurrence of {occ.finding.key}")
        keys.add(occ.finding.key)
        active.append(occ)
    closed = [occurrence_from_state(c) for c in r.children("closed", book.max_closed)]
    book.load(seq=seq, active=active, closed=closed)
