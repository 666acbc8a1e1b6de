"""Alert receipts: each alert transition stays in the outbox until a downstream consumer has it.

With ``[registry] alert_receipts = true`` a transition is done only when it has the clinic
broker's PUBACK (the publisher's job, unchanged) **and** a receipt for its ``(alert_id, seq)`` on
``{prefix}/{site}/{bed}/alerts/receipt`` from a consumer that stored it (the registry, or a central
station). Until then the outbox row stays (``outbox.receipted`` is NULL; the start-up pruning keeps
it) and, ``alert_reoffer_s`` after its PUBACK, it is published again on ``.../alerts`` with the same
``alert_id`` and ``seq``; receivers already drop a pair they have seen (docs/mqtt.md).

What this never does: add work before an alert's first send. The first send is the bed
publisher's, from its priority lanes, on the bed's own connection. This ledger only learns of the
PUBACK afterwards (:meth:`vitalwatch.delivery.store.Store.on_delivered`), writes its receipt marks
as deferred writes (no fsync of their own; they ride along with the next transaction, like the
delivery marks), reads the outbox on its own read connection (a WAL reader never blocks the
writer thread), and re-offers on the daemon's receipts connection
(:class:`vitalwatch.registry.receipting.ReceiptLink`), never in a bed's lanes.

Ordering: re-offers go in journal order (per bed, ascending ``seq``; so per ``alert_id`` in ``seq``
order). A re-offer of an older transition may arrive after a newer transition's first delivery,
since the two travel on different connections; that is why receivers order by ``seq`` per
``alert_id`` and treat a lower one as stale (docs/mqtt.md, "Delivery, ordering and de-duplication").

After a restart (even SIGKILL) nothing is lost: a row whose PUBACK mark was not written yet is
sent again by the publisher as undelivered; a row PUBACKed but not receipted is re-offered once
its PUBACK is ``alert_reoffer_s`` old; a receipt mark lost with the process means one more
re-offer, receipted as a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog
from prometheus_client import Counter, Gauge

from vitalwatch.config import Config, MqttConfig
from vitalwatch.delivery.payloads import encode, iso_utc
from vitalwatch.delivery.store import Store, UnreceiptedRow, read_unreceipted
from vitalwatch.registry.receipting import Publish, Unreceipted, daemon_scope
from vitalwatch.registry.wire import (
    BadMessage,
    alert_receipt_topic,
    alerts_topic,
    parse_alert_receipt,
    topic_site_bed,
)

__all__ = ["AlertLedger"]

log = structlog.get_logger("vitalwatch.registry.alert_receipts")

ALERTS_UNRECEIPTED = Gauge(
    "vitalwatch_alerts_unreceipted", "Alert transitions journalled but not receipted downstream yet"
)
ALERTS_UNRECEIPTED_AGE = Gauge(
    "vitalwatch_alerts_unreceipted_oldest_age_seconds",
    "Time since the oldest unreceipted alert transition was journalled (0 when none)",
)
ALERTS_REOFFERED = Counter(
    "vitalwatch_alerts_reoffered", "Alert transitions published again for want of a receipt"
)
ALERTS_RECEIPTED = Counter("vitalwatch_alerts_receipted", "Alert transitions receipted downstream")

Key = tuple[str, str, int]  # (bed, alert_id, seq)


def _connect_reader(path: Path) -> sqlite3.Connection:
    """A read connection to the daemon's journal (the writer thread owns the only writer)."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=5)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


@dataclass
class AlertLedger:
    """Alert transitions offered on ``.../alerts`` until a consumer receipts each ``(alert_id, seq)``."""

    mqtt: MqttConfig
    site: str
    beds: tuple[str, ...]
    store: Store
    reoffer_s: float = 60.0
    now: Callable[[], float] = time.time
    name: str = "alerts"
    receipts: int = 0
    reoffers: int = 0
    # In memory, what the journal may not show yet (its marks are deferred writes):
    _acked: dict[Key, float] = field(default_factory=dict, repr=False)  # PUBACK wall time
    _receipted: set[Key] = field(default_factory=set, repr=False)
    _offered: dict[Key, float] = field(default_factory=dict, repr=False)  # last re-offer wall time
    _conn: sqlite3.Connection | None = field(default=None, repr=False)

    @classmethod
    def for_daemon(cls, config: Config, store: Store) -> AlertLedger:
        return cls(**daemon_scope(config), store=store, reoffer_s=config.registry.alert_reoffer_s)

    def __post_init__(self) -> None:
        # Registered at once, not in open(): a PUBACK that comes before the link runs counts too.
        self.store.on_delivered(self._delivered)

    def _delivered(self, bed: str, alert_id: str, seq: int, at: float) -> None:
        """(Loop thread, right after a PUBACK) remember it; nothing else, no I/O."""
        self._acked[(bed, alert_id, seq)] = at

    # ------------------------------------------------------------------ Ledger
    def receipt_topics(self) -> list[str]:
        return [alert_receipt_topic(self.mqtt.topic_prefix, self.site, bed) for bed in self.beds]

    def takes(self, topic: str) -> bool:
        return topic.endswith("/alerts/receipt")

    async def open(self) -> None:
        self._conn = await asyncio.to_thread(_connect_reader, self.store.path)

    async def close(self) -> None:
        if self._conn is not None:
            await asyncio.to_thread(self._conn.close)
            self._conn = None

    async def _waiting(self) -> list[UnreceiptedRow]:
        """Rows without a receipt, less those receipted in memory; the memory is pruned to them."""
        assert self._conn is not None, "AlertLedger used before open()"
        rows = await asyncio.to_thread(read_unreceipted, self._conn)
        keys = {(r.bed, r.alert_id, r.seq) for r in rows}
        self._receipted &= keys
        for memo in (self._acked, self._offered):
            for key in [k for k in memo if k not in keys]:
                del memo[key]
        return [r for r in rows if (r.bed, r.alert_id, r.seq) not in self._receipted]

    def _pubacked(self, row: UnreceiptedRow) -> float | None:
        return (
            row.delivered if row.delivered is not None else self._acked.get((row.bed, row.alert_id, row.seq))
        )

    async def offer_due(self, publish: Publish) -> None:
        now = self.now()
        for row in await self._waiting():
            key = (row.bed, row.alert_id, row.seq)
            acked = self._pubacked(row)
            if acked is None or row.bed not in self.beds or key in self._receipted:
                continue  # the publisher's to send first (or a bed no longer configured)
            if now - max(acked, self._offered.get(key, acked)) < self.reoffer_s:
                continue
            payload = await asyncio.to_thread(self._payload, row.id)
            if payload is None:
                continue
            await publish(alerts_topic(self.mqtt.topic_prefix, self.site, row.bed), payload)
            self._offered[key] = self.now()
            self.reoffers += 1
            ALERTS_REOFFERED.inc()
            log.info("alert_receipts.reoffered", bed=row.bed, alert_id=row.alert_id, seq=row.seq)

    def _payload(self, row_id: int) -> bytes | None:
        """The journalled payload with a fresh ``sent_utc``, as the publisher sends it."""
        assert self._conn is not None
        found = self._conn.execute("SELECT payload FROM outbox WHERE id=?", (row_id,)).fetchone()
        if found is None:
            return None
        body = json.loads(found[0])
        body["sent_utc"] = iso_utc(datetime.fromtimestamp(self.now(), UTC))
        return encode(body)

    async def receipt(self, topic: str, payload: bytes) -> None:
        try:
            site, bed = topic_site_bed(self.mqtt.topic_prefix, topic, "alerts/receipt")
            got = parse_alert_receipt(payload, site=site, bed=bed)
        except BadMessage as exc:
            log.error("alert_receipts.bad_receipt", topic=topic, reason=str(exc))
            return
        if site != self.site or bed not in self.beds:
            log.error("alert_receipts.foreign_receipt", topic=topic)
            return
        key = (bed, got.alert_id, got.seq)
        if key in self._receipted:
            return  # a repeat (two consumers, or a receipt of a re-offer): already done
        self._receipted.add(key)
        self.store.receipted(bed, got.alert_id, got.seq)
        self.receipts += 1
        ALERTS_RECEIPTED.inc()
        log.info(
            "alert_receipts.receipted",
            bed=bed,
            alert_id=got.alert_id,
            seq=got.seq,
            by=got.by,
            status=got.status,
        )

    async def measure(self) -> Unreceipted:
        rows = await self._waiting()
        now = self.now()
        oldest = max(0.0, now - rows[0].created) if rows else 0.0
        state = Unreceipted(len(rows), oldest, sum(1 for r in rows if self._pubacked(r) is not None))
        ALERTS_UNRECEIPTED.set(state.count)
        ALERTS_UNRECEIPTED_AGE.set(state.oldest_age_s)
        return state
