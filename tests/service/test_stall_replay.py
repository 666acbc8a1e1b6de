"""A recorded daemon stall replays as it ran live: the pause reaches the engine before the input
that found it, so the replay gives no ``link_lost`` either; without the pause record it would."""

from __future__ import annotations

import json
from pathlib import Path

from vitalwatch.continuity.recording import replay_recording
from vitalwatch.engine.outputs import AlertTransition
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.scenarios import get_scenario

DEVICES = ("oxi-a", "oxi-b")
STALL = (10.0, 30.0)  # the daemon did not run between these times; the monitors kept sending


def write_recording(directory: Path, *, with_pause: bool) -> None:
    directory.mkdir()
    devices = {d: {"driver": "masimo", "options": {}, "role": "spo2"} for d in DEVICES}
    (directory / "meta.json").write_text(
        json.dumps({"config": None, "beds": {"chair-1": {"devices": devices}}})
    )
    sims = {d: make_simulator("masimo", get_scenario("normal")) for d in DEVICES}
    lines: list[dict[str, object]] = [{"t": 0.0, "k": "link", "dev": d, "up": True} for d in DEVICES]
    lines.append({"t": 0.0, "k": "phase", "phase": "infusion"})
    buffered = {d: b"" for d in DEVICES}
    t = 0.25
    while t <= 45.0:
        for d in DEVICES:
            buffered[d] += sims[d].poll(t)
        if not STALL[0] < t < STALL[1]:
            first = True
            for n, d in enumerate(DEVICES):  # read one device after the other, as the loop does
                if buffered[d]:
                    lines.append({"t": t + n * 0.001, "k": "bytes", "dev": d, "hex": buffered[d].hex()})
                    buffered[d] = b""
                    if first and t >= STALL[1] and with_pause and t - 0.25 < STALL[1]:
                        lines.append({"t": t, "k": "pause", "gap": t - STALL[0]})
                    first = False
            lines.append({"t": t + 0.01, "k": "tick"})
        t += 0.25
    (directory / "chair-1.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def link_lost(directory: Path) -> list[AlertTransition]:
    outputs = replay_recording(directory)["chair-1"]
    return [o for o in outputs if isinstance(o, AlertTransition) and o.condition == "link_lost"]


def test_replayed_stall_gives_no_link_lost(tmp_path: Path) -> None:
    write_recording(tmp_path / "paused", with_pause=True)
    assert [] == link_lost(tmp_path / "paused")


def test_the_same_gap_without_the_pause_record_is_device_silence(tmp_path: Path) -> None:
    write_recording(tmp_path / "unpaused", with_pause=False)
    assert {"oxi-b"} <= {tr.device for tr in link_lost(tmp_path / "unpaused")}
