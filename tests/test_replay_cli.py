"""``vitalwatch replay`` on small CSVs and a simulated scenario: JSON lines out, exit 2 on bad rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vitalwatch.cli import main

BASELINE = """t,event,name,value
0,obs,nibp_systolic,120
0,obs,nibp_diastolic,80
0,obs,nibp_mean,93
150,obs,nibp_systolic,122
150,obs,nibp_diastolic,78
150,obs,nibp_mean,92
"""


def spo2_rows(start: int, end: int, value: float | str) -> str:
    return "".join(f"{t},obs,spo2,{value}\n{t},obs,pulse_rate,72\n" for t in range(start, end))


def in_time_order(text: str) -> str:
    """Sort the data rows by t (stable), keeping the header first."""
    header, *rows = text.splitlines()
    rows.sort(key=lambda row: float(row.split(",")[0]))
    return "\n".join([header, *rows]) + "\n"


def replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, *extra: str
) -> tuple[int, list[dict[str, Any]], str]:
    path = tmp_path / "obs.csv"
    path.write_text(text)
    code = main(["replay", *extra, "--observations", str(path)])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_desaturation_alert_line_has_the_documented_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = in_time_order(BASELINE + spo2_rows(0, 300, 97) + "300,phase,infusion,\n" + spo2_rows(300, 330, 88))
    code, lines, err = replay(tmp_path, capsys, text)
    assert (0, "") == (code, err)
    alerts = [line for line in lines if line["type"] == "alert"]
    assert {
        "type": "alert",
        "t": 315.0,
        "alert_id": "bed-1-000001",
        "seq": 1,
        "state": "raised",
        "priority": "high",
        "category": "physiological",
        "condition": "spo2_low",
        "parameter": "spo2",
        "value": 88.0,
        "limit": 90.0,
        "phase": "infusion",
        "message": "SpO2 88 % below 90 % for 15 s",
    } == alerts[0]
    assert {"type": "phase", "t": 300.0, "phase": "infusion", "previous": "baseline"} in lines


def test_status_rows_on_off_and_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Low SpO2 under sensor_off is not SpO2; `-code` and `ok` switch statuses off."""
    text = in_time_order(
        BASELINE
        + spo2_rows(0, 300, 97)
        + "300,phase,infusion,\n300,status,sensor_off,oximeter\n"
        + spo2_rows(300, 320, 70)
        + "320,status,-sensor_off,oximeter\n"
        + spo2_rows(320, 325, 97)
        + "325,status,artifact,oximeter\n325,status,searching,oximeter\n"
        + spo2_rows(325, 340, 70)
        + "340,status,ok,oximeter\n"
        + spo2_rows(340, 350, 97)
    )
    code, lines, _ = replay(tmp_path, capsys, text)
    assert 0 == code
    assert [] == [line for line in lines if line.get("condition") == "spo2_low"]


def test_link_and_ack_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = in_time_order(
        BASELINE + spo2_rows(0, 300, 97) + "300,phase,infusion,\n301,link,nibp,down\n305,ack,*,nurse-1\n"
    )
    code, lines, _ = replay(tmp_path, capsys, text)
    assert 0 == code
    link = [(line["t"], line["state"]) for line in lines if line.get("condition") == "link_lost"]
    assert [(301.0, "raised"), (305.0, "acknowledged")] == link


def test_empty_value_is_no_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = in_time_order(BASELINE + spo2_rows(0, 300, 97) + "300,phase,infusion,\n" + spo2_rows(300, 340, ""))
    code, lines, _ = replay(tmp_path, capsys, text)
    assert 0 == code
    lost = [line for line in lines if line.get("condition") == "signal_lost"]
    assert [(331.0, "medium", "technical")] == [(x["t"], x["priority"], x["category"]) for x in lost]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("abc,obs,spo2,90", "line 3: t must be a number"),
        ("5,obs,spo2,high", "line 3: value must be a number or empty"),
        ("5,obs,glucose,5", "line 3: unknown observation kind 'glucose'"),
        ("5,phase,induction,", "line 3: unknown phase 'induction'"),
        ("5,status,sensor_off,pump", "line 3: unknown device 'pump'"),
        ("5,status,on_fire,oximeter", "line 3: unknown status code 'on_fire'"),
        ("5,link,nibp,sideways", "line 3: link state must be up or down"),
        ("5,frobnicate,x,y", "line 3: unknown event 'frobnicate'"),
        ("0.5,obs,spo2,90", "line 3: rows must be in time order"),
        ("5,obs,spo2", "line 3: expected 4 fields"),
    ],
)
def test_bad_row_names_the_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str, reason: str
) -> None:
    code, lines, err = replay(tmp_path, capsys, "t,event,name,value\n1,obs,spo2,97\n" + row + "\n")
    assert (2, []) == (code, lines)
    assert reason in err
    assert 1 == len(err.strip().splitlines())


def test_bad_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = replay(tmp_path, capsys, "time,kind,value\n")
    assert 2 == code
    assert "line 1: header must be t,event,name,value" in err


def test_config_alarms_and_first_bed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--config: the [alarms] overrides and the first bed's id and devices are used."""
    config = tmp_path / "vw.toml"
    config.write_text(
        """
[mqtt]
host = "ignored"
[alarms]
table = "default"
[alarms.rules.spo2_low_high]
limit = 89
[[beds]]
id = "chair-7"
  [[beds.devices]]
  id = "ox7"
  driver = "masimo"
  [[beds.devices]]
  id = "cuff7"
  driver = "suntech"
"""
    )
    text = "t,event,name,value\n0,phase,infusion,\n" + spo2_rows(0, 30, 89) + "30,status,sensor_off,ox7\n"
    code, lines, err = replay(tmp_path, capsys, text, "--config", str(config))
    assert (0, "") == (code, err)
    assert [] == [
        line for line in lines if line.get("condition") == "spo2_low" and line["priority"] == "high"
    ]
    assert all(line["alert_id"].startswith("chair-7-") for line in lines if line["type"] == "alert")


def test_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "vw.toml"
    config.write_text("[alarms.rules.spo2_low_high]\nlimit = 120\n")
    code, _, err = replay(tmp_path, capsys, "t,event,name,value\n", "--config", str(config))
    assert 2 == code
    assert "alarms.rules.spo2_low_high.limit: must be 50-100, got 120" in err


def test_scenario_runs_through_simulators_and_drivers(capsys: pytest.CaptureFixture[str]) -> None:
    """The desaturation scenario (bytes -> masimo/suntech drivers -> engine) raises spo2_low HIGH."""
    code = main(["replay", "--scenario", "desaturation", "--seed", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert 0 == code
    assert any(x.get("condition") == "spo2_low" and x["priority"] == "high" for x in lines)
    seqs = [x["seq"] for x in lines if x["type"] == "alert"]
    assert list(range(1, len(seqs) + 1)) == seqs


def test_unknown_scenario_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert 2 == main(["replay", "--scenario", "no-such-scenario"])
    assert "no-such-scenario" in capsys.readouterr().err
