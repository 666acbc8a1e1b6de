"""MQTT publishing for one bed: alerts (QoS 1, held until PUBACK), retained status with last will, vitals.

The only module that imports ``aiomqtt``. One client per bed, so each bed has its own
last will (``offline`` on its own status topic) and the broker's ACL can limit a bed
gateway to its own topics. A fresh client is built for every connection attempt: paho
keeps unacknowledged QoS 1 messages in memory and would resend them itself on reconnect,
duplicating what we resend from our own queue (operations note §2.1).

An alert leaves the queue only when the broker acknowledged it; on any failure the client
is dropped, and after a capped, jittered backoff the queue is sent again from its oldest
entry, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import structlog

from vitalwatch.config import MqttConfig
from vitalwatch.engine.outputs import AlertTransition
from vitalwatch.link import backoff_delay
from vitalwatch.payloads import Topics, WallClock, alert_payload, encode

__all__ = ["BedPublisher", "read_password"]

log = structlog.get_logger("vitalwatch.publisher")

# A publish that the broker has not acknowledged within this time counts as failed: a hung
# broker (SIGSTOP) keeps the TCP connection open, so only a timeout tells us.
PUBLISH_TIMEOUT_S = 5.0


def read_password(path: Path | None) -> str | None:
    """The broker password from a file (or a systemd credential), first line, no newline."""
    if path is None:
        return None
    return path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    """TLS with hostname verification on unless the configuration turns it off."""
    if cfg.tls is None:
        return None
    ctx = ssl.create_default_context(cafile=str(cfg.tls.ca_file) if cfg.tls.ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.tls.cert_file is not None and cfg.tls.key_file is not None:
        ctx.load_cert_chain(str(cfg.tls.cert_file), str(cfg.tls.key_file))
    ctx.check_hostname = cfg.tls.verify_hostname
    return ctx


class BedPublisher:
    """Owns one bed's MQTT connection and everything published for it."""

    def __init__(
        self,
        cfg: MqttConfig,
        *,
        site: str,
        bed: str,
        wall: WallClock,
        status: Callable[[str, int], dict[str, Any]],
        rng: random.Random | None = None,
    ) -> None:
        self._cfg = cfg
        self._site = site
        self.topics = Topics(cfg.topic_prefix, site, bed)
        self._wall = wall
        self._status = status
        self._rng = rng or random.Random()
        self._alerts: deque[AlertTransition] = deque()
        self._vitals: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self._heartbeat = 0
        self.connected = False
        self.delivered = 0
        self._client: aiomqtt.Client | None = None
        self._password = read_password(cfg.password_file)

    @property
    def pending(self) -> int:
        """Alerts not yet acknowledged by the broker."""
        return len(self._alerts)

    def alert(self, transition: AlertTransition) -> None:
        self._alerts.append(transition)
        self._wake.set()

    def vital(self, kind: str, payload: dict[str, Any]) -> None:
        """Latest value per kind; a newer value replaces one not yet sent (QoS 0 telemetry)."""
        self._vitals[kind] = encode(payload)
        self._wake.set()

    def _new_client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(
            self.topics.status, encode(self._status("offline", self._heartbeat)), qos=1, retain=True
        )
        return aiomqtt.Client(
            self._cfg.host,
            self._cfg.port,
            identifier=self._cfg.client_id and f"{self._cfg.client_id}-{self.topics.bed}",
            username=self._cfg.username,
            password=self._password,
            will=will,
            keepalive=self._cfg.keepalive_s,
            tls_context=tls_context(self._cfg),
            timeout=PUBLISH_TIMEOUT_S,
        )

    async def run(self) -> None:
        """Connect, publish, reconnect; until cancelled, then say offline and disconnect."""
        attempt = 0
        try:
            while True:
                client = self._new_client()
                try:
                    async with client:
                        self._client = client
                        self.connected = True
                        attempt = 0
                        log.info("mqtt.connected", host=self._cfg.host, port=self._cfg.port)
                        await self._publish_status(client, "online")
                        await self._serve(client)
                except aiomqtt.MqttError as exc:
                    log.warning("mqtt.disconnected", error=str(exc), pending=self.pending)
                finally:
                    self.connected = False
                    self._client = None
                await asyncio.sleep(backoff_delay(attempt, self._rng))
                attempt += 1
        finally:
            await self._say_offline()

    async def _say_offline(self) -> None:
        """On a clean stop the broker sends no will, so publish offline ourselves."""
        client = self._new_client()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3.0):
                async with client:
                    await self._publish_status(client, "offline")

    async def _publish_status(self, client: aiomqtt.Client, state: str) -> None:
        payload = self._status(state, self._heartbeat)
        await client.publish(self.topics.status, encode(payload), qos=1, retain=True)

    async def _serve(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self._cfg.heartbeat_s
        while True:
            while self._alerts:
                tr = self._alerts[0]
                body = encode(alert_payload(tr, site=self._site, wall=self._wall, sent_at=datetime.now(UTC)))
                await client.publish(self.topics.alerts, body, qos=1)
                self._alerts.popleft()
                self.delivered += 1
                log.info("alert.published", alert_id=tr.alert_id, seq=tr.seq, state=tr.state.value)
            while self._vitals:
                kind, body = self._vitals.popitem()
                await client.publish(self.topics.vital(kind), body, qos=0)
            if loop.time() >= next_beat:
                self._heartbeat += 1
                await self._publish_status(client, "online")
                next_beat = loop.time() + self._cfg.heartbeat_s
            self._wake.clear()
            if self._alerts or self._vitals:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_beat - loop.time()))
