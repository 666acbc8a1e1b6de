"""Commit overlap: does the alert's fsync run while the event loop is still busy?

Why: after the bed session submits an alert's FULL commit, the loop goes on with the rest of
the device's bytes (about 0.5 ms). The writer thread needs the GIL between its SQLite calls;
with the interpreter's default 5 ms switch interval it only got it once the loop went idle, so
the commit and the loop's work ran one after the other. :mod:`vitalwatch.delivery.commit_priority`
shortens the interval while a record is in flight.

What: one :class:`~vitalwatch.delivery.store.Store` (the daemon's journal) on the disk under
the work directory and one on tmpfs; per alert, submit the record, keep the loop busy in Python
for ``BUSY_S`` (the rest of the chunk), then await the commit. Alternating at random per alert
between the shipped priority and none (the interpreter's default interval); medians, p90 and
the ratio. The floor is ``BUSY_S`` itself: the loop cannot see the commit before it is free.

Run: ``python -m bench commit_overlap``.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import percentile, report, row

ALERTS = 400
BUSY_S = 0.0005


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _measure(directory: Path) -> dict[str, list[float]]:
    from vitalwatch.delivery.commit_priority import COMMIT_PRIORITY, COMMIT_SWITCH_S
    from vitalwatch.delivery.store import DB_NAME, Store

    store = Store(directory / DB_NAME)
    rng = random.Random(0)
    took: dict[str, list[float]] = {"priority": [], "default": []}
    try:
        for i in range(ALERTS):
            mode = rng.choice(("priority", "default"))
            COMMIT_PRIORITY.interval_s = COMMIT_SWITCH_S if mode == "priority" else 0.0
            t0 = time.perf_counter()
            commit = store.record(
                "bench",
                alert_id=f"a-{i}",
                seq=i,
                rank=3,
                clears=False,
                payload={"m": "x" * 400},
                transition={},
            )
            _busy(BUSY_S)
            await commit
            took[mode].append((time.perf_counter() - t0) * 1e3)
            await asyncio.sleep(0.002)
    finally:
        COMMIT_PRIORITY.interval_s = COMMIT_SWITCH_S
        store.close()
    return took


def main() -> None:
    """Both places, both modes; print the table; write results/commit_overlap.json."""
    rows = [row("loop busy after the submit (the floor)", BUSY_S * 1e3, "ms")]
    raw: dict[str, dict[str, list[float]]] = {}
    shm = Path("/dev/shm")
    places = {"disk": Path(tempfile.mkdtemp(prefix="vw-overlap-", dir=Path.cwd()))}
    if shm.is_dir():
        places["tmpfs"] = Path(tempfile.mkdtemp(prefix="vw-overlap-", dir=shm))
    for place, directory in places.items():
        took = raw[place] = asyncio.run(_measure(directory))
        for mode in ("default", "priority"):
            rows.append(
                row(
                    f"{place}, {mode}: submit -> commit seen, p50",
                    round(statistics.median(took[mode]), 3),
                    "ms",
                )
            )
            rows.append(row(f"{place}, {mode}: p90", round(percentile(took[mode], 90), 3), "ms"))
        ratio = statistics.median(took["priority"]) / statistics.median(took["default"])
        rows.append(row(f"{place}: p50 priority / default", round(ratio, 2), "x"))
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()
    report("commit_overlap", rows, {"busy_s": BUSY_S, "samples_ms": raw})


if __name__ == "__main__":
    main()
