"""The daemon's database: durable outbox, active alarms, session values, command ids, snapshots.

Why SQLite and not the MQTT client's queue: paho keeps unacknowledged QoS 1 messages in
memory only, so a restart loses them (operations note §0.3). Every alert transition is
committed here *before* the publisher offers it to the broker, and marked delivered only
after the broker's PUBACK; on start the undelivered rows are loaded and sent again with the
same ``alert_id`` and ``seq`` (receivers de-duplicate on that pair).

How and when each write reaches the disk (fsync policy, the writer thread, held and deferred
writes) is :mod:`vitalwatch.delivery.writer`; this module is what the file holds.

Other consumers of the journalled transitions (the IHE PCD-04 alert reporters,
:mod:`vitalwatch.delivery.alarm_manager`) register a :class:`JournalTap`: what they must send is
written in the *same* transaction as the outbox row (``report_outbox``, one row per reporter and
transition), so a transition is on disk for every destination or for none, and each destination
marks its own rows delivered.

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
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from vitalwatch import strict_json
from vitalwatch.delivery.commit import Commit
from vitalwatch.delivery.writer import DEFER_S, MAX_HELD, RETRY_S, JournalWriter, Work

__all__ = [
    "DB_NAME",
    "PAGE_SIZE",
    "DeliveredHook",
    "JournalTap",
    "PendingRow",
    "ReportRow",
    "Store",
    "UnreceiptedRow",
    "read_unreceipted",
]

DB_NAME = "vitalwatch.sqlite3"
# Page size of a NEW database file (SQLite fixes it once the file is in WAL mode). Every commit
# writes each page it touches, so 1 KiB pages write about a quarter of the 4 KiB default.
PAGE_SIZE = 1024
# Delivered rows kept for `vitalwatch status`/audit; older ones are pruned at start so the
# file stays small on an SD card.
KEEP_DELIVERED = 10_000
log = structlog.get_logger("vitalwatch.delivery.store")

# Request ids remembered per bed to refuse replayed commands; bounded like every buffer.
KEEP_REQUESTS = 10_000
# meta row (bed "", never a bed id) holding the outbox id after which alert rows wait for a
# downstream receipt (vitalwatch.registry.alert_receipts); absent while alert receipts are off.
RECEIPTS_AFTER = ("", "alert_receipts_after_id")

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
CREATE TABLE IF NOT EXISTS report_outbox(
    id INTEGER PRIMARY KEY,
    reporter TEXT NOT NULL, bed TEXT NOT NULL, alert_id TEXT NOT NULL, seq INTEGER NOT NULL,
    counter INTEGER NOT NULL, rank INTEGER NOT NULL, final INTEGER NOT NULL, message TEXT NOT NULL,
    created REAL NOT NULL, delivered REAL,
    UNIQUE(reporter, bed, alert_id, seq));
"""


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One journalled message of an alert reporter (``report_outbox``), as loaded at start."""

    bed: str
    alert_id: str
    seq: int
    counter: int  # the alert's update counter: 0 for its first report, +1 per transition
    rank: int
    final: bool  # the alert ended with this transition
    message: str  # the encoded message, sent byte for byte again after an outage


class JournalTap(Protocol):
    """Another destination of every alert transition :meth:`Store.record` journals."""

    def journal(self, bed: str, payload: dict[str, Any]) -> Work | None:
        """(Loop thread) this destination's rows for ``payload``, committed with the outbox row."""

    def journalled(self, persisted: Commit) -> None:
        """(Loop thread) the transaction of the last :meth:`journal` call was submitted;
        ``persisted`` is this destination's own view of its commit."""


# Called (loop thread) after the broker PUBACKed (bed, alert_id, seq), with the wall time.
DeliveredHook = Callable[[str, str, int, float], None]


@dataclass(frozen=True, slots=True)
class UnreceiptedRow:
    """An outbox row still waiting for a downstream receipt (alert receipts on)."""

    id: int
    bed: str
    alert_id: str
    seq: int
    created: float  # wall time it was journalled
    delivered: float | None  # wall time of the broker's PUBACK, once its deferred mark is written


def read_unreceipted(conn: sqlite3.Connection) -> list[UnreceiptedRow]:
    """Rows after the receipts watermark without a receipt, in journal order (own connection).

    For the alert receipts' reader, on its own (read) connection: WAL readers never block the
    writer thread. Empty when alert receipts are off (no watermark).
    """
    try:
        rows = conn.execute(
            "SELECT id, bed, alert_id, seq, created, delivered FROM outbox WHERE receipted IS NULL"
            " AND id > (SELECT CAST(value AS INTEGER) FROM meta WHERE bed=? AND key=?) ORDER BY id",
            RECEIPTS_AFTER,
        ).fetchall()
    except sqlite3.OperationalError:  # a journal from before alert receipts (no column yet)
        return []
    return [UnreceiptedRow(int(i), b, a, int(q), float(c), d) for i, b, a, q, c, d in rows]


@dataclass(frozen=True, slots=True)
class PendingRow:
    """An undelivered outbox row as loaded at start."""

    alert_id: str
    seq: int
    rank: int
    clears: bool
    payload: dict[str, Any]


class Store(JournalWriter):
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
        super().__init__(
            path,
            on_health=on_health,
            page_size=page_size,
            autocheckpoint=autocheckpoint,
            defer_s=defer_s,
            retry_s=retry_s,
            max_held=max_held,
        )
        self._taps: list[JournalTap] = []
        self._delivered_hooks: list[DeliveredHook] = []

    def add_tap(self, tap: JournalTap) -> None:
        """Journal every later transition for ``tap`` too (in the same transaction)."""
        self._taps.append(tap)

    def on_delivered(self, hook: DeliveredHook) -> None:
        """Tell ``hook`` of every PUBACK as :meth:`delivered` queues its mark (alert receipts)."""
        self._delivered_hooks.append(hook)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.executescript(_SCHEMA)
        if "receipted" not in {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}:
            # Alert receipts (a downstream consumer's, after the PUBACK): added in place.
            conn.execute("ALTER TABLE outbox ADD COLUMN receipted REAL")
        # Rows still waiting for a receipt are kept however many delivered rows follow them.
        conn.execute(
            "DELETE FROM outbox WHERE delivered IS NOT NULL AND id NOT IN "
            "(SELECT id FROM outbox WHERE delivered IS NOT NULL ORDER BY id DESC LIMIT ?) "
            "AND NOT (receipted IS NULL AND id > "
            "COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE bed=? AND key=?), 1e18))",
            (KEEP_DELIVERED, *RECEIPTS_AFTER),
        )
        # Delivered reports beyond the newest KEEP_DELIVERED go, except the last row of an alert
        # that has not ended: its update counter continues from there after a restart.
        conn.execute(
            "DELETE FROM report_outbox WHERE delivered IS NOT NULL AND id NOT IN "
            "(SELECT id FROM report_outbox WHERE delivered IS NOT NULL ORDER BY id DESC LIMIT ?) "
            "AND id NOT IN (SELECT max(id) FROM report_outbox GROUP BY reporter, bed, alert_id "
            "HAVING max(final) = 0)",
            (KEEP_DELIVERED,),
        )

    # ------------------------------------------------------------------ writes
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
        encoded: str | None = None,
    ) -> Commit:
        """Commit one alert transition (outbox row + active-alarm table) with a full fsync.

        ``encoded``: ``payload`` already encoded as compact, key-sorted JSON (the publisher has it
        for the retained copy; encoding it once is one encoding less before the commit starts).
        Awaiting the result gives True once committed, None when the disk refused it (held for
        the retry); each journal tap gets a :class:`Commit` of its own for the same commit."""
        body = encoded
        if body is None:
            body = strict_json.dumps(payload, what="outbox", separators=(",", ":"), sort_keys=True)
        tr = strict_json.dumps(transition, what="outbox", separators=(",", ":"), sort_keys=True)
        created = time.time()

        taps = [w for w in (self._tap_work(tap, bed, payload) for tap in self._taps) if w is not None]

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
            for tap_work in taps:
                tap_work(conn)

        persisted, *for_taps = self._record(work, 1 + len(self._taps))
        for tap, tap_persisted in zip(self._taps, for_taps, strict=True):
            try:
                tap.journalled(tap_persisted)
            except Exception:  # another destination's bug must not cost the MQTT alert
                log.exception("journal_tap.failed", alert_id=alert_id, seq=seq)
        return persisted

    @staticmethod
    def _tap_work(tap: JournalTap, bed: str, payload: dict[str, Any]) -> Work | None:
        try:
            return tap.journal(bed, payload)
        except Exception:  # another destination's bug must not cost the MQTT alert
            log.exception("journal_tap.failed", alert_id=payload.get("alert_id"), seq=payload.get("seq"))
            return None

    @staticmethod
    def report_row(reporter: str, row: ReportRow) -> Work:
        """The work that journals one reporter message (a :class:`JournalTap` returns it)."""
        created = time.time()

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO report_outbox(reporter, bed, alert_id, seq, counter, rank, final, "
                "message, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    reporter,
                    row.bed,
                    row.alert_id,
                    row.seq,
                    row.counter,
                    row.rank,
                    int(row.final),
                    row.message,
                    created,
                ),
            )

        return work

    def report_delivered(
        self, reporter: str, bed: str, alert_id: str, seq: int
    ) -> asyncio.Future[bool | None]:
        """The alarm manager accepted this message (deferred, like :meth:`delivered`)."""
        at = time.time()

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE report_outbox SET delivered=? WHERE reporter=? AND bed=? AND alert_id=? AND seq=?",
                (at, reporter, bed, alert_id, seq),
            )

        return self._defer(work)

    def delivered(self, bed: str, alert_id: str, seq: int) -> asyncio.Future[bool | None]:
        """The broker acknowledged (alert_id, seq): it will not be sent again after a restart (deferred)."""
        at = time.time()

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET delivered=? WHERE bed=? AND alert_id=? AND seq=?",
                (at, bed, alert_id, seq),
            )

        queued = self._defer(work)
        for hook in self._delivered_hooks:
            try:
                hook(bed, alert_id, seq, at)
            except Exception:  # receipt bookkeeping must never cost the alert path
                log.exception("delivered_hook.failed", alert_id=alert_id, seq=seq)
        return queued

    def receipted(self, bed: str, alert_id: str, seq: int) -> asyncio.Future[bool | None]:
        """A downstream consumer receipted (alert_id, seq): deferred like :meth:`delivered` (a mark
        lost to a crash means one more re-offer, which the consumer receipts as a duplicate)."""
        at = time.time()

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET receipted=? WHERE bed=? AND alert_id=? AND seq=? AND receipted IS NULL",
                (at, bed, alert_id, seq),
            )

        return self._defer(work)

    def alert_receipts(self, enabled: bool) -> asyncio.Future[bool | None]:
        """At start: alert rows journalled from now on wait for a receipt (``enabled``), or none do.

        Turned on, the watermark is the outbox's current last id, kept while it stays on: rows
        from before (sent when nobody receipted alerts) are never re-offered. Turned off, it is
        removed, so turning it on again later does not re-offer what was sent meanwhile.
        """

        def work(conn: sqlite3.Connection) -> bool:
            if enabled:
                conn.execute(
                    "INSERT OR IGNORE INTO meta(bed, key, value) "
                    "SELECT ?, ?, CAST(COALESCE(MAX(id), 0) AS TEXT) FROM outbox",
                    RECEIPTS_AFTER,
                )
            else:
                conn.execute("DELETE FROM meta WHERE bed=? AND key=?", RECEIPTS_AFTER)
            return True

        return self._submit(lambda: self._txn("NORMAL", work))

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

    def report_pending(self, reporter: str) -> list[ReportRow]:
        """Messages of ``reporter`` not accepted yet, in journal order (read once at start, blocking)."""
        rows = self._read(
            "SELECT bed, alert_id, seq, counter, rank, final, message FROM report_outbox "
            "WHERE reporter=? AND delivered IS NULL ORDER BY id",
            (reporter,),
        )
        return [ReportRow(b, a, s, c, r, bool(f), m) for b, a, s, c, r, f, m in rows]

    def report_counters(self, reporter: str) -> dict[str, tuple[int, int]]:
        """Alerts of ``reporter`` that have not ended: ``alert_id -> (last counter, last seq)``."""
        rows = self._read(
            "SELECT alert_id, max(counter), max(seq) FROM report_outbox WHERE reporter=? "
            "GROUP BY alert_id HAVING max(final) = 0",
            (reporter,),
        )
        return {alert_id: (int(counter), int(seq)) for alert_id, counter, seq in rows}

    def requests(self, bed: str) -> list[str]:
        """Request ids of accepted commands, oldest first (refused as replays after a restart)."""
        rows = self._read("SELECT request_id FROM requests WHERE bed=? ORDER BY at", (bed,))
        return [r[0] for r in rows]
