"""``vitalwatch decode``: the JSON-lines contract, exit codes, stdin, and the installed console script."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vitalwatch.cli import main
from vitalwatch.cli.decode import parse_option_value

VECTORS = Path(__file__).resolve().parent / "vectors" / "masimo"
RAD8 = VECTORS / "rad8_ascii1_capture_yahnatan.txt"
RADICAL7 = VECTORS / "radical7_example_mdpnp.bin"


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_rad8_capture_as_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """Each event is one JSON object in the documented shape; counts go to stderr."""
    assert main(["decode", "--driver", "masimo", str(RAD8)]) == 0
    out, err = capsys.readouterr()
    events = json_lines(out)
    assert len(events) == 25  # 5 lines x (spo2, pulse_rate, perfusion_index, spco, spmet)
    assert events[0] == {
        "event": "observation",
        "kind": "spo2",
        "value": 98,
        "unit": "%",
        "mdc": 150456,
        "device_time": "2016-02-22T22:47:45",
    }
    assert [e["value"] for e in events if e["kind"] == "pulse_rate"] == [97, 96, 96, 96, 97]
    assert [e["value"] for e in events if e["kind"] == "spco"] == [None] * 5
    assert err.strip() == "observations=25 statuses=0 problems=0"


def test_status_and_problem_objects(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Statuses carry code/active; problems carry reason and length but never the bytes."""
    capture = tmp_path / "noisy.txt"
    capture.write_bytes(b"SECRET-NOISE\r\n" + RADICAL7.read_bytes())
    assert main(["decode", "--driver", "masimo", str(capture)]) == 0
    out, err = capsys.readouterr()
    events = json_lines(out)
    assert events[0] == {"event": "problem", "reason": "bad_token", "length": len(b"SECRET-NOISE")}
    assert events[1] == {"event": "status", "code": "sensor_off", "active": True}
    assert events[-1] == {"event": "status", "code": "sensor_off", "active": False}
    assert "SECRET" not in out
    assert err.strip() == "observations=6 statuses=2 problems=1"


def test_stdin_dash(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``-`` reads bytes from stdin."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(RADICAL7.read_bytes())))
    assert main(["decode", "--driver", "masimo", "-"]) == 0
    events = json_lines(capsys.readouterr().out)
    assert [e["value"] for e in events if e["event"] == "observation"][:3] == [98, 240, 20.0]


def test_option_reaches_driver(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--option KEY=VALUE is a driver constructor keyword (here the trend zero policy)."""
    trend = VECTORS / "rad8_trend_sample_output_manual.txt"
    assert main(["decode", "--driver", "masimo", "--option", "trend_zero_is_missing=false", str(trend)]) == 0
    first = json_lines(capsys.readouterr().out)[1]
    assert (first["kind"], first["value"]) == ("spo2", 0)


def test_unknown_driver_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--driver", "no-such-monitor", str(RAD8)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "no-such-monitor" in err


def test_missing_file_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["decode", "--driver", "masimo", str(tmp_path / "absent.txt")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "absent.txt" in err


@pytest.mark.parametrize("option", ["no_equals_sign", "bogus=1", "max_line_bytes=3"])
def test_bad_option_exit_2(capsys: pytest.CaptureFixture[str], option: str) -> None:
    """Malformed, unknown, or rejected-by-driver options are usage errors, not tracebacks."""
    assert main(["decode", "--driver", "masimo", "--option", option, str(RAD8)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "value"),
    [("512", 512), ("0.5", 0.5), ("true", True), ("False", False), ("rad8", "rad8"), ("", "")],
)
def test_parse_option_value(text: str, value: object) -> None:
    parsed = parse_option_value(text)
    assert (parsed, type(parsed)) == (value, type(value))


def test_console_script_subprocess() -> None:
    """The installed ``vitalwatch`` script decodes the Rad-8 capture end to end."""
    script = Path(sys.executable).parent / "vitalwatch"
    # make test installs the project, script included: a missing one is a packaging defect.
    assert script.exists(), f"console script not installed next to {sys.executable}"
    done = subprocess.run(
        [str(script), "decode", "--driver", "masimo", str(RAD8)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    assert [e["value"] for e in events if e["kind"] == "perfusion_index"] == [3.6, 3.95, 4.25, 3.19, 2.41]
    assert done.stderr.strip() == "observations=25 statuses=0 problems=0"


def nonin_capture(seconds: float, data_format: int = 2) -> bytes:
    """What a Nonin sends in ``seconds``, from its simulator (75 frames/s, or 1 packet/s for #8)."""
    from vitalwatch.simulators import make_simulator
    from vitalwatch.simulators.scenarios import get_scenario

    sim = make_simulator("nonin", get_scenario("normal"), data_format=data_format)
    out, t = bytearray(), 0.0
    while t < seconds:
        out += sim.poll(t)
        t += 0.02
    return bytes(out)


@pytest.mark.parametrize("data_format", [2, 8])
def test_a_nonin_capture_is_paced_by_the_devices_own_frame_clock(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_format: int
) -> None:
    """10 s of a Nonin gives the 10 once-a-second SpO2 values the device reported, not fewer."""
    capture = tmp_path / "nonin.bin"
    capture.write_bytes(nonin_capture(10.0, data_format))
    assert main(["decode", "--driver", "nonin", "--option", f"data_format={data_format}", str(capture)]) == 0
    spo2 = [e for e in json_lines(capsys.readouterr().out) if e.get("kind") == "spo2"]
    assert 9 <= len(spo2) <= 11


def test_hex_flag_on_text_that_is_not_hex_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    capture = tmp_path / "capture.txt"
    capture.write_text("SPO2=097 HR=072\r\n")
    assert main(["decode", "--driver", "nonin-ascii", "--hex", str(capture)]) == 2
    assert "--hex: the input holds no hex byte pairs" in capsys.readouterr().err
