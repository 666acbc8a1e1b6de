"""Rule state and its arithmetic: sustained timers, NIBP confirmation, the limit in force.

Each rule of the table keeps a small state object here; :mod:`vitalwatch.engine.session`
feeds it samples, readings and time, and :mod:`vitalwatch.engine.rules` turns an active one
into the nurse's message. Every state has a snapshot form (:mod:`vitalwatch.engine.snapshot`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vitalwatch.engine.baseline import Baseline
from vitalwatch.engine.signals import NibpReading, Sample
from vitalwatch.engine.snapshot import encode_number
from vitalwatch.engine.table import Rule

if TYPE_CHECKING:
    from vitalwatch.engine.snapshot import StateReader

__all__ = ["EPS", "NibpCheck", "NibpRuleState", "SustainState", "sustained_limit"]

EPS = 1e-6  # a timer this close to its delay counts as run (float sums of 0.25 s steps)


@dataclass(slots=True)
class SustainState:
    """A "sustained N s" timer over valid signal; the bypass timer for extreme values beside it."""

    acc: float = 0.0
    bypass_acc: float = 0.0
    first_out: Sample | None = None
    latest: Sample | None = None
    worst: float | None = None

    def reset(self) -> None:
        self.acc = self.bypass_acc = 0.0
        self.first_out = self.latest = None
        self.worst = None

    def is_reset(self) -> bool:
        """Whether :meth:`reset` would change nothing (an in-range sample then changes nothing)."""
        return (
            self.latest is None
            and self.first_out is None
            and self.worst is None
            and not self.acc
            and not self.bypass_acc
        )

    def note(self, sample: Sample, low_is_bad: bool) -> None:
        """A valid out-of-range sample: remember it as evidence."""
        if self.first_out is None:
            self.first_out = sample
        self.latest = sample
        v = sample.value
        if v is not None and (self.worst is None or (v < self.worst if low_is_bad else v > self.worst)):
            self.worst = v

    def active(self, rule: Rule) -> bool:
        if self.latest is None:
            return False
        if self.acc >= rule.sustain_s - EPS:
            return True
        return rule.bypass_limit is not None and self.bypass_acc >= rule.bypass_s - EPS

    def snapshot(self) -> dict[str, Any]:
        """Snapshot form (:mod:`vitalwatch.engine.snapshot`); acc/bypass_acc are durations, not times."""
        return {
            "acc": self.acc,
            "bypass_acc": self.bypass_acc,
            "first_out": self.first_out.to_state() if self.first_out is not None else None,
            "latest": self.latest.to_state() if self.latest is not None else None,
            "worst": encode_number(self.worst),
        }

    def restore_state(self, r: StateReader) -> None:
        first, latest = r.opt_child("first_out"), r.opt_child("latest")
        self.acc = r.seconds("acc")
        self.bypass_acc = r.seconds("bypass_acc")
        self.first_out = Sample.from_state(first) if first is not None else None
        self.latest = Sample.from_state(latest) if latest is not None else None
        self.worst = r.opt_number("worst")


def sustained_limit(rule: Rule, baseline: Baseline | None) -> float | None:
    """The limit in force: absolute, or from the baseline (None when the baseline is missing)."""
    if rule.limit is not None:
        return rule.limit
    bl = baseline.get(rule.parameter or "") if baseline is not None else None
    if bl is None:
        return None
    if rule.baseline_offset is not None:
        return bl + rule.baseline_offset
    if rule.baseline_percent is not None:
        return bl * (1 + rule.baseline_percent / 100)
    return None


@dataclass(frozen=True, slots=True)
class NibpCheck:
    """Whether one reading breaks one NIBP rule, with the component that did."""

    out: bool
    value: float | None
    limit: float | None
    text: str

    def to_state(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "value": encode_number(self.value),
            "limit": encode_number(self.limit),
            "text": self.text,
        }

    @classmethod
    def from_state(cls, r: StateReader) -> NibpCheck:
        return cls(r.flag("out"), r.opt_number("value"), r.opt_number("limit"), r.text("text"))


@dataclass(slots=True)
class NibpRuleState:
    """An NIBP rule: the first out-of-range reading awaiting confirmation, and whether it holds.

    Confirmation is the table's "a second reading 2-5 min after the first": a reading sooner
    than ``confirm_min_s`` after the pending one neither confirms nor cancels it when it is
    out of range too (an in-range one cancels: the pressure came down); one within
    ``confirm_window_s`` confirms; a later one starts a new pending confirmation. The
    confirmation reading is requested once, ``confirm_min_s`` after the first (``requested``).
    """

    pending: NibpReading | None = None
    active: bool = False
    check: NibpCheck | None = None
    evidence: list[NibpReading] = field(default_factory=list)
    requested: bool = False

    def reset(self) -> None:
        self.pending = None
        self.active = False
        self.check = None
        self.evidence = []
        self.requested = False

    def update(self, rule: Rule, r: NibpReading, check: NibpCheck) -> None:
        """Apply one valid reading."""
        if not check.out:
            self.reset()
            return
        if not rule.confirm or self.active:
            self.check = check
            self.active = True
            self.evidence = [*self.evidence[-1:], r] if rule.confirm else [r]
            return
        if self.pending is not None:
            waited = r.t - self.pending.t
            if waited < rule.confirm_min_s - EPS:
                return  # too soon to confirm: the pending reading stands
            if waited <= rule.confirm_window_s:
                self.check = check
                self.active = True
                self.evidence = [self.pending, r]
                self.pending = None
                return
        self.check = check
        self.pending = r
        self.requested = False

    def confirmation_due(self, rule: Rule, now: float) -> bool:
        """Whether the confirmation reading should be requested now (once per pending reading)."""
        return (
            self.pending is not None
            and not self.requested
            and now >= self.pending.t + rule.confirm_min_s - EPS
            and now <= self.pending.t + rule.confirm_window_s
        )

    def snapshot(self) -> dict[str, Any]:
        """Snapshot form (:mod:`vitalwatch.engine.snapshot`)."""
        return {
            "pending": self.pending.to_state() if self.pending is not None else None,
            "active": self.active,
            "check": self.check.to_state() if self.check is not None else None,
            "evidence": [r.to_state() for r in self.evidence],
            "requested": self.requested,
        }

    def restore_state(self, r: StateReader) -> None:
        pending, check = r.opt_child("pending"), r.opt_child("check")
        self.pending = NibpReading.from_state(pending) if pending is not None else None
        self.active = r.flag("active")
        self.check = NibpCheck.from_state(check) if check is not None else None
        self.evidence = [NibpReading.from_state(c) for c in r.children("evidence", 64)]
        self.requested = r.flag("requested") if r.has("requested") else self.pending is not None
