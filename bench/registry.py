"""Registry scale: ingest rate and database size, SQLite and PostgreSQL, direct and through MQTT.

Why: a region of 100 clinics x 10 chairs x 5 sessions a day is about 1.8 million session records a
year. This generates realistic records (real export rows, from varied session summaries), stores
them in batches of the registry's size (``BATCH_MAX``) and reports records/s and bytes per record;
then runs the real registry service behind a real Mosquitto and times records offered -> receipts
back (QoS 1 both ways, every record committed before its receipt).

Run: ``python -m bench.registry`` (scaled down: 20,000 records direct, 2,000 through MQTT) or
``python -m bench.registry --full`` (a year of the region above, 1,825,000 records direct; tens of
minutes). PostgreSQL is started by the benchmark (vitalwatch.testing.PostgreSQL) when installed.
Writes bench/results/registry.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt

from vitalwatch.config import MqttConfig
from vitalwatch.ops.logconfig import configure_logging
from vitalwatch.record.export import AlarmLife, Summary, export_row
from vitalwatch.registry.database import RegistryDb, open_registry
from vitalwatch.registry.service import BATCH_MAX, RegistryService
from vitalwatch.registry.wire import RecordMessage, record_payload
from vitalwatch.testing import Mosquitto, PostgreSQL, postgres_bindir

RESULTS = Path(__file__).resolve().parent / "results"
CLINICS, CHAIRS, PER_DAY, DAYS = 100, 10, 5, 365
PREFIX = "vitalwatch/v1"


def summary(rng: random.Random, record_id: str, started: datetime) -> Summary:
    """A plausible ended session: 15 min baseline, 40 min infusion, 45 min recovery, a few alarms."""
    infusion, recovery, end = 900.0, 900.0 + rng.uniform(2100, 2700), 6000.0 + rng.uniform(-600, 1200)
    conditions = ["spo2_low", "pulse_high", "nibp_high", "link_lost", "pulse_low"]
    alarms = [
        AlarmLife(
            f"a{k}",
            rng.choice(conditions),
            "physiological",
            rng.choice(["high", "medium", "low"]),
            rng.uniform(infusion, end),
            acknowledged_s=None if rng.random() < 0.3 else rng.uniform(infusion, end),
        )
        for k in range(rng.choice([0, 0, 1, 1, 2, 3, 5]))
    ]
    return Summary(
        session_id=record_id,
        record_id=record_id,
        bed="chair-1",
        started=started,
        complete=True,
        end_s=end,
        phases=[("baseline", 0.0, infusion), ("infusion", infusion, recovery), ("recovery", recovery, end)],
        infusion_s=infusion,
        recovery_s=recovery,
        dose_mg_per_kg=round(rng.uniform(0.3, 1.0), 2),
        planned_minutes=40.0,
        baseline={
            "systolic": rng.uniform(110, 150),
            "diastolic": rng.uniform(65, 95),
            "spo2": rng.uniform(95, 99),
            "pulse_rate": rng.uniform(60, 90),
        },
        peaks={
            "min_spo2": (rng.uniform(85, 97), rng.uniform(infusion, end)),
            "max_pulse": (rng.uniform(80, 130), rng.uniform(infusion, end)),
            "min_pulse": (rng.uniform(45, 70), rng.uniform(infusion, end)),
            "max_systolic": (rng.uniform(130, 190), rng.uniform(infusion, end)),
            "min_systolic": (rng.uniform(100, 130), rng.uniform(infusion, end)),
            "max_diastolic": (rng.uniform(80, 115), rng.uniform(infusion, end)),
        },
        beyond_s={
            "spo2_below_90": rng.choice([0.0, 0.0, 30.0, 120.0]),
            "sbp_180_or_more": rng.choice([0.0, 900.0]),
        },
        nibp_readings=rng.randint(8, 20),
        alarms=alarms,
        acks=[],
        discharge_ready_s=end - rng.uniform(0, 600),
        reference_s=infusion,
    )


def records(n: int, seed: int = 1) -> Iterator[RecordMessage]:
    """``n`` records spread over the region's clinics, chairs and the days of a year."""
    rng = random.Random(seed)
    year = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    for i in range(n):
        clinic, chair = i % CLINICS, (i // CLINICS) % CHAIRS
        day = (i // (CLINICS * CHAIRS * PER_DAY)) % DAYS
        started = year + timedelta(days=day, hours=(i // (CLINICS * CHAIRS)) % PER_DAY * 2)
        record_id = f"{seed:02d}{i:012d}"
        row = export_row(summary(rng, record_id, started))
        yield RecordMessage(
            record_id, f"clinic-{clinic:03d}", f"chair-{chair}", started.strftime("%Y-%m"), row
        )


def ingest(db: RegistryDb, n: int) -> dict[str, Any]:
    """Store ``n`` records in batches of BATCH_MAX; records/s (generation excluded) and size."""
    batch: list[RecordMessage] = []
    spent = 0.0
    for record in records(n):
        batch.append(record)
        if len(batch) == BATCH_MAX:
            t0 = time.perf_counter()
            db.add_batch(batch)
            spent += time.perf_counter() - t0
            batch = []
    t0 = time.perf_counter()
    db.add_batch(batch)
    spent += time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = sum(1 for _ in db.records(site="clinic-007"))
    export_s = time.perf_counter() - t0
    size = db.size_bytes()
    return {
        "records": db.count(),
        "ingest_per_s": round(n / spent),
        "db_bytes": size,
        "bytes_per_record": round(size / max(1, n)),
        "one_clinic_export_rows": rows,
        "one_clinic_export_s": round(export_s, 3),
    }


async def through_mqtt(db: RegistryDb, n: int, workdir: Path) -> dict[str, Any]:
    """Offers -> real Mosquitto -> registry service -> database -> receipts; records/s end to end."""
    broker = Mosquitto(workdir=workdir, extra_config="max_queued_messages 0\nmax_inflight_messages 0\n")
    broker.start()
    stop = asyncio.Event()
    try:
        service = RegistryService(db, MqttConfig(port=broker.port, client_id="bench-registry"))
        task = asyncio.create_task(service.run(stop))
        await asyncio.wait_for(service.subscribed.wait(), 10)
        now = datetime.now(UTC)
        payloads = [
            (
                f"{PREFIX}/{r.site}/{r.bed}/record",
                record_payload(row=r.row, site=r.site, bed=r.bed, started=now, sent=now),
            )
            for r in records(n, seed=2)
        ]
        got = 0
        async with aiomqtt.Client("127.0.0.1", broker.port, max_inflight_messages=100) as gw:
            await gw.subscribe(f"{PREFIX}/+/+/receipt", qos=1)
            t0 = time.perf_counter()
            window = asyncio.Semaphore(100)  # offers in flight, as many gateways would have

            async def offer(topic: str, payload: bytes) -> None:
                async with window:
                    await gw.publish(topic, payload, qos=1)

            sending = asyncio.gather(*(offer(t, p) for t, p in payloads))
            async for _ in gw.messages:
                got += 1
                if got == n:
                    break
            elapsed = time.perf_counter() - t0
            await sending
        stop.set()
        await task
        return {"records": n, "offered_to_receipted_per_s": round(n / elapsed), "seconds": round(elapsed, 2)}
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.registry", description=__doc__)
    parser.add_argument("--full", action="store_true", help="a year of 100 clinics x 10 chairs x 5 a day")
    parser.add_argument("--records", type=int, help="records stored directly (default 20,000)")
    parser.add_argument("--mqtt-records", type=int, default=2000, help="records through MQTT (default 2,000)")
    args = parser.parse_args(sys.argv[1:])
    configure_logging("warning")  # the registry logs each batch; not what is measured here
    n = args.records or (CLINICS * CHAIRS * PER_DAY * DAYS if args.full else 20_000)
    results: dict[str, Any] = {"direct_records": n}
    pg: PostgreSQL | None = None
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": str(Path(tmp) / "registry.sqlite3")}
        if postgres_bindir() is not None:
            pg = PostgreSQL(durable=True)  # fsync on: what a real server pays
            pg.start()
            urls["postgresql"] = pg.create_database("bench_registry")
        try:
            for engine, url in urls.items():
                db = open_registry(url)
                db.migrate()
                try:
                    results[engine] = ingest(db, n)
                    results[engine]["mqtt"] = asyncio.run(through_mqtt(db, args.mqtt_records, Path(tmp)))
                finally:
                    db.close()
                print(engine, json.dumps(results[engine]))
        finally:
            if pg is not None:
                pg.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "registry.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
