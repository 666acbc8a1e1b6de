"""SD-card write budget of the alert journal: bytes written per alert transition, and where they go.

Why: issue 7 §8 allows at most 5 MB/hour written to the state directory. Every alert transition
costs the daemon one ``synchronous=FULL`` commit in ``vitalwatch.sqlite3`` (the outbox row, the
``active`` table) before it is sent, a delivery mark after the broker's PUBACK and, for a new
alarm, the alert-id counter. In WAL mode every commit appends one frame (24-byte header + one
page) per page it touched, and a checkpoint copies each touched page into the database file
again; so the cost is "pages touched per commit x page size", not the size of the rows.

Two measurements, both on a fresh database in a temporary directory:

1. **Bytes per transition**: the daemon's sequence for a busy bed (per alarm: id counter,
   raised, re-notified, acknowledged, cleared; each transition recorded, then marked delivered)
   for ``N`` transitions, counting every byte the process hands to ``write()`` (``wchar`` in
   ``/proc/self/io``: WAL frames, WAL headers, checkpoints), as :mod:`bench.sd_budget` does.
2. **Where they go**: the same sequence with automatic checkpoints off, then every frame of
   the WAL attributed to the b-tree that owns its page (``dbstat``): the outbox table, each
   index, ``active``, ``meta``, page 1 (the header: database size, freelist) or free pages.

3. **The whole state directory**: :mod:`bench.snapshot_budget` (engine snapshots + this journal,
   with delivery marks) plus :mod:`bench.sd_budget` (the session record), for 1 and 3 busy beds.

Run: ``python -m bench.journal_budget [N]`` (default 520 transitions = 5 busy bed-hours).
"""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import sd_budget, snapshot_budget
from vitalwatch.continuity.statestore import transition_to_json
from vitalwatch.delivery.payloads import WallClock, alert_payload
from vitalwatch.delivery.store import DB_NAME, Store
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Priority

# The busy bed of bench.snapshot_budget: an alarm every 3 min with 4 transitions, 104 an hour.
TRANSITIONS_PER_HOUR = 104
CYCLE = (AlertState.RAISED, AlertState.RENOTIFIED, AlertState.ACKNOWLEDGED, AlertState.CLEARED)
WAL_HEADER = 32
FRAME_HEADER = 24


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def _transition(bed: str, n: int) -> AlertTransition:
    alarm, step = divmod(n, len(CYCLE))
    state = CYCLE[step]
    return AlertTransition(
        t=100.0 + n, bed=bed, alert_id=f"{bed}-20261129T0900{alarm:02d}-{alarm}", seq=n + 1, state=state,
        priority=Priority.HIGH, category=Category.PHYSIOLOGICAL, condition="spo2_low", parameter="spo2",
        value=86.0, unit="%", limit=90.0, phase="infusion", phase_elapsed_s=600.0 + n, onset_t=100.0,
        message="SpO2 86 % below 90 % for 15 s", acknowledged_by="nurse" if step >= 2 else None,
        acknowledged_t=100.0 + n if step >= 2 else None,
    )  # fmt: skip


async def journal(store: Store, bed: str, n: int) -> None:
    """What the daemon's publisher and id factory do for ``n`` transitions of one bed."""
    wall = WallClock(0.0, datetime(2026, 11, 29, 9, 0, tzinfo=UTC))
    for i in range(n):
        tr = _transition(bed, i)
        if tr.state is AlertState.RAISED:
            store.put_meta(bed, {"id_counter": i // len(CYCLE) + 1}, sync="NORMAL")
        ok = await store.record(
            bed,
            alert_id=tr.alert_id,
            seq=tr.seq,
            rank=tr.priority.rank,
            clears=tr.state is AlertState.CLEARED,
            payload=alert_payload(tr, site="clinic", wall=wall),
            transition=transition_to_json(tr, utc=wall.utc),
        )
        assert ok, "the bench's journal write failed"
        await store.delivered(bed, tr.alert_id, tr.seq)


async def bytes_per_transition(directory: Path, n: int, **options: Any) -> float:
    """Bytes handed to write() per transition, checkpoints included (steady state, after 20 warm-up)."""
    store = Store(directory / DB_NAME, **options)
    await journal(store, "warm", 20)
    await store.flush()
    before = _wchar()
    await journal(store, "bed-1", n)
    await store.flush()
    written = _wchar() - before
    store.close()
    return written / n


def _wal_frames(wal: Path) -> list[int]:
    """Page number of every frame in the WAL, in order."""
    data = wal.read_bytes()
    (page_size,) = struct.unpack(">I", data[8:12])
    frames, pos = [], WAL_HEADER
    while pos + FRAME_HEADER + page_size <= len(data):
        (pgno,) = struct.unpack(">I", data[pos : pos + 4])
        frames.append(pgno)
        pos += FRAME_HEADER + page_size
    return frames


async def attribution(directory: Path, n: int) -> tuple[int, int, Counter[str]]:
    """(page size, commits, frames per b-tree) for ``n`` transitions with checkpoints off."""
    path = directory / DB_NAME
    store = Store(path)
    await journal(store, "warm", 8)
    await store.flush()
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    store = Store(path, autocheckpoint=0)
    writes = store.writes
    await journal(store, "bed-1", n)
    await store.flush()
    commits = store.writes - writes
    frames = _wal_frames(path.with_name(DB_NAME + "-wal"))
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        owner = {int(p): str(name) for name, p in conn.execute("SELECT name, pageno FROM dbstat")}
    store._pool.submit(lambda: None).result()
    store.close()
    counted: Counter[str] = Counter()
    for pgno in frames:
        counted["page 1 (header)" if pgno == 1 else owner.get(pgno, "free/overflow")] += 1
    return page_size, commits, counted


def main(argv: list[str] | None = None) -> None:
    """Print bytes per transition, the per-b-tree breakdown and the bed-hour figure."""
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 520
    with tempfile.TemporaryDirectory() as tmp:
        per = asyncio.run(bytes_per_transition(Path(tmp), n))
    print(
        f"alert journal: {per / 1e3:.1f} kB written per transition (record + delivery mark + id counter, "
        f"checkpoints included); {per * TRANSITIONS_PER_HOUR / 1e6:.2f} MB/hour for one busy bed "
        f"({TRANSITIONS_PER_HOUR} transitions/hour)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        page_size, commits, counted = asyncio.run(attribution(Path(tmp), 40))
    total = sum(counted.values())
    print(
        f"where: {page_size}-byte pages, {commits / 40:.2f} commits and {total / 40:.2f} WAL frames "
        f"({total * (page_size + FRAME_HEADER) / 40 / 1e3:.1f} kB) per transition before checkpoints:"
    )
    for name, frames in counted.most_common():
        print(f"  {name:28s} {frames / 40:5.2f} frames/transition")
    for beds in (1, 3):
        with tempfile.TemporaryDirectory() as tmp:
            outbox = asyncio.run(snapshot_budget.measure(beds, 1.0, Path(tmp)))["bytes_per_hour"]
        with tempfile.TemporaryDirectory() as tmp:
            record = sd_budget.measure(beds, 1.0, Path(tmp))["bytes_per_hour"]
        total = outbox + record
        ok = "within" if total <= sd_budget.TARGET_BYTES_PER_HOUR else "OVER"
        print(
            f"state directory, {beds} busy bed(s): {total / 1e6:.2f} MB/hour ({ok} the 5 MB/hour budget) = "
            f"alert journal + snapshots {outbox / 1e6:.2f} + session record {record / 1e6:.2f}"
        )


if __name__ == "__main__":
    main()
