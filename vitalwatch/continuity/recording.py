"""Record a live run's inputs and replay them: the same alerts, in virtual time.

``vitalwatch run --record DIR`` writes one journal per bed (``DIR/<bed>.jsonl``) holding,
in the order they happened and with their monotonic times, everything that can change
the bed's alerts: each device's raw bytes as they arrived, the driver timer calls, link
up/down, phase commands, acknowledgements and engine ticks. ``DIR/meta.json`` names the
devices (driver, options, role) and the alarm table.

``vitalwatch replay --recording DIR`` rebuilds drivers and engine and feeds the journal
back through the *drivers* (not through decoded events), so a replay checks the whole
decode-and-decide path. Because the engine takes its clock as a parameter, the replayed
alerts are identical to the live ones, field for field.

Journal line kinds::

    {"t": 12.5, "k": "bytes", "dev": "oximeter", "hex": "30392f..."}
    {"t": 13.0, "k": "timer", "dev": "nibp"}
    {"t": 14.0, "k": "link", "dev": "oximeter", "up": false}
    {"t": 20.0, "k": "phase", "phase": "infusion"}
    {"t": 21.0, "k": "ack", "alert_id": "*", "by": "RN Kim"}
    {"t": 21.25, "k": "tick"}
    {"t": 0.0, "k": "id", "id": "chair-1-20261129T101502-0001"}   the live run's alert ids, in order

Raw bytes can contain what a monitor prints about a patient (HL7 PID segments): the
recording directory is created mode 0700 and is meant for engineers' test rigs, not for
routine clinical use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vitalwatch import strict_json
from vitalwatch.config import BedConfig, Config
from vitalwatch.drivers import Driver, MeasurementStarter, make_driver
from vitalwatch.engine.outputs import AlertTransition, NibpRequest, Output
from vitalwatch.engine.roles import measures_nibp
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import AlarmTable, load_alarm_table
from vitalwatch.link.driver_guard import DriverGuard

__all__ = ["BedJournal", "RecordingEngine", "replay_recording", "write_meta"]


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


class RecordingEngine:
    """Wraps a bed engine and journals every input that does not come from device bytes."""

    def __init__(self, engine: Any, journal: BedJournal) -> None:
        self._engine = engine
        self._journal = journal

    @property
    def phase(self) -> str:
        return str(self._engine.phase)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def observe(self, device: str, event: Any, now: float) -> list[Output]:
        result: list[Output] = self._engine.observe(device, event, now)
        return result

    def bytes_seen(self, device: str, now: float) -> None:
        self._engine.bytes_seen(device, now)

    def link(self, device: str, up: bool, now: float) -> list[Output]:
        self._journal.write({"t": now, "k": "link", "dev": device, "up": up})
        result: list[Output] = self._engine.link(device, up, now)
        return result

    def set_phase(self, phase: str, now: float) -> list[Output]:
        self._journal.write({"t": now, "k": "phase", "phase": phase})
        result: list[Output] = self._engine.set_phase(phase, now)
        return result

    def acknowledge(self, alert_id: str, by: str, now: float) -> list[Output]:
        self._journal.write({"t": now, "k": "ack", "alert_id": alert_id, "by": by})
        result: list[Output] = self._engine.acknowledge(alert_id, by, now)
        return result

    def tick(self, now: float) -> list[Output]:
        self._journal.write({"t": now, "k": "tick"})
        result: list[Output] = self._engine.tick(now)
        return result

    def active_alarms(self) -> list[AlertTransition]:
        result: list[AlertTransition] = self._engine.active_alarms()
        return result


@dataclass
class _ReplayDevice:
    """What the live DeviceLink holds for one device: its config and its current driver."""

    name: str
    driver_name: str
    options: Mapping[str, Any]
    role: str
    guard: DriverGuard | None = None  # the same fault isolation as the live link, kept all run
    connected: bool = False

    @property
    def driver(self) -> Driver | None:
        return self.guard.driver if self.guard is not None else None

    def guarded(self) -> DriverGuard:
        if self.guard is None:
            name, options = self.driver_name, dict(self.options)
            self.guard = DriverGuard(lambda: make_driver(name, **options))
        return self.guard


@dataclass
class _ReplayBed:
    engine: BedEngine
    devices: dict[str, _ReplayDevice]
    outputs: list[Output] = field(default_factory=list)

    def dispatch(self, outputs: list[Output]) -> None:
        """Mirror BedSession.dispatch: a confirmation NIBP request starts a cuff where one can."""
        for out in outputs:
            self.outputs.append(out)
            if isinstance(out, NibpRequest):
                for dev in self.devices.values():
                    driver: object = dev.driver
                    if measures_nibp(dev.role) and isinstance(driver, MeasurementStarter):
                        driver.start_measurement()
                        break

    def deliver(self, dev: _ReplayDevice, events: list[Any], now: float) -> None:
        for event in events:
            self.dispatch(self.engine.observe(dev.name, event, now))


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


def _id_source(recorded: Iterator[str], fallback: Iterator[str]) -> Callable[[], str]:
    """The live run's alert ids in order, then made-up ones (a journal cut short by a crash)."""
    return lambda: next(recorded, None) or next(fallback)


def replay_recording(directory: Path, *, table: AlarmTable | None = None) -> dict[str, list[Output]]:
    """Feed every bed's journal back through fresh drivers and engines; outputs per bed."""
    meta = json.loads((directory / "meta.json").read_text())
    alarm_table = _alarm_table(meta, table)
    results: dict[str, list[Output]] = {}
    for bed_id, bed_meta in meta["beds"].items():
        devices = {
            name: _ReplayDevice(name, d["driver"], d.get("options", {}), d["role"])
            for name, d in bed_meta["devices"].items()
        }
        path = directory / f"{bed_id}.jsonl"
        if not path.exists():
            results[bed_id] = []
            continue
        recorded_ids = iter([str(r["id"]) for r in _records(path) if r["k"] == "id"])
        fallback = iter(f"{bed_id}-replay-{n:06d}" for n in range(1, 10**9))
        engine = BedEngine(
            alarm_table,
            bed_id,
            {n: d.role for n, d in devices.items()},
            id_factory=_id_source(recorded_ids, fallback),
        )
        bed = _ReplayBed(engine, devices)
        for record in _records(path):
            now = float(record["t"])
            kind = record["k"]
            dev = devices.get(record.get("dev", ""))
            # Raw bytes alone are not news for the engine (as live): only what the driver decodes.
            if kind == "bytes" and dev is not None and dev.connected:
                bed.deliver(dev, dev.guarded().feed(bytes.fromhex(record["hex"]), now), now)
            elif kind == "timer" and dev is not None and dev.connected:
                bed.deliver(dev, dev.guarded().on_timer(now), now)
            elif kind == "link" and dev is not None:
                # In the live order: link up then the driver's start; its leftovers then link down.
                if record["up"]:
                    dev.connected = True
                    bed.dispatch(bed.engine.link(dev.name, True, now))
                    bed.deliver(dev, dev.guarded().start(now), now)
                else:
                    if dev.connected:
                        bed.deliver(dev, dev.guarded().feed_eof(), now)
                        dev.connected = False
                    bed.dispatch(bed.engine.link(dev.name, False, now))
            elif kind == "phase":
                bed.dispatch(bed.engine.set_phase(str(record["phase"]), now))
            elif kind == "ack":
                bed.dispatch(bed.engine.acknowledge(str(record["alert_id"]), str(record["by"]), now))
            elif kind == "tick":
                bed.dispatch(bed.engine.tick(now))
        results[bed_id] = bed.outputs
    return results


def open_journals(directory: Path, beds: tuple[BedConfig, ...]) -> dict[str, BedJournal]:
    """One journal per bed, in a private directory."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    return {bed.id: BedJournal(directory / f"{bed.id}.jsonl") for bed in beds}
