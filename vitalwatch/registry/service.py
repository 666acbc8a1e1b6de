"""``vitalwatch registry``: subscribe to every site's session records, store them, receipt them.

One persistent MQTT session (``clean_session`` false, QoS 1) on ``{prefix}/+/+/record``. Records
are taken in batches of whatever has arrived (up to :data:`BATCH_MAX`), stored in one transaction,
and only after the commit is each one receipted on ``{prefix}/{site}/{bed}/receipt``, so a receipt
always means "on the registry's disk". A repeat is receipted too (``duplicate``): the gateway that
re-offered it may have missed the first receipt. A payload that does not hold is counted, logged
without its content and skipped; it gets no receipt, so the gateway keeps it and shows it as
unreceipted, where an engineer sees it.

MQTT acknowledges a record (PUBACK) when it arrives, before it is stored: a registry that dies in
between has lost it, and the gateway offers it again because no receipt came (docs/registry.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiomqtt
import structlog
from prometheus_client import Counter

from vitalwatch.config import MqttConfig
from vitalwatch.delivery.broker import message_bytes, read_password, tls_context
from vitalwatch.registry.database import RegistryDb
from vitalwatch.registry.wire import (
    BadMessage,
    Receipt,
    RecordMessage,
    parse_record,
    receipt_payload,
    receipt_topic,
    topic_site_bed,
)

__all__ = ["BATCH_MAX", "REGISTRY_RECORDS", "RegistryService", "RegistryStats"]

log = structlog.get_logger("vitalwatch.registry")

BATCH_MAX = 500
RECONNECT_S = 1.0
DEFAULT_CLIENT_ID = "vitalwatch-registry"

REGISTRY_RECORDS = Counter(
    "vitalwatch_registry_records",
    "Session records received by the registry, by result (stored, duplicate, rejected)",
    ["result"],
)


@dataclass(slots=True)
class RegistryStats:
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    receipts: int = 0
    connections: int = 0


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
            await client.subscribe(f"{prefix}/+/+/record", qos=1)
            self.stats.connections += 1
            self._subscribed.set()
            log.info("registry.subscribed", topic=f"{prefix}/+/+/record")
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
        records: list[RecordMessage] = []
        for message in batch:
            topic = str(message.topic)
            try:
                site, bed = topic_site_bed(self.mqtt.topic_prefix, topic, "record")
                records.append(parse_record(message_bytes(message), site=site, bed=bed))
            except BadMessage as exc:
                self.stats.rejected += 1
                REGISTRY_RECORDS.labels("rejected").inc()
                log.error("registry.record_rejected", topic=topic, reason=str(exc))
        # Within a batch a record may come twice (a re-offer behind a late copy): store it once.
        unique: dict[str, RecordMessage] = {}
        for r in records:
            unique.setdefault(r.record_id, r)
        stored = await asyncio.to_thread(self.db.add_batch, list(unique.values()))
        new = dict(zip(unique, stored, strict=True))
        first: set[str] = set()
        for r in records:
            is_new = new[r.record_id] and r.record_id not in first
            first.add(r.record_id)
            status = "stored" if is_new else "duplicate"
            if is_new:
                self.stats.stored += 1
            else:
                self.stats.duplicates += 1
            REGISTRY_RECORDS.labels(status).inc()
            receipt = Receipt(r.record_id, r.site, r.bed, status)
            await client.publish(
                receipt_topic(self.mqtt.topic_prefix, r.site, r.bed),
                receipt_payload(receipt, now=self.now()),
                qos=1,
            )
            self.stats.receipts += 1
        if records:
            log.info("registry.batch", records=len(records), stored=sum(new.values()))
