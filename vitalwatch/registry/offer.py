"""The gateway's side of the registry: offer each ended session's record until it is receipted.

Why not the outbox: a session record is not an alarm. It waits in the session record's own
database (``sessions.sqlite3``, where the session's data already is), the offer state in one
more table there, ``registry_offers``; the alarm path's journal takes no extra writes.

A record is done only when the registry's receipt for its ``record_id`` arrived (the broker's
PUBACK only says the clinic broker has it: a bridge, a central broker crash or a registry that
died before its commit can each still lose it, docs/bridging.md). Until then it is offered again
every ``registry.reoffer_s``; the registry stores by ``record_id``, so a repeat is harmless.
The MQTT side (one connection per daemon, ``{client_id}-registry``, separate from the beds'
alarm connections, so a large backlog of records never sits in front of an alert) is
:class:`vitalwatch.registry.receipting.ReceiptLink`, shared with the alert receipts.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog
from prometheus_client import Counter, Gauge

from vitalwatch.config import Config, MqttConfig
from vitalwatch.record.export import export_row, load_session, summarise
from vitalwatch.registry.receipting import Publish, Unreceipted, daemon_scope
from vitalwatch.registry.wire import (
    BadMessage,
    parse_receipt,
    receipt_topic,
    record_payload,
    record_topic,
    topic_site_bed,
)

__all__ = ["OfferBook", "RecordLedger", "unreceipted_in"]

log = structlog.get_logger("vitalwatch.registry.offer")

RECORDS_UNRECEIPTED = Gauge(
    "vitalwatch_records_unreceipted",
    "Ended sessions whose record the registry has not receipted yet",
)
RECORDS_UNRECEIPTED_AGE = Gauge(
    "vitalwatch_records_unreceipted_oldest_age_seconds",
    "Time since the oldest unreceipted session ended (0 when none)",
)
RECORDS_OFFERED = Counter(
    "vitalwatch_records_offered", "Session records published and PUBACKed by the broker"
)
RECORDS_RECEIPTED = Counter("vitalwatch_records_receipted", "Session records receipted by the registry")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS registry_offers(
    record_id TEXT PRIMARY KEY, offers INTEGER NOT NULL DEFAULT 0,
    last_offered_utc REAL, pubacked_utc REAL, receipted_utc REAL, receipt_status TEXT);
"""

_UNRECEIPTED = """
SELECT s.session_id, s.record_id, s.bed, s.started_utc + s.ended_s AS ended_utc, o.last_offered_utc
FROM sessions s LEFT JOIN registry_offers o ON o.record_id = s.record_id
WHERE s.ended_s IS NOT NULL AND o.receipted_utc IS NULL
ORDER BY ended_utc
"""


def unreceipted_in(conn: sqlite3.Connection, now_utc: float) -> Unreceipted:
    """Unreceipted records of a session record database (read-only use is fine)."""
    try:
        rows = conn.execute(_UNRECEIPTED).fetchall()
    except sqlite3.OperationalError:  # no registry_offers table yet: nothing was ever offered
        rows = conn.execute(
            "SELECT session_id, record_id, bed, started_utc + ended_s, NULL FROM sessions"
            " WHERE ended_s IS NOT NULL ORDER BY 4"
        ).fetchall()
    oldest = max(0.0, now_utc - float(rows[0][3])) if rows else 0.0
    return Unreceipted(len(rows), oldest, sum(1 for r in rows if r[4] is not None))


class OfferBook:
    """The offer state beside the session record: what is due, what was offered, what is done."""

    def __init__(self, path: Path) -> None:
        # Used from one worker thread at a time (asyncio.to_thread); the session writer is another
        # connection to the same WAL database.
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.executescript(_SCHEMA)

    def due(self, now_utc: float, reoffer_s: float) -> list[tuple[str, str, str]]:
        """(session_id, record_id, bed) of ended sessions never offered, or offered too long ago."""
        try:
            rows = self.conn.execute(_UNRECEIPTED).fetchall()
        except sqlite3.OperationalError:  # the daemon has not created the record tables yet
            return []
        return [(r[0], r[1], r[2]) for r in rows if r[4] is None or now_utc - float(r[4]) >= reoffer_s]

    def payload(self, session_id: str, site: str, now: datetime) -> bytes:
        """The record message of one ended session (the export row, as ``vitalwatch export`` has it)."""
        self.conn.row_factory = sqlite3.Row
        try:
            data = load_session(self.conn, session_id)
        finally:
            self.conn.row_factory = None
        summary = summarise(data)
        return record_payload(
            row=export_row(summary), site=site, bed=summary.bed, started=summary.started, sent=now
        )

    def offered(self, record_id: str, now_utc: float) -> None:
        """The broker PUBACKed an offer of ``record_id``."""
        self.conn.execute(
            "INSERT INTO registry_offers (record_id, offers, last_offered_utc, pubacked_utc)"
            " VALUES (?, 1, ?, ?)"
            " ON CONFLICT (record_id) DO UPDATE SET offers = offers + 1,"
            " last_offered_utc = excluded.last_offered_utc, pubacked_utc = excluded.pubacked_utc",
            (record_id, now_utc, now_utc),
        )

    def receipted(self, record_id: str, bed: str, status: str, now_utc: float) -> bool:
        """The registry has ``record_id``; True when that is news (a record of ``bed`` not yet done)."""
        known = self.conn.execute(
            "SELECT 1 FROM sessions WHERE record_id = ? AND bed = ?", (record_id, bed)
        ).fetchone()
        if known is None:
            return False
        cur = self.conn.execute(
            "INSERT INTO registry_offers (record_id, receipted_utc, receipt_status) VALUES (?, ?, ?)"
            " ON CONFLICT (record_id) DO UPDATE SET receipted_utc = excluded.receipted_utc,"
            " receipt_status = excluded.receipt_status WHERE registry_offers.receipted_utc IS NULL",
            (record_id, now_utc, status),
        )
        return cur.rowcount == 1

    def unreceipted(self, now_utc: float) -> Unreceipted:
        return unreceipted_in(self.conn, now_utc)

    def close(self) -> None:
        self.conn.close()


@dataclass
class RecordLedger:
    """Ended sessions' records, offered on ``.../record`` until the registry receipts each one.

    One :class:`~vitalwatch.registry.receipting.Ledger` of the daemon's
    :class:`~vitalwatch.registry.receipting.ReceiptLink`.
    """

    mqtt: MqttConfig
    site: str
    beds: tuple[str, ...]
    sessions_db: Path
    reoffer_s: float = 300.0
    now: Callable[[], float] = time.time
    receipts: int = 0
    offers: int = 0
    name: str = "records"
    _book: OfferBook | None = field(default=None, repr=False)

    @classmethod
    def for_daemon(cls, config: Config, sessions_db: Path) -> RecordLedger:
        return cls(**daemon_scope(config), sessions_db=sessions_db, reoffer_s=config.registry.reoffer_s)

    def receipt_topics(self) -> list[str]:
        return [receipt_topic(self.mqtt.topic_prefix, self.site, bed) for bed in self.beds]

    def takes(self, topic: str) -> bool:
        return topic.endswith("/receipt") and not topic.endswith("/alerts/receipt")

    async def open(self) -> None:
        self._book = await asyncio.to_thread(OfferBook, self.sessions_db)

    async def close(self) -> None:
        if self._book is not None:
            await asyncio.to_thread(self._book.close)
            self._book = None

    def _opened(self) -> OfferBook:
        assert self._book is not None, "RecordLedger used before open()"
        return self._book

    async def offer_due(self, publish: Publish) -> None:
        book = self._opened()
        due = await asyncio.to_thread(book.due, self.now(), self.reoffer_s)
        for session_id, record_id, bed in due:
            if bed not in self.beds:
                continue  # a bed no longer configured: its record stays, shown as unreceipted
            try:
                payload = await asyncio.to_thread(
                    book.payload, session_id, self.site, datetime.fromtimestamp(self.now(), UTC)
                )
            except (sqlite3.Error, KeyError, ValueError, TypeError) as exc:
                log.error("registry_offer.unreadable", bed=bed, error=type(exc).__name__)
                continue
            await publish(record_topic(self.mqtt.topic_prefix, self.site, bed), payload)
            await asyncio.to_thread(book.offered, record_id, self.now())
            self.offers += 1
            RECORDS_OFFERED.inc()
            log.info("registry_offer.offered", bed=bed)

    async def receipt(self, topic: str, payload: bytes) -> None:
        book = self._opened()
        try:
            site, bed = topic_site_bed(self.mqtt.topic_prefix, topic, "receipt")
            receipt = parse_receipt(payload, site=site, bed=bed)
        except BadMessage as exc:
            log.error("registry_offer.bad_receipt", topic=topic, reason=str(exc))
            return
        if await asyncio.to_thread(book.receipted, receipt.record_id, bed, receipt.status, self.now()):
            self.receipts += 1
            RECORDS_RECEIPTED.inc()
            log.info("registry_offer.receipted", bed=bed, status=receipt.status)

    async def measure(self) -> Unreceipted:
        state = await asyncio.to_thread(self._opened().unreceipted, self.now())
        RECORDS_UNRECEIPTED.set(state.count)
        RECORDS_UNRECEIPTED_AGE.set(state.oldest_age_s)
        return state
