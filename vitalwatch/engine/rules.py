"""What each rule of the table says to a nurse: the finding and its message, rule by rule.

The engine (:mod:`vitalwatch.engine.session`) keeps time, signals and rule state
(:mod:`vitalwatch.engine.rule_state`); once per evaluation it hands the rules a read-only
:class:`BedView` of the bed, and the functions here say which conditions hold and how to put
them: the message for a nurse at a glance ("SpO2 86 % below 90 % for 15 s"), the evidence for
the engineer reviewing the alert later (which readings, when). The reasons of the engine's
NIBP requests are written here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass

from vitalwatch.drivers.vocabulary import UNRELIABLE_STATUSES
from vitalwatch.engine.baseline import Baseline
from vitalwatch.engine.lifecycle import Finding
from vitalwatch.engine.pause_clock import PauseClock
from vitalwatch.engine.roles import measures_nibp, measures_oximetry, streams
from vitalwatch.engine.rule_state import EPS, NibpCheck, NibpRuleState, SustainState
from vitalwatch.engine.signals import NibpReading, ReadingLog, Signal, fmt
from vitalwatch.engine.table import AlarmTable, Rule, compare
from vitalwatch.engine.vocabulary import CONDITIONS

__all__ = [
    "FINDERS",
    "BedView",
    "baseline_missing",
    "baseline_request_reason",
    "confirm_request_reason",
    "due_request_reason",
    "finding_for",
    "gate_check",
    "nibp_check",
    "nibp_finding",
    "overdue_findings",
    "peak_missed",
    "sustained_finding",
    "word",
]

_WORDS = {"<": "below", "<=": "at or below", ">": "above", ">=": "at or above"}
LABELS = {"spo2": ("SpO2", "%", "%"), "pulse_rate": ("Pulse", "/min", "/min")}  # label, display, UCUM


def word(op: str) -> str:
    """'<' -> 'below', for messages."""
    return _WORDS[op]


def finding_for(
    rule: Rule,
    message: str,
    *,
    value: float | None = None,
    unit: str | None = None,
    limit: float | None = None,
    evidence: tuple[str, ...] = (),
    device: str | None = None,
    extreme: str | None = None,
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
        extreme=extreme,
    )


def sustained_finding(rule: Rule, st: SustainState, limit: float, baseline: Baseline | None) -> Finding:
    """The finding of an active sustained rule, e.g. 'SpO2 86 % below 90 % for 15 s'."""
    parameter = rule.parameter or ""
    label, unit_text, unit = LABELS.get(parameter, (parameter, "", None))
    latest = st.latest
    value = latest.value if latest is not None else None
    bypass = rule.bypass_limit is not None and st.acc < rule.sustain_s - EPS
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
    low = rule.compare.startswith("<")
    extreme = None if st.worst is None else f"{'lowest' if low else 'highest'} {fmt(st.worst)} {unit_text}"
    return finding_for(
        rule,
        text,
        value=value,
        unit=unit,
        limit=shown_limit,
        evidence=tuple(evidence),
        device=latest.device if latest is not None else None,
        extreme=extreme,
    )


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


def nibp_finding(rule: Rule, st: NibpRuleState) -> Finding:
    """The finding of an active NIBP rule: its check's text, how it was confirmed, the readings."""
    check = st.check
    assert check is not None
    how = f", confirmed by {len(st.evidence)} readings" if rule.confirm else " (one reading)"
    extreme = None
    shown = [r for r in st.evidence if r.systolic is not None and r.diastolic is not None]
    if shown and rule.type == "nibp":
        low = rule.compare.startswith("<")
        pick = (min if low else max)(shown, key=lambda r: (r.systolic, r.diastolic))
        extreme = f"{'lowest' if low else 'highest'} BP {fmt(pick.systolic)}/{fmt(pick.diastolic)} mmHg"
    return finding_for(
        rule,
        check.text + how,
        value=check.value,
        unit="mm[Hg]",
        limit=check.limit,
        evidence=tuple(r.describe() for r in st.evidence),
        device=st.evidence[-1].device if st.evidence else None,
        extreme=extreme,
    )


@dataclass(frozen=True, slots=True)
class BedView:
    """What the rules read of one bed at one evaluation (the engine builds it; nothing here writes)."""

    now: float
    phase: str
    phase_start: float
    baseline: Baseline
    frozen: Baseline | None  # the baseline frozen when the baseline phase ended
    roles: Mapping[str, str]
    statuses: Mapping[str, Set[str]]
    last_data: Mapping[str, float]  # when each device last sent decoded data
    port_down: Set[str]
    spo2: Signal
    nibp: ReadingLog
    table: AlarmTable
    clock: PauseClock  # the current phase's pauses (an infusion paused by the nurse)
    last_valid: Mapping[str, float]  # when each device last delivered a valid value (armed devices)
    garbled: Set[str]  # devices whose bytes keep failing to decode (device_garbled)
    pump_stop: float | None  # when the infusion ended, if it did
    pump_stop_elapsed: float | None  # the infusion clock at pump stop (paused time excluded)

    @property
    def elapsed(self) -> float:
        """Seconds into the current phase on its clock (paused time not counted)."""
        return self.clock.running(self.phase_start, self.now)

    def running_since(self, t: float) -> float:
        """Seconds of the phase clock since ``t`` (paused time not counted)."""
        return self.clock.running(t, self.now)

    def phase_time(self, t: float) -> float:
        """The phase clock's reading at engine time ``t`` of this phase."""
        return self.clock.running(self.phase_start, t)

    def armed(self, device: str) -> bool:
        """Whether ``device`` has delivered a valid value: in the baseline, the safety net's
        technical rules start only then (a monitor not yet on the patient is not an alarm)."""
        return self.phase != "baseline" or device in self.last_valid

    @property
    def has_cuff(self) -> bool:
        return any(measures_nibp(role) for role in self.roles.values())


def baseline_gate_findings(rule: Rule, v: BedView) -> list[Finding]:
    """A baseline SpO2 or pulse against the start-gate limit."""
    value = v.baseline.get(rule.parameter or "")
    if value is None or rule.limit is None or not compare(rule.compare, value, rule.limit):
        return []
    label = "SpO2" if rule.parameter == "spo2" else "pulse"
    unit = "%" if rule.parameter == "spo2" else "/min"
    text = (
        f"Baseline {label} {fmt(round(value, 1))} {unit} {word(rule.compare)} "
        f"{fmt(rule.limit)} {unit}: review before start"
    )
    return [
        finding_for(rule, text, value=value, unit=unit, limit=rule.limit, evidence=(v.baseline.describe(),))
    ]


def signal_lost_findings(rule: Rule, v: BedView) -> list[Finding]:
    """No valid SpO2 for longer than the rule's delay, with the statuses that explain it."""
    oxi = [d for d, role in v.roles.items() if measures_oximetry(role)]
    if not oxi or not any(v.armed(d) for d in oxi):
        return []
    # The row is "SpO2 signal lost": a pulse rate without SpO2 still leaves the nurse blind.
    lost = v.spo2.invalid_for(v.now, v.phase_start)
    if lost <= rule.after_s:
        return []
    why = sorted(set().union(*(v.statuses.get(d, set()) for d in oxi)) & UNRELIABLE_STATUSES)
    reason = f" ({', '.join(why)})" if why else ""
    text = f"No valid SpO2/pulse for {fmt(round(lost))} s{reason}"
    return [
        finding_for(
            rule,
            text,
            value=round(lost, 1),
            unit="s",
            limit=rule.after_s,
            evidence=tuple(f"status {w}" for w in why),
        )
    ]


def link_lost_findings(rule: Rule, v: BedView) -> list[Finding]:
    """A vanished port, or a streaming device silent for longer than the delay (one per device)."""
    found = []
    for device, role in v.roles.items():
        silent = v.now - v.last_data.get(device, v.now)
        # An NIBP module is host-driven and legitimately silent between cycles: only
        # its port can be judged here (nibp_overdue covers a cuff that never answers).
        if not v.armed(device):
            continue
        if device in v.port_down or (streams(role) and silent > rule.after_s):
            text = (
                f"Port of {device} vanished"
                if device in v.port_down
                else f"No data from {device} for {fmt(round(silent))} s"
            )
            found.append(
                finding_for(rule, text, value=round(silent, 1), unit="s", limit=rule.after_s, device=device)
            )
    return found


def driver_fault_findings(rule: Rule, v: BedView) -> list[Finding]:
    """A device whose driver failed and was restarted (its link reports the driver_fault status)."""
    return [
        finding_for(rule, f"Driver fault on {device}: restarted", device=device)
        for device in v.roles
        if "driver_fault" in v.statuses.get(device, ())
    ]


def baseline_incomplete_findings(rule: Rule, v: BedView) -> list[Finding]:
    if v.frozen is None or v.frozen.complete:
        return []
    has_oxi = any(measures_oximetry(role) for role in v.roles.values())
    missing = baseline_missing(v.frozen, v.table, nibp=v.has_cuff, oximetry=has_oxi)
    if not missing:  # only parts this bed cannot measure (no cuff, say) are absent
        return []
    text = f"Infusion started with an incomplete baseline: {'; '.join(missing)}"
    return [finding_for(rule, text, evidence=(v.frozen.describe(),))]


def baseline_missing(
    b: Baseline, table: AlarmTable, *, nibp: bool = True, oximetry: bool = True
) -> list[str]:
    """What an incomplete baseline lacks, part by part, in a nurse's words (only the parts the
    bed has a monitor for: a bed without a cuff cannot miss its NIBP readings)."""
    s, missing = table.baseline, []
    if nibp and (b.systolic is None or b.diastolic is None):
        spacing = f"{fmt(round(s.nibp_spacing_s / 60, 1))} min"
        if b.nibp_count < s.nibp_readings:
            missing.append(
                f"{b.nibp_count} of {s.nibp_readings} NIBP readings (they must be >= {spacing} apart)"
            )
        else:
            missing.append(
                f"{b.nibp_count} NIBP readings but only {fmt(round(b.nibp_span_s))} s apart "
                f"(need {s.nibp_readings} readings >= {spacing} apart)"
            )
    for part, label in (("spo2", "SpO2"), ("pulse_rate", "pulse")):
        if oximetry and b.get(part) is None:
            seconds = b.valid_seconds(part)
            missing.append(f"{fmt(round(seconds))} of {fmt(s.oximetry_s)} s valid {label}")
    return missing


def nibp_recovery_findings(rule: Rule, v: BedView) -> list[Finding]:
    """The latest valid BP still above baseline + percent once ``after_s`` into the phase."""
    last, bl = v.nibp.last_valid(), v.baseline
    if (
        v.elapsed < rule.after_s
        or last is None
        or bl.systolic is None
        or bl.diastolic is None
        or last.systolic is None
        or last.diastolic is None
    ):
        return []
    s_lim = bl.systolic * (1 + rule.percent / 100)
    d_lim = bl.diastolic * (1 + rule.percent / 100)
    if not (last.systolic > s_lim or last.diastolic > d_lim):
        return []
    text = (
        f"BP {fmt(last.systolic)}/{fmt(last.diastolic)} mmHg still above baseline "
        f"{fmt(bl.systolic)}/{fmt(bl.diastolic)} + {fmt(rule.percent)} % "
        f"at {fmt(round(v.elapsed / 60))} min after pump stop"
    )
    s_out = last.systolic > s_lim
    return [
        finding_for(
            rule,
            text,
            value=last.systolic if s_out else last.diastolic,
            unit="mm[Hg]",
            limit=round(s_lim if s_out else d_lim, 1),
            evidence=(last.describe(), bl.describe()),
            device=last.device,
        )
    ]


def baseline_overrun_findings(rule: Rule, v: BedView) -> list[Finding]:
    """Still in baseline after ``after_s`` while a monitor delivers valid data: infusion forgotten?"""
    if v.phase != "baseline" or v.elapsed < rule.after_s or not _delivering(v):
        return []
    minutes = fmt(round(v.elapsed / 60))
    text = f"Still in baseline after {minutes} min: has the infusion started?"
    return [finding_for(rule, text, value=round(v.elapsed, 1), unit="s", limit=rule.after_s)]


# "Delivers valid data": an oximeter's valid sample within a minute, or a cuff's valid reading
# within 15 min (a cuff measures every few minutes at most).
_OXI_RECENT_S = 60.0
_CUFF_RECENT_S = 900.0


def _delivering(v: BedView) -> bool:
    for device, t in v.last_valid.items():
        role = v.roles.get(device, "multi")
        recent = _OXI_RECENT_S if measures_oximetry(role) else _CUFF_RECENT_S
        if v.now - t <= recent:
            return True
    return False


def device_garbled_findings(rule: Rule, v: BedView) -> list[Finding]:
    """A device whose bytes keep failing to decode (the engine keeps the decode-problem rate)."""
    return [
        finding_for(
            rule,
            f"Garbled data from {device} for more than {fmt(rule.after_s)} s: check baud rate and cable",
            limit=rule.after_s,
            unit="s",
            device=device,
        )
        for device in sorted(v.garbled)
    ]


def peak_missed(rule: Rule, v: BedView) -> bool:
    """Whether the infusion's peak-window reading was missed and no valid reading came since.

    In the infusion: its clock has passed ``due_until_s`` with no valid reading since
    ``due_from_s``. In the recovery: the pump stopped inside the window (after ``due_from_s``,
    before ``due_until_s``) with no reading in it, and none since the pump stop.
    """
    if not v.has_cuff or rule.due_from_s is None or rule.due_until_s is None:
        return False
    last = v.nibp.last_valid()
    if v.phase == "infusion":
        return v.elapsed >= rule.due_until_s and not due_window_met(rule, v)
    if v.phase != "recovery" or v.pump_stop is None or v.pump_stop_elapsed is None:
        return False
    stopped_in_window = rule.due_from_s <= v.pump_stop_elapsed < rule.due_until_s
    if not stopped_in_window:
        return False
    # The window's readings (before the stop) and any since: one is enough.
    window_start = v.pump_stop - (v.pump_stop_elapsed - rule.due_from_s)
    return last is None or last.t < window_start


def nibp_peak_findings(rule: Rule, v: BedView) -> list[Finding]:
    if not peak_missed(rule, v):
        return []
    window = f"{fmt(round((rule.due_from_s or 0) / 60))}-{fmt(round((rule.due_until_s or 0) / 60))} min"
    when = "by its end" if v.phase == "infusion" else "before the pump stopped"
    text = f"No NIBP reading in the {window} window of the infusion (expected BP peak) {when}: take one now"
    return [finding_for(rule, text, limit=rule.due_until_s, unit="s")]


def infusion_overrun_findings(rule: Rule, v: BedView) -> list[Finding]:
    planned = v.table.planned_infusion_s
    if v.elapsed <= planned:
        return []
    minutes, seconds = divmod(int(v.elapsed), 60)
    text = (
        f"Infusion running {minutes} min {seconds:02d} s, past the planned "
        f"{fmt(round(planned / 60))} min: stop the pump or review"
    )
    return [finding_for(rule, text, value=round(v.elapsed, 1), unit="s", limit=planned)]


def overdue_findings(rule: Rule, v: BedView) -> list[Finding]:
    """No valid NIBP within interval + grace; or none in the phase's due window by its end + grace."""
    if not v.has_cuff:
        return []
    last = v.nibp.last_valid()
    since = v.running_since(max(last.t if last is not None else v.phase_start, v.phase_start))
    if since > rule.interval_s + rule.grace_s:
        text = (
            f"No valid NIBP for {fmt(round(since / 60, 1))} min (interval "
            f"{fmt(round(rule.interval_s / 60, 1))} min + {fmt(round(rule.grace_s / 60, 1))} min grace)"
        )
        return [
            finding_for(
                rule,
                text,
                value=round(since, 1),
                unit="s",
                limit=rule.interval_s + rule.grace_s,
                evidence=(last.describe(),) if last is not None else (),
            )
        ]
    if rule.due_from_s is None or rule.due_until_s is None:
        return []
    if v.elapsed >= rule.due_until_s + rule.grace_s and not due_window_met(rule, v):
        text = (
            f"No NIBP reading in the {fmt(round(rule.due_from_s / 60))}-"
            f"{fmt(round(rule.due_until_s / 60))} min window of the {v.phase} (expected BP peak)"
        )
        return [
            finding_for(rule, text, value=round(since, 1), unit="s", limit=rule.due_until_s + rule.grace_s)
        ]
    return []


def due_window_met(rule: Rule, v: BedView) -> bool:
    """Whether a valid reading was taken since the due window of ``rule`` opened in this phase."""
    last = v.nibp.last_valid()
    return (
        last is not None
        and rule.due_from_s is not None
        and last.t >= v.phase_start
        and v.phase_time(last.t) >= rule.due_from_s - 1e-6
    )


def due_request_reason(rule: Rule, phase: str) -> str:
    return (
        f"scheduled reading due at {fmt(round((rule.due_from_s or 0) / 60))}-"
        f"{fmt(round((rule.due_until_s or 0) / 60))} min of the {phase} (expected BP peak)"
    )


def baseline_request_reason(taken: int, needed: int) -> str:
    return f"baseline reading {taken + 1} of {needed}"


def confirm_request_reason(reading: NibpReading, rules: Sequence[str]) -> str:
    return f"confirm BP {fmt(reading.systolic)}/{fmt(reading.diastolic)} mmHg ({', '.join(rules)})"


def gate_check(rule: Rule, recent: Sequence[NibpReading], *, older_adult: bool) -> NibpCheck:
    """Start gate: the mean of the last N baseline readings against the gate limits."""
    mean_s = sum(r.systolic or 0.0 for r in recent) / len(recent)
    mean_d = sum(r.diastolic or 0.0 for r in recent) / len(recent)
    sys_lim = rule.systolic_above_65 if older_adult and rule.systolic_above_65 else rule.systolic_above
    s_out = sys_lim is not None and mean_s > sys_lim
    d_out = rule.diastolic_above is not None and mean_d > rule.diastolic_above
    text = (
        f"Baseline BP {fmt(round(mean_s))}/{fmt(round(mean_d))} mmHg (mean of {len(recent)}) above "
        f"{fmt(sys_lim)}/{fmt(rule.diastolic_above)} mmHg: physician review before start"
    )
    return NibpCheck(
        bool(s_out or d_out),
        mean_s if s_out or not d_out else mean_d,
        sys_lim if s_out or not d_out else rule.diastolic_above,
        text,
    )


# The rule types whose findings come from the view alone (sustained and NIBP rules also need
# their state; nibp_overdue also asks for a reading: the engine calls those itself).
FINDERS: dict[str, Callable[[Rule, BedView], list[Finding]]] = {
    "baseline_gate": baseline_gate_findings,
    "signal_lost": signal_lost_findings,
    "link_lost": link_lost_findings,
    "driver_fault": driver_fault_findings,
    "baseline_incomplete": baseline_incomplete_findings,
    "nibp_recovery": nibp_recovery_findings,
    "infusion_overrun": infusion_overrun_findings,
    "baseline_overrun": baseline_overrun_findings,
    "device_garbled": device_garbled_findings,
    "nibp_peak": nibp_peak_findings,
}
