"""A recording keeps the session's age band, so a replay judges the start gate as the live run did.

Two baseline readings of 145/80 mmHg are above the adult start-gate limit (140) and below the
older-adult one (150): the same bytes must raise ``start_gate_bp`` for an adult session and not for
an older-adult one, and the difference must come from the journal's ``age_band`` line alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vitalwatch.bed import BedSession
from vitalwatch.config import BedConfig, DeviceConfig
from vitalwatch.continuity.recording import BedJournal, replay_recording
from vitalwatch.continuity.replay import ReplayLink
from vitalwatch.drivers import SerialSettings
from vitalwatch.engine.outputs import AlertTransition
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import default_table
from vitalwatch.link.device_link import LinkListener
from vitalwatch.simulators.hl7 import Hl7Simulator
from vitalwatch.simulators.scenarios import GridScenario

DURATION = 400


def steady_bp(systolic: float, diastolic: float) -> GridScenario:
    n = DURATION + 1
    values = np.array([[97.0] * n, [72.0] * n, [3.0] * n, [systolic] * n, [diastolic] * n])
    return GridScenario("steady", float(DURATION), (), 0, values, np.zeros((4, n), dtype=bool))


def write_recording(directory: Path, band: str | None) -> None:
    """An HL7 monitor taking a cuff reading every 150 s; the phase stays ``baseline``."""
    directory.mkdir()
    device = {"driver": "hl7", "options": {}, "role": "multi"}
    meta = {"config": None, "beds": {"chair-1": {"devices": {"monitor": device}}}}
    (directory / "meta.json").write_text(json.dumps(meta))
    sim = Hl7Simulator(steady_bp(145.0, 80.0), nibp_interval_s=150.0, wait_for_ack=False)
    lines: list[dict[str, object]] = [{"t": 0.0, "k": "link", "dev": "monitor", "up": True}]
    if band is not None:
        lines.append({"t": 0.0, "k": "age_band", "band": band})
    t = 0.5
    while t <= DURATION:
        data = sim.poll(t)
        if data:
            lines.append({"t": t, "k": "bytes", "dev": "monitor", "hex": data.hex()})
        lines.append({"t": t + 0.01, "k": "tick"})
        t += 0.5
    (directory / "chair-1.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def gate_raised(directory: Path) -> bool:
    outputs = replay_recording(directory)["chair-1"]
    raised = [o for o in outputs if isinstance(o, AlertTransition) and o.state == "raised"]
    return any(o.condition == "start_gate_bp" for o in raised)


def test_an_adult_session_replays_with_the_start_gate_raised(tmp_path: Path) -> None:
    write_recording(tmp_path / "adult", "adult")
    assert gate_raised(tmp_path / "adult")


def test_the_journalled_older_adult_band_changes_the_replayed_start_gate(tmp_path: Path) -> None:
    write_recording(tmp_path / "older", "older_adult")
    assert not gate_raised(tmp_path / "older")


def test_a_live_bed_session_journals_the_age_band_where_it_was_set(tmp_path: Path) -> None:
    """The live side: the bed session hands the band to its taps, so ``run --record`` keeps it."""
    config = BedConfig(
        id="chair-1",
        devices=(
            DeviceConfig(id="monitor", driver="hl7", url="replay", role="multi", serial=SerialSettings()),
        ),
    )
    engine = BedEngine(default_table(), "chair-1", {"monitor": "multi"})
    journal = BedJournal(tmp_path / "chair-1.jsonl")

    def link(dev: DeviceConfig, listener: LinkListener) -> ReplayLink:
        return ReplayLink(dev, listener, clock=lambda: 0.0, peer=lambda data, now: None)

    session = BedSession(config, engine, links=link, taps=[journal])
    session.set_phase("baseline", 1.0)
    session.set_age_band("older_adult", 2.0)
    journal.close()
    lines = [json.loads(line) for line in (tmp_path / "chair-1.jsonl").read_text().splitlines()]
    assert {"t": 2.0, "k": "age_band", "band": "older_adult"} in lines
    assert "older_adult" == engine.age_band
