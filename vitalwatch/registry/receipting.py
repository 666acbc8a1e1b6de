"""Offer until receipted: the one connection that carries every item a downstream consumer confirms.

Why a receipt and not the broker's PUBACK: QoS 1 is an agreement between neighbours. Between a
gateway and a regional registry (or a central station) are a clinic broker, a bridge and a central
broker, and each may lose what it acknowledged (docs/bridging.md). So an item is done only when
the consumer, having stored it, says so; until then it is offered again after a timeout, and the
consumer stores by the item's id, so a repeat costs nothing.

Two kinds of item share this: ended sessions' records (:mod:`vitalwatch.registry.offer`) and
alert transitions (:mod:`vitalwatch.registry.alert_receipts`). Each kind is a :class:`Ledger`
(where its items wait, what is due, what a receipt means); :class:`ReceiptLink` is the one owner
of the MQTT side: one connection per daemon (``{client_id}-registry``, a persistent session, so
receipts sent while the gateway was away wait for it), separate from the beds' alarm
connections, so re-offers never sit in front of an alert's first delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiomqtt
import structlog

from vitalwatch.config import Config, MqttConfig
from vitalwatch.delivery.broker import MqttClient, message_bytes, read_password, tls_context

__all__ = ["POLL_S", "Ledger", "Publish", "ReceiptLink", "Unreceipted", "daemon_scope", "describe"]

log = structlog.get_logger("vitalwatch.registry.receipting")

POLL_S = 5.0  # how often each ledger is asked what is due; nothing here is an alarm's first send
RECONNECT_S = 2.0

# Publish one offer, QoS 1; returns once the broker PUBACKed it (MqttError otherwise).
Publish = Callable[[str, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Unreceipted:
    """What ``vitalwatch status`` and the metrics say about one kind of item still waiting."""

    count: int
    oldest_age_s: float  # since the oldest of them came to be (ended, raised); 0 when none
    offered: int  # of them, offered at least once (PUBACKed) and still without a receipt


def daemon_scope(config: Config) -> dict[str, Any]:
    """What every ledger of a daemon is built with: its broker settings, site and beds."""
    return {"mqtt": config.mqtt, "site": config.site, "beds": tuple(b.id for b in config.beds)}


def describe(state: Unreceipted) -> dict[str, Any]:
    """One kind's part of ``vitalwatch status --json``."""
    return {
        "unreceipted": state.count,
        "offered_unreceipted": state.offered,
        "oldest_unreceipted_age_s": round(state.oldest_age_s, 1),
    }


class Ledger(Protocol):
    """One kind of item offered until receipted: where it waits and what a receipt means."""

    name: str  # "records", "alerts": the status key and the log field

    def receipt_topics(self) -> list[str]:
        """The receipt topics to subscribe to (the gateway's own beds only: the ACL allows no more)."""

    def takes(self, topic: str) -> bool:
        """Whether a message on ``topic`` is a receipt for this ledger."""

    async def open(self) -> None:
        """Before the first connection (open databases; worker threads are fine)."""

    async def close(self) -> None:
        """After the last connection."""

    async def offer_due(self, publish: Publish) -> None:
        """Publish every item due (never offered, or unreceipted for the re-offer time), in order."""

    async def receipt(self, topic: str, payload: bytes) -> None:
        """One receipt message (already known to be :meth:`takes`'s); a bad one is logged, not raised."""

    async def measure(self) -> Unreceipted:
        """The unreceipted items now (also sets this ledger's metrics)."""


ClientMaker = Callable[[], MqttClient]


@dataclass
class ReceiptLink:
    """The gateway's receipts connection: offers what each ledger has due, hands each its receipts."""

    mqtt: MqttConfig
    ledgers: Sequence[Ledger]
    poll_s: float = POLL_S
    client_factory: ClientMaker | None = None
    states: dict[str, Unreceipted] = field(default_factory=dict)  # the last measure, per ledger
    _connected: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def connected(self) -> asyncio.Event:
        """Set while subscribed to the receipt topics (tests wait on it)."""
        return self._connected

    def _client(self) -> MqttClient:
        if self.client_factory is not None:
            return self.client_factory()
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
        opened: list[Ledger] = []
        try:
            for ledger in self.ledgers:
                await ledger.open()
                opened.append(ledger)
            while not stop.is_set():
                try:
                    await self._session(stop)
                except aiomqtt.MqttError as exc:
                    log.warning("receipts.broker_lost", error=str(exc))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), RECONNECT_S)
                finally:
                    self._connected.clear()
        finally:
            for ledger in opened:
                await ledger.close()

    async def _session(self, stop: asyncio.Event) -> None:
        async with self._client() as client:
            for ledger in self.ledgers:
                for topic in ledger.receipt_topics():
                    await client.subscribe(topic, qos=1, timeout=self.mqtt.publish_timeout_s)
            self._connected.set()
            receiving = asyncio.create_task(self._receipts(client))
            stopping = asyncio.create_task(stop.wait())

            async def publish(topic: str, payload: bytes) -> None:
                await client.publish(topic, payload, qos=1, timeout=self.mqtt.publish_timeout_s)

            try:
                while not stop.is_set():
                    for ledger in self.ledgers:
                        await ledger.offer_due(publish)
                    await self.measure()
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

    async def _receipts(self, client: MqttClient) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            for ledger in self.ledgers:
                if ledger.takes(topic):
                    await ledger.receipt(topic, message_bytes(message))
                    self.states[ledger.name] = await ledger.measure()
                    break
            else:
                log.warning("receipts.unexpected_topic", topic=topic)

    async def measure(self) -> dict[str, Unreceipted]:
        """Every ledger's unreceipted items now (and their metrics)."""
        for ledger in self.ledgers:
            self.states[ledger.name] = await ledger.measure()
        return dict(self.states)

    def status(self) -> dict[str, dict[str, Any]]:
        """The last measure per ledger, for the daemon's status socket (no I/O: a snapshot)."""
        return {name: describe(state) for name, state in self.states.items()}
