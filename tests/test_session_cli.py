"""``vitalwatch session``: the commands it builds, and the real command against a daemon over Mosquitto."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.helpers import cuffless_daemon_config, running_daemon, wait_until
from vitalwatch.cli import build_parser, main
from vitalwatch.cli.session import build_command
from vitalwatch.ops.daemon import Daemon
from vitalwatch.testing import Mosquitto, free_port

SITE, BED = "clinic-a", "chair-1"


def command_for(*argv: str) -> dict[str, object] | None:
    args = build_parser().parse_args(["session", BED, *argv, "--site", SITE])
    return build_command(args, "rid")


def test_each_step_builds_the_stations_command() -> None:
    """The same commands as the station; pause/resume are the phase command the engine's pause takes."""
    assert {"request_id": "rid", "command": "phase", "phase": "pause", "by": "RN Kim"} == command_for(
        "pause", "--by", "RN Kim"
    )
    assert {"request_id": "rid", "command": "phase", "phase": "resume", "by": "RN Kim"} == command_for(
        "resume", "--by", "RN Kim"
    )
    assert {
        "request_id": "rid",
        "command": "start_infusion",
        "by": "N",
        "dose_mg_per_kg": 0.5,
        "weight_kg": 72.0,
        "planned_minutes": 30.0,
        "override_reason": "cuff by hand",
    } == command_for("infusion", "--by", "N", "--dose", "0.5", "--weight", "72", "--minutes", "30",
                     "--override", "cuff by hand")  # fmt: skip
    assert (
        "start_session" == (command_for("start", "--by", "N", "--age-band", "older_adult") or {})["command"]
    )
    assert "pump_stopped" == (command_for("stop", "--by", "N") or {})["command"]
    assert "end_session" == (command_for("end", "--by", "N") or {})["command"]
    assert {"request_id": "rid", "command": "nibp"} == command_for("bp")
    assert {
        "request_id": "rid",
        "command": "prompt_done",
        "prompt_id": "chair-1-p2",
        "by": "N",
    } == command_for("done", "chair-1-p2", "--by", "N")
    assert {
        "request_id": "rid",
        "command": "event",
        "event": "emergence",
        "score": 1,
        "by": "N",
    } == command_for("event", "emergence", "--score", "1", "--by", "N")
    assert command_for("readiness") is None


def test_bad_options_exit_2_and_no_broker_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert 2 == main(["session", BED, "end", "--site", SITE])  # no --by
    assert "needs --by" in capsys.readouterr().err
    assert 2 == main(["session", BED, "event", "sneeze", "--site", SITE, "--by", "N"])
    assert 2 == main(["session", "a/b", "end", "--site", SITE, "--by", "N"])
    assert 1 == main(
        ["session", BED, "end", "--site", SITE, "--by", "N", "--broker", f"mqtt://127.0.0.1:{free_port()}"]
    )
    assert "Connection refused" in capsys.readouterr().err


@pytest_asyncio.fixture
async def daemon(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Daemon]:
    config = cuffless_daemon_config(mosquitto.port, tmp_path / "state", site=SITE, beds=[BED])
    async with running_daemon(config) as d:
        await wait_until(lambda: d.publishers[BED].connected, 10, "daemon connected")
        yield d


async def cli(mosquitto: Mosquitto, *argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vitalwatch", "session", BED, *argv, "--site", SITE, "--broker", mosquitto.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_session_command_runs_a_session_and_prints_refusals(
    daemon: Daemon, mosquitto: Mosquitto
) -> None:
    """start, readiness (open items), infusion refused then overridden, event, stop, end, as a script."""
    code, out, _ = await cli(mosquitto, "start", "--by", "RN Kim", "--age-band", "older_adult")
    assert (0, "baseline") == (code, daemon.beds[BED].engine.phase), out
    await wait_until(lambda: daemon.publishers[BED].pending == 0, 5, "drained")
    code, out, _ = await cli(mosquitto, "readiness")
    assert 0 == code and "NOT READY" in out and "[ ] oximeter not linked" in out, out
    code, _, err = await cli(mosquitto, "infusion", "--by", "RN Kim", "--dose", "0.5", "--weight", "70")
    assert 3 == code and "refused (not_ready)" in err and "oximeter not linked" in err, err
    code, out, _ = await cli(
        mosquitto, "infusion", "--by", "RN Kim", "--dose", "0.5", "--weight", "70", "--override", "test bench"
    )
    assert 0 == code and "total_mg 35.0" in out and "started with open item" in out, out
    code, out, _ = await cli(mosquitto, "event", "nausea", "--by", "RN Kim")
    assert 0 == code, out
    code, _, err = await cli(mosquitto, "end", "--by", "RN Kim")
    assert 3 == code and "wrong_phase" in err, err
    assert (0, 0) == (
        (await cli(mosquitto, "stop", "--by", "RN Kim"))[0],
        (await cli(mosquitto, "end", "--by", "RN Kim"))[0],
    )
    assert "ended" == daemon.beds[BED].engine.phase
