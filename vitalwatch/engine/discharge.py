"""The discharge_ready INFO status: every criterion a monitor can check (docs/alarms.md).

All of: >= 60 min since pump stop [EJ]; two NIBP readings >= 10 min apart, each within ±20 %
of BL and < 160/100 [V ±20 %, EJ 160/100]; pulse within ±20 % of BL [EJ]; SpO2 >= 92 % and
>= BL − 2 [V, EJ]; no active MEDIUM or HIGH alarm. It is a status, never an alarm: the nurse
still confirms what no monitor measures (dissociation resolved, orientation, gait, escort).
Without a complete baseline the ±20 % criteria cannot be checked, so the status never turns on.
"""

from __future__ import annotations

from collections.abc import Sequence

from vitalwatch.engine.baseline import Baseline
from vitalwatch.engine.signals import NibpReading
from vitalwatch.engine.table import DischargeSettings

__all__ = ["discharge_status"]


def _within(value: float, reference: float, percent: float) -> bool:
    return abs(value - reference) <= reference * percent / 100


def discharge_status(
    s: DischargeSettings,
    *,
    phase: str,
    recovery_elapsed: float,
    baseline: Baseline,
    readings: Sequence[NibpReading],
    spo2: float | None,
    pulse: float | None,
    medium_or_high_active: bool,
) -> tuple[bool, dict[str, float | str]]:
    """(ready, detail); ``readings`` are the valid recovery readings, oldest first."""
    if phase != "recovery":
        return False, {"waiting_for": "recovery phase"}
    if recovery_elapsed < s.after_recovery_min * 60:
        return False, {"waiting_for": "time since pump stop", "recovery_min": round(recovery_elapsed / 60, 1)}
    bl = baseline
    if bl.systolic is None or bl.diastolic is None or bl.spo2 is None or bl.pulse_rate is None:
        return False, {"waiting_for": "a complete baseline"}

    def good(r: NibpReading) -> bool:
        assert bl.systolic is not None and bl.diastolic is not None
        return (
            r.systolic is not None
            and r.diastolic is not None
            and _within(r.systolic, bl.systolic, s.nibp_percent)
            and _within(r.diastolic, bl.diastolic, s.nibp_percent)
            and r.systolic < s.systolic_below
            and r.diastolic < s.diastolic_below
        )

    if not readings or not good(readings[-1]):
        return False, {"waiting_for": "a blood pressure near baseline"}
    latest = readings[-1]
    if not any(good(r) and r.t <= latest.t - s.nibp_spacing_min * 60 for r in readings[:-1]):
        return False, {"waiting_for": "a second blood pressure near baseline"}
    if pulse is None or not _within(pulse, bl.pulse_rate, s.pulse_percent):
        return False, {"waiting_for": "pulse near baseline"}
    if spo2 is None or spo2 < s.spo2_at_least or spo2 < bl.spo2 - s.spo2_below_baseline_max:
        return False, {"waiting_for": "SpO2"}
    if medium_or_high_active:
        return False, {"waiting_for": "no active MEDIUM or HIGH alarm"}
    return True, {
        "systolic": latest.systolic or 0.0,
        "diastolic": latest.diastolic or 0.0,
        "pulse_rate": pulse,
        "spo2": spo2,
        "recovery_min": round(recovery_elapsed / 60, 1),
    }
