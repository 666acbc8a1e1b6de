"""Rule state and rule arithmetic: sustained timers, NIBP confirmation, and the nurse's messages.

Each rule of the table keeps a small state object here; :mod:`vitalwatch.engine.session`
feeds it samples, readings and time, and asks it for a :class:`Finding` when its condition
holds. The message is written for a nurse at a glance ("SpO2 86 % below 90 % for 15 s"),
the evidence for the engineer reviewing the alert later (which readings, when).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vitalwatch.engine.baseline import Baseline
from vitalwatch.engine.lifecycle import Finding
from vitalwatch.engine.signals import NibpReading, Sample, fmt
from vitalwatch.engine.snapshot import encode_number
from vitalwatch.engine.table import Rule, compare
from vitalwatch.engine.vocabulary import CONDITIONS

if TYPE_CHECKING:
    from vitalwatch.engine.snapshot import StateReader

__all__ = [
    "NibpCheck",
    "NibpRuleState",
    "SustainState",
    "nibp_check",
    "sustained_finding",
    "sustained_limit",
    "word",
]

_EPS = 1e-6
_WORDS = {"<": "below", "<=": "at or below", ">": "above", ">=": "at or above"}
LABELS = {"spo2": ("SpO2", "%", "%"), "pulse_rate": ("Pulse", "/min", "/min")}  # label, display, UCUM


def word(op: str) -> str:
    """'<' -> 'below', for messages."""
    return _WORDS[op]


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
        if self.acc >= rule.sustain_s - _EPS:
            return True
        return rule.bypass_limit is not None and self.bypass_acc >= rule.bypass_s - _EPS

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


def finding_for(
    rule: Rule,
    message: str,
    *,
    value: float | None = None,
    unit: str | None = None,
    limit: float | None = None,
    evidence: tuple[str, ...] = (),
    device: str | None = None,
) -> Finding:
    """A rule's finding, with category and parameter from the condition vocabulary."""
    info = CONDITIONS[rule.condition]
    return Finding(
        condition=rule.condition,
        category=info.category,
        parameter=info.parameter,
        priority=rule.priority,
        rule=rule.id,
        value=value,
        unit=unit,
        limit=limit,
        message=message,
        evidence=evidence,
        device=device,
    )


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


def sustained_finding(rule: Rule, st: SustainState, limit: float, baseline: Baseline | None) -> Finding:
    """The finding of an active sustained rule, e.g. 'SpO2 86 % below 90 % for 15 s'."""
    parameter = rule.parameter or ""
    label, unit_text, unit = LABELS.get(parameter, (parameter, "", None))
    latest = st.latest
    value = latest.value if latest is not None else None
    bypass = rule.bypass_limit is not None and st.acc < rule.sustain_s - _EPS
    shown_limit = rule.bypass_limit if bypass and rule.bypass_limit is not None else limit
    seconds = st.bypass_acc if bypass else st.acc
    ref = ""
    if rule.limit is None and baseline is not None:
        bl = baseline.get(parameter)
        delta = rule.baseline_offset if rule.baseline_offset is not None else rule.baseline_percent
        sign = "+" if (delta or 0) >= 0 else "−"
        pct = " %" if rule.baseline_offset is None else ""
        ref = f" (baseline {fmt(bl)} {sign} {fmt(abs(delta or 0))}{pct})"
    text = (
        f"{label} {fmt(value)} {unit_text} {word(rule.compare)} {fmt(round(shown_limit, 1))} {unit_text}{ref}"
        f" for {fmt(round(seconds))} s"
    )
    if bypass:
        text += " (rapid desaturation)" if parameter == "spo2" else " (extreme value)"
    evidence = []
    if st.first_out is not None:
        evidence.append(f"first out of range t={st.first_out.t:.1f} {parameter}={fmt(st.first_out.value)}")
    if latest is not None:
        evidence.append(f"latest t={latest.t:.1f} {parameter}={fmt(latest.value)} ({latest.device})")
    evidence.append(f"worst {fmt(st.worst)}; {fmt(round(st.acc, 1))} s of valid signal out of range")
    return finding_for(
        rule,
        text,
        value=value,
        unit=unit,
        limit=shown_limit,
        evidence=tuple(evidence),
        device=latest.device if latest is not None else None,
    )


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


def nibp_check(rule: Rule, r: NibpReading, baseline: Baseline | None) -> NibpCheck | None:
    """Does reading ``r`` break ``rule``? None when the rule cannot tell (no baseline)."""
    sys_v, dia_v = r.systolic, r.diastolic
    if sys_v is None or dia_v is None:
        return None
    if rule.systolic_offset is not None or rule.diastolic_offset is not None:
        if baseline is None or baseline.systolic is None or baseline.diastolic is None:
            return None
        ds, dd = sys_v - baseline.systolic, dia_v - baseline.diastolic
        s_out = rule.systolic_offset is not None and compare(rule.compare, ds, rule.systolic_offset)
        d_out = rule.diastolic_offset is not None and compare(rule.compare, dd, rule.diastolic_offset)
        lim = f"{fmt(rule.systolic_offset)}/{fmt(rule.diastolic_offset)}"
        text = (
            f"BP {fmt(sys_v)}/{fmt(dia_v)} mmHg, {ds:+.0f}/{dd:+.0f} from baseline "
            f"{fmt(baseline.systolic)}/{fmt(baseline.diastolic)} (limit {word(rule.compare)} +{lim})"
        )
        if s_out or not d_out:
            lim_v = baseline.systolic + (rule.systolic_offset or 0)
            return NibpCheck(bool(s_out), sys_v, lim_v, text)
        return NibpCheck(True, dia_v, baseline.diastolic + (rule.diastolic_offset or 0), text)
    s_out = rule.systolic is not None and compare(rule.compare, sys_v, rule.systolic)
    d_out = rule.diastolic is not None and compare(rule.compare, dia_v, rule.diastolic)
    if rule.systolic is not None and rule.diastolic is not None:
        lim = f"{fmt(rule.systolic)}/{fmt(rule.diastolic)} mmHg"
    elif rule.systolic is not None:
        lim = f"SBP {fmt(rule.systolic)} mmHg"
    else:
        lim = f"DBP {fmt(rule.diastolic)} mmHg"
    text = f"BP {fmt(sys_v)}/{fmt(dia_v)} mmHg {word(rule.compare)} {lim}"
    if s_out or not d_out:
        return NibpCheck(
            bool(s_out), sys_v, rule.systolic if rule.systolic is not None else rule.diastolic, text
        )
    return NibpCheck(True, dia_v, rule.diastolic, text)


@dataclass(slots=True)
class NibpRuleState:
    """An NIBP rule: the first out-of-range reading awaiting confirmation, and whether it holds."""

    pending: NibpReading | None = None
    active: bool = False
    check: NibpCheck | None = None
    evidence: list[NibpReading] = field(default_factory=list)

    def reset(self) -> None:
        self.pending = None
        self.active = False
        self.check = None
        self.evidence = []

    def update(self, rule: Rule, r: NibpReading, check: NibpCheck) -> bool:
        """Apply one valid reading; True when a confirmation reading should be requested."""
        if not check.out:
            self.reset()
            return False
        self.check = check
        if not rule.confirm or self.active:
            self.active = True
            self.evidence = [*self.evidence[-1:], r] if rule.confirm else [r]
            return False
        if self.pending is not None and r.t - self.pending.t <= rule.confirm_window_s:
            self.active = True
            self.evidence = [self.pending, r]
            self.pending = None
            return False
        self.pending = r
        return True

    def snapshot(self) -> dict[str, Any]:
        """Snapshot form (:mod:`vitalwatch.engine.snapshot`)."""
        return {
            "pending": self.pending.to_state() if self.pending is not None else None,
            "active": self.active,
            "check": self.check.to_state() if self.check is not None else None,
            "evidence": [r.to_state() for r in self.evidence],
        }

    def restore_state(self, r: StateReader) -> None:
        pending, check = r.opt_child("pending"), r.opt_child("check")
        self.pending = NibpReading.from_state(pending) if pending is not None else None
        self.active = r.flag("active")
        self.check = NibpCheck.from_state(check) if check is not None else None
        self.evidence = [NibpReading.from_state(c) for c in r.children("evidence", 64)]

    def finding(self, rule: Rule) -> Finding:
        check = self.check
        assert check is not None
        info = CONDITIONS[rule.condition]
        how = f", confirmed by {len(self.evidence)} readings" if rule.confirm else " (one reading)"
        return Finding(
            condition=rule.condition,
            category=info.category,
            parameter=info.parameter,
            priority=rule.priority,
            rule=rule.id,
            value=check.value,
            unit="mm[Hg]",
            limit=check.limit,
            message=check.text + how,
            evidence=tuple(r.describe() for r in self.evidence),
            device=self.evidence[-1].device if self.evidence else None,
        )
