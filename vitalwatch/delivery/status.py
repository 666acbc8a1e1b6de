"""The bed's retained ``.../status``: online/offline, heartbeat count, local technical alarms.

A station tells a live gateway from a dead one by this topic alone: a status every
``heartbeat_s`` while connected, the last will ``offline`` when the connection dies, and an
explicit ``offline`` on a clean stop (the broker sends no will then). A change of a local
technical alarm (broker unreachable, persistence degraded) is published at once, not at the
next beat, so an engineer sees why a bed may be late with its alerts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vitalwatch.delivery.broker import MqttClient
from vitalwatch.delivery.payloads import Topics, encode

__all__ = ["StatusReporter"]


class StatusReporter:
    """Builds and publishes the status document; counts heartbeats.

    ``status(state, heartbeat)`` is the caller's document (phase, links, version, ...); the
    publisher adds what only it knows through :meth:`document`'s keywords.
    """

    def __init__(
        self, topics: Topics, status: Callable[[str, int], dict[str, Any]], *, timeout: float
    ) -> None:
        self._topics = topics
        self._status = status
        self._timeout = timeout
        self.heartbeat = 0
        self.due = False  # publish the status before the next heartbeat

    def document(self, state: str, *, pending: int, unreachable: bool, degraded: bool) -> dict[str, Any]:
        """The status callable's document plus the publisher's backlog and technical alarms.

        ``outbox_pending`` is the publisher's backlog; ``technical`` adds broker_unreachable
        and persistence_degraded (the store's health) to whatever the caller listed.
        """
        doc = self._status(state, self.heartbeat)
        doc.setdefault("phase_minutes", None)
        doc["outbox_pending"] = pending
        technical = set(doc.get("technical", ()))
        if unreachable:
            technical.add("broker_unreachable")
        if degraded:
            technical.add("persistence_degraded")
        doc["technical"] = sorted(technical)
        return doc

    async def publish(self, client: MqttClient, doc: dict[str, Any]) -> None:
        """Publish ``doc`` (retained, QoS 1); whatever was due is said with it."""
        self.due = False
        await client.publish(self._topics.status, encode(doc), qos=1, retain=True, timeout=self._timeout)
