"""``vitalwatch demo``, the project's main job, run as a new user runs it.

The whole chain in one process (simulated Rad-8 on a pty, embedded broker, daemon, nurse view):
a HIGH alert reaches the nurse view, SIGTERM stops it like Ctrl-C, and the state directory is
kept so ``report`` works on the demo's session. Bad options are one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vitalwatch.testing import free_port

VITALWATCH = [sys.executable, "-m", "vitalwatch"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VITALWATCH, *args], capture_output=True, text=True, timeout=60, check=False)


def test_an_unknown_scenario_is_one_line_listing_the_known_ones() -> None:
    proc = run_cli("demo", "--scenario", "bogus")
    assert 2 == proc.returncode
    assert "unknown scenario 'bogus' (known: normal, desaturation" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unreachable_broker_is_one_line() -> None:
    port = free_port()  # nothing listens there
    proc = run_cli("demo", "--broker", f"mqtt://127.0.0.1:{port}")
    assert 1 == proc.returncode
    assert f"cannot reach the broker at mqtt://127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def is_high_raised(line: str) -> bool:
    """A nurse-view alert line: ``10:15:02 chair-1 HIGH   RAISED  SpO2 ...``."""
    return " chair-1 HIGH " in line and " RAISED " in line


@pytest.mark.slow
@pytest.mark.asyncio
async def test_demo_alerts_the_nurse_stops_on_sigterm_and_keeps_its_state(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    proc = await asyncio.create_subprocess_exec(
        *VITALWATCH,
        "demo",
        "--speed",
        "3",
        "--duration",
        "300",
        "--state-dir",
        str(state),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(120):
            while not any(is_high_raised(line) for line in seen):
                line = (await proc.stdout.readline()).decode()
                assert line, f"demo ended early: {seen}"
                seen.append(line)
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = "".join(seen) + out.decode()
    assert 0 == proc.returncode, err.decode()
    assert f"state directory {state}" in text
    assert "SpO2" in next(line for line in seen if is_high_raised(line))
    assert f"demo finished; its state is in {state}" in text
    assert "Traceback" not in err.decode()
    db = str(state / "sessions.sqlite3")
    report = run_cli("report", "--db", db, "--bed", "chair-1", "--out", str(tmp_path / "report"))
    assert 0 == report.returncode, report.stderr
    html = [line for line in report.stdout.splitlines() if line.endswith(".html")]
    assert 1 == len(html) and await asyncio.to_thread(os.path.isfile, html[0]), report.stdout


def is_pcd04_high(line: str) -> bool:
    """The double's line for an ORU^R40 it accepted: a HIGH physiological alert starting."""
    return line.startswith("alarm manager <- ORU^R40") and " start/active PH SP " in line


@pytest.mark.slow
@pytest.mark.asyncio
async def test_demo_with_an_alarm_manager_shows_it_receiving_pcd04(tmp_path: Path) -> None:
    """``vitalwatch demo --alarm-manager``: the HIGH alert reaches the nurse view and the double (ORU^R40)."""
    proc = await asyncio.create_subprocess_exec(
        *VITALWATCH,
        "demo",
        "--alarm-manager",
        "--speed",
        "10",
        "--duration",
        "120",
        "--state-dir",
        str(tmp_path / "demo-state"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(90):
            while not (
                any(is_pcd04_high(line) for line in seen) and any(is_high_raised(line) for line in seen)
            ):
                line = (await proc.stdout.readline()).decode()
                assert line, f"demo ended early: {seen}"
                seen.append(line)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert 0 == proc.returncode, err.decode()
    assert any(line.startswith("alarm-manager double (IHE PCD-04, MLLP) on 127.0.0.1:") for line in seen)


def report_text(db: Path, bed: str, out: Path) -> str:
    """The bed's latest session report (``vitalwatch report``) as plain text, tags and entities removed."""
    done = run_cli("report", "--db", str(db), "--bed", bed, "--out", str(out))
    assert 0 == done.returncode, done.stderr
    page = next(line for line in done.stdout.splitlines() if line.endswith(".html"))
    text = re.sub(r"<[^>]+>", " ", Path(page).read_text(encoding="utf-8"))
    return re.sub(r"\s+", " ", html.unescape(text))


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_scripted_nurse_runs_a_whole_session_and_the_report_has_it(tmp_path: Path) -> None:
    """``vitalwatch demo`` at a fast pace: every step of the chairside session goes over MQTT and
    is answered, the demo ends by itself when the session is complete, and the reports of both
    chairs show the dose, the nurse's steps and observation, and the prompt marked done."""
    state = tmp_path / "demo-state"
    proc = await asyncio.create_subprocess_exec(
        *VITALWATCH, "demo", "--session-step", "0.25", "--scenario", "normal", "--state-dir", str(state),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text, errors = out.decode(), err.decode()
    assert 0 == proc.returncode, text + errors
    assert "Traceback" not in errors and "failed" not in text, text + errors
    lines = [line for line in text.splitlines() if line.startswith("== ")]
    steps = [
        "nurse RN Demo: start session on chair-1",
        "nurse RN Demo: take BP now on chair-2 -> its ACCUTORR cannot be started remotely; station shows",
        "nurse RN Demo: took the BP by hand, marks chair-2-p",
        "station, chair-1: readiness check (first look): NOT READY",
        "station, chair-1: readiness check (baseline complete):",
        "nurse RN Demo: start infusion 0.5 mg/kg x 70 kg = 35 mg total",
        "nurse RN Demo: pause infusion",
        "nurse RN Demo: resume infusion",
        "nurse RN Demo: observation: dissociation, mild",
        "nurse RN Demo: pump stopped -> recovery",
        "nurse RN Demo: take BP now on chair-1 -> the gateway started the cuff",
        "station, chair-1: discharge readiness appears: not yet",
        "station, chair-1: DISCHARGE-READY",
        "nurse RN Demo: end session (discharge) -> ended",
        "the scripted session is complete",
    ]
    at = [next((i for i, line in enumerate(lines) if line[3:].startswith(step)), -1) for step in steps]
    assert -1 not in at and at == sorted(at), "\n".join(lines)  # every step, in this order
    assert "demo timings are SHORTENED" in text
    assert any("[x] baseline complete" in line for line in lines), lines
    # The nurse's prompt was the gateway's: published retained, printed by the tail view, then done.
    prompt_id = re.search(r"station shows prompt (chair-2-p\d+)", text)
    assert prompt_id is not None
    assert f"?? chair-2 PROMPT {prompt_id[1]} " in text and f"-- chair-2 prompt {prompt_id[1]} done" in text

    db = state / "sessions.sqlite3"
    session = report_text(db, "chair-1", tmp_path / "report-1")
    assert "dose 0.5 mg/kg" in session and "total dose 35 mg" in session, session
    for step in ("start session", "start infusion", "dissociation", "pump stopped", "end session"):
        assert step in session, (step, session)
    assert "Discharge ready +" in session, session
    prompts = report_text(db, "chair-2", tmp_path / "report-2")
    assert "prompt kind take_bp, reason nurse request" in prompts, prompts
    assert "prompt done kind take_bp RN Demo" in prompts, prompts
