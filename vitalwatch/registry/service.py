"""``vitalwatch registry``: store every site's session records and alerts, and receipt them.

One persistent MQTT session (``clean_session`` false, QoS 1) on ``{prefix}/+/+/record`` and
``{prefix}/+/+/alerts``. Messages are taken in batches of whatever has arrived (up to
:data:`BATCH_MAX`), each kind stored in one transaction, and only after the commit is each one
receipted (records on ``{prefix}/{site}/{bed}/receipt``, alert transitions per ``(alert_id, seq)``
on ``{prefix}/{site}/{bed}/alerts/receipt``), so a receipt always means "on the registry's
disk". A repeat is receipted too (``duplicate``): the gateway that re-offered it may have missed
the first receipt. A payload that does not hold is counted, logged
without its content and skipped; it gets no receipt, so the gateway keeps it and shows it as
unreceipted, where an engineer sees it.

MQTT acknowledges a record (PUBACK) when it arrives, before it is stored: a registry that dies in
between has lost it, and the gateway offers it again because no receipt came (docs/registry.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import aiomqtt
import structlog
from prometheus_client import Counter

from vitalwatch.config import MqttConfig
from vitalwatch.delivery.broker import message_bytes, read_password, tls_context
from vitalwatch.registry.database import RegistryDb
from vitalwatch.registry.wire import (
    AlertMessage,
    AlertReceipt,
    BadMessage,
    Receipt,
    RecordMessage,
    alert_receipt_payload,
    alert_receipt_topic,
    parse_alert,
    parse_record,
    receipt_payload,
    receipt_topic,
    topic_site_bed,
)

__all__ = ["BATCH_MAX", "REGISTRY_ALERTS", "REGISTRY_RECORDS", "RegistryService", "RegistryStats"]

T = TypeVar("T")

log = structlog.get_logger("vitalwatch.registry")

BATCH_MAX = 500
RECONNECT_S = 1.0
DEFAULT_CLIENT_ID = "vitalwatch-registry"
# Who the registry's alert receipts say they are from (a central station says its own name).
RECEIPT_BY = "registry"

REGISTRY_RECORDS = Counter(
    "vitalwatch_registry_records",
    "Session records received by the registry, by result (stored, duplicate, rejected)",
    ["result"],
)
REGISTRY_ALERTS = Counter(
    "vitalwatch_registry_alerts",
    "Alert transitions received by the registry, by result (stored, duplicate, rejected)",
    ["result"],
)


@dataclass(slots=True)
class KindStats:
    """What the registry did with one kind of message (records, alerts)."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    receipts: int = 0


@dataclass(slots=True)
class RegistryStats:
    records: KindStats = field(default_factory=KindStats)
    alerts: KindStats = field(default_factory=KindStats)
    connections: int = 0

    # The record counts under their first names (tests, bench/registry.py).
    @property
    def stored(self) -> int:
        return self.records.stored

    @property
    def duplicates(self) -> int:
        return self.records.duplicates

    @property
    def rejected(self) -> int:
        return self.records.rejected

    @property
    def receipts(self) -> int:
        return self.records.receipts


@dataclass
class RegistryService:
    """The registry process: ``await service.run(stop)`` until ``stop`` is set."""

    db: RegistryDb
    mqtt: MqttConfig
    stats: RegistryStats = field(default_factory=RegistryStats)
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def subscribed(self) -> asyncio.Event:
        """Set while the subscription is in place (tests and the demo wait on it)."""
        return self._subscribed

    def _client(self) -> aiomqtt.Client:
        cfg = self.mqtt
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=cfg.client_id or DEFAULT_CLIENT_ID,
            clean_session=False,
            username=cfg.username,
            password=read_password(cfg.password_file),
            keepalive=cfg.keepalive_s,
            tls_context=tls_context(cfg),
            timeout=cfg.publish_timeout_s,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, subscribe, store and receipt; reconnect after any broker failure."""
        while not stop.is_set():
            try:
                await self._session(stop)
            except aiomqtt.MqttError as exc:
                self._subscribed.clear()
                log.warning("registry.broker_lost", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RECONNECT_S)

    async def _session(self, stop: asyncio.Event) -> None:
        prefix = self.mqtt.topic_prefix
        async with self._client() as client:
            for leaf in ("record", "alerts"):
                await client.subscribe(f"{prefix}/+/+/{leaf}", qos=1)
            self.stats.connections += 1
            self._subscribed.set()
            log.info("registry.subscribed", topics=[f"{prefix}/+/+/record", f"{prefix}/+/+/alerts"])
            queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()

            async def pump() -> None:
                async for message in client.messages:
                    queue.put_nowait(message)

            pumping = asyncio.create_task(pump())
            stopping = asyncio.create_task(stop.wait())
            try:
                while True:
                    getting = asyncio.create_task(queue.get())
                    done, _ = await asyncio.wait(
                        {getting, pumping, stopping}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getting not in done:
                        getting.cancel()
                        if pumping in done:
                            pumping.result()  # re-raises the broker's failure
                        return
                    batch = [getting.result()]
                    while not queue.empty() and len(batch) < BATCH_MAX:
                        batch.append(queue.get_nowait())
                    await self._handle(client, batch)
            finally:
                self._subscribed.clear()
                for task in (pumping, stopping):
                    task.cancel()
                await asyncio.gather(pumping, stopping, return_exceptions=True)

    async def _handle(self, client: aiomqtt.Client, batch: list[aiomqtt.Message]) -> None:
        prefix = self.mqtt.topic_prefix
        records: list[RecordMessage] = []
        alerts: list[AlertMessage] = []
        for message in batch:
            topic = str(message.topic)
            is_alert = topic.endswith("/alerts")
            try:
                site, bed = topic_site_bed(prefix, topic, "alerts" if is_alert else "record")
                if is_alert:
                    alerts.append(parse_alert(message_bytes(message), site=site, bed=bed))
                else:
                    records.append(parse_record(message_bytes(message), site=site, bed=bed))
            except BadMessage as exc:
                stats, metric = (
                    (self.stats.alerts, REGISTRY_ALERTS)
                    if is_alert
                    else (self.stats.records, REGISTRY_RECORDS)
                )
                stats.rejected += 1
                metric.labels("rejected").inc()
                log.error("registry.message_rejected", topic=topic, reason=str(exc))
        stored = await self._commit_then_receipt(
            client,
            records,
            key=lambda r: r.record_id,
            store=self.db.add_batch,
            receipt=self._record_receipt,
            stats=self.stats.records,
            metric=REGISTRY_RECORDS,
        )
        stored_alerts = await self._commit_then_receipt(
            client,
            alerts,
            key=lambda a: (a.site, a.bed, a.alert_id, a.seq),
            store=self.db.add_alerts,
            receipt=self._alert_receipt,
            stats=self.stats.alerts,
            metric=REGISTRY_ALERTS,
        )
        if records or alerts:
            log.info(
                "registry.batch",
                records=len(records),
                stored=stored,
                alerts=len(alerts),
                alerts_stored=stored_alerts,
            )

    async def _commit_then_receipt(
        self,
        client: aiomqtt.Client,
        items: list[T],
        *,
        key: Callable[[T], Hashable],
        store: Callable[[Sequence[T]], list[bool]],
        receipt: Callable[[T, str], tuple[str, bytes]],
        stats: KindStats,
        metric: Counter,
    ) -> int:
        """Store ``items`` once each (one transaction), then receipt every one of them; the new count.

        Within a batch an item may come twice (a re-offer behind a late copy): stored once, the
        second receipted as a duplicate.
        """
        unique: dict[Hashable, T] = {}
        for item in items:
            unique.setdefault(key(item), item)
        if not unique:
            return 0
        new = dict(zip(unique, await asyncio.to_thread(store, list(unique.values())), strict=True))
        first: set[Hashable] = set()
        for item in items:
            k = key(item)
            is_new = new[k] and k not in first
            first.add(k)
            status = "stored" if is_new else "duplicate"
            if is_new:
                stats.stored += 1
            else:
                stats.duplicates += 1
            metric.labels(status).inc()
            await client.publish(*receipt(item, status), qos=1)
            stats.receipts += 1
        return sum(new.values())

    def _record_receipt(self, r: RecordMessage, status: str) -> tuple[str, bytes]:
        topic = receipt_topic(self.mqtt.topic_prefix, r.site, r.bed)
        return topic, receipt_payload(Receipt(r.record_id, r.site, r.bed, status), now=self.now())

    def _alert_receipt(self, a: AlertMessage, status: str) -> tuple[str, bytes]:
        topic = alert_receipt_topic(self.mqtt.topic_prefix, a.site, a.bed)
        body = AlertReceipt(a.alert_id, a.seq, a.site, a.bed, status, RECEIPT_BY)
        return topic, alert_receipt_payload(body, now=self.now())
