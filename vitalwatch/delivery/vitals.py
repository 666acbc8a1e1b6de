"""Vital-sign telemetry of one bed: the latest value per kind, sent once a second, built when sent.

Vitals are QoS 0 and only the newest value matters, so a value not yet sent is simply
replaced by a newer one of the same kind: a slow or absent broker costs memory for one
value per kind, never a queue. A payload may be a function, called (and its result encoded)
only when it is sent: building every observation's payload was about 12 % of the daemon's CPU
under load, and most are replaced before they leave (docs/performance.md).

The values leave at the whole seconds of the loop clock (``VITALS_EVERY_S``), every bed's in
the same loop turn, instead of as soon as each arrives: a waveform-rate oximeter delivers its
values several times a second, and waking the publisher for each was about a fifth of the
daemon's CPU at real device rates, the budget that matters on a Raspberry Pi
(docs/performance.md, footprint). A displayed value is then at most a second older than it
would have been; bedside oximeters refresh their own display about once a second, and no
alarm depends on this topic (alerts have their own path, sent at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from vitalwatch.bed import VitalPayload
from vitalwatch.delivery.broker import MqttClient
from vitalwatch.delivery.payloads import Topics, encode
from vitalwatch.wake_grid import next_multiple

__all__ = ["VITALS_EVERY_S", "LatestVitals"]

# Vitals leave at the multiples of this on the loop clock (an instant the device links' read
# timers and the ticker also use, so sending them adds no loop wake-up of its own).
VITALS_EVERY_S = 1.0


class LatestVitals:
    """Latest unsent payload per vital kind, and when they are due."""

    def __init__(self, topics: Topics, on_due: Callable[[], None], every_s: float = VITALS_EVERY_S) -> None:
        """``on_due``: called (from a loop timer) when waiting values should be sent now."""
        self._topics = topics
        self._on_due = on_due
        self._every_s = every_s
        self._latest: dict[str, VitalPayload] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __bool__(self) -> bool:
        return bool(self._latest)

    @property
    def due(self) -> bool:
        """Values wait and their instant has passed (the sender should not go back to sleep)."""
        return bool(self._latest) and self._timer is None

    def put(self, kind: str, payload: VitalPayload) -> None:
        """A newer value replaces one of the same kind not yet sent; it leaves at the next
        multiple of the period (or earlier, with anything else the publisher sends)."""
        self._latest[kind] = payload
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(next_multiple(loop.time(), self._every_s), self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._latest:
            self._on_due()

    def close(self) -> None:
        """Forget the pending timer (the publisher stopped)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def publish(self, client: MqttClient) -> None:
        """Send every waiting value (QoS 0: the broker does not answer, nothing waits)."""
        while self._latest:
            kind, payload = self._latest.popitem()
            body = encode(payload() if callable(payload) else payload)
            await client.publish(self._topics.vital(kind), body, qos=0)
