"""The durable outbox and session journal: one SQLite file, written by one thread, plus priority lanes.

Why SQLite and not the MQTT client's queue: paho keeps unacknowledged QoS 1 messages in
memory only, so a restart loses them (operations note §0.3). Every alert transition is
committed here *before* the publisher offers it to the broker, and marked delivered only
after the broker's PUBACK; on start the undelivered rows are loaded and sent again with the
same ``alert_id`` and ``seq`` (receivers de-duplicate on that pair).

Durability (fsync) policy:

- ``journal_mode=WAL`` and, for transactions that record an alert, ``synchronous=FULL``:
  the WAL is fsynced at every such commit, so an alert the engine raised survives a power
  cut the moment the publisher may send it. ``NORMAL`` could lose the last commits on power
  loss - exactly the alerts raised while the broker was down.
- Engine snapshots (:mod:`vitalwatch.continuity.statestore`, one row per bed, updated in place) are
  written with ``synchronous=NORMAL``: the alert rows they follow are already FULL-synced,
  and a lost snapshot only means the restart resumes from an older one.
- Delivery marks and ``NORMAL`` session values (the alert-id counter) are *deferred*: kept on
  the writer thread and written inside the next transaction of any kind, or after
  :data:`DEFER_S` at the latest, and at close. Losing one to a crash only means an alert is
  sent once more (receivers de-duplicate) or an id counter is re-read older (the UTC part of
  the id keeps ids unique). Their futures resolve to True when queued.

SD-card wear (docs/operations.md, "SD-card write budget"; ``python -m bench.journal_budget``):
a WAL commit appends one frame per page it touched and a checkpoint copies each touched page
again, so the cost of a transition is pages x page size, not row bytes. Hence: new files
use :data:`PAGE_SIZE` (1 KiB) pages - ``page_size`` only takes effect when the file is
created, so an existing database keeps its 4 KiB pages and simply works as before; no index
on ``delivered`` (the undelivered rows are read once, at start: a scan of at most
:data:`KEEP_DELIVERED` rows), dropped from existing files at open; ``active`` is updated in
place (``INSERT OR REPLACE`` moved the row and rewrote its index); the per-bed ``seq`` is
not rewritten in ``meta`` per transition (``meta()`` takes the larger of the stored value and
the outbox's highest ``seq``); records waiting for the writer are committed together.

Threading: ``sqlite3`` calls block, and an SD card can stall for hundreds of milliseconds,
so every call runs on one dedicated writer thread (a single-worker executor that owns the
connection). Calls are executed in submission order, so a delivery mark can never overtake
the insert it refers to; records waiting together may be committed in one transaction
(earlier, never later, than a call submitted after them).

Failures (disk full, read-only, I/O error): the failing write's future resolves to ``None``,
the store reports itself degraded through ``on_health`` (the supervisor raises the local
"persistence degraded" alarm; the publisher keeps sending from memory) and the write is
*held* in memory (at most :data:`MAX_HELD`, oldest dropped first; snapshots are not held, the
next one replaces them). Every later transaction first replays the held writes in their
original order, in the same transaction, so a row is never written after one that came later;
while any are held a retry runs every :data:`RETRY_S`. The first commit that succeeds clears
the degraded state.

Lane rule (:class:`Lanes`): undelivered transitions are grouped per ``alert_id``. Each
alert's lane is the highest priority among its undelivered transitions; the next transition
sent is the oldest (lowest ``seq``) undelivered transition of the alert in the highest lane,
oldest alert first within a lane. So a new HIGH alarm goes out before a backlog of older LOW
ones, while the transitions of any one ``alert_id`` always leave in ``seq`` order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import itertools
import json
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

from vitalwatch import strict_json

__all__ = ["DB_NAME", "PAGE_SIZE", "Entry", "Lanes", "PendingRow", "Store"]

log = structlog.get_logger("vitalwatch.delivery.outbox")

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], object]

DB_NAME = "vitalwatch.sqlite3"
# Page size of a NEW database file (SQLite fixes it once the file is in WAL mode). Every commit
# writes each page it touches, so 1 KiB pages write about a quarter of the 4 KiB default.
PAGE_SIZE = 1024
# Delivered rows kept for `vitalwatch status`/audit; older ones are pruned at start so the
# file stays small on an SD card.
KEEP_DELIVERED = 10_000
# Request ids remembered per bed to refuse replayed commands; bounded like every buffer.
KEEP_REQUESTS = 10_000
# Deferred writes (delivery marks, the id counter) wait at most this long for a transaction
# to ride along with: a busy bed commits something (an alert, a snapshot) well within it.
DEFER_S = 30.0
# While writes are held after a failure, try them again this often (a freed disk is used
# again within seconds, without waiting for the next alert).
RETRY_S = 2.0
# Writes held in memory while the disk refuses them: ~1.5 kB each, so at most ~15 MB; at
# three busy beds (300 transitions/hour) about 30 hours of alerts.
MAX_HELD = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox(
    id INTEGER PRIMARY KEY,
    bed TEXT NOT NULL, alert_id TEXT NOT NULL, seq INTEGER NOT NULL,
    rank INTEGER NOT NULL, clears INTEGER NOT NULL, payload TEXT NOT NULL,
    created REAL NOT NULL, delivered REAL,
    UNIQUE(bed, alert_id, seq));
DROP INDEX IF EXISTS outbox_undelivered;
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


def _noop(conn: sqlite3.Connection) -> bool:
    return True


class Store:
    """The SQLite database of the daemon; every method that writes returns an asyncio future."""

    def __init__(
        self,
        path: Path,
        *,
        on_health: Callable[[bool, str], None] | None = None,
        page_size: int = PAGE_SIZE,
        autocheckpoint: int | None = None,
        defer_s: float = DEFER_S,
        retry_s: float = RETRY_S,
        max_held: int = MAX_HELD,
    ) -> None:
        self.path = path
        self.on_health = on_health
        self.healthy = True
        self.last_error = ""
        self.writes = 0  # transactions committed
        self.failures = 0  # transactions that failed
        self.replayed = 0  # held writes committed later
        self.dropped = 0  # held writes dropped at MAX_HELD
        self._page_size = page_size
        self._autocheckpoint = autocheckpoint  # None: SQLite's default (1000 pages)
        self._defer_s = defer_s
        self._retry_s = retry_s
        self._max_held = max_held
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitalwatch-db")
        self._conn: sqlite3.Connection | None = None
        self.readonly = False  # _conn is the read-only fallback (writes fail and are held)
        # Writer thread only: writes that failed, in order, and deferred NORMAL writes.
        self._held: deque[tuple[str, Work]] = deque()
        self._deferred: list[Work] = []
        # Records not yet committed: appended on the loop thread, drained by the writer.
        self._records: deque[tuple[int, Work]] = deque()
        self._record_results: dict[int, bool | None] = {}
        self._tokens = itertools.count()
        self._timer: asyncio.TimerHandle | None = None  # loop thread only
        self._closed = False
        # Opening runs on the writer thread too (the connection belongs to it).
        self._pool.submit(self._open).result()

    @property
    def held(self) -> int:
        """Writes refused by the disk and waiting in memory for the retry."""
        return len(self._held)

    # ------------------------------------------------------------------ thread side
    def _open(self) -> None:
        """Open for writing; failing that, keep (or open) a read-only connection for the reads."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                # Only effective while the file is empty (before WAL): an existing database
                # keeps the page size it was created with.
                conn.execute(f"PRAGMA page_size={self._page_size}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=2000")
                if self._autocheckpoint is not None:
                    conn.execute(f"PRAGMA wal_autocheckpoint={self._autocheckpoint}")
                conn.executescript(_SCHEMA)
                conn.execute(
                    "DELETE FROM outbox WHERE delivered IS NOT NULL AND id NOT IN "
                    "(SELECT id FROM outbox WHERE delivered IS NOT NULL ORDER BY id DESC LIMIT ?)",
                    (KEEP_DELIVERED,),
                )
            except BaseException:
                conn.close()
                raise
        except (sqlite3.Error, OSError) as exc:
            if self._conn is None:
                self._conn = self._open_readonly()
                self.readonly = self._conn is not None
            self._set_health(False, f"cannot open {self.path} for writing: {exc}")
            return
        if self._conn is not None:
            self._conn.close()  # the read-only fallback of a directory that is writable again
        self._conn, self.readonly = conn, False

    def _open_readonly(self) -> sqlite3.Connection | None:
        """The existing journal, read-only (a read-only state directory): undelivered alerts of
        before are still loaded and sent, only new writes fail (and are held).

        ``mode=ro`` needs the WAL's ``-shm`` file, which a clean close removed and a read-only
        directory cannot create; then ``immutable=1`` reads the database file alone - all of it
        after a clean close (the WAL was checkpointed), up to the last checkpoint otherwise.
        """
        if not self.path.is_file():
            return None
        wal = self.path.with_name(self.path.name + "-wal")
        for mode in ("mode=ro", "immutable=1"):
            try:
                conn = sqlite3.connect(f"{self.path.as_uri()}?{mode}", uri=True, check_same_thread=False)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.Error:
                continue
            wal_ignored = mode == "immutable=1" and wal.is_file() and wal.stat().st_size > 0
            log.warning("persistence.read_only", path=str(self.path), mode=mode, wal_ignored=wal_ignored)
            return conn
        return None

    def _set_health(self, ok: bool, reason: str) -> None:
        if ok == self.healthy:
            return
        self.healthy, self.last_error = ok, reason
        if ok:
            log.info("persistence.recovered", path=str(self.path), replayed=self.replayed)
        else:
            log.error("persistence.degraded", path=str(self.path), error=reason, held=len(self._held))
        if self.on_health is not None:
            # Called on the writer thread: hand the news to the event loop's thread.
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(RuntimeError):  # closed meanwhile: nobody to tell
                    self._loop.call_soon_threadsafe(self.on_health, ok, reason)
            else:
                self.on_health(ok, reason)

    def _hold(self, sync: str, work: Work) -> None:
        """Keep a failed write for the retry; the oldest goes first when the bound is reached."""
        if len(self._held) >= self._max_held:
            self._held.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("persistence.held_dropped", dropped=self.dropped, limit=self._max_held)
        self._held.append((sync, work))
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: close() flushes
                self._loop.call_soon_threadsafe(self._arm, self._retry_s)

    def _txn(self, sync: str, body: Callable[[sqlite3.Connection], T], *, hold: bool = True) -> T | None:
        """Run held writes, deferred writes and ``body`` in one transaction; None when SQLite fails.

        ``hold``: keep ``body`` for the retry if it fails (False for snapshots, which the next
        one replaces, and for the flush, which has no body of its own).
        """
        held, deferred = list(self._held), list(self._deferred)
        if self._conn is None or self.readonly:
            self._open()
        conn = self._conn
        if conn is None or self.readonly:
            self.failures += 1
            if hold:
                self._hold(sync, body)
            return None
        strongest = "FULL" if sync == "FULL" or any(s == "FULL" for s, _ in held) else "NORMAL"
        try:
            conn.execute(f"PRAGMA synchronous={strongest}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for _, work in held:
                    work(conn)
                for work in deferred:
                    work(conn)
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            self.failures += 1
            if hold:
                self._hold(sync, body)
            self._set_health(False, str(exc))
            return None
        for _ in held:
            self._held.popleft()
        del self._deferred[: len(deferred)]
        self.replayed += len(held)
        self.writes += 1
        self._set_health(True, "")
        return result

    def _flush(self) -> tuple[int, int]:
        """Write what is held or deferred now; (held, deferred) still waiting afterwards."""
        if self._held or self._deferred:
            self._txn("NORMAL", _noop, hold=False)
        return len(self._held), len(self._deferred)

    def _commit_records(self, token: int) -> bool | None:
        """Commit every record waiting (one transaction); the result for ``token``'s record."""
        if token not in self._record_results:
            batch: list[tuple[int, Work]] = []
            while self._records:
                batch.append(self._records.popleft())
            works = [work for _, work in batch]

            def body(conn: sqlite3.Connection) -> bool:
                for work in works:
                    work(conn)
                return True

            result = self._txn("FULL", body)
            for t, _ in batch:
                self._record_results[t] = result
        return self._record_results.pop(token, None)

    # ------------------------------------------------------------------ loop side
    def _submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, fn)

    def _arm(self, delay: float) -> None:
        """(Loop thread) make sure a flush runs within ``delay``."""
        if self._closed or self._loop is None or self._loop.is_closed():
            return
        if self._timer is not None and self._timer.when() <= self._loop.time() + delay:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, self._kick)

    def _kick(self) -> None:
        self._timer = None
        if self._closed:
            return
        if self._loop is None:
            return
        try:
            fut = self._loop.run_in_executor(self._pool, self._flush)
        except RuntimeError:  # close() (on another thread) shut the writer down meanwhile
            return
        fut.add_done_callback(self._rearm)

    def _rearm(self, fut: asyncio.Future[tuple[int, int]]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        held, deferred = fut.result()
        if held:
            self._arm(self._retry_s)
        elif deferred:
            self._arm(self._defer_s)

    def _defer(self, work: Work) -> asyncio.Future[bool | None]:
        """Queue a NORMAL write for the next transaction (module docstring); True once queued."""

        def queue() -> bool | None:
            if len(self._deferred) >= self._max_held:
                self._deferred.pop(0)  # a lost delivery mark only means one resend
            self._deferred.append(work)
            return True

        fut = self._submit(queue)
        self._arm(self._defer_s)
        return fut

    async def flush(self) -> None:
        """Write every held and deferred write now (benchmarks, tests, shutdown)."""
        await self._submit(self._flush)

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
        """Commit one alert transition (outbox row + active-alarm table) with a full fsync."""
        body = strict_json.dumps(payload, what="outbox", separators=(",", ":"), sort_keys=True)
        tr = strict_json.dumps(transition, what="outbox", separators=(",", ":"), sort_keys=True)
        created = time.time()

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO outbox(bed, alert_id, seq, rank, clears, payload, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (bed, alert_id, seq, rank, int(clears), body, created),
            )
            if clears:
                conn.execute("DELETE FROM active WHERE bed=? AND alert_id=?", (bed, alert_id))
            else:  # in place: INSERT OR REPLACE gave the row a new rowid and rewrote its index
                conn.execute(
                    "INSERT INTO active(bed, alert_id, transition) VALUES (?, ?, ?) "
                    "ON CONFLICT(bed, alert_id) DO UPDATE SET transition=excluded.transition",
                    (bed, alert_id, tr),
                )

        token = next(self._tokens)
        self._records.append((token, work))
        return self._submit(lambda: self._commit_records(token))

    def delivered(self, bed: str, alert_id: str, seq: int) -> asyncio.Future[bool | None]:
        """The broker acknowledged (alert_id, seq): it will not be sent again after a restart (deferred)."""
        at = time.time()

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET delivered=? WHERE bed=? AND alert_id=? AND seq=?",
                (at, bed, alert_id, seq),
            )

        return self._defer(work)

    def put_meta(
        self, bed: str, values: dict[str, Any], *, sync: str = "FULL"
    ) -> asyncio.Future[bool | None]:
        """Session values (phase, counters, command fields) as JSON; ``NORMAL`` ones are deferred."""
        rows = [(bed, key, strict_json.dumps(value, what="outbox")) for key, value in values.items()]

        def work(conn: sqlite3.Connection) -> bool:
            conn.executemany(
                "INSERT INTO meta(bed, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT(bed, key) DO UPDATE SET value=excluded.value",
                rows,
            )
            return True

        if sync == "NORMAL":
            return self._defer(work)
        return self._submit(lambda: self._txn(sync, work))

    def remember_request(self, bed: str, request_id: str) -> asyncio.Future[bool | None]:
        """A command's request id, so a replay after a restart is refused too."""
        at = time.time()

        def work(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "INSERT OR IGNORE INTO requests(bed, request_id, at) VALUES (?, ?, ?)",
                (bed, request_id, at),
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

        return self._submit(lambda: self._txn("NORMAL", work, hold=False))

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
        """Session values; ``seq`` is the larger of ``meta.seq`` (older files) and the outbox's highest."""
        values = {
            k: json.loads(v) if k != "seq" else int(v)
            for k, v in self._read("SELECT key, value FROM meta WHERE bed=?", (bed,))
        }
        top = self._read("SELECT max(seq) FROM outbox WHERE bed=?", (bed,))
        if top and top[0][0] is not None:
            values["seq"] = max(int(top[0][0]), int(values.get("seq", 0)))
        return values

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
        """Write what is held or deferred (if the disk allows), then close; any thread."""
        self._closed = True

        def work() -> None:
            self._flush()
            if self._held:
                log.error("persistence.lost_at_close", held=len(self._held))
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
