"""Golden scenarios, one per row of the shipped default table (clinical-defaults.md).

Each test drives the engine at 1 Hz in virtual time and asserts when the alert is raised and
at which priority, and that it is *not* raised when the condition is shorter than the delay or
the signal is invalid. Times: baseline 0-300 s (SpO2 97, pulse 72, BP 120/80 at 0 and 150 s),
infusion from T = 300 s unless a test says otherwise.
"""

from __future__ import annotations

import pytest

from vitalwatch.engine.outputs import AlertState, Category, Priority
from vitalwatch.engine.table import load_alarm_table
from vitalwatch.engine.testing import EngineHarness

T = 300.0  # infusion start in the standard session


def infusing() -> EngineHarness:
    h = EngineHarness()
    h.standard_baseline(until=T)
    return h


def recovering(at: float = 600.0, settle: float = 0.0) -> EngineHarness:
    """Pump stopped at ``at``; signals continue for ``settle`` seconds after it."""
    h = infusing()
    h.run(T, at)
    h.phase("recovery", at)
    h.run(at, at + settle)
    return h


def first(h: EngineHarness, condition: str):  # type: ignore[no-untyped-def]
    raised = h.raised(condition)
    assert raised, f"no {condition} raised; got {[(a.t, a.condition, a.state) for a in h.alerts()]}"
    return raised[0]


def test_shipped_table_has_every_row_of_the_evidence_table() -> None:
    """31 rules: the rows of docs/alarms.md (tiers split into one rule each), driver_fault,
    device_garbled, baseline_overrun and nibp_peak_missed."""
    table = load_alarm_table(None)
    expected = {
        "start_gate_bp", "nibp_severe_baseline", "start_gate_spo2", "start_gate_pulse_high",
        "start_gate_pulse_low", "baseline_incomplete", "spo2_low_high", "spo2_low_medium",
        "spo2_below_baseline", "pulse_high_high", "pulse_high_medium", "pulse_above_baseline",
        "pulse_low_high", "pulse_low_medium", "nibp_high_confirmed", "nibp_high_single",
        "nibp_rise_from_baseline", "nibp_high_awareness", "nibp_low_medium", "nibp_low_high",
        "nibp_overdue_infusion", "nibp_overdue_recovery", "signal_lost", "link_lost", "driver_fault",
        "bp_recovery_slow_low", "bp_recovery_slow_medium", "infusion_overrun",
        "baseline_overrun", "nibp_peak_missed", "device_garbled",
    }  # fmt: skip
    assert expected == {r.id for r in table.rules}


def test_standard_session_is_quiet() -> None:
    """A complete baseline and a normal infusion with readings every 5 min raise nothing."""
    h = infusing()
    for k in range(8):
        h.run(T + 300 * k, T + 300 * k + 60)
        h.nibp(T + 60 + 300 * k, 125, 82)
        h.run(T + 300 * k + 60, T + 300 * (k + 1))
    assert [] == h.alerts()


# ---------------------------------------------------------------- SpO2
def test_spo2_low_high_after_15_s() -> None:
    """SpO2 < 90 % for 15 s of valid signal: HIGH at exactly onset + 15 s."""
    h = infusing()
    h.run(T, T + 60, spo2=lambda t: 88.0 if t >= T + 10 else 97.0)
    alert = first(h, "spo2_low")
    assert (T + 25, Priority.HIGH, Category.PHYSIOLOGICAL) == (alert.t, alert.priority, alert.category)
    assert "SpO2 88 % below 90 % for 15 s" == alert.message
    assert ("spo2_low_high", 90.0, 88.0) == (alert.rule, alert.limit, alert.value)


def test_spo2_low_shorter_than_delay_is_silent() -> None:
    """14 s below 90 % (a probe-motion dip) raises nothing."""
    h = infusing()
    h.run(T, T + 60, spo2=lambda t: 88.0 if T + 10 <= t < T + 24 else 97.0)
    assert [] == h.alerts()


def test_spo2_rapid_desaturation_bypass_after_5_s() -> None:
    """SpO2 < 85 %: HIGH after 5 s, not 15 s."""
    h = infusing()
    h.run(T, T + 30, spo2=lambda t: 82.0 if t >= T + 10 else 97.0)
    alert = first(h, "spo2_low")
    assert (T + 15, Priority.HIGH) == (alert.t, alert.priority)
    assert "rapid desaturation" in alert.message


def test_spo2_low_from_invalid_signal_is_silent() -> None:
    """Low values while sensor_off is on are not SpO2 (and neither are device 'no value' markers)."""
    h = infusing()
    h.run(T, T + 5)
    h.status("sensor_off", True, T + 5)
    h.run(T + 5, T + 25, spo2=70.0)
    assert [] == h.raised("spo2_low")
    h.status("sensor_off", False, T + 25)
    h.run(T + 25, T + 60, spo2=None)  # no samples at all
    assert [] == h.raised("spo2_low")


def test_pulse_under_artifact_is_silent() -> None:
    """Motion artifact with a pulse of 150 for 2 min: no pulse alarm (the device said unreliable)."""
    h = infusing()
    h.run(T, T + 5)
    h.status("artifact", True, T + 5)
    h.run(T + 5, T + 125, pulse=150.0)
    assert [] == h.raised("pulse_high")
    assert [] == h.raised("pulse_above_baseline")


def test_invalid_signal_pauses_the_timer_without_clearing_it() -> None:
    """10 s low, 20 s artifact, 5 s low again: 15 s of valid low signal -> HIGH."""
    h = infusing()
    h.run(T, T + 10, spo2=88.0)
    h.status("artifact", True, T + 10)
    h.run(T + 10, T + 30, spo2=88.0)
    h.status("artifact", False, T + 30)
    h.run(T + 30, T + 40, spo2=88.0)
    assert T + 35 == first(h, "spo2_low").t


def test_spo2_low_medium_after_30_s() -> None:
    """SpO2 <= 92 % sustained 30 s: MEDIUM; 29 s: nothing."""
    h = infusing()
    h.run(T, T + 29, spo2=92.0)
    h.run(T + 29, T + 40, spo2=97.0)
    assert [] == h.alerts()
    h.run(T + 40, T + 80, spo2=91.0)
    alert = first(h, "spo2_low")
    assert (T + 70, Priority.MEDIUM) == (alert.t, alert.priority)


def test_spo2_below_baseline_after_60_s() -> None:
    """BL 97: SpO2 93 (BL - 4) for 60 s -> LOW spo2_below_baseline; 94 -> nothing."""
    h = infusing()
    h.run(T, T + 100, spo2=94.0)
    assert [] == h.alerts()
    h.run(T + 100, T + 200, spo2=93.0)
    alert = first(h, "spo2_below_baseline")
    assert (T + 160, Priority.LOW, 93.0) == (alert.t, alert.priority, alert.limit)


# ---------------------------------------------------------------- pulse
@pytest.mark.parametrize(
    ("pulse", "condition", "delay", "priority"),
    [
        (145.0, "pulse_high", 30, Priority.HIGH),
        (125.0, "pulse_high", 60, Priority.MEDIUM),
        (105.0, "pulse_above_baseline", 120, Priority.LOW),  # BL 72 + 30 = 102
        (38.0, "pulse_low", 15, Priority.HIGH),
        (45.0, "pulse_low", 30, Priority.MEDIUM),
    ],
)
def test_pulse_rules(pulse: float, condition: str, delay: int, priority: Priority) -> None:
    """Each pulse tier fires at its own delay and priority, and not one second earlier."""
    h = infusing()
    h.run(T, T + delay - 1, pulse=pulse)
    h.run(T + delay - 1, T + delay + 20, pulse=72.0)
    assert [] == h.alerts()
    start = T + delay + 20
    h.run(start, start + delay + 5, pulse=pulse)
    alert = first(h, condition)
    assert (start + delay, priority) == (alert.t, alert.priority)


# ---------------------------------------------------------------- NIBP
def test_nibp_high_confirmed_needs_a_second_reading() -> None:
    """Recovery: 185/100 once -> a repeat request 2 min later, no alarm; again then -> HIGH."""
    h = recovering(settle=100)
    h.nibp(700, 185, 100)
    assert [] == [r for r in h.requests() if r.t == 700]
    h.run(700, 821)
    assert [(820, "confirm BP 185/100 mmHg (nibp_high_confirmed, nibp_rise_from_baseline)")] == [
        (r.t, r.reason) for r in h.requests()[-1:]
    ]
    assert [] == h.alerts()
    h.nibp(880, 186, 104)
    alert = first(h, "nibp_high")
    assert (880, Priority.HIGH, "nibp_high_confirmed") == (alert.t, alert.priority, alert.rule)
    assert 2 == len(alert.evidence)


def test_nibp_high_not_confirmed_outside_the_window() -> None:
    """A second high reading more than 5 min after the first starts a new confirmation."""
    h = recovering(settle=100)
    h.nibp(700, 185, 100)
    h.run(700, 1010)
    h.nibp(1010, 185, 100)
    assert [] == h.alerts()
    h.run(1010, 1200)
    assert [820, 1130] == [r.t for r in h.requests() if r.reason.startswith("confirm")]


def test_nibp_high_not_confirmed_by_a_normal_reading() -> None:
    h = recovering(settle=100)
    h.nibp(700, 185, 100)
    h.run(700, 800)
    h.nibp(800, 130, 80)
    h.run(800, 900)
    h.nibp(900, 185, 100)
    assert [] == h.alerts()


def test_nibp_high_single_reading_200_120() -> None:
    """One reading >= 200 systolic (or >= 120 diastolic) is HIGH at once."""
    h = recovering(settle=100)
    h.nibp(700, 150, 121)
    alert = first(h, "nibp_high")
    assert (700, Priority.HIGH, "nibp_high_single", 121) == (alert.t, alert.priority, alert.rule, alert.value)


def test_nibp_high_awareness_in_infusion_only() -> None:
    """One reading >= 165/100: LOW during the infusion, nothing in recovery."""
    h = infusing()
    h.nibp(T + 60, 168, 90)
    alert = first(h, "nibp_high")
    assert (T + 60, Priority.LOW) == (alert.t, alert.priority)
    h2 = recovering(settle=100)
    h2.nibp(700, 168, 90)
    assert [] == h2.alerts()


def test_nibp_awareness_rises_to_high_when_confirmed() -> None:
    """Infusion: 185/105 -> LOW at once; confirmed -> the same occurrence re-notifies at HIGH."""
    h = infusing()
    h.nibp(T + 60, 185, 105)
    h.run(T + 60, T + 180)
    h.nibp(T + 180, 184, 104)
    alerts = h.alerts("nibp_high")
    assert [(AlertState.RAISED, Priority.LOW), (AlertState.RENOTIFIED, Priority.HIGH)] == [
        (a.state, a.priority) for a in alerts
    ]
    assert alerts[0].alert_id == alerts[1].alert_id


def test_nibp_rise_from_baseline_confirmed() -> None:
    """BL 120/80: +42 systolic twice -> MEDIUM; once -> nothing."""
    h = recovering(settle=100)
    h.nibp(700, 162, 85)
    assert [] == h.alerts()
    h.run(700, 830)
    h.nibp(830, 161, 84)
    alert = first(h, "nibp_rise_from_baseline")
    assert (830, Priority.MEDIUM) == (alert.t, alert.priority)


@pytest.mark.parametrize(("systolic", "priority"), [(85, Priority.MEDIUM), (75, Priority.HIGH)])
def test_nibp_low_confirmed(systolic: float, priority: Priority) -> None:
    h = recovering(settle=100)
    h.nibp(700, systolic, 50)
    assert [] == h.alerts()
    h.run(700, 830)
    h.nibp(830, systolic, 50)
    alert = first(h, "nibp_low")
    assert (830, priority) == (alert.t, alert.priority)


def test_cuff_error_reading_is_not_a_blood_pressure() -> None:
    """A reading while cuff_error is on is invalid: never an NIBP alarm."""
    h = recovering()
    h.status("cuff_error", True, 700, device="nibp")
    h.nibp(700, 230, 130)
    h.nibp(760, 230, 130)
    assert [] == h.alerts("nibp_high")


def test_nibp_severe_in_baseline() -> None:
    """Baseline: confirmed 185/112 -> HIGH nibp_high."""
    h = EngineHarness()
    h.nibp(0, 185, 112)
    h.run(0, 130)
    h.nibp(130, 183, 111)
    alert = first(h, "nibp_high")
    assert (130, Priority.HIGH, "baseline") == (alert.t, alert.priority, alert.phase)


# ---------------------------------------------------------------- baseline gates
@pytest.mark.parametrize(("older", "expected"), [(False, 1), (True, 0)])
def test_start_gate_bp(older: bool, expected: int) -> None:
    """Mean of 2 baseline readings 146/88 > 140: MEDIUM review; not for >= 65 (limit 150)."""
    h = EngineHarness(older_adult=older)
    h.nibp(0, 148, 88)
    h.run(0, 150)
    h.nibp(150, 144, 88)
    assert [150.0] * expected == [a.t for a in h.raised("start_gate_bp")]
    if expected:
        assert Priority.MEDIUM == h.raised("start_gate_bp")[0].priority


@pytest.mark.parametrize(
    ("spo2", "pulse", "condition"),
    [(92.0, 72.0, "start_gate_spo2"), (97.0, 125.0, "start_gate_pulse"), (97.0, 45.0, "start_gate_pulse")],
)
def test_start_gates_from_baseline_oximetry(spo2: float, pulse: float, condition: str) -> None:
    """BL SpO2 <= 92 or BL pulse > 120 / < 50: MEDIUM once 3 min of valid signal gives a baseline."""
    h = EngineHarness()
    h.run(0, 250, spo2=spo2, pulse=pulse)
    alert = first(h, condition)
    assert (180.0, Priority.MEDIUM, Category.ADVISORY) == (alert.t, alert.priority, alert.category)


def test_start_gate_clears_when_the_infusion_starts() -> None:
    h = EngineHarness()
    h.run(0, 200, spo2=92.0)
    h.phase("infusion", 200)
    assert 1 == len(h.alerts("start_gate_spo2", AlertState.CLEARED))


def test_baseline_incomplete_at_infusion_start() -> None:
    """Infusion after 100 s with one NIBP reading: LOW technical at the start; complete: nothing."""
    h = EngineHarness()
    h.nibp(0, 120, 80)
    h.run(0, 100)
    h.phase("infusion", 100)
    alert = first(h, "baseline_incomplete")
    assert (100, Priority.LOW, Category.TECHNICAL) == (alert.t, alert.priority, alert.category)
    assert "1 of 2 NIBP readings" in alert.message
    assert [] == infusing().alerts()


# ---------------------------------------------------------------- technical
def test_nibp_overdue_in_infusion() -> None:
    """Last reading at 150 s (baseline); infusion from 300 s: overdue 8 min after the infusion start."""
    h = infusing()
    h.run(T, T + 500)
    alert = first(h, "nibp_overdue")
    assert (T + 481, Priority.MEDIUM, Category.TECHNICAL) == (alert.t, alert.priority, alert.category)
    h.nibp(T + 500, 120, 80)
    assert 1 == len(h.alerts("nibp_overdue", AlertState.CLEARED))


def test_nibp_due_window_35_to_40_min() -> None:
    """Interval 15 min: readings at 0, 14 and 28 min miss 35-40 min: a request at 35, and at 40
    nibp_peak_missed (MEDIUM technical) with a second request."""
    h = EngineHarness(overrides={"rules": {"nibp_overdue_infusion": {"interval_s": 900}}})
    h.standard_baseline(until=T)
    for minute in (0, 14, 28):
        h.nibp(T + minute * 60, 120, 80)
        h.run(T + minute * 60, T + minute * 60 + 840)
    h.run(T + 42 * 60, T + 44 * 60)
    assert ["scheduled reading due at 35-40 min of the infusion (expected BP peak)"] == [
        r.reason for r in h.requests() if r.t == T + 35 * 60
    ]
    alert = first(h, "nibp_peak_missed")
    assert (T + 40 * 60, Priority.MEDIUM, "technical") == (alert.t, alert.priority, alert.category.value)
    assert ["peak reading missed (nibp_peak_missed)"] == [
        r.reason for r in h.requests() if r.t == T + 40 * 60
    ]


def test_nibp_overdue_in_recovery_after_15_plus_3_min() -> None:
    h = recovering(600)
    h.nibp(600, 120, 80)
    h.run(600, 600 + 1200)
    assert 600 + 1081 == first(h, "nibp_overdue").t


def test_signal_lost_after_30_s() -> None:
    """sensor_off for 20 s: nothing; for 40 s: MEDIUM technical after 30 s (strictly more)."""
    h = infusing()
    h.status("sensor_off", True, T + 10)
    h.run(T + 10, T + 30)
    h.status("sensor_off", False, T + 30)
    h.run(T + 30, T + 60)
    assert [] == h.alerts()
    h.status("sensor_off", True, T + 60)
    h.run(T + 60, T + 100)
    alert = first(h, "signal_lost")
    assert (T + 91, Priority.MEDIUM, Category.TECHNICAL) == (alert.t, alert.priority, alert.category)
    assert "sensor_off" in alert.message


def test_link_lost_by_silence_and_by_port() -> None:
    """Oximeter silent > 10 s: HIGH technical; port vanished: HIGH at once; NIBP silence: nothing."""
    h = infusing()
    h.engine.bytes_seen("nibp", T)
    for t in range(int(T), int(T) + 15):
        h.tick(float(t))
    alert = first(h, "link_lost")
    assert (T + 10, Priority.HIGH, Category.TECHNICAL, "oximeter") == (
        alert.t, alert.priority, alert.category, alert.device,
    )  # fmt: skip
    assert "No data from oximeter for 11 s" == alert.message
    h2 = infusing()
    h2.outputs += h2.engine.link("nibp", False, T + 5)
    assert [("nibp", T + 5)] == [(a.device, a.t) for a in h2.raised("link_lost")]


def test_bp_recovery_slow_low_then_medium() -> None:
    """BL 120/80; 150/85 (> +20 %) still at 60 min: LOW; at 90 min: the same alarm at MEDIUM."""
    h = recovering(600)
    for k in range(10):
        h.nibp(600 + 600 * k, 150, 85)
        h.run(600 + 600 * k, 600 + 600 * (k + 1))
    alerts = h.alerts("bp_recovery_slow")
    assert [
        (600 + 3600, Priority.LOW, AlertState.RAISED),
        (600 + 5400, Priority.MEDIUM, AlertState.RENOTIFIED),
    ] == [(a.t, a.priority, a.state) for a in alerts[:2]]


def test_infusion_overrun_after_40_min() -> None:
    h = infusing()
    h.nibp(T, 120, 80)
    for k in range(9):
        h.nibp(T + 300 * k, 120, 80)
        h.run(T + 300 * k, T + 300 * (k + 1))
    alert = first(h, "infusion_overrun")
    assert (T + 2401, Priority.LOW, Category.ADVISORY) == (alert.t, alert.priority, alert.category)


# ---------------------------------------------------------------- discharge
def test_discharge_ready_after_60_min_of_good_recovery() -> None:
    """Good readings every 10 min from pump stop: discharge_ready turns on at 60 min, an INFO status."""
    h = recovering(600)
    for k in range(8):
        h.nibp(600 + 600 * k, 125, 82)
        h.run(600 + 600 * k, 600 + 600 * (k + 1))
    statuses = h.statuses()
    assert [(600 + 3600, True)] == [(s.t, s.active) for s in statuses]
    assert [] == h.alerts()


def test_discharge_not_ready_with_high_bp() -> None:
    h = recovering(600)
    for k in range(8):
        h.nibp(600 + 600 * k, 150, 85)
        h.run(600 + 600 * k, 600 + 600 * (k + 1))
    assert [] == h.statuses()


def test_undecodable_bytes_do_not_keep_a_link_alive() -> None:
    """A wrong-baud line: problems every second but no decoded data is link_lost after 10 s, as silence."""
    from vitalwatch.drivers.events import DecodeProblem

    h = infusing()
    for t in range(int(T), int(T) + 15):
        h.outputs += h.engine.observe("oximeter", DecodeProblem("resync", 1024), float(t))
        h.engine.bytes_seen("nibp", float(t))
        h.tick(float(t))
    alert = first(h, "link_lost")
    assert (T + 10, Priority.HIGH, "oximeter") == (alert.t, alert.priority, alert.device)


def test_driver_fault_status_is_a_high_technical_alarm_until_data_returns() -> None:
    """driver_fault on (the link caught a driver exception): HIGH at once, in baseline too; off: cleared."""
    h = EngineHarness()
    h.run(0.0, 10.0)
    h.status("driver_fault", True, 10.0)
    alert = first(h, "driver_fault")
    assert (10.0, Priority.HIGH, Category.TECHNICAL, "oximeter") == (
        alert.t, alert.priority, alert.category, alert.device,
    )  # fmt: skip
    assert "Driver fault on oximeter: restarted" == alert.message
    h.run(10.0, 20.0)
    assert [] == h.alerts("driver_fault", AlertState.CLEARED)
    h.status("driver_fault", False, 20.0)
    cleared = h.alerts("driver_fault", AlertState.CLEARED)
    assert [(20.0, alert.alert_id)] == [(a.t, a.alert_id) for a in cleared]
