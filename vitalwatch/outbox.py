"""The durable outbox and session journal: one SQLite file, written by one thread, plus priority lanes.

Why SQLite and not the MQTT client's queue: paho keeps unacknowledged QoS 1 messages in
memory only, so a restart loses them (operations note §0.3). Every alert transition is
committed here *before* the publisher offers it to the broker, and marked delivered only
after the broker's PUBACK; on start the undelivered rows are loaded and sent again with the
same ``alert_id`` and ``seq`` (receivers de-duplicate on that pair).

Durability (fsync) policy:

- ``journal_mode=WAL`` and, for transactions that record an alert, ``synchronous=FULL``:
  the WAL is fsynced at every such commit, so an alert the engine raised survives a power
  cut the moment the publisher may send it. Alert transitions are rare (a handful per
  minute per bed), so one fsync each costs nothing that matters, while ``NORMAL`` could
  lose the last commits on power loss - exactly the alerts raised while the broker was down.
- Engine snapshots (:mod:`vitalwatch.statestore`, one row per bed, replaced) are written with
  ``synchronous=NORMAL`` too: the alert rows they follow are already FULL-synced, and a lost
  snapshot only means the restart resumes from an older one (the alert journal wins where it
  is newer).
- Delivery marks, request ids and counters are written with ``synchronous=NORMAL``: losing
  one to a power cut only means an alert is sent once more (receivers de-duplicate) or a
  counter is re-read from the next FULL commit, which also syncs every earlier WAL frame.

Threading: ``sqlite3`` calls block, and an SD card can stall for hundreds of milliseconds,
so every call runs on one dedicated writer thread (a single-worker executor that owns the
connection). Calls are executed in submission order, so a delivery mark can never overtake
the insert it refers to. A failing write (disk full, read-only, I/O error) resolves its
future to ``None``/``False`` and reports the store as degraded through ``on_health``; the
publisher then keeps sending from memory and the supervisor raises "persistence degraded".

Lane rule (:class:`Lanes`): undelivered transitions are grouped per ``alert_id``. Each
alert's lane is the highest priority among its undelivered transitions; the next transition
sent is the oldest (lowest ``seq``) undelivered transition of the alert in the highest lane,
oldest alert first within a lane. So a new HIGH alarm goes out before a backlog of older LOW
ones, while the transitions of any one ``alert_id`` always leave in ``seq`` order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import json
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

__all__ = ["DB_NAME", "Entry", "Lanes", "PendingRow", "Store"]

log = structlog.get_logger("vitalwatch.outbox")

T = TypeVar("T")

DB_NAME = "vitalwatch.sqlite3"
# Delivered rows kept per bed for `vitalwatch status`/audit; older ones are pruned at start so
# the file stays small on an SD card.
KEEP_DELIVERED = 10_000
# Request ids remembered per bed to refuse replayed commands; bounded like every buffer.
KEEP_REQUESTS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox(
    id INTEGER PRIMARY KEY,
    bed TEXT NOT NULL, alert_id TEXT NOT NULL, seq INTEGER NOT NULL,
    rank INTEGER NOT NULL, clears INTEGER NOT NULL, payload TEXT NOT NULL,
    created REAL NOT NULL, delivered REAL,
    UNIQUE(bed, alert_id, seq));
CREATE INDEX IF NOT EXISTS outbox_undelivered ON outbox(bed, delivered);
CREATE TABLE IF NOT EXISTS active(
    bed TEXT NOT NULL, alert_id TEXT NOT NULL, transition TEXT NOT NULL,
    PRIMARY KEY(bed, alert_id));
CREATE TABLE IF NOT EXISTS meta(
    bed TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(bed, key));
CREATE TABLE IF NOT EXISTS requests(
    bed TEXT NOT NULL, request_id TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY(bed, request_id));
CREATE TABLE IF NOT EXISTS snapshot(
    bed TEXT PRIMARY KEY, written REAL NOT NULL, state BLOB NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class PendingRow:
    """An undelivered outbox row as loaded at start."""

    alert_id: str
    seq: int
    rank: int
    clears: bool
    payload: dict[str, Any]


class Store:
    """The SQLite database of the daemon; every method that writes returns an asyncio future."""

    def __init__(
        self,
        path: Path,
        *,
        on_health: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.path = path
        self.on_health = on_health
        self.healthy = True
        self.last_error = ""
        self.writes = 0
        self.failures = 0
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitalwatch-db")
        self._conn: sqlite3.Connection | None = None
        # Opening runs on the writer thread too (the connection belongs to it).
        self._pool.submit(self._open).result()

    # ------------------------------------------------------------------ thread side
    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=2000")
            conn.executescript(_SCHEMA)
            conn.execute(
                "DELETE FROM outbox WHERE delivered IS NOT NULL AND id NOT IN "
                "(SELECT id FROM outbox WHERE delivered IS NOT NULL ORDER BY id DESC LIMIT ?)",
                (KEEP_DELIVERED,),
            )
            self._conn = conn
        except (sqlite3.Error, OSError) as exc:
            self._conn = None
            self._set_health(False, f"cannot open {self.path}: {exc}")

    def _set_health(self, ok: bool, reason: str) -> None:
        if ok == self.healthy:
            return
        self.healthy, self.last_error = ok, reason
        if ok:
            log.info("persistence.recovered", path=str(self.path))
        else:
            log.error("persistence.degraded", path=str(self.path), error=reason)
        if self.on_health is not None:
            # Called on the writer thread: hand the news to the event loop's thread.
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self.on_health, ok, reason)
            else:
                self.on_health(ok, reason)

    def _txn(self, sync: str, body: Callable[[sqlite3.Connection], T]) -> T | None:
        """Run ``body`` in one transaction; None (and degraded) when SQLite fails."""
        if self._conn is None:
            self._open()
            if self._conn is None:
                self.failures += 1
                return None
        conn = self._conn
        try:
            conn.execute(f"PRAGMA synchronous={sync}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            self.failures += 1
            self._set_health(False, str(exc))
            return None
        self.writes += 1
        self._set_health(True, "")
        return result

    # ------------------------------------------------------------------ async API
    def _submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, fn)

    def record(
        self,
        bed: str,
        *,
        alert_id: str,
        seq: int,
        rank: int,
        clears: bool,
        payload: dict[str, Any],
        transition: dict[str, Any],
    ) -> asyncio.Future[bool | None]:
        """Commit one alert transition (outbox row + active-alarm table + seq) with a full fsync."""
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        tr = json.dumps(transition, separators=(",", ":"), sort_keys=True)

        def work(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "INSERT OR IGNORE INTO outbox(bed, alert_id, seq, rank, clears, payload, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (bed, alert_id, seq, rank, int(clears), body, time.time()),
            )
            if clears:
                conn.execute("DELETE FROM active WHERE bed=? AND alert_id=?", (bed, alert_id))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO active(bed, alert_id, transition) VALUES (?, ?, ?)",
                    (bed, alert_id, tr),
                )
            conn.execute(
                "INSERT INTO meta(bed, key, value) VALUES (?, 'seq', ?) "
                "ON CONFLICT(bed, key) DO UPDATE SET value=excluded.value "
                "WHERE CAST(excluded.value AS INTEGER) > CAST(meta.value AS INTEGER)",
                (bed, str(seq)),
            )
            return True

        return self._submit(lambda: self._txn("FULL", work))

    def delivered(self, bed: str, alert_id: str, seq: int) -> asyncio.Future[bool | None]:
        """The broker acknowledged (alert_id, seq): it will not be sent again after a restart."""

        def work(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "UPDATE outbox SET delivered=? WHERE bed=? AND alert_id=? AND seq=?",
                (time.time(), bed, alert_id, seq),
            )
            return True

        return self._submit(lambda: self._txn("NORMAL", work))

    def put_meta(
        self, bed: str, values: dict[str, Any], *, sync: str = "FULL"
    ) -> asyncio.Future[bool | None]:
        """Session values (phase, counters, command fields) as JSON, one transaction."""

        def work(conn: sqlite3.Connection) -> bool:
            for key, value in values.items():
                conn.execute(
                    "INSERT OR REPLACE INTO meta(bed, key, value) VALUES (?, ?, ?)",
                    (bed, key, json.dumps(value)),
                )
            return True

        return self._submit(lambda: self._txn(sync, work))

    def remember_request(self, bed: str, request_id: str) -> asyncio.Future[bool | None]:
        def work(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "INSERT OR IGNORE INTO requests(bed, request_id, at) VALUES (?, ?, ?)",
                (bed, request_id, time.time()),
            )
            conn.execute(
                "DELETE FROM requests WHERE bed=? AND request_id NOT IN "
                "(SELECT request_id FROM requests WHERE bed=? ORDER BY at DESC LIMIT ?)",
                (bed, bed, KEEP_REQUESTS),
            )
            return True

        return self._submit(lambda: self._txn("NORMAL", work))

    def put_snapshot(self, bed: str, state: bytes, *, written: float) -> asyncio.Future[bool | None]:
        """Replace the bed's engine snapshot (opaque bytes; ``written`` = UTC epoch), NORMAL sync."""

        def work(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "INSERT INTO snapshot(bed, written, state) VALUES (?, ?, ?) "
                "ON CONFLICT(bed) DO UPDATE SET written=excluded.written, state=excluded.state",
                (bed, written, state),
            )
            return True

        return self._submit(lambda: self._txn("NORMAL", work))

    # ------------------------------------------------------------------ start-up reads
    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def work() -> list[tuple[Any, ...]]:
            if self._conn is None:
                return []
            try:
                return list(self._conn.execute(sql, args))
            except sqlite3.Error as exc:
                self._set_health(False, str(exc))
                return []

        return self._pool.submit(work).result()

    def pending(self, bed: str) -> list[PendingRow]:
        """Undelivered transitions of ``bed`` in seq order (read once at start, blocking)."""
        rows = self._read(
            "SELECT alert_id, seq, rank, clears, payload FROM outbox "
            "WHERE bed=? AND delivered IS NULL ORDER BY seq",
            (bed,),
        )
        return [PendingRow(a, s, r, bool(c), json.loads(p)) for a, s, r, c, p in rows]

    def active(self, bed: str) -> list[dict[str, Any]]:
        """The last transition of every alarm active when the daemon stopped."""
        rows = self._read("SELECT transition FROM active WHERE bed=?", (bed,))
        found = [json.loads(r[0]) for r in rows]
        return sorted(found, key=lambda t: t.get("seq", 0))

    def meta(self, bed: str) -> dict[str, Any]:
        return {
            k: json.loads(v) if k != "seq" else int(v)
            for k, v in self._read("SELECT key, value FROM meta WHERE bed=?", (bed,))
        }

    def snapshot(self, bed: str) -> tuple[float, bytes] | None:
        """The bed's last engine snapshot and when it was written (UTC epoch), or None."""
        rows = self._read("SELECT written, state FROM snapshot WHERE bed=?", (bed,))
        if not rows:
            return None
        written, state = rows[0]
        return float(written), bytes(state) if isinstance(state, bytes | memoryview) else str(state).encode()

    def requests(self, bed: str) -> list[str]:
        rows = self._read("SELECT request_id FROM requests WHERE bed=? ORDER BY at", (bed,))
        return [r[0] for r in rows]

    def close(self) -> None:
        def work() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._pool.submit(work).result()
        self._pool.shutdown(wait=True)


@dataclass(slots=True)
class Entry:
    """One alert transition waiting for the broker's acknowledgement."""

    alert_id: str
    seq: int
    rank: int  # Priority.rank: high 3 ... info 0
    clears: bool  # the alarm ended: its retained topic is emptied
    payload: dict[str, Any]
    queued_at: float  # loop time it entered the outbox (for age and the unreachable alarm)
    persisted: asyncio.Future[bool | None] | None = None


@dataclass(slots=True)
class _Alert:
    entries: deque[Entry] = field(default_factory=deque)
    lane: int = 0


class Lanes:
    """Undelivered entries; the next one follows the lane rule in the module docstring."""

    def __init__(self) -> None:
        self._alerts: dict[str, _Alert] = {}
        self._heap: list[tuple[int, int, str]] = []  # (-lane, head seq, alert_id), lazily invalidated
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Entry]:
        for alert in self._alerts.values():
            yield from alert.entries

    def push(self, entry: Entry) -> None:
        alert = self._alerts.get(entry.alert_id)
        if alert is None:
            alert = self._alerts[entry.alert_id] = _Alert()
        if any(e.seq == entry.seq for e in alert.entries):
            return  # the same transition twice (restored and re-recorded): keep one
        alert.entries.append(entry)
        if len(alert.entries) > 1 and alert.entries[-2].seq > entry.seq:
            alert.entries = deque(sorted(alert.entries, key=lambda e: e.seq))
        alert.lane = max(alert.lane, entry.rank)
        self._count += 1
        heapq.heappush(self._heap, (-alert.lane, alert.entries[0].seq, entry.alert_id))

    def peek(self) -> Entry | None:
        while self._heap:
            neg_lane, head, alert_id = self._heap[0]
            alert = self._alerts.get(alert_id)
            if alert is None or not alert.entries or alert.entries[0].seq != head or alert.lane != -neg_lane:
                heapq.heappop(self._heap)
                continue
            return alert.entries[0]
        return None

    def pop(self, entry: Entry) -> None:
        """Remove ``entry`` (the one :meth:`peek` returned) after the broker acknowledged it."""
        alert = self._alerts[entry.alert_id]
        assert alert.entries and alert.entries[0] is entry, "only the head of an alert may leave"
        alert.entries.popleft()
        self._count -= 1
        if not alert.entries:
            del self._alerts[entry.alert_id]
            return
        alert.lane = max(e.rank for e in alert.entries)
        heapq.heappush(self._heap, (-alert.lane, alert.entries[0].seq, entry.alert_id))

    def oldest_queued_at(self) -> float | None:
        return min((a.entries[0].queued_at for a in self._alerts.values() if a.entries), default=None)
