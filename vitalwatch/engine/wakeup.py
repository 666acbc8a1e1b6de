"""When a rule that found nothing may next find something with no input changed: its deadline.

The agenda (:mod:`vitalwatch.engine.agenda`) runs a quiet rule again when an input it reads
changes or when this deadline comes. Each deadline is the earliest engine time at which the
rule's time-based condition can hold, reasoning from how its clocks move:

- every clock here (valid-signal timers, the phase clock, silence, time since a reading)
  advances by at most the time that passed, never more, so "the remaining time from now" is
  never late: a timer that pauses (invalid signal, a paused infusion) only makes the rule
  run early and find nothing, and then it computes its next deadline;
- inputs that only push a deadline later (a device's newest bytes, a valid sample) need not
  wake anything;
- ``MARGIN`` takes the deadline a millisecond early, so float sums of small steps never put
  the real crossing before it.

``math.inf``: nothing but an input change can make the rule find something.
"""

from __future__ import annotations

import math
from collections.abc import Set

from vitalwatch.engine.roles import measures_oximetry, streams
from vitalwatch.engine.rule_state import EPS, SustainState, sustained_limit
from vitalwatch.engine.rules import BedView, due_window_met
from vitalwatch.engine.table import Rule

__all__ = ["MARGIN", "deaf", "wake_at"]

MARGIN = 1e-3  # seconds early: far above float error, far below any delay of the table


def wake_at(rule: Rule, v: BedView, sustain: SustainState | None, requested: Set[str]) -> float:
    """The deadline of ``rule``, which found nothing and asked for nothing at ``v.now``.

    ``sustain``: its timer state (sustained rules); ``requested``: the readings already asked
    for in this phase (the due-window and peak requests are asked once).
    """
    match rule.type:
        case "sustained":
            return _sustained(rule, v, sustain)
        case "signal_lost":
            return _signal_lost(rule, v)
        case "link_lost":
            return _link_lost(rule, v)
        case "nibp_overdue":
            return _nibp_overdue(rule, v, requested)
        case "nibp_peak":
            return _nibp_peak(rule, v, requested)
        case "nibp_recovery":
            return _phase_clock(v, rule.after_s) if v.elapsed < rule.after_s else math.inf
        case "infusion_overrun":
            return _phase_clock(v, v.table.planned_infusion_s)
        case "baseline_overrun":
            if v.phase == "baseline" and v.elapsed < rule.after_s:
                return _phase_clock(v, rule.after_s)
            return math.inf  # past the delay, no monitor delivering: a valid value wakes it
        case "nibp" | "nibp_gate" | "baseline_gate" | "baseline_incomplete":
            return math.inf  # no time in them: readings and the baseline
        case "driver_fault" | "device_garbled":
            return math.inf  # statuses; decode problems (the engine judges their runs each call)
    return v.now  # a type this module does not know: run it at every call


def deaf(rule: Rule, v: BedView) -> bool:
    """Whether no input can make ``rule`` (which found nothing) find anything before its
    deadline: a delay on the phase clock that has not run yet, whatever the readings and the
    monitors say. Only a new phase, a pause or a seeded clock move that clock otherwise, and
    they wake every rule."""
    match rule.type:
        case "baseline_overrun":
            return v.phase == "baseline" and v.elapsed < rule.after_s
        case "nibp_recovery":
            return v.elapsed < rule.after_s
    return False


def _phase_clock(v: BedView, at: float) -> float:
    """When the phase clock (paused time excluded) reaches ``at``."""
    return v.now + (at - v.elapsed) - MARGIN


def _sustained(rule: Rule, v: BedView, st: SustainState | None) -> float:
    # Without an out-of-range sample noted, or without a limit (no baseline yet), only a
    # sample or the baseline can make it active; both touch it.
    if st is None or st.latest is None or sustained_limit(rule, v.baseline) is None:
        return math.inf
    need = rule.sustain_s - EPS - st.acc
    if rule.bypass_limit is not None:
        need = min(need, rule.bypass_s - EPS - st.bypass_acc)
    return v.now + need - MARGIN


def _signal_lost(rule: Rule, v: BedView) -> float:
    oxi = [d for d, role in v.roles.items() if measures_oximetry(role)]
    if not oxi or not any(v.armed(d) for d in oxi):
        return math.inf  # arming (a first valid value) touches it
    # Invalid time grows by at most the time passed; an invalid sample touches it.
    return v.now + (rule.after_s - v.spo2.invalid_for(v.now, v.phase_start)) - MARGIN


def _link_lost(rule: Rule, v: BedView) -> float:
    wake = math.inf
    for device, role in v.roles.items():
        if v.armed(device) and streams(role):
            # Newer bytes only move this later; a vanished port touches the rule.
            wake = min(wake, v.last_data.get(device, v.now) + rule.after_s - MARGIN)
    return wake


def _nibp_overdue(rule: Rule, v: BedView, requested: Set[str]) -> float:
    if not v.has_cuff:
        return math.inf
    last = v.nibp.last_valid()
    since = v.running_since(max(last.t if last is not None else v.phase_start, v.phase_start))
    wake = v.now + (rule.interval_s + rule.grace_s - since) - MARGIN
    if rule.due_from_s is not None and rule.due_until_s is not None and not due_window_met(rule, v):
        wake = min(wake, _phase_clock(v, rule.due_until_s + rule.grace_s))
        if rule.id not in requested:
            wake = min(wake, _phase_clock(v, rule.due_from_s))
    return wake


def _nibp_peak(rule: Rule, v: BedView, requested: Set[str]) -> float:
    if not v.has_cuff or rule.due_from_s is None or rule.due_until_s is None:
        return math.inf
    if v.phase != "infusion" or due_window_met(rule, v):
        return math.inf  # in the recovery it is judged on the pump stop and the readings alone
    wake = _phase_clock(v, rule.due_until_s)
    if rule.id not in requested:
        wake = min(wake, _phase_clock(v, rule.due_from_s))
    return wake
