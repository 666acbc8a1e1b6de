"""The alarm condition vocabulary: every ``condition`` an alert can carry, its category and parameter.

One table, so that the TOML rules, the engine, the replay output and docs/alarms.md all use the
same names. A condition's category and parameter are fixed here (not per rule) because a nurse's
display groups by them; the priority is per rule, so one condition can have several tiers
(``spo2_low`` MEDIUM and HIGH), which share one occurrence (see :mod:`vitalwatch.engine.lifecycle`).
"""

from __future__ import annotations

from dataclasses import dataclass

from vitalwatch.engine.outputs import Category

__all__ = [
    "AGE_BANDS",
    "CONDITIONS",
    "LABELS",
    "PHASES",
    "PHASE_COMMANDS",
    "STATUS_CONDITIONS",
    "ConditionInfo",
]

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
    "baseline_overrun": ConditionInfo(_T, None, "still in baseline while its monitors deliver data"),
    "nibp_peak_missed": ConditionInfo(_T, "nibp", "no valid NIBP reading in the expected BP peak window"),
    "device_garbled": ConditionInfo(_T, None, "a monitor's bytes keep failing to decode (baud rate, cable)"),
}

# A nurse's short name of each condition, for the texts of an ended or cleared alarm.
LABELS: dict[str, str] = {
    "spo2_low": "SpO2 low",
    "spo2_below_baseline": "SpO2 below baseline",
    "pulse_high": "Pulse high",
    "pulse_low": "Pulse low",
    "pulse_above_baseline": "Pulse above baseline",
    "nibp_high": "BP high",
    "nibp_low": "BP low",
    "nibp_rise_from_baseline": "BP rise from baseline",
    "bp_recovery_slow": "Slow BP recovery",
    "start_gate_bp": "Baseline BP start gate",
    "start_gate_spo2": "Baseline SpO2 start gate",
    "start_gate_pulse": "Baseline pulse start gate",
    "link_lost": "Link lost",
    "driver_fault": "Driver fault",
    "signal_lost": "SpO2 signal lost",
    "nibp_overdue": "NIBP overdue",
    "baseline_incomplete": "Baseline incomplete",
    "infusion_overrun": "Infusion overrun",
    "baseline_overrun": "Still in baseline",
    "nibp_peak_missed": "Peak BP reading missed",
    "device_garbled": "Garbled data",
}

# A phase command may also pause or resume the infusion (the phase stays ``infusion``).
PHASE_COMMANDS: tuple[str, ...] = (*PHASES, "pause", "resume")

# The age band a session may carry (never a date of birth): ``older_adult`` is >= 65 years.
AGE_BANDS: tuple[str, ...] = ("adult", "older_adult")

# INFO statuses (StatusChanged, never an alarm).
STATUS_CONDITIONS: dict[str, str] = {
    "discharge_ready": "every monitored discharge criterion is met (the nurse confirms the rest)",
    "infusion_paused": "the nurse paused the infusion: its clock (overrun, peak window, NIBP schedule) stops",
}
