"""Where the registry keeps session records: SQLite for one clinic, PostgreSQL for a region.

Why plain versioned SQL and not Alembic: two tables, no ORM anywhere in VitalWatch, and a
database administrator reads ``migrations/{dialect}/NNNN_name.sql`` as it will run. Each file is
applied once, in version order, in its own transaction together with its row in
``registry_schema``, so a failed upgrade leaves the previous version intact and a re-run applies
nothing twice (PostgreSQL and SQLite both have transactional DDL). On PostgreSQL an advisory lock
keeps two registry processes starting together from migrating at the same time.

Records are stored idempotently by ``record_id``, alert transitions by ``(site, bed, alert_id,
seq)``: the first copy wins, a repeat only counts (``offers_repeated``). A batch is one
transaction: receipts go out after its commit, never before.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from vitalwatch import strict_json
from vitalwatch.registry.derived import FIGURE_COLUMNS, alarm_counts, figure_values
from vitalwatch.registry.wire import AlertMessage, RecordMessage

__all__ = ["Migration", "RegistryDb", "StoredRecord", "migrations", "open_registry"]

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant: the registry's own advisory lock number on PostgreSQL ("VWRG").
_ADVISORY_LOCK = 0x56575247


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True, slots=True)
class StoredRecord:
    site: str
    bed: str
    month: str
    row: dict[str, Any]


def migrations(dialect: str) -> list[Migration]:
    """The migrations shipped for ``dialect`` (``sqlite`` or ``postgresql``), in version order."""
    found: list[Migration] = []
    folder = resources.files("vitalwatch.registry") / "migrations" / dialect
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"registry migrations for {dialect} are not numbered 1..n without gaps")
    return found


class _Backend(Protocol):
    dialect: str

    def apply(self, migration: Migration, applied_utc: datetime) -> None: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    def add_batch(self, records: Sequence[RecordMessage], received: datetime) -> list[bool]: ...
    def add_alerts(self, alerts: Sequence[AlertMessage], received: datetime) -> list[bool]: ...
    def size_bytes(self) -> int: ...
    def snapshot(self) -> AbstractContextManager[None]: ...
    def analyze(self) -> None: ...
    def close(self) -> None: ...


_INSERT_RECORD = (
    "INSERT INTO session_records (record_id, site, bed, month, received_utc, record, "
    + ", ".join(FIGURE_COLUMNS)
    + ") VALUES (%s, %s, %s, %s, %s, {json}, "
    + ", ".join("%s" for _ in FIGURE_COLUMNS)
    + ") ON CONFLICT (record_id) DO NOTHING"
)
_INSERT_ALARMS = (
    "INSERT INTO session_alarm_counts (record_id, site, month, condition, priority, occurrences)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)


def _record_params(r: RecordMessage, received: object) -> tuple[Any, ...]:
    return (r.record_id, r.site, r.bed, r.month, received, _json(r.row), *figure_values(r.row))


def _alarm_params(r: RecordMessage) -> list[tuple[Any, ...]]:
    return [(r.record_id, r.site, r.month, c, p, n) for c, p, n in alarm_counts(r.row)]


_SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS registry_schema "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_utc TEXT NOT NULL)"
)


class _Sqlite:
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Used from one worker thread at a time (the service stores a batch with asyncio.to_thread).
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")  # a receipt promises the record is on disk
        self.conn.execute(_SCHEMA_TABLE)

    def apply(self, migration: Migration, applied_utc: datetime) -> None:
        # executescript runs the statements as written: BEGIN ... COMMIT makes them one transaction.
        try:
            self.conn.executescript(
                "BEGIN IMMEDIATE;\n"
                + migration.sql
                + f"\nINSERT INTO registry_schema VALUES ({migration.version}, '{migration.name}',"
                f" '{applied_utc.isoformat()}');\nCOMMIT;"
            )
        except sqlite3.Error:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(sql.replace("%s", "?"), tuple(params))]

    def add_batch(self, records: Sequence[RecordMessage], received: datetime) -> list[bool]:
        new: list[bool] = []
        alarms: list[tuple[Any, ...]] = []
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for r in records:
                cur = self.conn.execute(
                    _INSERT_RECORD.format(json="?").replace("%s", "?"),
                    _record_params(r, received.isoformat()),
                )
                new.append(cur.rowcount == 1)
                if cur.rowcount == 1:
                    alarms += _alarm_params(r)
                else:
                    self.conn.execute(
                        "UPDATE session_records SET offers_repeated = offers_repeated + 1"
                        " WHERE record_id = ?",
                        (r.record_id,),
                    )
            self.conn.executemany(_INSERT_ALARMS.replace("%s", "?"), alarms)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return new

    def add_alerts(self, alerts: Sequence[AlertMessage], received: datetime) -> list[bool]:
        new: list[bool] = []
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for a in alerts:
                key = (a.site, a.bed, a.alert_id, a.seq)
                cur = self.conn.execute(
                    f"INSERT INTO alerts ({_ALERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (site, bed, alert_id, seq) DO NOTHING",
                    (*key, received.isoformat(), _json(a.payload)),
                )
                new.append(cur.rowcount == 1)
                if cur.rowcount != 1:
                    self.conn.execute(_ALERT_REPEATED.replace("%s", "?"), key)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return new

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        # In WAL mode a read transaction sees one commit for all its statements.
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def analyze(self) -> None:
        self.conn.execute("ANALYZE")

    def size_bytes(self) -> int:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (pages,) = self.conn.execute("PRAGMA page_count").fetchone()
        (size,) = self.conn.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(size)

    def close(self) -> None:
        self.conn.close()


class _Postgres:
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:  # an optional extra: say which
            raise RuntimeError(
                "PostgreSQL needs psycopg: pip install 'vitalwatch[registry]' (or use a SQLite path)"
            ) from exc
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute(_SCHEMA_TABLE)

    def apply(self, migration: Migration, applied_utc: datetime) -> None:
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK,))
            done = self.conn.execute(
                "SELECT 1 FROM registry_schema WHERE version = %s", (migration.version,)
            ).fetchone()
            if done is not None:
                return  # another registry process applied it while we waited for the lock
            self.conn.execute(migration.sql.encode())  # no parameters: several statements allowed
            self.conn.execute(
                "INSERT INTO registry_schema VALUES (%s, %s, %s)",
                (migration.version, migration.name, applied_utc.isoformat()),
            )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(sql.encode(), tuple(params)).fetchall()]

    def add_batch(self, records: Sequence[RecordMessage], received: datetime) -> list[bool]:
        new: list[bool] = []
        alarms: list[tuple[Any, ...]] = []
        with self.conn.transaction(), self.conn.cursor() as cur:
            for r in records:
                cur.execute(_INSERT_RECORD.format(json="%s::jsonb").encode(), _record_params(r, received))
                new.append(cur.rowcount == 1)
                if cur.rowcount == 1:
                    alarms += _alarm_params(r)
                else:
                    cur.execute(
                        "UPDATE session_records SET offers_repeated = offers_repeated + 1"
                        " WHERE record_id = %s",
                        (r.record_id,),
                    )
            if alarms:  # one pipelined statement for the batch's alarm counts
                cur.executemany(_INSERT_ALARMS.encode(), alarms)
        return new

    def add_alerts(self, alerts: Sequence[AlertMessage], received: datetime) -> list[bool]:
        new: list[bool] = []
        with self.conn.transaction(), self.conn.cursor() as cur:
            for a in alerts:
                key = (a.site, a.bed, a.alert_id, a.seq)
                cur.execute(
                    f"INSERT INTO alerts ({_ALERT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s::jsonb)"
                    " ON CONFLICT (site, bed, alert_id, seq) DO NOTHING",
                    (*key, received, _json(a.payload)),
                )
                new.append(cur.rowcount == 1)
                if cur.rowcount != 1:
                    cur.execute(_ALERT_REPEATED, key)
        return new

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield

    def analyze(self) -> None:
        # VACUUM also marks pages all-visible, which an index-only scan needs (autovacuum does
        # the same on a running server, some time after a bulk load).
        self.conn.execute("VACUUM ANALYZE session_records")
        self.conn.execute("VACUUM ANALYZE session_alarm_counts")

    def size_bytes(self) -> int:
        row = self.conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


_ALERT_COLUMNS = "site, bed, alert_id, seq, received_utc, payload"
_ALERT_REPEATED = (
    "UPDATE alerts SET offers_repeated = offers_repeated + 1"
    " WHERE site = %s AND bed = %s AND alert_id = %s AND seq = %s"
)


def _json(row: dict[str, Any]) -> str:
    return strict_json.dumps(row, what="registry", sort_keys=True, separators=(",", ":"))


class RegistryDb:
    """The registry's database, whichever engine; open with :func:`open_registry`."""

    def __init__(self, backend: _Backend) -> None:
        self._db = backend

    @property
    def dialect(self) -> str:
        return self._db.dialect

    def version(self) -> int:
        (row,) = self._db.query("SELECT COALESCE(MAX(version), 0) FROM registry_schema")
        return int(row[0])

    def migrate(self) -> list[int]:
        """Apply every shipped migration newer than the database; the versions applied now."""
        applied: list[int] = []
        for m in migrations(self._db.dialect):
            if m.version > self.version():
                self._db.apply(m, datetime.now(UTC))
                applied.append(m.version)
        return applied

    def add_batch(self, records: Sequence[RecordMessage], *, received: datetime | None = None) -> list[bool]:
        """Store each record unless its id is there already; per record, True when it is new."""
        if not records:
            return []
        return self._db.add_batch(records, received or datetime.now(UTC))

    def add_alerts(self, alerts: Sequence[AlertMessage], *, received: datetime | None = None) -> list[bool]:
        """Store each alert transition unless its (site, bed, alert_id, seq) is there; True when new."""
        if not alerts:
            return []
        return self._db.add_alerts(alerts, received or datetime.now(UTC))

    def count(self) -> int:
        (row,) = self._db.query("SELECT COUNT(*) FROM session_records")
        return int(row[0])

    def alert_count(self) -> int:
        (row,) = self._db.query("SELECT COUNT(*) FROM alerts")
        return int(row[0])

    def alert_repeats(self, site: str, bed: str, alert_id: str, seq: int) -> int | None:
        """How often this transition came again after it was stored (None: not stored)."""
        rows = self._db.query(
            "SELECT offers_repeated FROM alerts WHERE site = %s AND bed = %s AND alert_id = %s AND seq = %s",
            (site, bed, alert_id, seq),
        )
        return None if not rows else int(rows[0][0])

    def repeats(self, record_id: str) -> int | None:
        """How often ``record_id`` was offered again after it was stored (None: not stored)."""
        rows = self._db.query(
            "SELECT offers_repeated FROM session_records WHERE record_id = %s", (record_id,)
        )
        return None if not rows else int(rows[0][0])

    def records(self, *, site: str | None = None, since_month: str | None = None) -> Iterator[StoredRecord]:
        """Stored records, by site, month and record id (a stable order for an export)."""
        where, params = [], []
        if site is not None:
            where.append("site = %s")
            params.append(site)
        if since_month is not None:
            where.append("month >= %s")
            params.append(since_month)
        sql = "SELECT site, bed, month, record FROM session_records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY site, month, record_id"
        for site_, bed, month, record in self._db.query(sql, params):
            row = record if isinstance(record, dict) else json.loads(record)
            yield StoredRecord(str(site_), str(bed), str(month), row)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query written with ``%s`` placeholders (both engines)."""
        return self._db.query(sql, params)

    def snapshot(self) -> AbstractContextManager[None]:
        """A read transaction: the queries inside it all see the same committed data (the
        registry page's figures must not mix two states of a database being written to)."""
        return self._db.snapshot()

    def analyze(self) -> None:
        """Refresh the query planner's statistics, e.g. after a bulk load."""
        self._db.analyze()

    def size_bytes(self) -> int:
        return self._db.size_bytes()

    def close(self) -> None:
        self._db.close()


def open_registry(url: str) -> RegistryDb:
    """``postgresql://...`` (libpq conninfo URL; password from ``~/.pgpass`` or ``PGPASSFILE``, never
    the command line), or ``sqlite:///path`` / a plain file path for the embedded default."""
    if url.startswith(("postgresql://", "postgres://")):
        return RegistryDb(_Postgres(url))
    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    return RegistryDb(_Sqlite(Path(path)))
