"""A scripted treatment session fed straight into a :class:`SessionLog` (no engine, no devices).

The session record, the report and the export are tested on a known session whose every
minute, reading and alarm is written down here, so a change in the engine cannot move their
expected figures.
"""

from __future__ import annotations

from vitalwatch.drivers.events import Observation
from vitalwatch.engine.outputs import (
    AlertState,
    AlertTransition,
    Category,
    Output,
    PhaseChanged,
    Priority,
    StatusChanged,
)
from vitalwatch.record.sessionlog import SessionLog

__all__ = ["record_example_session"]


def record_example_session(log_: SessionLog, *, t0: float = 1000.0) -> None:
    """Drive ``log_`` through a scripted 100-minute session in virtual time (tests, docs figure).

    Baseline 0-15 min (SpO2 97, pulse 72, BP 128/80 126/78 130/82), infusion 15-55 min
    (dose 0.5 mg/kg, 40 min planned; SpO2 dip to 87 % at 25 min: HIGH spo2_low, acknowledged
    after 20 s; probe off 30:00-30:20; pulse 125-130 at 35-37 min: MEDIUM pulse_high, never
    acknowledged; BP 182/112 at 40 and 184/110 at 41 min: HIGH nibp_high, acknowledged at 42 min),
    recovery 55-100 min, discharge_ready at 95 min, ended at 100 min; respiratory rate every 5 s
    (16 /min, 13 /min during the infusion). The scripted alarms are
    built here, not by the engine, so the record is tested on its own.
    """
    bed = log_.bed
    # (t, alert_id, state, priority, condition, onset)
    alarms = [
        (1515, "a1", AlertState.RAISED, Priority.HIGH, "spo2_low", 1515),
        (1535, "a1", AlertState.ACKNOWLEDGED, Priority.HIGH, "spo2_low", 1515),
        (1560, "a1", AlertState.CLEARED, Priority.HIGH, "spo2_low", 1515),
        (2160, "a2", AlertState.RAISED, Priority.MEDIUM, "pulse_high", 2160),
        (2240, "a2", AlertState.CLEARED, Priority.MEDIUM, "pulse_high", 2160),
        (2461, "a3", AlertState.RAISED, Priority.HIGH, "nibp_high", 2461),
        (2520, "a3", AlertState.ACKNOWLEDGED, Priority.HIGH, "nibp_high", 2461),
        (2700, "a3", AlertState.CLEARED, Priority.HIGH, "nibp_high", 2461),
    ]
    script: dict[int, list[Output]] = {}
    for seq, (t, aid, state, prio, cond, onset) in enumerate(alarms, start=1):
        script.setdefault(t, []).append(
            AlertTransition(
                t=t0 + t,
                bed=bed,
                alert_id=aid,
                seq=seq,
                state=state,
                priority=prio,
                category=Category.PHYSIOLOGICAL,
                condition=cond,
                parameter=None,
                value=None,
                unit=None,
                limit=None,
                phase="infusion",
                phase_elapsed_s=0.0,
                onset_t=t0 + onset,
                message="",
            )
        )
    script.setdefault(900, []).append(
        PhaseChanged(t=t0 + 900, bed=bed, phase="infusion", previous="baseline")
    )
    script.setdefault(3300, []).append(
        PhaseChanged(t=t0 + 3300, bed=bed, phase="recovery", previous="infusion")
    )
    script.setdefault(5700, []).append(
        StatusChanged(t=t0 + 5700, bed=bed, code="discharge_ready", active=True)
    )
    # The nurse's steps and observations (what the session commands record).
    nurse: dict[int, list[tuple[str, dict[str, object]]]] = {
        0: [("start_session", {"by": "RN Kim"})],
        300: [("prompt", {"kind": "take_bp", "reason": "baseline reading 2 of 2"})],
        360: [("prompt_closed", {"kind": "take_bp", "by": "reading"})],
        899: [
            (
                "start_infusion",
                {
                    "by": "RN Kim",
                    "dose_mg_per_kg": 0.5,
                    "weight_kg": 70.0,
                    "planned_minutes": 40.0,
                    "total_mg": 35.0,
                    "override_reason": "cuff swapped",
                    "open_items": ["cuff not linked"],
                },
            )
        ],
        2100: [("nurse_dissociation", {"by": "RN Kim", "score": 2})],
        2400: [("prompt", {"kind": "confirm_bp", "reason": "confirm BP 182/112 mmHg (nibp_high)"})],
        2430: [("prompt_done", {"kind": "confirm_bp", "by": "RN Kim"})],
        2700: [("nurse_nausea", {"by": "RN Kim"})],
        2760: [
            (
                "nurse_rescue_medication",
                {"by": "RN Kim", "drug": "ondansetron", "dose": 4.0, "dose_unit": "mg"},
            )
        ],
        3000: [("nurse_note", {"by": "RN Kim", "note": "asked for a blanket"})],
        3299: [("pump_stopped", {"by": "RN Kim"})],
        3900: [("nurse_dissociation", {"by": "RN Kim", "score": 0})],
    }
    bp = {120: (128, 80), 360: (126, 78), 720: (130, 82), 2400: (182, 112), 2460: (184, 110)}
    bp |= {t: (150, 92) for t in (1200, 1500, 1800, 2100, 2700, 3000)}
    bp |= {t: (134, 84) for t in (3600, 4500, 5400)}
    for t in range(6000):
        now = t0 + t
        spo2 = 97.0 if t < 1500 or t >= 1560 else 87.0
        pulse = 72.0 + (23.0 if 900 <= t < 3300 else 0.0) + (t % 3)
        if 2100 <= t < 2220:
            pulse = 125.0 + (t % 6)
        valid = not 1800 <= t < 1820
        log_.observation("oximeter", Observation("spo2", spo2 if valid else None, "%"), now, valid)
        log_.observation("oximeter", Observation("pulse_rate", pulse if valid else None, "/min"), now, valid)
        if t % 5 == 0:  # a networked monitor's respiratory rate, 16 /min, 13 /min under the drug
            rate = 13.0 if 900 <= t < 3300 else 16.0
            log_.observation("monitor", Observation("resp_rate", rate, "/min", 151562), now, True)
        if t in bp:
            sys_v, dia_v = bp[t]
            for kind, v in (("nibp_systolic", sys_v), ("nibp_diastolic", dia_v)):
                log_.observation("nibp", Observation(kind, float(v), "mm[Hg]"), now, True)
            log_.observation(
                "nibp", Observation("nibp_mean", float((sys_v + 2 * dia_v) // 3), "mm[Hg]"), now, True
            )
        for out in script.get(t, []):
            log_.output(out)
        if t == 901:
            log_.phase_fields({"phase": "infusion", "dose_mg_per_kg": 0.5, "planned_minutes": 40})
        for kind, data in nurse.get(t, []):
            log_.nurse_event(kind, data, now)
    log_.output(PhaseChanged(t=t0 + 6000, bed=bed, phase="ended", previous="recovery"))
