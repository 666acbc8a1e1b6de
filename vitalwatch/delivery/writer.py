"""One SQLite connection, one writer thread: durable commits that never block the event loop.

:class:`vitalwatch.delivery.store.Store` builds the daemon's tables on this; here is only *how*
a write reaches the disk, not what is written.

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
- Records (FULL) waiting for the writer are committed together: one fsync for a burst, and
  before any other job the writer runs next (an alert never waits behind a queue of other
  writes, such as a flood of command ids).

Threading: ``sqlite3`` calls block, and an SD card can stall for hundreds of milliseconds,
so every call runs on one dedicated writer thread (a single-worker executor that owns the
connection). Calls are executed in submission order, so a delivery mark can never overtake
the insert it refers to; records waiting together may be committed in one transaction
(earlier, never later, than a call submitted after them).

Failures (disk full, read-only, I/O error): the failing write's future resolves to ``None``,
the writer reports itself degraded through ``on_health`` (the supervisor raises the local
"persistence degraded" alarm; the publisher keeps sending from memory) and the write is
*held* in memory (at most :data:`MAX_HELD`, oldest dropped first; snapshots are not held, the
next one replaces them). Every later transaction first replays the held writes in their
original order, in the same transaction, so a row is never written after one that came later;
while any are held a retry runs every :data:`RETRY_S`. The first commit that succeeds clears
the degraded state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import sqlite3
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from vitalwatch.delivery.commit import Commit

__all__ = ["DEFER_S", "MAX_HELD", "RETRY_S", "JournalWriter", "Work"]

log = structlog.get_logger("vitalwatch.delivery.writer")

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], object]

# Deferred writes (delivery marks, the id counter) wait at most this long for a transaction
# to ride along with: a busy bed commits something (an alert, a snapshot) well within it.
DEFER_S = 30.0
# While writes are held after a failure, try them again this often (a freed disk is used
# again within seconds, without waiting for the next alert).
RETRY_S = 2.0
# Writes held in memory while the disk refuses them: ~1.5 kB each, so at most ~15 MB; at
# three busy beds (300 transitions/hour) about 30 hours of alerts.
MAX_HELD = 10_000


def _noop(conn: sqlite3.Connection) -> bool:
    return True


def _settle(commits: tuple[Commit, ...], result: bool | None) -> None:
    """(Loop thread) a record's transaction ended: tell each of its readers, once."""
    for commit in commits:
        commit.settle(result)


def _settle_from(commits: tuple[Commit, ...], job: asyncio.Future[bool | None]) -> None:
    """A record's own job finished: its result (or failure) settles what nothing settled yet."""
    for commit in commits:
        if job.cancelled():
            commit.cancel()
        elif (exc := job.exception()) is not None:
            commit.fail(exc)
        else:
            commit.settle(job.result())


class JournalWriter:
    """A SQLite file written by one thread; every write returns an asyncio future.

    Subclasses say what the file holds: :meth:`_prepare` creates or migrates the tables when
    the file is opened for writing; their write methods hand :data:`Work` to :meth:`_txn`
    (through :meth:`_submit`), :meth:`_defer` or :meth:`_record`.
    """

    def __init__(
        self,
        path: Path,
        *,
        on_health: Callable[[bool, str], None] | None = None,
        page_size: int,
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
        # Loop thread only: deferred writes not handed to the writer yet. They go with the next
        # job submitted (in order: before that job's own work), so deferring costs no job and
        # no writer wake-up of its own; an alert's id counter is deferred just before the alert
        # is journalled, on the alarm path (docs/performance.md).
        self._deferring: list[Work] = []
        # Records not yet committed: appended on the loop thread, drained by the writer.
        self._records: deque[tuple[int, Work, tuple[Commit, ...]]] = deque()
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

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """(Writer thread) create or migrate the tables of a file just opened for writing."""

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
                self._prepare(conn)
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

    def _commit_waiting(self) -> None:
        """Commit every record waiting (one transaction) and tell each record's future."""
        batch: list[tuple[int, Work, tuple[Commit, ...]]] = []
        while self._records:
            batch.append(self._records.popleft())
        if not batch:
            return
        works = [work for _, work, _ in batch]

        def body(conn: sqlite3.Connection) -> bool:
            for work in works:
                work(conn)
            return True

        result = self._txn("FULL", body)
        for t, _, commits in batch:
            self._record_results[t] = result
            for commit in commits:
                commit.written(result)
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self._loop.call_soon_threadsafe(_settle, commits, result)

    def _commit_records(self, token: int) -> bool | None:
        """Commit every record waiting (if ``token``'s is still among them); ``token``'s result."""
        if token not in self._record_results:
            self._commit_waiting()
        return self._record_results.pop(token, None)

    def _queue_deferred(self, works: list[Work]) -> None:
        """(Writer thread) deferred writes handed over with a job: written in the next transaction."""
        self._deferred.extend(works)
        if len(self._deferred) > self._max_held:  # a lost delivery mark only means one resend
            del self._deferred[: len(self._deferred) - self._max_held]

    def _records_first(self, fn: Callable[[], T], deferred: list[Work] | None = None) -> Callable[[], T]:
        """(Writer thread) ``fn`` after committing any record waiting: alerts jump the queue.

        A burst of other writes (thousands of command ids, a snapshot) queued before an alert
        must not hold its fsync back: whatever job the writer runs next commits the waiting
        records first, so an alert waits for at most the one job already running.
        """

        def run() -> T:
            if deferred:
                self._queue_deferred(deferred)
            if self._records:
                self._commit_waiting()
            return fn()

        return run

    # ------------------------------------------------------------------ loop side
    def _submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, self._records_first(fn, self._take_deferring()))

    def _take_deferring(self) -> list[Work]:
        pending, self._deferring = self._deferring, []
        return pending

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
        pending = self._take_deferring()
        try:
            fut = self._loop.run_in_executor(self._pool, self._records_first(self._flush, pending))
        except RuntimeError:  # close() (on another thread) shut the writer down meanwhile
            self._deferring[:0] = pending
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
        if len(self._deferring) >= self._max_held:
            self._deferring.pop(0)  # a lost delivery mark only means one resend
        self._deferring.append(work)
        self._arm(self._defer_s)
        fut: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        fut.set_result(True)
        return fut

    def _record(self, work: Work, readers: int = 1) -> tuple[Commit, ...]:
        """Commit ``work`` with a full fsync, together with any other record waiting for the writer.

        One :class:`~vitalwatch.delivery.commit.Commit` per reader (each destination that sends
        the record once it is on disk), all settled in the one loop callback of the commit,
        which may come before the record's own job reaches the front of the writer's queue
        (:meth:`_records_first`).
        """
        token = next(self._tokens)
        commits = tuple(Commit() for _ in range(readers))
        self._records.append((token, work, commits))
        job = self._submit(lambda: self._commit_records(token))
        job.add_done_callback(lambda done: _settle_from(commits, done))
        return commits

    async def flush(self) -> None:
        """Write every held and deferred write now (benchmarks, tests, shutdown)."""
        await self._submit(self._flush)

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Rows of one query, on the writer thread (blocking: start-up reads only)."""

        def work() -> list[tuple[Any, ...]]:
            if self._conn is None:
                return []
            try:
                return list(self._conn.execute(sql, args))
            except sqlite3.Error as exc:
                self._set_health(False, str(exc))
                return []

        return self._pool.submit(work).result()

    def close(self) -> None:
        """Write what is held or deferred (if the disk allows), then close; any thread."""
        self._closed = True
        pending = self._take_deferring()

        def work() -> None:
            self._queue_deferred(pending)
            self._flush()
            if self._held:
                log.error("persistence.lost_at_close", held=len(self._held))
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._pool.submit(work).result()
        self._pool.shutdown(wait=True)
