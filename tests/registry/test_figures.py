"""The registry page's aggregate queries on hand-built records with known answers (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from vitalwatch.record.export import SCHEMA
from vitalwatch.registry.database import RegistryDb, migrations, open_registry
from vitalwatch.registry.figures import MonthFigures, Scope, figures, sites
from vitalwatch.registry.wire import RecordMessage


def record(record_id: str, site: str, month: str, **fields: Any) -> RecordMessage:
    row = {"schema": SCHEMA, "record_id": record_id, "alarms": {}, **fields}
    return RecordMessage(record_id, site, "chair-1", month, row)


def peaks(sbp: float | None, dbp: float | None, spo2: float | None, pulse: float | None) -> dict[str, Any]:
    return {"max_systolic": sbp, "max_diastolic": dbp, "min_spo2": spo2, "min_pulse": pulse}


RECORDS = [
    # clinic-a, March: BP high by systolic (r1) and by diastolic (r2); 179/109, SpO2 90 and pulse 50
    # are on the right side of each threshold (r4); r3 has no NIBP, no pulse and no dose.
    record("r1", "clinic-a", "2026-03", dose_mg_per_kg=0.5, **peaks(185, 100, 88, 55),
           discharge_ready_after_recovery_min=20.0, alarms={"spo2_low": {"high": 1, "medium": 2}}),
    record("r2", "clinic-a", "2026-03", dose_mg_per_kg=0.8, **peaks(150, 112, 95, 48),
           discharge_ready_after_recovery_min=30.0,
           alarms={"spo2_low": {"high": 1}, "pulse_low": {"low": 1}}),
    record("r3", "clinic-a", "2026-03", dose_mg_per_kg=None, **peaks(None, None, 92, None),
           discharge_ready_after_recovery_min=10.0),
    record("r4", "clinic-a", "2026-03", dose_mg_per_kg=1, **peaks(179, 109, 90, 50),
           discharge_ready_after_recovery_min=None, alarms={"nibp_high": {"medium": 3}}),
    # clinic-a, April: an even number of discharge times (median is the mean of the middle two).
    record("r5", "clinic-a", "2026-04", dose_mg_per_kg=0.6, discharge_ready_after_recovery_min=15.0),
    record("r6", "clinic-a", "2026-04", dose_mg_per_kg=0.6, discharge_ready_after_recovery_min=40.0),
    # clinic-b, March: a dose sent as text is unknown, not a number; malformed alarm counts are left out.
    record("r7", "clinic-b", "2026-03", dose_mg_per_kg="0.7", **peaks(120, 80, 85.5, 60),
           discharge_ready_after_recovery_min=12.0,
           alarms={"spo2_low": {"high": 2, "medium": "x", "low": 1.5}, "odd": [1], "pulse_high": {"low": 0}}),
]  # fmt: skip


def stored(db: RegistryDb) -> RegistryDb:
    assert all(db.add_batch(RECORDS))
    return db


def by_month(rows: list[MonthFigures]) -> dict[tuple[str, str], MonthFigures]:
    return {(r.site, r.month): r for r in rows}


def test_one_clinic_per_month(registry_db: RegistryDb) -> None:
    rows = by_month(figures(stored(registry_db), Scope(site="clinic-a")))
    assert [("clinic-a", "2026-03"), ("clinic-a", "2026-04")] == list(rows)
    march = rows[("clinic-a", "2026-03")]
    assert 4 == march.sessions
    assert (0.5, 1.0, 3) == (march.dose_min, march.dose_max, march.dose_known)
    assert (2, 3) == (march.bp_high, march.bp_known)  # r1 (185 systolic), r2 (112 diastolic); r3 unknown
    assert (1, 4) == (march.desaturation, march.spo2_known)
    assert (1, 3) == (march.bradycardia, march.pulse_known)
    assert (20.0, 3) == (march.discharge_median_min, march.discharge_known)
    assert {"spo2_low": {"high": 2, "medium": 2}, "pulse_low": {"low": 1}, "nibp_high": {"medium": 3}} == (
        march.alarms
    )
    assert 8 == march.alarm_occurrences
    assert 0.5 == march.alarms_per_session()["spo2_low"]["high"]
    assert 0.75 == march.alarms_per_session()["nibp_high"]["medium"]
    april = rows[("clinic-a", "2026-04")]
    assert (2, 27.5, 2) == (april.sessions, april.discharge_median_min, april.discharge_known)
    assert (0, 0, {}) == (april.bp_known, april.spo2_known, april.alarms)
    assert april.share(april.bp_high, april.bp_known) is None  # no reading: no share, not 0 %


def test_the_region_per_month_and_every_clinic_side_by_side(registry_db: RegistryDb) -> None:
    stored(registry_db)
    region = by_month(figures(registry_db, Scope()))
    assert [("all", "2026-03"), ("all", "2026-04")] == list(region)
    march = region[("all", "2026-03")]
    assert (5, 0.5, 1.0, 3) == (march.sessions, march.dose_min, march.dose_max, march.dose_known)
    assert (2, 4, 2, 5) == (march.bp_high, march.bp_known, march.desaturation, march.spo2_known)
    assert (16.0, 4) == (march.discharge_median_min, march.discharge_known)  # 10, 12 | 20, 30
    assert {"high": 4, "medium": 2} == march.alarms["spo2_low"]
    assert {"spo2_low", "pulse_low", "nibp_high"} == set(march.alarms)  # "odd", zero counts: not counted
    every = by_month(figures(registry_db, Scope(by_site=True)))
    assert [("clinic-a", "2026-03"), ("clinic-a", "2026-04"), ("clinic-b", "2026-03")] == list(every)
    assert {"spo2_low": {"high": 2}} == every[("clinic-b", "2026-03")].alarms
    assert (None, 0) == (every[("clinic-b", "2026-03")].dose_min, every[("clinic-b", "2026-03")].dose_known)
    only_april = figures(registry_db, Scope(by_site=True, since="2026-04", until="2026-04"))
    assert [("clinic-a", "2026-04")] == [(r.site, r.month) for r in only_april]
    assert ["clinic-a", "clinic-b"] == sites(registry_db)


def test_a_repeated_record_counts_once(registry_db: RegistryDb) -> None:
    stored(registry_db)
    before = [r.as_json() for r in figures(registry_db, Scope(by_site=True))]
    again = record("r1", "clinic-a", "2026-03", alarms={"spo2_low": {"high": 9}})
    assert [False] == registry_db.add_batch([again])
    assert before == [r.as_json() for r in figures(registry_db, Scope(by_site=True))]


def test_the_json_row_has_the_shares_and_rates(registry_db: RegistryDb) -> None:
    (march,) = figures(stored(registry_db), Scope(site="clinic-a", until="2026-03"))
    doc = march.as_json()
    assert {"min": 0.5, "max": 1.0, "known": 3} == doc["dose_mg_per_kg"]
    assert {"sessions": 2, "known": 3, "share": 0.6667} == doc["bp_180_110"]
    assert {"sessions": 1, "known": 4, "share": 0.25} == doc["spo2_below_90"]
    assert 2.0 == doc["alarms_per_session"]
    assert {"occurrences": 3, "per_session": 0.75} == doc["alarms"]["nibp_high"]["medium"]


def test_records_stored_before_the_figures_existed_get_them_on_upgrade(
    registry_url: str, tmp_path: Path
) -> None:
    db = open_registry(registry_url)
    try:
        page = next(m.version for m in migrations(db.dialect) if m.name == "page_figures")
        for m in migrations(db.dialect)[: page - 1]:
            db._db.apply(m, datetime.now(UTC))
        cast = "%s::jsonb" if db.dialect == "postgresql" else "%s"
        for r in RECORDS:  # stored by a registry of the schema before the page's
            db._db.query(
                "INSERT INTO session_records (record_id, site, bed, month, received_utc, record)"
                f" VALUES (%s, %s, %s, %s, %s, {cast}) RETURNING record_id",
                (r.record_id, r.site, r.bed, r.month, "2026-04-01T00:00:00+00:00", json.dumps(r.row)),
            )
        assert page in db.migrate()
        # The same figures as records stored by this version (the other tests' known answers).
        fresh = open_registry(str(tmp_path / "fresh.sqlite3"))
        fresh.migrate()
        try:
            expected = [r.as_json() for r in figures(stored(fresh), Scope(by_site=True))]
        finally:
            fresh.close()
        assert expected == [r.as_json() for r in figures(db, Scope(by_site=True))]
        march = by_month(figures(db, Scope(site="clinic-a")))[("clinic-a", "2026-03")]
        assert (2, 3, 20.0) == (march.bp_high, march.bp_known, march.discharge_median_min)
    finally:
        db.close()


def test_a_scope_refuses_what_is_not_a_site_or_month() -> None:
    for bad in ({"site": "a/b"}, {"site": "' OR 1=1"}, {"since": "2026-13"}, {"until": "March"}):
        with pytest.raises(ValueError):
            Scope(**bad)  # type: ignore[arg-type]
