"""The retained alarm set of one bed: what ``.../alarms/{alert_id}`` must show on the broker.

A station that connects (or reloads) learns which alarms are active from the broker's retained
copies alone (docs/mqtt.md, "The active set"), so those copies must always be the truth:

- each active alarm's topic carries its latest transition; an alarm that ended has an empty
  retained message (which deletes the broker's copy);
- after an alert transition is delivered its retained topic is rewritten with the *latest*
  state, so a backlog sent after a reconnect never puts an older state back on a screen;
- on every (re)connect the whole active set is published again, and any retained alarm the
  broker still holds for an alarm we do not know as active (a stale one from before a crash)
  is cleared.
"""

from __future__ import annotations

import aiomqtt
import structlog

from vitalwatch.delivery.broker import MqttClient, message_bytes
from vitalwatch.delivery.payloads import Topics

__all__ = ["RetainedAlarms"]

log = structlog.get_logger("vitalwatch.delivery.retained")


class RetainedAlarms:
    """Latest encoded payload per active ``alert_id``, and the publishes that keep the broker in step."""

    def __init__(self, topics: Topics, *, timeout: float) -> None:
        self._topics = topics
        self._timeout = timeout
        self._active: dict[str, bytes] = {}  # alert_id -> latest payload, active alarms only

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._active

    def set(self, alert_id: str, body: bytes) -> None:
        """``alert_id`` is active and its latest transition is ``body``."""
        self._active[alert_id] = body

    def clear(self, alert_id: str) -> None:
        """``alert_id`` ended: its retained topic is emptied when next published."""
        self._active.pop(alert_id, None)

    async def publish_latest(self, client: MqttClient, alert_id: str) -> None:
        """The alarm's retained topic after one of its transitions was delivered (empty once it ended)."""
        body = self._active.get(alert_id, b"")
        await client.publish(self._topics.alarm(alert_id), body, qos=1, retain=True, timeout=self._timeout)

    async def publish_all(self, client: MqttClient) -> None:
        """Every active alarm (on connect: the broker may have lost or never had them)."""
        for alert_id, body in list(self._active.items()):
            topic = self._topics.alarm(alert_id)
            await client.publish(topic, body, qos=1, retain=True, timeout=self._timeout)

    async def clear_if_stale(self, client: MqttClient, alert_id: str, message: aiomqtt.Message) -> None:
        """A retained alarm the broker kept but we do not know as active is stale: clear it.

        Only messages flagged retained count: those are the broker's stored copies sent at
        subscribe time; our own live publishes come back unflagged (MQTT 3.1.1 §3.3.1.3).
        """
        if not message.retain or not message_bytes(message) or alert_id in self._active:
            return
        log.info("alarm.stale_cleared", alert_id=alert_id)
        await client.publish(self._topics.alarm(alert_id), b"", qos=1, retain=True, timeout=self._timeout)
