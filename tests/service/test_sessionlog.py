"""The session record: what SessionLog writes to sessions.sqlite3 for a scripted session."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes.example_session import record_example_session
from vitalwatch.drivers.events import Observation
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, PhaseChanged, Priority
from vitalwatch.record.sessionlog import SessionDb, SessionLog

START = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)


def wall(offset: float = 1000.0):  # type: ignore[no-untyped-def]
    return lambda t: START + timedelta(seconds=t - offset)


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SessionDb(tmp_path / "sessions.sqlite3")
    yield store
    store.close()


def rows(db: SessionDb, sql: str) -> list[sqlite3.Row]:
    db.flush()
    conn = db.read()
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


def spo2(log: SessionLog, t: float, value: float | None, valid: bool = True) -> None:
    log.observation("ox", Observation("spo2", value, "%"), t, valid)


def test_example_session_is_recorded_as_minutes_readings_and_events(db: SessionDb) -> None:
    """100 min at 1 Hz: 100 minute rows, 14 NIBP readings, phase/alert/status events, one session."""
    log = SessionLog(db, "chair-2", wall=wall())
    record_example_session(log)
    (session,) = rows(db, "SELECT * FROM sessions")
    assert "chair-2-20250304-1" == session["session_id"]
    assert (6000.0, "ended") == (session["ended_s"], session["phase"])
    assert (0.5, 40.0) == (session["dose_mg_per_kg"], session["planned_minutes"])
    # Baseline: median of 128/80, 126/78, 130/82 and of the baseline-phase samples.
    assert (128.0, 80.0, 97.0, 73.0) == tuple(
        session[k] for k in ("bl_systolic", "bl_diastolic", "bl_spo2", "bl_pulse")
    )
    minutes = rows(db, "SELECT t_s, span_s, phase FROM minutes ORDER BY t_s")
    assert 100 == len(minutes)  # phase changes fall on minute boundaries in the script
    assert all(60.0 == m["span_s"] for m in minutes)
    assert ["baseline"] * 15 + ["infusion"] * 40 + ["recovery"] * 45 == [m["phase"] for m in minutes]
    nibp = rows(db, "SELECT t_s, systolic, diastolic, mean, valid FROM nibp ORDER BY t_s")
    assert 14 == len(nibp)
    assert (2400.0, 182.0, 112.0, 135.0, 1) == tuple(nibp[7])
    kinds = [r["kind"] for r in rows(db, "SELECT kind FROM events ORDER BY n")]
    assert 4 == kinds.count("phase")  # baseline (open), infusion, recovery, ended
    assert 8 == kinds.count("alert")
    assert 1 == kinds.count("status")


def test_minute_summary_counts_valid_and_invalid_values_and_time_below_90(db: SessionDb) -> None:
    """min/max/mean/last of valid values; invalid ones only counted; below_90 from sample durations."""
    log = SessionLog(db, "b", wall=wall(0.0))
    for t in range(60):
        value = 88.0 if 10 <= t < 20 else 96.0
        spo2(log, float(t), None if 40 <= t < 45 else value, valid=not 40 <= t < 45)
    log.tick(60.0)
    (row,) = rows(db, "SELECT stats FROM minutes")
    st = json.loads(row["stats"])["spo2"]
    assert (55, 5, 88.0, 96.0, 96.0) == (st["n"], st["bad"], st["min"], st["max"], st["last"])
    assert 10.0 == st["below_90"]
    assert round((10 * 88 + 45 * 96) / 55, 2) == st["mean"]


def test_a_gap_in_the_signal_is_not_time_below_a_limit(db: SessionDb) -> None:
    """A low sample counts for at most HOLD_S (5 s) when nothing follows it."""
    log = SessionLog(db, "b", wall=wall(0.0))
    spo2(log, 0.0, 85.0)
    spo2(log, 30.0, 97.0)
    log.tick(61.0)
    (row,) = rows(db, "SELECT stats FROM minutes")
    assert 5.0 == json.loads(row["stats"])["spo2"]["below_90"]


def test_after_ended_nothing_is_recorded_until_a_phase_and_then_a_new_session_opens(db: SessionDb) -> None:
    """The leaving patient's readings are not a session; the next phase command opens '-2'."""
    log = SessionLog(db, "b", wall=wall(0.0))
    spo2(log, 0.0, 97.0)
    log.output(PhaseChanged(t=100.0, bed="b", phase="ended", previous="baseline"))
    for t in range(101, 400):
        spo2(log, float(t), 97.0)
    assert log.session_id is None
    log.output(PhaseChanged(t=400.0, bed="b", phase="baseline", previous="ended"))
    assert "b-20250304-2" == log.session_id
    log.close(401.0)
    sessions = rows(db, "SELECT session_id, ended_s FROM sessions ORDER BY started_utc")
    assert [("b-20250304-1", 100.0), ("b-20250304-2", None)] == [tuple(s) for s in sessions]
    assert 1 == len(rows(db, "SELECT * FROM minutes WHERE session_id='b-20250304-1'"))


def test_a_restarted_daemon_continues_the_open_session(db: SessionDb) -> None:
    """Same id, times continue on the session clock although the new process's monotonic clock differs."""
    first = SessionLog(db, "b", wall=wall(0.0))
    spo2(first, 0.0, 97.0)
    first.output(PhaseChanged(t=300.0, bed="b", phase="infusion", previous="baseline"))
    first.phase_fields({"dose_mg_per_kg": 0.75})
    first.close(320.0)
    db.flush()
    # New process: monotonic 50 000 is wall 09:10 (600 s into the session).
    second = SessionLog(db, "b", wall=wall(50_000.0 - 600.0))
    second.output(PhaseChanged(t=50_000.0, bed="b", phase="infusion", previous="baseline"))  # re-entered
    spo2(second, 50_001.0, 96.0)
    second.output(PhaseChanged(t=50_100.0, bed="b", phase="recovery", previous="infusion"))
    assert "b-20250304-1" == second.session_id
    second.close(50_101.0)
    (session,) = rows(db, "SELECT * FROM sessions")
    assert (0.75, "recovery") == (session["dose_mg_per_kg"], session["phase"])
    phases = rows(db, "SELECT t_s, data FROM events WHERE kind='phase' ORDER BY n")
    assert [0.0, 300.0, 700.0] == [p["t_s"] for p in phases]


def test_who_acknowledged_is_never_stored(db: SessionDb, tmp_path: Path) -> None:
    """Staff names from ack commands and alarm messages stay out of the record."""
    log = SessionLog(db, "b", wall=wall(0.0))
    spo2(log, 0.0, 97.0)
    tr = AlertTransition(
        t=5.0, bed="b", alert_id="b-000001", seq=1, state=AlertState.ACKNOWLEDGED, priority=Priority.HIGH,
        category=Category.PHYSIOLOGICAL, condition="spo2_low", parameter="spo2", value=86.0, unit="%",
        limit=90.0, phase="baseline", phase_elapsed_s=5.0, onset_t=1.0, message="SpO2 86 % Kari Nordmann",
        acknowledged_by="Kari Nordmann", acknowledged_t=5.0,
    )  # fmt: skip
    log.output(tr)
    log.close(6.0)
    db.flush()
    db.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("sessions.sqlite3*"))
    assert b"Nordmann" not in blob
    assert b"acknowledged" in blob


def test_a_failing_write_is_counted_not_raised(db: SessionDb) -> None:
    """The record is not the alarm path: a bad batch is logged and the writer keeps going."""
    db.submit([("INSERT INTO nosuchtable VALUES (1)", ())])
    db.submit([("INSERT INTO nibp VALUES ('s', 1, 120, 80, 93, 1)", ())])
    assert 1 == len(rows(db, "SELECT * FROM nibp"))
    assert db.failures >= 1


def test_real_engine_outputs_and_baseline_are_recorded(db: SessionDb) -> None:
    """Wired as the daemon wires it: engine outputs as observer, the engine's frozen baseline."""
    from vitalwatch.engine.session import BedEngine
    from vitalwatch.engine.table import default_table

    engine = BedEngine(default_table(), bed="b", devices={"ox": "spo2", "cuff": "nibp"})
    log = SessionLog(db, "b", wall=wall(0.0), baseline=lambda: engine.baseline)

    def feed(device: str, obs: Observation, t: float) -> None:
        log.observation(device, obs, t, obs.value is not None)
        for out in engine.observe(device, obs, t):
            log.output(out)

    for t in range(0, 1500):
        if t == 600:
            for out in engine.set_phase("infusion", float(t)):
                log.output(out)
        value = 84.0 if 900 <= t < 960 else 96.0
        feed("ox", Observation("spo2", value, "%"), float(t))
        feed("ox", Observation("pulse_rate", 70.0, "/min"), float(t))
        if t in (60, 240):
            feed("cuff", Observation("nibp_systolic", 120.0 + t // 60, "mm[Hg]"), float(t))
            feed("cuff", Observation("nibp_diastolic", 80.0, "mm[Hg]"), float(t))
    log.close(1500.0)
    (session,) = rows(db, "SELECT * FROM sessions")
    assert (122.5, 96.0, 70.0) == (
        session["bl_systolic"],
        session["bl_spo2"],
        session["bl_pulse"],
    )
    alerts = [
        json.loads(r["data"]) for r in rows(db, "SELECT data FROM events WHERE kind='alert' ORDER BY n")
    ]
    raised = [a for a in alerts if a["state"] == "raised" and a["condition"] == "spo2_low"]
    assert 1 == len(raised)
    assert "high" == raised[0]["priority"]
    assert 900.0 <= raised[0]["onset_s"] < 960.0


def test_a_reading_still_being_grouped_at_stop_is_written(db: SessionDb) -> None:
    """The NIBP kinds of a reading arrive within NIBP_GROUP_S; a stop in between must not lose it."""
    log = SessionLog(db, "b", wall=wall(0.0))
    spo2(log, 0.0, 97.0)
    log.observation("cuff", Observation("nibp_systolic", 182.0, "mm[Hg]"), 10.0, True)
    log.observation("cuff", Observation("nibp_diastolic", 113.0, "mm[Hg]"), 10.1, True)
    log.close(10.5)
    (reading,) = rows(db, "SELECT * FROM nibp")
    assert (182.0, 113.0) == (reading["systolic"], reading["diastolic"])
