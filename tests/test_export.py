"""`vitalwatch export`: de-identified rows (JSONL and CSV) with the documented fields and values."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes.example_session import record_example_session
from vitalwatch.cli import export as export_cmd
from vitalwatch.drivers.events import Observation
from vitalwatch.engine.outputs import PhaseChanged
from vitalwatch.record.export import CSV_FIELDS
from vitalwatch.record.sessionlog import SessionDb, SessionLog

START = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "session-record.md"


def run_export(*argv: str) -> int:
    """The command as the CLI runs it (independent of whether cli.py lists it yet)."""
    parser = argparse.ArgumentParser(prog="vitalwatch")
    export_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["export", *argv])
    code: int = args.func(args)
    return code


@pytest.fixture
def record(tmp_path: Path) -> Path:
    """The example session on 2025-03-04, plus an older short one on 2025-02-01 (no infusion)."""
    path = tmp_path / "sessions.sqlite3"
    db = SessionDb(path)
    old = SessionLog(
        db, "chair-1", wall=lambda t: datetime(2025, 2, 1, 8, 0, tzinfo=UTC) + timedelta(seconds=t)
    )
    for t in range(300):
        old.observation("ox", Observation("spo2", 98.0, "%"), float(t), True)
    old.output(PhaseChanged(t=300.0, bed="chair-1", phase="ended", previous="baseline"))
    log = SessionLog(db, "chair-2", wall=lambda t: START + timedelta(seconds=t - 1000.0))
    record_example_session(log)
    db.close()
    return path


EXPECTED = {
    "schema": "vitalwatch-session-record/2",
    "complete": True,
    "infusion_started": True,
    "session_minutes": 100.0,
    "baseline_minutes": 15.0,
    "infusion_minutes": 40.0,
    "recovery_minutes": 45.0,
    "dose_mg_per_kg": 0.5,
    "planned_infusion_minutes": 40.0,
    "baseline_systolic": 128.0,
    "baseline_diastolic": 80.0,
    "baseline_spo2": 97.0,
    "baseline_pulse": 73.0,
    "max_systolic": 184.0,
    "max_systolic_at_min": 26.0,
    "max_diastolic": 112.0,
    "max_diastolic_at_min": 25.0,
    "min_spo2": 87.0,
    "min_spo2_at_min": 10.0,
    "max_pulse": 130.0,
    "nibp_readings": 14,
    "minutes_spo2_below_90": 1.0,
    "minutes_pulse_rate_above_120": 2.0,
    "minutes_sbp_180_or_more": 5.0,
    "minutes_dbp_110_or_more": 5.0,
    "alarms_total": 3,
    "alarms_high": 2,
    "alarms_medium": 1,
    "alarms_low": 0,
    "alarms_acknowledged": 2,
    "ack_response_median_s": 39.5,  # 20 s and 59 s
    "ack_response_max_s": 59.0,
    "alarms": {"spo2_low": {"high": 1}, "pulse_high": {"medium": 1}, "nibp_high": {"high": 1}},
    "discharge_ready_at_min": 80.0,
    "discharge_ready_after_recovery_min": 40.0,
    "infusion_override": True,
    "override_open_items": 1,
    "prompts_opened": 2,
    "prompts_done_by_nurse": 1,
    "nurse_events": {  # minutes from the infusion start (15 min); the note is not exported
        "dissociation": {"count": 2, "at_min": [20.0, 50.0], "max_score": 2},
        "nausea": {"count": 1, "at_min": [30.0]},
        "rescue_medication": {"count": 1, "at_min": [31.0]},
    },
}


def test_jsonl_rows_have_the_documented_values(record: Path, tmp_path: Path) -> None:
    """One row per session since the date; values as the script and docs/session-record.md say."""
    out = tmp_path / "x.jsonl"
    assert 0 == run_export("--since", "2025-03-01", "--out", str(out), "--db", str(record))
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert EXPECTED == {k: row[k] for k in EXPECTED}
    assert re.fullmatch(r"[0-9a-f]{32}", row["record_id"])


def test_since_selects_by_session_start(record: Path, tmp_path: Path) -> None:
    """Both sessions since February; the one without an infusion counts from its own start."""
    out = tmp_path / "x.jsonl"
    assert 0 == run_export("--since", "2025-02-01", "--out", str(out), "--db", str(record))
    first, second = [json.loads(line) for line in out.read_text().splitlines()]
    assert (False, True, 5.0, None) == (
        first["infusion_started"],
        first["complete"],
        first["session_minutes"],
        first["dose_mg_per_kg"],
    )
    assert 100.0 == second["session_minutes"]


def test_csv_has_the_fixed_header_and_flat_alarm_columns(record: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    assert 0 == run_export("--since", "2025-03-04T00:00", "--out", str(out), "--db", str(record))
    reader = csv.DictReader(io.StringIO(out.read_text()))
    assert list(CSV_FIELDS) == reader.fieldnames
    (row,) = list(reader)
    assert ("1", "1", "0", "1") == (
        row["alarms_spo2_low_high"],
        row["alarms_nibp_high_high"],
        row["alarms_nibp_high_medium"],
        row["alarms_pulse_high_medium"],
    )
    assert ("true", "128.0", "40.0") == (
        row["complete"],
        row["baseline_systolic"],
        row["discharge_ready_after_recovery_min"],
    )


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_no_identifier_location_or_date_in_the_export(record: Path, tmp_path: Path, fmt: str) -> None:
    """No session id, bed, alert id, date or time of day; with --include-bed only the bed appears."""
    out = tmp_path / f"x.{fmt}"
    assert 0 == run_export("--since", "2025-01-01", "--out", str(out), "--db", str(record))
    # The random record_id (32 hex digits) is the one id the export carries; it may happen to
    # start with "a1", the alert id below, so it is taken out before the search.
    text = re.sub(r"\b[0-9a-f]{32}\b", "<record_id>", out.read_text())
    for forbidden in (
        "chair",
        "2025",
        "20250304",
        "a1",
        "09:00",
        "bed",
        "blanket",
        "RN Kim",
        "ondansetron",
        "cuff swapped",
    ):
        assert re.search(rf"\b{forbidden}", text) is None, forbidden
    assert 0 == run_export("--since", "2025-01-01", "--out", str(out), "--db", str(record), "--include-bed")
    assert "chair-2" in out.read_text()


def test_every_field_is_documented(record: Path, tmp_path: Path) -> None:
    """docs/session-record.md names every JSONL key and every CSV column family."""
    doc = DOCS.read_text()
    for name in [
        *EXPECTED,
        "record_id",
        "bed",
        *(f for f in CSV_FIELDS if not f.startswith(("alarms_", "events_"))),
    ]:
        assert f"`{name}`" in doc, name
    assert "`alarms_<condition>_<priority>`" in doc
    assert "`events_<event>`" in doc


def test_bad_date_and_unreadable_db_exit_2(
    tmp_path: Path, record: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 2 == run_export("--since", "March", "--out", str(tmp_path / "x"), "--db", str(record))
    assert "--since" in capsys.readouterr().err
    assert 2 == run_export(
        "--since", "2025-01-01", "--out", str(tmp_path / "x"), "--db", str(tmp_path / "none")
    )
    assert "cannot read the session record" in capsys.readouterr().err


def test_no_sessions_gives_an_empty_jsonl_and_a_csv_header(record: Path, tmp_path: Path) -> None:
    assert 0 == run_export("--since", "2030-01-01", "--out", str(tmp_path / "x.jsonl"), "--db", str(record))
    assert "" == (tmp_path / "x.jsonl").read_text()
    assert 0 == run_export("--since", "2030-01-01", "--out", str(tmp_path / "x.csv"), "--db", str(record))
    assert ",".join(CSV_FIELDS) + "\n" == (tmp_path / "x.csv").read_text()
