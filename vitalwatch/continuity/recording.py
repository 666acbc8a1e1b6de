"""Record a live run's inputs and replay them: the same alerts, in virtual time.

``vitalwatch run --record DIR`` writes one journal per bed (``DIR/<bed>.jsonl``) holding,
in the order they happened and with their monotonic times, everything that can change
the bed's alerts: each device's raw bytes as they arrived, the driver timer calls, link
up/down, phase commands, the session's age band, acknowledgements and engine ticks.
``DIR/meta.json`` names the devices (driver, options, role) and the alarm table.

``vitalwatch replay --recording DIR`` rebuilds drivers, engine and the daemon's bed session
(on replay links, :mod:`vitalwatch.continuity.replay`) and feeds the journal back through
the *drivers* (not through decoded events), so a replay checks the whole decode-and-decide
path. The journal is written by two taps: the device link's (bytes, timer calls) and the bed
session's (link, phase, age band, ack, tick). Because the engine takes its clock as a parameter, the replayed
alerts are identical to the live ones, field for field.

Journal line kinds::

    {"t": 12.5, "k": "bytes", "dev": "oximeter", "hex": "30392f..."}
    {"t": 13.0, "k": "timer", "dev": "nibp"}
    {"t": 14.0, "k": "link", "dev": "oximeter", "up": false}
    {"t": 20.0, "k": "phase", "phase": "infusion"}
    {"t": 20.0, "k": "age_band", "band": "older_adult"}
    {"t": 21.0, "k": "ack", "alert_id": "*", "by": "RN Kim"}
    {"t": 21.25, "k": "tick"}
    {"t": 52.0, "k": "pause", "gap": 30.5}   the daemon itself did not run (vitalwatch.ops.stall)
    {"t": 0.0, "k": "id", "id": "chair-1-20261129T101502-0001"}   the live run's alert ids, in order

Raw bytes can contain what a monitor prints about a patient (HL7 PID segments): the
recording directory is created mode 0700 and is meant for engineers' test rigs, not for
routine clinical use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from vitalwatch import strict_json
from vitalwatch.config import BedConfig, Config
from vitalwatch.continuity.replay import ReplayBed
from vitalwatch.engine.outputs import Output
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import AlarmTable, load_alarm_table

__all__ = ["BedJournal", "open_journals", "replay_recording", "write_meta"]


class BedJournal:
    """Append-only journal of one bed's inputs (line-buffered: a crash loses at most a line)."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("a", encoding="utf-8", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(strict_json.dumps(record, what="recording", separators=(",", ":")) + "\n")

    def raw(self, device: str, data: bytes, now: float) -> None:
        self.write({"t": now, "k": "bytes", "dev": device, "hex": data.hex()})

    def timer(self, device: str, now: float) -> None:
        self.write({"t": now, "k": "timer", "dev": device})

    # -- the bed session's input tap (vitalwatch.bed.InputTap) --------------------------
    def link(self, device: str, up: bool, now: float) -> None:
        self.write({"t": now, "k": "link", "dev": device, "up": up})

    def phase(self, phase: str, now: float) -> None:
        self.write({"t": now, "k": "phase", "phase": phase})

    def age_band(self, band: str, now: float) -> None:
        self.write({"t": now, "k": "age_band", "band": band})

    def ack(self, alert_id: str, by: str, now: float) -> None:
        self.write({"t": now, "k": "ack", "alert_id": alert_id, "by": by})

    def tick(self, now: float) -> None:
        self.write({"t": now, "k": "tick"})

    def paused(self, gap_s: float, now: float) -> None:
        self.write({"t": now, "k": "pause", "gap": gap_s})

    def ids(self, factory: Callable[[], str]) -> Callable[[], str]:
        """Wrap the alert-id factory so a replay reuses the live run's ids (they carry wall time)."""

        def make() -> str:
            alert_id = factory()
            self.write({"t": 0.0, "k": "id", "id": alert_id})
            return alert_id

        return make

    def close(self) -> None:
        self._file.close()


def write_meta(directory: Path, config: Config) -> None:
    """Name the devices and the alarm-table source so a replay can rebuild them."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    source = str(config.source) if config.source is not None else None
    meta = {
        "config": source,
        "beds": {
            bed.id: {
                "devices": {
                    d.id: {"driver": d.driver, "options": dict(d.options), "role": d.role}
                    for d in bed.devices
                }
            }
            for bed in config.beds
        },
    }
    (directory / "meta.json").write_text(strict_json.dumps(meta, what="recording", indent=2) + "\n")


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path.name} line {number}: not a JSON object") from None
            if not isinstance(record, dict) or "t" not in record or "k" not in record:
                raise ValueError(f"{path.name} line {number}: needs 't' and 'k'")
            yield record


def _alarm_table(meta: Mapping[str, Any], table: AlarmTable | None) -> AlarmTable:
    if table is not None:
        return table
    source = meta.get("config")
    if source and Path(source).exists():
        from vitalwatch.config import load_config

        alarms: AlarmTable = load_config(Path(source)).alarms
        return alarms
    return load_alarm_table(None)


# Journal kinds the device link writes before the bed session sees what they decode.
_DEVICE_INPUTS = ("bytes", "timer")


def _id_source(recorded: Iterator[str], fallback: Iterator[str]) -> Callable[[], str]:
    """The live run's alert ids in order, then made-up ones (a journal cut short by a crash)."""
    return lambda: next(recorded, None) or next(fallback)


def replay_recording(directory: Path, *, table: AlarmTable | None = None) -> dict[str, list[Output]]:
    """Feed every bed's journal back through fresh drivers and the daemon's bed session; outputs per bed."""
    meta = json.loads((directory / "meta.json").read_text())
    alarm_table = _alarm_table(meta, table)
    results: dict[str, list[Output]] = {}
    for bed_id, bed_meta in meta["beds"].items():
        path = directory / f"{bed_id}.jsonl"
        if not path.exists():
            results[bed_id] = []
            continue
        devices = {
            name: (str(d["driver"]), str(d["role"]), dict(d.get("options", {})))
            for name, d in bed_meta["devices"].items()
        }
        recorded_ids = iter([str(r["id"]) for r in _records(path) if r["k"] == "id"])
        fallback = iter(f"{bed_id}-replay-{n:06d}" for n in range(1, 10**9))
        engine = BedEngine(
            alarm_table,
            bed_id,
            {name: role for name, (_, role, _) in devices.items()},
            id_factory=_id_source(recorded_ids, fallback),
        )
        bed = ReplayBed(engine, devices)
        session = bed.session
        records = list(_records(path))
        for i, record in enumerate(records):
            now = bed.now = float(record["t"])
            kind = record["k"]
            link = bed.links.get(record.get("dev", ""))
            if kind == "pause":
                if i == 0 or records[i - 1]["k"] not in _DEVICE_INPUTS:
                    session.gateway_paused(float(record["gap"]), now)
                continue
            if kind in _DEVICE_INPUTS and i + 1 < len(records) and records[i + 1]["k"] == "pause":
                # Live, this device input found the stall: the pause reached the engine before
                # the input's events did, but the link had journalled the bytes first.
                session.gateway_paused(float(records[i + 1]["gap"]), float(records[i + 1]["t"]))
            # Raw bytes alone are not news for the engine (as live): only what the driver decodes.
            if kind == "bytes" and link is not None and link.connected:
                link.feed(bytes.fromhex(record["hex"]), now)
            elif kind == "timer" and link is not None and link.connected:
                link.timer(now)
            elif kind == "link" and link is not None:
                if record["up"]:
                    link.open(now)
                else:
                    link.close(now)
            elif kind == "phase":
                session.set_phase(str(record["phase"]), now)
            elif kind == "age_band":
                session.set_age_band(str(record["band"]), now)
            elif kind == "ack":
                session.acknowledge(str(record["alert_id"]), str(record["by"]), now)
            elif kind == "tick":
                session.tick(now)
        results[bed_id] = bed.outputs
    return results


def open_journals(directory: Path, beds: tuple[BedConfig, ...]) -> dict[str, BedJournal]:
    """One journal per bed, in a private directory."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    return {bed.id: BedJournal(directory / f"{bed.id}.jsonl") for bed in beds}
