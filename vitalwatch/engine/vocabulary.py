"""The alarm condition vocabulary: every ``condition`` an alert can carry, its category and parameter.

One table, so that the TOML rules, the engine, the replay output and docs/alarms.md all use the
same names. A condition's category and parameter are fixed here (not per rule) because a nurse's
display groups by them; the priority is per rule, so one condition can have several tiers
(``spo2_low`` MEDIUM and HIGH), which share one occurrence (see :mod:`vitalwatch.engine.lifecycle`).
"""

from __future__ import annotations

from dataclasses import dataclass

from vitalwatch.engine.outputs import Category

__all__ = ["CONDITIONS", "PHASES", "STATUS_CONDITIONS", "ConditionInfo"]

PHASES: tuple[str, ...] = ("baseline", "infusion", "recovery", "ended")


@dataclass(frozen=True, slots=True)
class ConditionInfo:
    """What a condition is about: its IEC 60601-1-8 / IHE ACM category and the parameter."""

    category: Category
    parameter: str | None  # spo2 | pulse_rate | nibp | None
    meaning: str


_P = Category.PHYSIOLOGICAL
_T = Category.TECHNICAL
_A = Category.ADVISORY

CONDITIONS: dict[str, ConditionInfo] = {
    "spo2_low": ConditionInfo(_P, "spo2", "SpO2 below an absolute limit (sustained or rapid desaturation)"),
    "spo2_below_baseline": ConditionInfo(_P, "spo2", "SpO2 a number of points below the patient's baseline"),
    "pulse_high": ConditionInfo(_P, "pulse_rate", "pulse rate above an absolute limit"),
    "pulse_low": ConditionInfo(_P, "pulse_rate", "pulse rate below an absolute limit"),
    "pulse_above_baseline": ConditionInfo(_P, "pulse_rate", "pulse rate a number of beats above baseline"),
    "nibp_high": ConditionInfo(_P, "nibp", "blood pressure above an absolute limit"),
    "nibp_low": ConditionInfo(_P, "nibp", "blood pressure below an absolute limit"),
    "nibp_rise_from_baseline": ConditionInfo(_P, "nibp", "confirmed blood-pressure rise from baseline"),
    "bp_recovery_slow": ConditionInfo(_P, "nibp", "blood pressure not back near baseline after pump stop"),
    "start_gate_bp": ConditionInfo(_A, "nibp", "baseline blood pressure needs physician review before start"),
    "start_gate_spo2": ConditionInfo(_A, "spo2", "baseline SpO2 needs review before start"),
    "start_gate_pulse": ConditionInfo(_A, "pulse_rate", "baseline pulse needs review before start"),
    "link_lost": ConditionInfo(_T, None, "no decoded data from a configured monitor, or its port vanished"),
    "driver_fault": ConditionInfo(_T, None, "the monitor's driver failed unexpectedly and was restarted"),
    "signal_lost": ConditionInfo(_T, "spo2", "no valid SpO2/pulse (probe off, motion, low perfusion)"),
    "nibp_overdue": ConditionInfo(_T, "nibp", "no valid NIBP reading within the interval plus grace"),
    "baseline_incomplete": ConditionInfo(_T, None, "the infusion started before the baseline was complete"),
    "infusion_overrun": ConditionInfo(_A, None, "the infusion ran past its planned length without a stop"),
}

# INFO statuses (StatusChanged, never an alarm).
STATUS_CONDITIONS: dict[str, str] = {
    "discharge_ready": "every monitored discharge criterion is met (the nurse confirms the rest)",
}
