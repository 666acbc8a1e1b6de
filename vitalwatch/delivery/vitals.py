"""Vital-sign telemetry of one bed: the latest value per kind, built and sent only when the link is free.

Vitals are QoS 0 and only the newest value matters, so a value not yet sent is simply
replaced by a newer one of the same kind: a slow or absent broker costs memory for one
value per kind, never a queue. A payload may be a function, called (and its result encoded)
only when it is sent: building every observation's payload was about 12 % of the daemon's CPU
under load, and most are replaced before they leave (docs/performance.md).
"""

from __future__ import annotations

from vitalwatch.bed import VitalPayload
from vitalwatch.delivery.broker import MqttClient
from vitalwatch.delivery.payloads import Topics, encode

__all__ = ["LatestVitals"]


class LatestVitals:
    """Latest unsent payload per vital kind."""

    def __init__(self, topics: Topics) -> None:
        self._topics = topics
        self._latest: dict[str, VitalPayload] = {}

    def __bool__(self) -> bool:
        return bool(self._latest)

    def put(self, kind: str, payload: VitalPayload) -> None:
        """A newer value replaces one of the same kind not yet sent."""
        self._latest[kind] = payload

    async def publish(self, client: MqttClient) -> None:
        """Send every waiting value (QoS 0: the broker does not answer, nothing waits)."""
        while self._latest:
            kind, payload = self._latest.popitem()
            body = encode(payload() if callable(payload) else payload)
            await client.publish(self._topics.vital(kind), body, qos=0)
