"""The phase command's pause/resume and age band, applied to a real bed session (no broker)."""

from __future__ import annotations

import json
import tomllib
from typing import Any

from vitalwatch.config import parse_config
from vitalwatch.continuity.replay import ReplayBed
from vitalwatch.delivery.commands import CommandHandler
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import default_table


def handler() -> tuple[CommandHandler, ReplayBed]:
    engine = BedEngine(default_table(), bed="chair-1", devices={"oximeter": "spo2", "nibp": "nibp"})
    bed = ReplayBed(engine, {"oximeter": ("", "spo2", {}), "nibp": ("", "nibp", {})})
    clock = {"now": 0.0}
    cmd = CommandHandler(site="clinic-a", bed="chair-1", target=bed.session, clock=lambda: clock["now"])
    return cmd, bed


def send(cmd: CommandHandler, rid: str, **fields: Any) -> dict[str, Any]:
    return cmd.handle(json.dumps({"request_id": rid, "command": "phase", **fields}).encode())


def test_pause_outside_the_infusion_is_refused_and_changes_nothing() -> None:
    cmd, bed = handler()
    result = send(cmd, "r1", phase="pause")
    assert (False, "bad_value") == (result["ok"], result["error"]["code"])
    assert "only an infusion" in result["error"]["message"]
    assert ("baseline", False) == (bed.session.engine.phase, bed.session.engine.paused)


def test_pause_and_resume_in_the_infusion() -> None:
    cmd, bed = handler()
    assert send(cmd, "r1", phase="infusion")["ok"]
    paused = send(cmd, "r2", phase="pause")
    assert (True, {"phase": "pause"}) == (paused["ok"], paused["detail"])
    assert ("infusion", True) == (bed.session.engine.phase, bed.session.engine.paused)
    assert send(cmd, "r3", phase="pause")["ok"]  # again: accepted, nothing changes
    assert send(cmd, "r4", phase="resume")["ok"]
    assert ("infusion", False) == (bed.session.engine.phase, bed.session.engine.paused)


def test_age_band_with_a_phase_command() -> None:
    cmd, bed = handler()
    result = send(cmd, "r1", phase="baseline", age_band="older_adult")
    assert {"phase": "baseline", "age_band": "older_adult"} == result["detail"]
    assert "older_adult" == bed.session.engine.age_band


def test_age_band_per_bed_in_configuration() -> None:
    text = """
site = "clinic-a"
[mqtt]
host = "localhost"
[[beds]]
id = "chair-1"
age_band = "older_adult"
[[beds.devices]]
id = "oximeter"
driver = "masimo"
url = "/dev/ttyUSB0"
"""
    (bed,) = parse_config(tomllib.loads(text)).beds
    assert "older_adult" == bed.age_band
