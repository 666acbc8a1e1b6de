"""SD-card write budget of the engine snapshots and the alert journal: bytes written per hour.

Why: issue 7 §8 allows at most 5 MB/hour written to the state directory. The session record is
measured by :mod:`bench.sd_budget`; this measures the other writer, the outbox database
(``vitalwatch.sqlite3``): the engine snapshot the daemon stores after every batch with an alert
transition, phase change or status change, at most once a minute otherwise, and the alert
journal rows (FULL-synced) it follows, with what the daemon adds per transition: the delivery
mark after the broker's PUBACK and the alert-id counter of each new alarm. Bytes are counted
as in ``sd_budget``: every byte the process hands to ``write()`` (``wchar`` in
``/proc/self/io``), an upper bound on what reaches the card.

Busy session per bed, in virtual time with the real engine and the daemon's own
:class:`~vitalwatch.continuity.statestore.SnapshotWriter` (told after every engine call, as the
bed session tells it) and :class:`~vitalwatch.delivery.store.Store`: two oximeters (SpO2 and
pulse at 1 Hz) and an NIBP monitor every 3 min; 20 min baseline (so the snapshot carries 1200
baseline samples per signal, its largest part), 20 min infusion, 20 min recovery; from the
infusion on, SpO2 falls to 84 % for 40 s every 3 min (HIGH spo2_low: raised, re-notified,
acknowledged by the nurse, cleared).

Run: ``python -m bench.snapshot_budget [HOURS]``; prints bytes/hour and snapshot sizes for 1 and
3 beds.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vitalwatch.continuity.statestore import SnapshotWriter, transition_to_json
from vitalwatch.delivery.payloads import WallClock
from vitalwatch.delivery.store import DB_NAME, Store
from vitalwatch.drivers.events import Observation
from vitalwatch.engine.outputs import AlertState, AlertTransition, Output
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import default_table

TARGET_BYTES_PER_HOUR = 5_000_000
DEVICES = {"masimo": "spo2", "nonin": "spo2", "nibp": "nibp"}


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


class Bed:
    """One busy bed: engine, snapshot writer and alert journal, driven one virtual second at a time."""

    def __init__(self, bed: str, store: Store, clock: list[float], wall: WallClock, *, journal: bool) -> None:
        self.bed, self.store, self.wall, self.journal = bed, store, wall, journal
        self.engine = engine = BedEngine(default_table(), bed, DEVICES)
        engine.adopt([], now=0.0, grace_s=60.0)  # as the daemon does at every start
        self.writer = SnapshotWriter(
            bed,
            engine.snapshot,
            lambda blob, epoch: store.put_snapshot(bed, blob, written=epoch),
            clock=lambda: clock[0],
        )
        self.pending: list[asyncio.Future[Any]] = []
        self.transitions: list[tuple[str, int]] = []  # journalled, not yet marked delivered
        self.alarms = 0

    def acknowledged(self) -> None:
        """The broker's PUBACK for every journalled transition: the publisher's delivery marks."""
        for alert_id, seq in self.transitions:
            self.store.delivered(self.bed, alert_id, seq)
        self.transitions.clear()

    def _fed(self, outputs: list[Output], now: float, *, tick: bool = False) -> None:
        """What the bed session does after an engine call: journal the alerts, tell the writer."""
        self._journal(outputs)
        self.writer.engine_fed(outputs, now, tick=tick)

    def _journal(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, AlertTransition) and self.journal:
                if out.state is AlertState.RAISED:  # the daemon's IdFactory journals its counter
                    self.alarms += 1
                    self.store.put_meta(self.bed, {"id_counter": self.alarms}, sync="NORMAL")
                self.transitions.append((out.alert_id, out.seq))
                self.pending.append(
                    self.store.record(
                        self.bed,
                        alert_id=out.alert_id,
                        seq=out.seq,
                        rank=out.priority.rank,
                        clears=out.state is AlertState.CLEARED,
                        payload={"alert_id": out.alert_id, "seq": out.seq, "message": out.message},
                        transition=transition_to_json(out, utc=self.wall.utc),
                    )
                )

    def second(self, t: int) -> None:
        e, now = self.engine, float(t)
        phase = ("baseline", "infusion", "recovery")[min(t // 1200, 2)]
        if phase != e.phase:
            self._fed(e.set_phase(phase, now), now)
        dip = phase != "baseline" and 20 <= t % 180 < 60
        for dev in ("masimo", "nonin"):
            self._fed(e.observe(dev, Observation("spo2", 84.0 if dip else 97.0 - t % 2, "%"), now), now)
            self._fed(e.observe(dev, Observation("pulse_rate", 80.0 + t % 5, "/min"), now), now)
        if t % 180 == 100:
            for kind, v in (("nibp_systolic", 135.0), ("nibp_diastolic", 85.0), ("nibp_mean", 102.0)):
                self._fed(e.observe("nibp", Observation(kind, v, "mm[Hg]"), now), now)
        for dev in DEVICES:
            e.bytes_seen(dev, now)
        if t % 180 == 75:  # the nurse acknowledges what is active (a latched HIGH then clears)
            self._fed(e.acknowledge("*", "nurse", now), now)
        self._fed(e.tick(now), now, tick=True)


async def measure(beds: int, hours: float, directory: Path, *, journal: bool = True) -> dict[str, float]:
    """Bytes written (write() calls) by the outbox database for ``hours`` of ``beds`` busy beds;
    ``journal=False`` leaves the alert rows out (the snapshots' own share)."""
    clock = [0.0]
    wall = WallClock(0.0, datetime(2025, 3, 4, 9, 0, tzinfo=UTC))
    store = Store(directory / DB_NAME)
    before = _wchar()
    session = [Bed(f"bed-{i}", store, clock, wall, journal=journal) for i in range(beds)]
    for t in range(int(hours * 3600)):
        clock[0] = float(t)
        for bed in session:
            bed.second(t)
        await asyncio.sleep(0)  # scheduled snapshot writes run here, after the batch's alert rows
        for bed in session:  # in real time every write finishes within the second
            await asyncio.gather(*bed.pending)
            bed.pending.clear()
            bed.acknowledged()
            if bed.writer._inflight is not None:
                await bed.writer._inflight
    for bed in session:
        await bed.writer.close()
    store.close()
    written = _wchar() - before
    return {
        "beds": beds,
        "bytes_per_hour": written / hours,
        "snapshots_per_hour": sum(b.writer.writes for b in session) / hours / beds,
        "mean_snapshot_bytes": sum(b.writer.bytes_written for b in session)
        / max(1, sum(b.writer.writes for b in session)),
    }


def main(argv: list[str] | None = None) -> None:
    """Print the figure for one and for three beds, and whether it meets the 5 MB/hour target."""
    args = sys.argv[1:] if argv is None else argv
    hours = float(args[0]) if args else 1.0
    for beds in (1, 3):
        for journal in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                r = asyncio.run(measure(beds, hours, Path(tmp), journal=journal))
                r["files_bytes"] = sum(p.stat().st_size for p in Path(tmp).iterdir())
            ok = "within" if r["bytes_per_hour"] <= TARGET_BYTES_PER_HOUR else "OVER"
            what = "snapshots + alert journal" if journal else "snapshots alone"
            print(
                f"{what}, {beds} busy bed(s): {r['bytes_per_hour'] / 1e6:.2f} MB/hour written "
                f"({ok} the 5 MB/hour budget); {r['snapshots_per_hour']:.0f} snapshots/hour/bed, "
                f"{r['mean_snapshot_bytes'] / 1e3:.1f} kB each compressed; files after {hours:g} h: "
                f"{r['files_bytes'] / 1e6:.2f} MB"
            )


if __name__ == "__main__":
    main()
