"""Retained per-bed documents besides the alarms and status: the open prompts, the readiness, the trend.

Each topic holds one document, the bed's current truth, so a station that connects late reads
it from the broker at once. Only the newest document per topic is kept: a change not yet sent
is replaced by a newer one, and the whole set is sent again on every (re)connect (the broker
may have been restarted without persistence). A document is sent only when its bytes change;
``None`` empties the topic (an empty retained message deletes the broker's copy).

One document per :meth:`RetainedDocuments.publish` call: the publisher looks at its alert lanes
again between two documents, so an alert waits at most for the one document already in flight,
never behind the whole set (the trend document is several KiB).
"""

from __future__ import annotations

from typing import Any

from vitalwatch.delivery.broker import MqttClient
from vitalwatch.delivery.payloads import encode

__all__ = ["RetainedDocuments"]


class RetainedDocuments:
    """Latest document per topic, and which ones the broker has not got yet."""

    def __init__(self, *, timeout: float) -> None:
        self._timeout = timeout
        self._latest: dict[str, bytes] = {}  # topic -> the payload to send
        self._compared: dict[str, bytes] = {}  # topic -> the part that decides "changed"
        self._due: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._due)

    def put(
        self, topic: str, payload: dict[str, Any] | None, *, compare: dict[str, Any] | None = None
    ) -> bool:
        """Keep ``payload`` for ``topic`` (None: empty it); True if it differs from the last one kept.

        ``compare`` is the part that matters for "differs" (the payload without its send time),
        so a document that only got a newer ``sent_utc`` is not sent again.
        """
        if payload is None:
            key = body = b""
        else:
            key, body = encode(compare if compare is not None else payload), encode(payload)
        if self._compared.get(topic) == key:
            return False
        self._compared[topic] = key
        self._latest[topic] = body
        self._due.add(topic)
        return True

    def all_due(self) -> None:
        """A new connection: send every document again."""
        self._due = set(self._latest)

    async def publish(self, client: MqttClient) -> None:
        """Send one due document, retained, QoS 1 (a failure raises; it stays due for the next connection)."""
        if self._due:
            topic = min(self._due)
            await client.publish(topic, self._latest[topic], qos=1, retain=True, timeout=self._timeout)
            self._due.discard(topic)
