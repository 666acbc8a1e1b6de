"""The fail-safe alarm: runs local_alarm_command even from a broken config, standalone, logs for journald."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vitalwatch.ops import failsafe
from vitalwatch.ops.failsafe import find_alarm_command

FAILSAFE = Path(failsafe.__file__)
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin")


def alarm_script(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in buzzer that records the environment it was given."""
    record = tmp_path / "alarm.log"
    script = tmp_path / "buzzer"
    script.write_text(
        f'#!/bin/sh\necho "$VITALWATCH_ALARM $VITALWATCH_ALARM_STATE $VITALWATCH_BED $1" >> {record}\n'
    )
    script.chmod(0o755)
    return script, record


def fake_systemctl(tmp_path: Path, substate: str) -> str:
    program = tmp_path / "systemctl"
    program.write_text(f"#!/bin/sh\necho {substate}\n")
    program.chmod(0o755)
    return str(program)


def opts(tmp_path: Path, config: Path, substate: str = "failed") -> list[str]:
    """Arguments that keep the test off the real /run and the real systemctl."""
    return [
        "--config", str(config),
        "--marker", str(tmp_path / "run" / "raised"),
        "--systemctl", fake_systemctl(tmp_path, substate),
    ]  # fmt: skip


def test_command_under_mqtt_or_top_level() -> None:
    assert (["/bin/buzz", "-l"], "toml") == find_alarm_command(
        '[mqtt]\nhost = "x"\nlocal_alarm_command = ["/bin/buzz", "-l"]\n'
    )
    assert (["/bin/buzz"], "toml") == find_alarm_command('local_alarm_command = ["/bin/buzz"]\n[mqtt]\n')


def test_broken_toml_is_scanned() -> None:
    """The config may be why the daemon died; the alarm must still be found."""
    text = 'site = "a\n[mqtt\nlocal_alarm_command = [\n  "/bin/buzz",  # the buzzer\n  "--loud",\n]\n'
    assert (["/bin/buzz", "--loud"], "scan") == find_alarm_command(text)


def test_no_command() -> None:
    assert (None, "none") == find_alarm_command("")
    assert (None, "none") == find_alarm_command("[mqtt]\nlocal_alarm_command = []\n")
    assert (None, "none") == find_alarm_command("garbage = = [\n")


def test_raise_and_clear_run_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    buzzer, record = alarm_script(tmp_path)
    config = tmp_path / "vitalwatch.toml"
    config.write_text(f'[mqtt]\nlocal_alarm_command = ["{buzzer}", "arg"]\n')
    env = {
        "PATH": os.environ["PATH"],
        "MONITOR_SERVICE_RESULT": "start-limit-hit",
        "MONITOR_EXIT_CODE": "exited",
    }
    marker = tmp_path / "run" / "raised"
    assert 0 == failsafe.main([*opts(tmp_path, config), "raise"], env)
    assert marker.exists()
    assert 0 == failsafe.main([*opts(tmp_path, config), "clear"], env)
    assert not marker.exists()
    # A normal start with nothing raised runs nothing.
    assert 0 == failsafe.main([*opts(tmp_path, config), "clear"], env)
    assert ["daemon_failed raised * arg", "daemon_failed cleared * arg"] == record.read_text().splitlines()
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("<2>")  # journald priority: critical
    entry = json.loads(first[3:])
    assert "failsafe.daemon_failed" == entry["event"]
    assert "start-limit-hit" == entry["monitor_service_result"]


def test_pending_restart_is_not_an_alarm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """systemd >= 254 runs OnFailure= between auto-restarts: stay quiet while a restart is pending."""
    buzzer, record = alarm_script(tmp_path)
    config = tmp_path / "vitalwatch.toml"
    config.write_text(f'local_alarm_command = ["{buzzer}"]\n')
    assert 0 == failsafe.main([*opts(tmp_path, config, "auto-restart"), "raise"], {})
    assert not record.exists()
    assert "failsafe.restart_pending" in capsys.readouterr().err
    # Given up (start limit hit): the alarm sounds.
    assert 0 == failsafe.main([*opts(tmp_path, config, "failed"), "raise"], {})
    assert ["daemon_failed raised * "] == record.read_text().splitlines()


def test_unknown_unit_state_raises(tmp_path: Path) -> None:
    """No systemctl answer (no systemd, D-Bus down): better a false alarm than a silent failure."""
    buzzer, record = alarm_script(tmp_path)
    config = tmp_path / "vitalwatch.toml"
    config.write_text(f'local_alarm_command = ["{buzzer}"]\n')
    args = ["--config", str(config), "--marker", str(tmp_path / "m"), "--systemctl", str(tmp_path / "none")]
    assert 0 == failsafe.main([*args, "raise"], {})
    assert ["daemon_failed raised * "] == record.read_text().splitlines()


def test_missing_config_or_command_fails_loudly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No way to sound the alarm: a critical journal entry and a failed unit (exit 1)."""
    assert 1 == failsafe.main([*opts(tmp_path, tmp_path / "absent.toml"), "raise"], {})
    events = [json.loads(line[3:])["event"] for line in capsys.readouterr().err.splitlines()]
    assert ["failsafe.daemon_failed", "failsafe.config_unreadable", "failsafe.no_alarm_command"] == events


def test_failing_command_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "vitalwatch.toml"
    config.write_text('local_alarm_command = ["/bin/false"]\n')
    assert 1 == failsafe.main([*opts(tmp_path, config), "raise"], {})
    config.write_text(f'local_alarm_command = ["{tmp_path / "missing"}"]\n')
    assert 1 == failsafe.main([*opts(tmp_path, config), "raise"], {})


@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no /usr/bin/python3 on this machine")
def test_runs_standalone_under_the_system_python(tmp_path: Path) -> None:
    """As the unit runs it: a copy outside the package, `python3 -I`, no VitalWatch importable."""
    assert SYSTEM_PYTHON is not None
    copy = tmp_path / "libexec" / "vitalwatch-failsafe"
    copy.parent.mkdir()
    shutil.copy(FAILSAFE, copy)
    buzzer, record = alarm_script(tmp_path)
    config = tmp_path / "vitalwatch.toml"
    config.write_text(f'[mqtt\nlocal_alarm_command = ["{buzzer}"]\n')  # broken TOML
    done = subprocess.run(
        [SYSTEM_PYTHON, "-I", str(copy), *opts(tmp_path, config), "raise"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert 0 == done.returncode, done.stderr
    assert ["daemon_failed raised * "] == record.read_text().splitlines()
    assert "failsafe.config_invalid" in done.stderr
