"""The gateway's side of the registry: offer each ended session's record until it is receipted.

Why not the outbox: a session record is not an alarm. It waits in the session record's own
database (``sessions.sqlite3``, where the session's data already is), the offer state in one
more table there, ``registry_offers``; the alarm path's journal takes no extra writes.

A record is done only when the registry's receipt for its ``record_id`` arrived (the broker's
PUBACK only says the clinic broker has it: a bridge, a central broker crash or a registry that
died before its commit can each still lose it, docs/bridging.md). Until then it is offered again
every ``registry.reoffer_s``; the registry stores by ``record_id``, so a repeat is harmless.
One MQTT connection per daemon (``{client_id}-registry``), separate from the beds' alarm
connections, so a large backlog of records never sits in front of an alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import structlog
from prometheus_client import Counter, Gauge

from vitalwatch.config import Config, MqttConfig
from vitalwatch.delivery.broker import message_bytes, read_password, tls_context
from vitalwatch.record.export import export_row, load_session, summarise
from vitalwatch.registry.wire import (
    BadMessage,
    parse_receipt,
    receipt_topic,
    record_payload,
    record_topic,
    topic_site_bed,
)

__all__ = ["OfferBook", "RecordOfferer", "Unreceipted", "unreceipted_in"]

log = structlog.get_logger("vitalwatch.registry.offer")

POLL_S = 5.0  # how often ended sessions are looked for; a record is not urgent
RECONNECT_S = 2.0

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


@dataclass(frozen=True, slots=True)
class Unreceipted:
    """What ``vitalwatch status`` and the metrics say about records still waiting."""

    count: int
    oldest_age_s: float  # since the oldest of them ended; 0 when none
    offered: int  # of them, offered at least once (PUBACKed) and still without a receipt


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
class RecordOfferer:
    """Offers ended sessions' records to the registry over MQTT until each is receipted."""

    mqtt: MqttConfig
    site: str
    beds: tuple[str, ...]
    sessions_db: Path
    reoffer_s: float = 300.0
    poll_s: float = POLL_S
    now: Callable[[], float] = time.time
    receipts: int = 0
    offers: int = 0
    _book: OfferBook | None = field(default=None, repr=False)

    @classmethod
    def for_daemon(cls, config: Config, sessions_db: Path) -> RecordOfferer:
        return cls(
            mqtt=config.mqtt,
            site=config.site,
            beds=tuple(b.id for b in config.beds),
            sessions_db=sessions_db,
            reoffer_s=config.registry.reoffer_s,
        )

    def _client(self) -> aiomqtt.Client:
        cfg = self.mqtt
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            # A persistent session: receipts sent while the gateway was away are kept for it.
            identifier=f"{cfg.client_id}-registry" if cfg.client_id else None,
            clean_session=False if cfg.client_id else None,
            username=cfg.username,
            password=read_password(cfg.password_file),
            keepalive=cfg.keepalive_s,
            tls_context=tls_context(cfg),
            timeout=cfg.publish_timeout_s,
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Until cancelled (the daemon) or ``stop`` is set (tests)."""
        stop = stop or asyncio.Event()
        self._book = await asyncio.to_thread(OfferBook, self.sessions_db)
        try:
            while not stop.is_set():
                try:
                    await self._connected(stop)
                except aiomqtt.MqttError as exc:
                    log.warning("registry_offer.broker_lost", error=str(exc))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), RECONNECT_S)
        finally:
            await asyncio.to_thread(self._book.close)

    async def _connected(self, stop: asyncio.Event) -> None:
        prefix = self.mqtt.topic_prefix
        async with self._client() as client:
            for bed in self.beds:
                await client.subscribe(receipt_topic(prefix, self.site, bed), qos=1)
            receiving = asyncio.create_task(self._receipts(client))
            stopping = asyncio.create_task(stop.wait())
            try:
                while not stop.is_set():
                    await self._offer_due(client)
                    await self._measure()
                    done, _ = await asyncio.wait(
                        {receiving, stopping}, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED
                    )
                    if receiving in done:
                        receiving.result()  # the broker went away: MqttError, and a reconnect
                        return
            finally:
                for task in (receiving, stopping):
                    task.cancel()
                await asyncio.gather(receiving, stopping, return_exceptions=True)

    async def _offer_due(self, client: aiomqtt.Client) -> None:
        book = self._book
        assert book is not None
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
            await client.publish(record_topic(self.mqtt.topic_prefix, self.site, bed), payload, qos=1)
            await asyncio.to_thread(book.offered, record_id, self.now())
            self.offers += 1
            RECORDS_OFFERED.inc()
            log.info("registry_offer.offered", bed=bed)

    async def _receipts(self, client: aiomqtt.Client) -> None:
        book = self._book
        assert book is not None
        async for message in client.messages:
            try:
                site, bed = topic_site_bed(self.mqtt.topic_prefix, str(message.topic), "receipt")
                receipt = parse_receipt(message_bytes(message), site=site, bed=bed)
            except BadMessage as exc:
                log.error("registry_offer.bad_receipt", topic=str(message.topic), reason=str(exc))
                continue
            if await asyncio.to_thread(book.receipted, receipt.record_id, bed, receipt.status, self.now()):
                self.receipts += 1
                RECORDS_RECEIPTED.inc()
                log.info("registry_offer.receipted", bed=bed, status=receipt.status)
            await self._measure()

    async def _measure(self) -> Unreceipted:
        book = self._book
        assert book is not None
        state = await asyncio.to_thread(book.unreceipted, self.now())
        RECORDS_UNRECEIPTED.set(state.count)
        RECORDS_UNRECEIPTED_AGE.set(state.oldest_age_s)
        return state

    async def state(self) -> Unreceipted:
        """The current unreceipted set (tests, the demo)."""
        return await self._measure()


def describe(state: Unreceipted) -> dict[str, Any]:
    """The ``registry`` part of ``vitalwatch status --json``."""
    return {
        "unreceipted": state.count,
        "offered_unreceipted": state.offered,
        "oldest_unreceipted_age_s": round(state.oldest_age_s, 1),
    }
