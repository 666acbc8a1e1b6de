"""The discharge_ready INFO status: every criterion a monitor can check (docs/alarms.md).

All of: >= 60 min since pump stop [EJ]; two NIBP readings >= 10 min apart, each within ±20 %
of BL and < 160/100 [V ±20 %, EJ 160/100]; pulse within ±20 % of BL [EJ]; SpO2 >= 92 % and
>= BL − 2 [V, EJ]; no active MEDIUM or HIGH alarm. It is a status, never an alarm: the nurse
still confirms what no monitor measures (dissociation resolved, orientation, gait, escort).
Without a complete baseline the ±20 % criteria cannot be checked, so the status never turns on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vitalwatch.engine.baseline import Baseline
from vitalwatch.engine.signals import NibpReading
from vitalwatch.engine.table import DischargeSettings

__all__ = ["NURSE_CONFIRMS", "Criterion", "discharge_checklist", "discharge_status"]


def _within(value: float, reference: float, percent: float) -> bool:
    return abs(value - reference) <= reference * percent / 100


@dataclass(frozen=True, slots=True)
class Criterion:
    """One discharge criterion a monitor can check: met or not, and a line for the nurse."""

    name: str  # time | baseline | nibp | pulse | spo2 | alarms
    met: bool
    text: str


# What the nurse confirms herself before discharge: no monitor measures any of it.
NURSE_CONFIRMS: tuple[str, ...] = (
    "dissociation resolved",
    "oriented to time, place and person",
    "steady gait",
    "escort present",
)


def discharge_checklist(
    s: DischargeSettings,
    *,
    phase: str,
    recovery_elapsed: float,
    baseline: Baseline,
    readings: Sequence[NibpReading],
    spo2: float | None,
    pulse: float | None,
    medium_or_high_active: bool,
) -> list[Criterion]:
    """Every criterion, met or missing, in the order a nurse reads them; [] outside recovery.

    ``readings`` are the valid recovery readings, oldest first. The status
    (:func:`discharge_status`) is "all of these are met".
    """
    if phase != "recovery":
        return []
    bl = baseline
    minutes = recovery_elapsed / 60
    out = [
        Criterion(
            "time",
            recovery_elapsed >= s.after_recovery_min * 60,
            f"{minutes:.0f} of {s.after_recovery_min:g} min since pump stop",
        )
    ]
    complete = None not in (bl.systolic, bl.diastolic, bl.spo2, bl.pulse_rate)
    out.append(Criterion("baseline", complete, "baseline complete" if complete else "no complete baseline"))

    def good(r: NibpReading) -> bool:
        return (
            bl.systolic is not None
            and bl.diastolic is not None
            and r.systolic is not None
            and r.diastolic is not None
            and _within(r.systolic, bl.systolic, s.nibp_percent)
            and _within(r.diastolic, bl.diastolic, s.nibp_percent)
            and r.systolic < s.systolic_below
            and r.diastolic < s.diastolic_below
        )

    latest_good = bool(readings) and good(readings[-1])
    earlier = latest_good and any(
        good(r) and r.t <= readings[-1].t - s.nibp_spacing_min * 60 for r in readings[:-1]
    )
    count = int(latest_good) + int(earlier)
    out.append(
        Criterion(
            "nibp",
            count == 2,
            f"BP {count} of 2 within {s.nibp_percent:g} % of baseline, below "
            f"{s.systolic_below:g}/{s.diastolic_below:g}, {s.nibp_spacing_min:g} min apart",
        )
    )
    pulse_ok = pulse_within(s, bl, pulse)
    out.append(
        Criterion(
            "pulse",
            pulse_ok,
            f"pulse {'ok' if pulse_ok else 'not'} within {s.pulse_percent:g} % of baseline"
            + ("" if pulse is None else f" ({pulse:.0f} /min)"),
        )
    )
    spo2_ok = spo2_within(s, bl, spo2)
    out.append(
        Criterion(
            "spo2",
            spo2_ok,
            f"SpO2 {'ok' if spo2_ok else 'not'} at least {s.spo2_at_least:g} % and baseline - "
            f"{s.spo2_below_baseline_max:g}" + ("" if spo2 is None else f" ({spo2:.0f} %)"),
        )
    )
    out.append(
        Criterion(
            "alarms",
            not medium_or_high_active,
            "no active MEDIUM or HIGH alarm"
            if not medium_or_high_active
            else "a MEDIUM or HIGH alarm is active",
        )
    )
    return out


def pulse_within(s: DischargeSettings, bl: Baseline, pulse: float | None) -> bool:
    """The pulse criterion: within ``pulse_percent`` of the baseline."""
    return pulse is not None and bl.pulse_rate is not None and _within(pulse, bl.pulse_rate, s.pulse_percent)


def spo2_within(s: DischargeSettings, bl: Baseline, spo2: float | None) -> bool:
    """The SpO2 criterion: at least ``spo2_at_least``, at most ``spo2_below_baseline_max`` below baseline."""
    return (
        spo2 is not None
        and bl.spo2 is not None
        and spo2 >= s.spo2_at_least
        and spo2 >= bl.spo2 - s.spo2_below_baseline_max
    )


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
    """(ready, detail): ready when every criterion of :func:`discharge_checklist` is met."""
    if phase != "recovery":
        return False, {"waiting_for": "recovery phase"}
    checklist = discharge_checklist(
        s,
        phase=phase,
        recovery_elapsed=recovery_elapsed,
        baseline=baseline,
        readings=readings,
        spo2=spo2,
        pulse=pulse,
        medium_or_high_active=medium_or_high_active,
    )
    missing = next((c for c in checklist if not c.met), None)
    if missing is not None:
        return False, {"waiting_for": missing.text}
    latest = readings[-1]
    return True, {
        "systolic": latest.systolic or 0.0,
        "diastolic": latest.diastolic or 0.0,
        "pulse_rate": pulse or 0.0,
        "spo2": spo2 or 0.0,
        "recovery_min": round(recovery_elapsed / 60, 1),
    }
