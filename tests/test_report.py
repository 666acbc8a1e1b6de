"""`vitalwatch report`: a scripted session -> record -> PNG plot and HTML summary; CLI errors."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes.example_session import record_example_session
from vitalwatch.cli import main
from vitalwatch.record.sessionlog import SessionDb, SessionLog

START = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
SESSION = "chair-2-20250304-1"


@pytest.fixture
def record(tmp_path: Path) -> Path:
    """The example 100-minute session recorded in a fresh sessions.sqlite3."""
    path = tmp_path / "sessions.sqlite3"
    db = SessionDb(path)
    log = SessionLog(db, "chair-2", wall=lambda t: START + timedelta(seconds=t - 1000.0))
    record_example_session(log)
    db.close()
    return path


def test_report_writes_a_png_of_sensible_size(record: Path, tmp_path: Path) -> None:
    """A real PNG, 1100x900 px (11x9 in at 100 dpi), neither empty nor huge."""
    out = tmp_path / "out"
    assert 0 == main(["report", "--session", SESSION, "--out", str(out), "--db", str(record)])
    data = (out / f"{SESSION}.png").read_bytes()
    assert b"\x89PNG\r\n\x1a\n" == data[:8]
    assert b"IHDR" == data[12:16]
    assert (1100, 900) == struct.unpack(">II", data[16:24])
    assert 30_000 < len(data) < 1_000_000


def test_html_summary_has_baseline_peaks_alarms_and_discharge_time(record: Path, tmp_path: Path) -> None:
    """Numbers a reader of the script expects, times as min:s from the infusion start."""
    out = tmp_path / "out"
    assert 0 == main(["report", "--bed", "chair-2", "--out", str(out), "--db", str(record)])
    page = (out / f"{SESSION}.html").read_text()
    assert f'<img src="{SESSION}.png"' in page
    assert "<td>128/80 mmHg</td>" in page
    assert "<td>97 %</td>" in page and "<td>73 /min</td>" in page
    assert "<td>highest systolic</td><td>184 mmHg</td><td>+26:00</td>" in page
    assert "<td>lowest SpO2</td><td>87 %</td><td>+10:00</td>" in page
    assert "<td>highest pulse</td><td>130 /min</td><td>+20:05</td>" in page
    # raised, acknowledged, response, cleared
    assert "<td>spo2_low</td><td>HIGH</td><td>physiological</td><td>+10:15</td><td>+10:35</td>" in page
    assert "<td>0 min 20 s</td><td>+11:00</td>" in page
    assert "<td>pulse_high</td><td>MEDIUM</td>" in page and "not acknowledged" in page
    assert "<td>nibp_high</td><td>HIGH</td><td>physiological</td><td>+26:01</td><td>+27:00</td>" in page
    assert "<td>infusion</td><td>40 min 00 s</td>" in page
    assert "<td>dose</td><td>0.5 mg/kg</td>" in page
    assert "+80:00 (40 min 00 s after pump stop)" in page
    assert "<td>SpO2 &lt; 90 %</td><td>1 min 00 s</td>" in page
    # the nurse's steps, prompts and observations, with the infusion start's override
    assert "<td>total dose</td><td>35 mg</td>" in page
    assert "<td>+20:00</td><td>dissociation</td><td>score 2</td><td>RN Kim</td>" in page
    assert "override reason cuff swapped" in page and "open: cuff not linked" in page
    assert "<td>note</td><td>note asked for a blanket</td>" in page  # the clinic's report, never the export
    assert "<td>prompt done</td>" in page


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--session", "chair-9-20250304-1"], "no session 'chair-9-20250304-1'"),
        (["--bed", "chair-9"], "no session of bed 'chair-9'"),
    ],
)
def test_unknown_session_or_bed_exits_2(
    record: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert 2 == main(["report", *argv, "--out", str(tmp_path / "o"), "--db", str(record)])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content", [None, b"not a database at all" * 100, b""])
def test_unreadable_database_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    """Missing file, garbage, or an empty file (no sessions table) are refused with the path named."""
    db = tmp_path / "x.sqlite3"
    if content is not None:
        db.write_bytes(content)
    assert 2 == main(["report", "--session", SESSION, "--out", str(tmp_path / "o"), "--db", str(db)])
    assert "cannot read the session record" in capsys.readouterr().err
