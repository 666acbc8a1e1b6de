"""The registry database: versioned migrations and idempotent storage, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vitalwatch.record.export import SCHEMA
from vitalwatch.registry.database import RegistryDb, migrations, open_registry
from vitalwatch.registry.wire import RecordMessage


def record(record_id: str, site: str = "clinic-a", month: str = "2026-03", **fields: object) -> RecordMessage:
    row = {"schema": SCHEMA, "record_id": record_id, "alarms": {}, "alarms_total": 0, **fields}
    return RecordMessage(record_id, site, "chair-1", month, row)


def test_shipped_migrations_are_the_same_versions_for_both_engines() -> None:
    sqlite, postgresql = migrations("sqlite"), migrations("postgresql")
    assert [(m.version, m.name) for m in sqlite] == [(m.version, m.name) for m in postgresql]
    assert len(sqlite) >= 2


def test_an_empty_database_is_upgraded_once_and_a_rerun_applies_nothing(registry_url: str) -> None:
    db = open_registry(registry_url)
    try:
        assert 0 == db.version()
        latest = len(migrations(db.dialect))
        assert list(range(1, latest + 1)) == db.migrate()
        assert [] == db.migrate()
        assert latest == db.version()
    finally:
        db.close()
    again = open_registry(registry_url)  # another process starting later
    try:
        assert [] == again.migrate()
        assert latest == again.version()
    finally:
        again.close()


def test_an_older_schema_is_upgraded_with_its_rows_kept(registry_url: str) -> None:
    """A registry at version 1 with data: version 2 (the repeat count) keeps every row."""
    db = open_registry(registry_url)
    try:
        first = migrations(db.dialect)[0]
        db._db.apply(first, datetime.now(UTC))
        # A row as version 1 stored it (no repeat count yet).
        cast = "%s::jsonb" if db.dialect == "postgresql" else "%s"
        db._db.query(
            "INSERT INTO session_records (record_id, site, bed, month, received_utc, record)"
            f" VALUES (%s, %s, %s, %s, %s, {cast}) RETURNING record_id",
            (
                "r-old",
                "clinic-a",
                "chair-1",
                "2025-12",
                "2026-01-01T00:00:00+00:00",
                json.dumps({"schema": SCHEMA}),
            ),
        )
        assert 1 == db.version()
        assert [2] == db.migrate()[:1]
        assert 0 == db.repeats("r-old")
        assert [("clinic-a", "2025-12")] == [(r.site, r.month) for r in db.records()]
    finally:
        db.close()


def test_a_failed_migration_leaves_the_previous_version_intact(registry_url: str) -> None:
    from vitalwatch.registry.database import Migration

    db = open_registry(registry_url)
    try:
        db.migrate()
        version = db.version()
        broken = Migration(version + 1, "broken", "CREATE TABLE half_done (x INTEGER);\nTHIS IS NOT SQL;")
        with pytest.raises(Exception):  # noqa: B017 - sqlite3.Error or psycopg.Error
            db._db.apply(broken, datetime.now(UTC))
        assert version == db.version()
        tables = db._db.query(
            "SELECT name FROM sqlite_master WHERE name = 'half_done'"
            if db.dialect == "sqlite"
            else "SELECT tablename FROM pg_tables WHERE tablename = 'half_done'"
        )
        assert [] == tables
    finally:
        db.close()


def test_records_are_stored_once_by_id_and_repeats_are_counted(registry_db: RegistryDb) -> None:
    db = registry_db
    assert [True, True] == db.add_batch([record("r1"), record("r2", site="clinic-b")])
    assert [False, True] == db.add_batch([record("r1", alarms_total=99), record("r3", month="2026-04")])
    assert [False] == db.add_batch([record("r1")])
    assert 3 == db.count()
    assert 2 == db.repeats("r1")
    assert None is db.repeats("nope")
    stored = {r.row["record_id"]: r for r in db.records()}
    assert 0 == stored["r1"].row["alarms_total"]  # the first copy wins
    assert ("clinic-b", "chair-1", "2026-03") == (stored["r2"].site, stored["r2"].bed, stored["r2"].month)
    assert ["r1", "r3"] == [r.row["record_id"] for r in db.records(site="clinic-a")]
    assert ["r3"] == [r.row["record_id"] for r in db.records(since_month="2026-04")]
    assert db.size_bytes() > 0


def test_registry_export_writes_the_regional_data_set(
    registry_db: RegistryDb, registry_url: str, tmp_path: Path
) -> None:
    """`vitalwatch registry export`: site and month first, then the session row; CSV and JSON Lines."""
    db = registry_db
    db.add_batch(
        [
            record("r1", infusion_minutes=40.0),
            # From a newer gateway: a field this version does not know (kept in JSON Lines).
            record("r2", site="clinic-b", month="2026-04", field_of_the_future=1),
        ]
    )
    jsonl, csv_out = tmp_path / "set.jsonl", tmp_path / "set.csv"
    for out in (jsonl, csv_out):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "vitalwatch",
                "registry",
                "export",
                "--db",
                registry_url,
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert 0 == done.returncode, done.stderr
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [("clinic-a", "2026-03", "r1"), ("clinic-b", "2026-04", "r2")] == [
        (r["site"], r["month"], r["record_id"]) for r in rows
    ]
    assert 40.0 == rows[0]["infusion_minutes"]
    assert 1 == rows[1]["field_of_the_future"]
    header, *lines = csv_out.read_text().splitlines()
    assert header.startswith("site,month,schema,record_id,")
    assert 2 == len(lines)
    assert lines[1].startswith(f"clinic-b,2026-04,{SCHEMA},r2,")


def test_registry_export_refuses_a_bad_month_and_an_unopenable_database(tmp_path: Path) -> None:
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "vitalwatch",
            "registry",
            "export",
            "--db",
            str(tmp_path / "r.sqlite3"),
            "--out",
            "-",
            "--since-month",
            "2026-13",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert 2 == bad.returncode and "--since-month" in bad.stderr
    (tmp_path / "not-a-db").write_text("hello, not sqlite" * 100)
    unreadable = subprocess.run(
        [
            sys.executable,
            "-m",
            "vitalwatch",
            "registry",
            "export",
            "--db",
            str(tmp_path / "not-a-db"),
            "--out",
            "-",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert 2 == unreadable.returncode and "cannot open" in unreadable.stderr
    assert "Traceback" not in unreadable.stderr


def test_alert_transitions_are_stored_once_by_site_bed_alert_and_seq(registry_db: RegistryDb) -> None:
    from vitalwatch.registry.wire import AlertMessage

    def alert(seq: int, bed: str = "chair-1", value: float = 84.0) -> AlertMessage:
        return AlertMessage("a1", seq, "clinic-a", bed, {"alert_id": "a1", "seq": seq, "value": value})

    assert [True, True, True] == registry_db.add_alerts([alert(1), alert(2), alert(1, bed="chair-2")])
    assert [False, True] == registry_db.add_alerts([alert(1, value=99.0), alert(3)])  # a re-offer, a new one
    assert 4 == registry_db.alert_count()
    assert 1 == registry_db.alert_repeats("clinic-a", "chair-1", "a1", 1)
    assert 0 == registry_db.alert_repeats("clinic-a", "chair-2", "a1", 1)
    assert registry_db.alert_repeats("clinic-a", "chair-1", "a1", 9) is None
