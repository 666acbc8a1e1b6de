"""The clinical safety fixes shown in virtual time: one replay per defect, through `vitalwatch replay`
(CSV rows -> the daemon's bed session and engine), or, for bytes, through the same bed session with
real drivers (:class:`vitalwatch.continuity.replay.ReplayBed`).

1. a safety net in every phase, baseline included      5. texts that tell the truth
2. baseline_overrun (the forgotten infusion start)      6. the table as written (ack silence, NIBP
3. the peak reading (nibp_peak_missed)                     confirmation 2-5 min, age band)
4. infusion pause and resume                            7. garbled lines (device_garbled)
                                                        8. the record holds the clears at session end
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from vitalwatch.cli import main
from vitalwatch.continuity.replay import ReplayBed, run_scenario
from vitalwatch.engine.outputs import AlertState, AlertTransition, PhaseChanged
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import default_table
from vitalwatch.simulators.scenarios import get_scenario

HEADER = "t,event,name,value\n"


def oxi(start: int, end: int, spo2: float | str = 97, pulse: float | str = 72) -> list[str]:
    return [f"{t},obs,spo2,{spo2}\n{t},obs,pulse_rate,{pulse}\n" for t in range(start, end)]


def bp(t: float, systolic: float, diastolic: float) -> str:
    mean = round((systolic + 2 * diastolic) / 3)
    return f"{t},obs,nibp_systolic,{systolic}\n{t},obs,nibp_diastolic,{diastolic}\n{t},obs,nibp_mean,{mean}\n"


def csv(*parts: str | list[str]) -> str:
    """Rows in time order (stable), the header first."""
    rows = [
        row
        for part in parts
        for chunk in ([part] if isinstance(part, str) else part)
        for row in chunk.splitlines()
        if row
    ]
    rows.sort(key=lambda row: float(row.split(",")[0]))
    return HEADER + "\n".join(rows) + "\n"


def replay(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> list[dict[str, Any]]:
    path = tmp_path / "obs.csv"
    path.write_text(text)
    code = main(["replay", "--observations", str(path)])
    captured = capsys.readouterr()
    assert (0, "") == (code, captured.err)
    return [json.loads(line) for line in captured.out.splitlines()]


def alerts(lines: list[dict[str, Any]], condition: str | None = None) -> list[dict[str, Any]]:
    return [x for x in lines if x["type"] == "alert" and condition in (None, x["condition"])]


BASELINE = [bp(0, 120, 80), bp(150, 122, 78)]  # complete: 2 readings 150 s apart, 5 min of oximetry


def infused(*rows: str | list[str]) -> str:
    """A complete 5-min baseline, the infusion from t=300, then ``rows``."""
    return csv(BASELINE, oxi(0, 300), "300,phase,infusion,\n", *rows)


# ------------------------------------------------------------------ 1. safety net in every phase
def test_baseline_spo2_80_and_pulse_35_raise_high_alarms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The nurse never started the infusion: SpO2 80 % and pulse 35 for 200 s in baseline are HIGH."""
    lines = replay(tmp_path, capsys, csv(oxi(0, 60), oxi(60, 260, spo2=80, pulse=35)))
    raised = {
        (a["condition"], a["priority"], a["phase"], a["t"]) for a in alerts(lines) if a["state"] == "raised"
    }
    assert ("spo2_low", "high", "baseline", 65.0) in raised  # < 85 % for 5 s (rapid desaturation)
    assert ("pulse_low", "high", "baseline", 75.0) in raised  # < 40 for 15 s


def test_baseline_pulse_above_140_and_one_bp_200_120_are_high(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = replay(tmp_path, capsys, csv(oxi(0, 100, pulse=150), bp(50, 205, 100)))
    raised = {(a["condition"], a["priority"], a["t"]) for a in alerts(lines) if a["state"] == "raised"}
    assert ("pulse_high", "high", 30.0) in raised
    assert ("nibp_high", "high", 50.0) in raised


def test_baseline_link_and_signal_lost_only_after_valid_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A monitor not yet on the patient is no alarm; once it gave a valid value, losing it is."""
    before = replay(tmp_path, capsys, csv("0,link,oximeter,down\n", "100,link,oximeter,up\n"))
    assert [] == alerts(before)
    text = csv(
        oxi(0, 30),
        [f"{t},obs,spo2,\n" for t in range(30, 80)],
        "80,link,oximeter,down\n",
        "95,obs,pulse_rate,70\n",
    )
    lines = replay(tmp_path, capsys, text)
    raised = {
        (a["condition"], a["priority"], a["category"], a["phase"])
        for a in alerts(lines)
        if a["state"] == "raised"
    }
    assert ("signal_lost", "medium", "technical", "baseline") in raised
    assert ("link_lost", "high", "technical", "baseline") in raised


# ------------------------------------------------------------------ 2. baseline_overrun
def test_baseline_overrun_after_20_min_clears_at_infusion_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = replay(tmp_path, capsys, csv(BASELINE, oxi(0, 1300), "1300,phase,infusion,\n", oxi(1300, 1310)))
    overrun = alerts(lines, "baseline_overrun")
    assert [("raised", 1200.0, "low", "technical"), ("cleared", 1300.0, "low", "technical")] == [
        (a["state"], a["t"], a["priority"], a["category"]) for a in overrun
    ]
    assert "Still in baseline after 20 min: has the infusion started?" == overrun[0]["message"]


def test_no_baseline_overrun_without_valid_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = replay(tmp_path, capsys, csv(oxi(0, 30), "1500,phase,infusion,\n"))
    assert [] == alerts(lines, "baseline_overrun")


# ------------------------------------------------------------------ 3. the peak reading
T0 = 300  # infusion start in these replays


def infusion(readings_min: list[float], end_s: float, extra: list[str] | None = None) -> str:
    return csv(
        BASELINE,
        oxi(0, int(end_s)),
        f"{T0},phase,infusion,\n",
        [bp(T0 + m * 60, 125, 82) for m in readings_min],
        extra or [],
    )


def test_no_reading_between_35_and_40_min_raises_nibp_peak_missed_at_40(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = replay(tmp_path, capsys, infusion([0, 5, 10, 15, 20, 25, 30, 41], T0 + 2500))
    missed = alerts(lines, "nibp_peak_missed")
    assert [
        ("raised", T0 + 2400.0, "medium", "technical"),
        ("cleared", T0 + 41 * 60.0, "medium", "technical"),
    ] == [(a["state"], a["t"], a["priority"], a["category"]) for a in missed]
    requests = [
        x["reason"] for x in lines if x["type"] == "nibp_request" and x["t"] in (T0 + 2100.0, T0 + 2400.0)
    ]
    assert [
        "scheduled reading due at 35-40 min of the infusion (expected BP peak)",
        "peak reading missed (nibp_peak_missed)",
    ] == requests


def test_a_reading_in_the_window_means_no_alarm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = replay(tmp_path, capsys, infusion([0, 5, 10, 15, 20, 25, 30, 36], T0 + 2500))
    assert [] == alerts(lines, "nibp_peak_missed")


def test_pump_stop_after_35_min_without_the_reading_raises_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = T0 + 37 * 60
    lines = replay(
        tmp_path, capsys, infusion([0, 5, 10, 15, 20, 25, 30], stop + 30, [f"{stop},phase,recovery,\n"])
    )
    (missed,) = alerts(lines, "nibp_peak_missed")
    assert (stop * 1.0, "raised", "recovery") == (missed["t"], missed["state"], missed["phase"])


def test_pump_stop_before_35_min_is_no_peak_alarm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stop = T0 + 33 * 60
    lines = replay(
        tmp_path, capsys, infusion([0, 5, 10, 15, 20, 25, 30], stop + 300, [f"{stop},phase,recovery,\n"])
    )
    assert [] == alerts(lines, "nibp_peak_missed")


# ------------------------------------------------------------------ 4. pause and resume
def test_a_paused_infusion_stops_its_clock_not_its_alarms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Paused 10 min at minute 10: the overrun comes at 50 min, alarms keep working in the pause."""
    pause, resume = T0 + 600, T0 + 1200
    readings = [
        0,
        5,
        10,
        15,
        20,
        25,
        30,
        35,
        40,
        45,
    ]  # on the infusion clock: wall minute + 10 after the pause
    wall = [m if m < 10 else m + 10 for m in readings]
    text = csv(
        BASELINE,
        oxi(0, pause + 100),
        oxi(pause + 100, pause + 130, spo2=86),
        oxi(pause + 130, T0 + 3100),
        f"{T0},phase,infusion,\n{pause},phase,pause,\n{resume},phase,resume,\n",
        [bp(T0 + m * 60, 125, 82) for m in wall],
    )
    lines = replay(tmp_path, capsys, text)
    statuses = [(x["t"], x["code"], x["active"]) for x in lines if x["type"] == "status"]
    assert [(pause * 1.0, "infusion_paused", True), (resume * 1.0, "infusion_paused", False)] == statuses
    spo2 = alerts(lines, "spo2_low")[0]
    assert ("raised", "infusion", "high") == (spo2["state"], spo2["phase"], spo2["priority"])
    overrun = alerts(lines, "infusion_overrun")[0]
    assert T0 + 2400 + 600 + 1 == overrun["t"]  # 40 min of infusion clock + 10 min paused
    assert [] == alerts(lines, "nibp_overdue")  # the 10-min gap in readings was the pause
    assert [] == alerts(lines, "nibp_peak_missed")  # the reading at clock minute 35 is in the window


def test_pause_outside_the_infusion_is_a_bad_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "obs.csv"
    path.write_text(HEADER + "0,phase,pause,\n")
    assert 2 == main(["replay", "--observations", str(path)])
    assert "line 2: pause only during the infusion" in capsys.readouterr().err


# ------------------------------------------------------------------ 5. texts that tell the truth
def test_a_latched_high_says_it_ended_and_the_clear_keeps_its_priority(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = infused(
        oxi(300, 340, spo2=84),
        oxi(340, 460),
        "460,ack,bed-1-000001,RN Kim\n",
        oxi(460, 470),
    )
    lines = replay(tmp_path, capsys, text)
    spo2 = alerts(lines, "spo2_low")
    ended = [a for a in spo2 if a["state"] == "renotified" and a["t"] > 345]
    assert ended and all("latched until acknowledged" in a["message"] for a in ended)
    assert (
        "SpO2 low ended 1 min 55 s ago, lowest 84 %, latched until acknowledged (now SpO2 97 %)"
        == ended[-1]["message"]
    )
    cleared = spo2[-1]
    assert ("cleared", "high") == (cleared["state"], cleared["priority"])
    assert "SpO2 low ended, lowest 84 %; now SpO2 97 %" == cleared["message"]
    assert 97 == cleared["value"]


def test_a_medium_tier_fall_still_clears_at_the_highest_priority_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SpO2 88 % (HIGH), then 91 % (MEDIUM), acknowledged, then 97 %: the clear says HIGH."""
    text = infused(
        oxi(300, 320, spo2=88),
        oxi(320, 400, spo2=91),
        "400,ack,*,RN Kim\n",
        oxi(400, 420),
    )
    cleared = [a for a in alerts(replay(tmp_path, capsys, text), "spo2_low") if a["state"] == "cleared"]
    assert [("high", 400.0)] == [(a["priority"], a["t"]) for a in cleared]


def test_baseline_incomplete_names_the_spacing_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """2 of 2 NIBP readings, 36 s apart, and 200 of 180 s oximetry: only the spacing is missing."""
    lines = replay(
        tmp_path, capsys, csv(bp(0, 120, 80), bp(36, 121, 79), oxi(0, 200), "200,phase,infusion,\n")
    )
    (raised,) = [a for a in alerts(lines, "baseline_incomplete") if a["state"] == "raised"]
    assert (
        "Infusion started with an incomplete baseline: 2 NIBP readings but only 36 s apart "
        "(need 2 readings >= 2 min apart)"
    ) == raised["message"]


def test_a_complete_baseline_is_not_incomplete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = replay(tmp_path, capsys, csv(BASELINE, oxi(0, 200), "200,phase,infusion,\n", oxi(200, 210)))
    assert [] == alerts(lines, "baseline_incomplete")


@pytest.mark.parametrize("scenario", ["normal"])
def test_scenario_with_a_complete_baseline_raises_no_baseline_incomplete(scenario: str) -> None:
    """`vitalwatch replay --scenario normal` takes a complete baseline (the demo's desaturation
    scenario starts in the infusion, so its baseline is truly missing and says so)."""
    outs = list(run_scenario(get_scenario(scenario, 0), ("masimo", "suntech"), table=default_table()))
    assert [] == [o for o in outs if isinstance(o, AlertTransition) and o.condition == "baseline_incomplete"]
    # The demo's bed has an oximeter only: a baseline without a cuff is not "incomplete".
    outs = list(run_scenario(get_scenario(scenario, 0), ("masimo",), table=default_table()))
    assert [] == [o for o in outs if isinstance(o, AlertTransition) and o.condition == "baseline_incomplete"]


# ------------------------------------------------------------------ 6. the table as written
def test_an_acknowledged_medium_renotifies_2_min_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = infused(
        oxi(300, 600, spo2=91),
        "340,ack,*,RN Kim\n",
    )
    medium = alerts(replay(tmp_path, capsys, text), "spo2_low")
    assert [("raised", 330.0), ("acknowledged", 340.0), ("renotified", 460.0)] == [
        (a["state"], a["t"]) for a in medium[:3]
    ]


def test_nibp_repeat_36_s_later_does_not_confirm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """185/100, then 186/104 36 s later: no alarm; the confirmation is requested 2 min after the first."""
    text = csv(BASELINE, oxi(0, 1000), "300,phase,recovery,\n", bp(600, 185, 100), bp(636, 186, 104))
    lines = replay(tmp_path, capsys, text)
    assert [] == alerts(lines, "nibp_high")
    confirm = [x["t"] for x in lines if x["type"] == "nibp_request" and x["reason"].startswith("confirm")]
    assert [720.0] == confirm
    confirmed = replay(
        tmp_path,
        capsys,
        csv(
            BASELINE,
            oxi(0, 1000),
            "300,phase,recovery,\n",
            bp(600, 185, 100),
            bp(636, 186, 104),
            bp(780, 184, 101),
        ),
    )
    assert [("raised", 780.0, "high")] == [
        (a["state"], a["t"], a["priority"]) for a in alerts(confirmed, "nibp_high")[:1]
    ]


def test_older_adult_age_band_moves_the_start_gate() -> None:
    """Mean baseline 145/85: the start gate for an adult, not for an older adult (SBP > 150)."""

    def gate(engine: BedEngine, band: str | None) -> list[str]:
        out = []
        if band is not None:
            out += engine.set_age_band(band, 0.0)
        out += engine.observe("nibp", _bp_event("nibp_systolic", 145), 1.0)
        out += engine.observe("nibp", _bp_event("nibp_diastolic", 85), 1.0)
        out += engine.observe("nibp", _bp_event("nibp_systolic", 145), 200.0)
        out += engine.observe("nibp", _bp_event("nibp_diastolic", 85), 200.0)
        out += engine.tick(201.0)
        return [o.condition for o in out if isinstance(o, AlertTransition)]

    devices = {"oximeter": "spo2", "nibp": "nibp"}
    assert ["start_gate_bp"] == gate(BedEngine(default_table(), "b", devices), None)
    assert [] == gate(BedEngine(default_table(), "b", devices), "older_adult")
    assert [] == gate(BedEngine(default_table(), "b", devices, older_adult=True), None)
    with pytest.raises(ValueError, match="unknown age band"):
        BedEngine(default_table(), "b", devices).set_age_band("1950-01-01", 0.0)


def _bp_event(kind: str, value: float) -> Any:
    from vitalwatch.drivers.events import Observation

    return Observation(kind, value, "mm[Hg]")


# ------------------------------------------------------------------ 7. garbled lines
@pytest.mark.parametrize("driver", ["contec", "bci"])
def test_random_bytes_raise_device_garbled_and_no_valid_value(driver: str) -> None:
    """1000 B/s of random bytes (a wrong baud rate): HIGH device_garbled after 10 s, no valid
    observation, no physiological alarm, and no status flapping."""
    engine = BedEngine(default_table(), bed="bed-1", devices={"ox": "spo2"})
    bed = ReplayBed(engine, {"ox": (driver, "spo2", {})})
    valid: list[bool] = []
    bed.session.recorder = lambda device, obs, now, ok: valid.append(ok)
    rng = random.Random(driver)
    bed.links["ox"].open(0.0)
    for step in range(600):  # 60 s in 0.1 s steps
        t = bed.now = step / 10
        bed.links["ox"].feed(rng.randbytes(100), t)
        bed.session.tick(t)
    outs = bed.drain()
    transitions = [o for o in outs if isinstance(o, AlertTransition)]
    garbled = [o for o in transitions if o.condition == "device_garbled"]
    assert garbled and garbled[0].state is AlertState.RAISED
    assert ("high", "technical", "ox") == (
        garbled[0].priority.value,
        garbled[0].category.value,
        garbled[0].device,
    )
    assert 10.0 <= garbled[0].t <= 12.0
    assert "check baud rate and cable" in garbled[0].message
    assert not any(valid)
    assert [] == [o for o in transitions if o.category.value == "physiological"]
    signal = [o.state for o in transitions if o.condition == "signal_lost"]
    assert signal.count(AlertState.RAISED) <= 1 and AlertState.CLEARED not in signal


def test_device_garbled_clears_when_the_line_is_clean_again() -> None:
    engine = BedEngine(default_table(), bed="bed-1", devices={"ox": "spo2"})
    bed = ReplayBed(engine, {"ox": ("bci", "spo2", {})})
    from vitalwatch.drivers.bci import BciPacket, encode_packet

    good = encode_packet(BciPacket(signal_strength=8, pulse_rate=72, spo2=97)) * 10
    rng = random.Random(3)
    bed.links["ox"].open(0.0)
    for step in range(400):
        t = bed.now = step / 10
        bed.links["ox"].feed(rng.randbytes(100) if t < 20 else good, t)
        bed.session.tick(t)
    states = [
        o.state for o in bed.drain() if isinstance(o, AlertTransition) and o.condition == "device_garbled"
    ]
    assert [AlertState.RAISED, AlertState.CLEARED] == states


# ------------------------------------------------------------------ 8. the record at session end
def test_alarms_cleared_at_session_end_are_in_the_session_record(tmp_path: Path) -> None:
    from vitalwatch.record.sessionlog import SessionDb, SessionLog

    db = SessionDb(tmp_path / "sessions.sqlite3")
    start = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)
    log = SessionLog(db, "bed-1", wall=lambda t: start + timedelta(seconds=t))
    engine = BedEngine(default_table(), bed="bed-1", devices={"oximeter": "spo2", "nibp": "nibp"})
    bed = ReplayBed(engine, {"oximeter": ("", "spo2", {}), "nibp": ("", "nibp", {})})
    bed.session.observers = (*bed.session.observers, log.output)
    from vitalwatch.drivers.events import Observation

    for t in range(0, 400):
        if t == 300:
            bed.session.set_phase("infusion", float(t))
        bed.session.on_events("oximeter", [Observation("spo2", 84.0 if t >= 320 else 97.0, "%")], float(t))
    bed.session.set_phase("ended", 400.0)
    outs = bed.drain()
    ended = next(i for i, o in enumerate(outs) if isinstance(o, PhaseChanged) and o.phase == "ended")
    clears = [
        i for i, o in enumerate(outs) if isinstance(o, AlertTransition) and o.state is AlertState.CLEARED
    ]
    assert clears and all(i < ended for i in clears)  # the clears come before the session ends
    log.close(400.0)
    db.flush()
    conn = db.read()
    try:
        events = [
            json.loads(r[0]) for r in conn.execute("SELECT data FROM events WHERE kind='alert' ORDER BY n")
        ]
    finally:
        conn.close()
        db.close()
    cleared = [e for e in events if e["state"] == "cleared"]
    assert {"spo2_low"} <= {e["condition"] for e in cleared}
    assert all(e["priority"] == "high" for e in cleared if e["condition"] == "spo2_low")
