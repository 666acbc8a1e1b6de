"""Outbox throughput: alert transitions journalled (FULL fsync) and acknowledged per second, and lane picks.

Why: every alert transition costs one SQLite commit with ``synchronous=FULL`` before it may be
sent, and one ``NORMAL`` commit when the broker acknowledges it. A bed raises a handful per
minute, so what matters is the headroom (and how a slow SD card compares): this prints
records/s and acks/s on the state directory given (default: a temp dir on this machine's
disk) and how fast the priority lanes pick from a 10,000-entry backlog.

Run: ``python -m bench.outbox [DIR]``; writes bench/results/outbox.json. Median of 3 runs.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from vitalwatch.delivery.lanes import Entry, Lanes
from vitalwatch.delivery.store import DB_NAME, Store

N = 500
RUNS = 3


async def one_run(directory: Path) -> tuple[float, float]:
    store = Store(directory / DB_NAME)
    payload = {"schema": "vitalwatch.alert/1", "message": "SpO2 86 % below 90 % for 15 s", "value": 86}
    t0 = time.perf_counter()
    futures = [
        store.record(
            "bench", alert_id=f"a-{i}", seq=i, rank=i % 4, clears=False, payload=payload, transition={}
        )
        for i in range(N)
    ]
    await asyncio.gather(*futures)
    t1 = time.perf_counter()
    await asyncio.gather(*(store.delivered("bench", f"a-{i}", i) for i in range(N)))
    t2 = time.perf_counter()
    store.close()
    (directory / DB_NAME).unlink()
    return N / (t1 - t0), N / (t2 - t1)


def lanes_rate(n: int = 10_000) -> float:
    lanes = Lanes()
    for i in range(n):
        lanes.push(Entry(f"a-{i % 3000}", i, i % 4, False, {}, float(i)))
    t0 = time.perf_counter()
    while (e := lanes.peek()) is not None:
        lanes.pop(e)
    return n / (time.perf_counter() - t0)


async def main(directory: Path) -> dict[str, float]:
    records, acks = [], []
    for _ in range(RUNS):
        r, a = await one_run(directory)
        records.append(r)
        acks.append(a)
    return {
        "records_per_s_full_fsync": round(statistics.median(records)),
        "acks_per_s_normal": round(statistics.median(acks)),
        "lane_picks_per_s_10k_backlog": round(lanes_rate()),
    }


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(dir=sys.argv[1] if len(sys.argv) > 1 else None) as tmp:
        result = asyncio.run(main(Path(tmp)))
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / "outbox.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
