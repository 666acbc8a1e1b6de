"""Registry scale: ingest rate and database size, SQLite and PostgreSQL, direct and through MQTT.

Why: a region of 100 clinics x 10 chairs x 5 sessions a day is about 1.8 million session records a
year. This generates realistic records (real export rows, from varied session summaries), stores
them in batches of the registry's size (``BATCH_MAX``) and reports records/s and bytes per record;
then runs the real registry service behind a real Mosquitto and times records offered -> receipts
back (QoS 1 both ways, every record committed before its receipt).

After storing, it times the registry page's aggregate queries (vitalwatch/registry/figures.py),
each on its own and all of a page together, for one clinic, for every clinic side by side and for
the region as one, first as ingested and again after the planner's statistics are refreshed.

Run: ``python -m bench.registry`` (scaled down: 20,000 records direct, 2,000 through MQTT) or
``python -m bench.registry --full`` (a year of the region above, 1,825,000 records direct; 15-20
minutes per engine on a busy 2-core machine, docs/scaling.md). ``--engines sqlite`` runs one
engine; PostgreSQL is started by the benchmark (vitalwatch.testing.PostgreSQL) when installed.
``--existing URL`` only times the page on a database filled before. Writes
bench/results/registry.json (``--out``), after each engine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt

from vitalwatch.config import MqttConfig
from vitalwatch.engine.vocabulary import CONDITIONS
from vitalwatch.ops.logconfig import configure_logging
from vitalwatch.record.export import AlarmLife, Summary, export_row
from vitalwatch.registry.database import RegistryDb, open_registry
from vitalwatch.registry.figures import QUERIES, Scope, figures, sites
from vitalwatch.registry.service import BATCH_MAX, RegistryService
from vitalwatch.registry.web import serve_registry_page
from vitalwatch.registry.wire import RecordMessage, record_payload
from vitalwatch.testing import Mosquitto, PostgreSQL, postgres_bindir

RESULTS = Path(__file__).resolve().parent / "results"
CLINICS, CHAIRS, PER_DAY, DAYS = 100, 10, 5, 365
PREFIX = "vitalwatch/v1"


@dataclass(frozen=True, slots=True)
class Clinic:
    """What differs between clinics: their dose habits and how often their patients react."""

    dose_mean: float  # mg/kg: most protocols start at 0.5, some titrate to 0.75-1.0
    bp_rise: float  # mean systolic rise under the infusion, mmHg
    desat_risk: float  # chance that a session has a real desaturation
    cuff_missing: float  # chance that a session has no NIBP reading at all


def clinics(seed: int) -> list[Clinic]:
    rng = random.Random(seed * 7919)
    return [
        Clinic(
            dose_mean=rng.choice([0.5, 0.5, 0.5, 0.6, 0.75, 0.9]),
            bp_rise=rng.uniform(10, 20),
            desat_risk=rng.uniform(0.01, 0.06),
            cuff_missing=rng.choice([0.0, 0.01, 0.02, 0.05]),
        )
        for _ in range(CLINICS)
    ]


def _alarms(rng: random.Random, infusion: float, end: float, peaks: dict[str, Any]) -> list[AlarmLife]:
    """Alarm occurrences that follow the session's course: a desaturation below 90 % raises a HIGH
    spo2_low, a BP at 180/110 or over a MEDIUM nibp_high, a pulse under 50 a pulse_low, plus the
    technical ones every ward sees (probe off, a late cuff, a pulled cable) and some advisories."""
    found: list[tuple[str, str]] = []
    spo2, sbp, dbp, pmin, pmax = (
        peaks["min_spo2"], peaks["max_systolic"], peaks["max_diastolic"],
        peaks["min_pulse"], peaks["max_pulse"],
    )  # fmt: skip
    if spo2 is not None and spo2[0] < 90:
        found += [("spo2_low", "high")] * rng.choice([1, 1, 2])
    elif spo2 is not None and spo2[0] < 93 and rng.random() < 0.5:
        found.append(("spo2_below_baseline", "medium"))
    if sbp is not None and (sbp[0] >= 180 or dbp[0] >= 110):
        found.append(("nibp_high", "medium"))
    elif sbp is not None and sbp[0] >= 165 and rng.random() < 0.4:
        found.append(("nibp_rise_from_baseline", "low"))
    if pmin is not None and pmin[0] < 50:
        found.append(("pulse_low", "medium"))
    if pmax is not None and pmax[0] > 120:
        found.append(("pulse_high", "medium"))
    for condition, priority, chance in (
        ("signal_lost", "low", 0.25),
        ("nibp_overdue", "low", 0.08),
        ("link_lost", "high", 0.02),
        ("infusion_overrun", "low", 0.03),
        ("bp_recovery_slow", "low", 0.05),
    ):
        if rng.random() < chance:
            found.append((condition, priority))
    return [
        AlarmLife(
            f"a{k}",
            condition,
            CONDITIONS[condition].category.value,
            priority,
            rng.uniform(infusion, end),
            acknowledged_s=None if rng.random() < 0.3 else rng.uniform(infusion, end),
        )
        for k, (condition, priority) in enumerate(found)
    ]


def summary(rng: random.Random, clinic: Clinic, record_id: str, started: datetime) -> Summary:
    """One ended session with realistic spreads: baseline 10-20 min, infusion about 40 min, recovery
    30-90 min; a dose around the clinic's habit (3 % not entered); the blood pressure rising under
    ketamine by the clinic's mean (a few % reach 180/110); SpO2 dipping a little, now and then
    below 90 %; pulse rising, rarely under 50; discharge-ready mostly 20-45 min after pump stop
    (4 % never, e.g. a session ended early)."""
    infusion = rng.uniform(600, 1200)
    recovery = infusion + rng.gauss(2400, 180)
    end = recovery + rng.uniform(1800, 5400)
    sbp0, dbp0 = rng.gauss(128, 14), rng.gauss(80, 9)
    spo20, pulse0 = min(100.0, rng.gauss(97, 1.3)), rng.gauss(76, 10)

    def at() -> float:
        return rng.uniform(infusion, end)

    cuff = rng.random() >= clinic.cuff_missing
    sbp_peak = sbp0 + rng.gauss(clinic.bp_rise, 11)
    dbp_peak = dbp0 + rng.gauss(clinic.bp_rise * 0.55, 7)
    spo2_min = spo20 - (rng.uniform(7, 15) if rng.random() < clinic.desat_risk else rng.expovariate(0.7))
    peaks: dict[str, Any] = {
        "max_systolic": (round(sbp_peak), at()) if cuff else None,
        "min_systolic": (round(sbp0 - abs(rng.gauss(8, 6))), at()) if cuff else None,
        "max_diastolic": (round(dbp_peak), at()) if cuff else None,
        "min_spo2": (round(max(70.0, spo2_min)), at()),
        "max_pulse": (round(pulse0 + abs(rng.gauss(14, 9))), at()),
        "min_pulse": (round(pulse0 - abs(rng.gauss(4, 3))), at()),
    }
    dose = None if rng.random() < 0.03 else round(max(0.2, rng.gauss(clinic.dose_mean, 0.08)) * 20) / 20
    ready = None if rng.random() < 0.04 else recovery + rng.gammavariate(6, 300)
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
        dose_mg_per_kg=dose,
        planned_minutes=40.0,
        baseline={
            "systolic": round(sbp0) if cuff else None,
            "diastolic": round(dbp0) if cuff else None,
            "spo2": round(spo20),
            "pulse_rate": round(pulse0),
        },
        peaks=peaks,
        beyond_s={
            "spo2_below_90": rng.uniform(5, 120) if peaks["min_spo2"][0] < 90 else 0.0,
            "sbp_180_or_more": rng.choice([300.0, 900.0]) if cuff and sbp_peak >= 180 else 0.0,
            "dbp_110_or_more": rng.choice([300.0, 900.0]) if cuff and dbp_peak >= 110 else 0.0,
        },
        nibp_readings=rng.randint(8, 20) if cuff else 0,
        alarms=_alarms(rng, infusion, end, peaks),
        acks=[],
        discharge_ready_s=ready,
        reference_s=infusion,
    )


def records(n: int, seed: int = 1) -> Iterator[RecordMessage]:
    """``n`` records spread over the region's clinics, chairs and the days of a year."""
    rng = random.Random(seed)
    region = clinics(seed)
    year = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    for i in range(n):
        clinic, chair = i % CLINICS, (i // CLINICS) % CHAIRS
        day = (i // (CLINICS * CHAIRS * PER_DAY)) % DAYS
        started = year + timedelta(days=day, hours=(i // (CLINICS * CHAIRS)) % PER_DAY * 2)
        record_id = f"{seed:02d}{i:012d}"
        row = export_row(summary(rng, region[clinic], record_id, started))
        yield RecordMessage(
            record_id, f"clinic-{clinic:03d}", f"chair-{chair}", started.strftime("%Y-%m"), row
        )


def ingest(db: RegistryDb, n: int) -> dict[str, Any]:
    """Store ``n`` records in batches of BATCH_MAX; records/s (generation excluded) and size."""
    batch: list[RecordMessage] = []
    spent = 0.0
    t_start = time.perf_counter()
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
    wall = time.perf_counter() - t_start
    t0 = time.perf_counter()
    rows = sum(1 for _ in db.records(site="clinic-007"))
    export_s = time.perf_counter() - t0
    size = db.size_bytes()
    return {
        "records": db.count(),
        "ingest_per_s": round(n / spent),
        "ingest_s": round(spent, 1),
        "wall_s_incl_generation": round(wall, 1),
        "db_bytes": size,
        "bytes_per_record": round(size / max(1, n)),
        "one_clinic_export_rows": rows,
        "one_clinic_export_s": round(export_s, 3),
    }


def timed(work: Callable[[], object], repeat: int = 3) -> dict[str, float]:
    """Seconds of the first run (caches as the ingest left them) and the best of ``repeat``."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        work()
        runs.append(time.perf_counter() - t0)
    return {"first_s": round(runs[0], 4), "best_s": round(min(runs), 4)}


def query_times(db: RegistryDb, site: str = "clinic-007") -> dict[str, Any]:
    """Each of the registry page's aggregate queries, and the whole page's figures, per scope:
    one clinic by month, every clinic by month (the region's table), the region as one by month."""
    scopes = {"one_clinic": Scope(site=site), "every_clinic": Scope(by_site=True), "region": Scope()}
    out: dict[str, Any] = {}
    for label, scope in scopes.items():
        times: dict[str, Any] = {}
        for name, aggregate in QUERIES.items():
            times[name] = timed(lambda aggregate=aggregate, scope=scope: aggregate(db, scope))  # type: ignore[misc]
        times["all_figures"] = timed(lambda scope=scope: figures(db, scope))  # type: ignore[misc]
        out[label] = times
    out["site_list"] = timed(lambda: sites(db))
    return out


async def page_times(url: str, site: str = "clinic-007") -> dict[str, Any]:
    """The registry page over HTTP, as a browser asks for it: seconds and bytes per view."""
    views = {
        "one_clinic_html": f"/?site={site}",
        "region_html": "/",
        "every_clinic_html": "/?site=*",
        "every_clinic_json": "/summary.json?by=site",
    }
    out: dict[str, Any] = {}
    async with serve_registry_page(url, port=0) as page:
        for name, target in views.items():
            t0 = time.perf_counter()
            status, _, body = await http_get(page.port, target)
            out[name] = {"status": status, "s": round(time.perf_counter() - t0, 3), "bytes": len(body)}
    return out


async def http_get(port: int, target: str) -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), {}, body  # headers not needed here


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
    parser.add_argument(
        "--engines", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql (default both)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "registry.json", help="results file")
    parser.add_argument(
        "--keep-sqlite", type=Path, help="store the SQLite database here and keep it (e.g. to open its page)"
    )
    parser.add_argument(
        "--existing", metavar="URL", help="only time the page's queries and the page on this database"
    )
    args = parser.parse_args(sys.argv[1:])
    configure_logging("warning")  # the registry logs each batch; not what is measured here
    if args.existing:
        db = open_registry(args.existing)
        try:
            found = {"records": db.count(), "db_bytes": db.size_bytes(), "queries": query_times(db)}
        finally:
            db.close()
        found["page"] = asyncio.run(page_times(args.existing))
        print(json.dumps(found), flush=True)
        args.out.write_text(json.dumps(found, indent=2) + "\n")
        return
    n = args.records or (CLINICS * CHAIRS * PER_DAY * DAYS if args.full else 20_000)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    results: dict[str, Any] = {"direct_records": n}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for engine in engines:
            pg: PostgreSQL | None = None
            if engine == "postgresql":
                if postgres_bindir() is None:
                    print("postgresql: not installed, skipped", file=sys.stderr)
                    continue
                pg = PostgreSQL(durable=True)  # fsync on: what a real server pays
                pg.start()
                url = pg.create_database("bench_registry")
            else:
                url = str(args.keep_sqlite or Path(tmp) / "registry.sqlite3")
            try:
                db = open_registry(url)
                db.migrate()
                try:
                    results[engine] = ingest(db, n)
                    print(engine, "ingest", json.dumps(results[engine]), flush=True)
                    results[engine]["queries_as_ingested"] = query_times(db)
                    t0 = time.perf_counter()
                    db.analyze()
                    results[engine]["analyze_s"] = round(time.perf_counter() - t0, 1)
                    results[engine]["queries_after_analyze"] = query_times(db)
                    results[engine]["page"] = asyncio.run(page_times(url))
                    if args.mqtt_records:
                        results[engine]["mqtt"] = asyncio.run(through_mqtt(db, args.mqtt_records, Path(tmp)))
                finally:
                    db.close()
            finally:
                if pg is not None:
                    pg.stop()
            print(engine, json.dumps(results[engine]), flush=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")  # each engine as it finishes


if __name__ == "__main__":
    main()
