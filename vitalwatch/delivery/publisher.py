"""MQTT for one bed: alerts from the durable outbox, retained alarm set and status, vitals, commands.

The only daemon module that imports ``aiomqtt`` (besides ``demo``/``tail``), so the move to
aiomqtt 3 changes one file. What it publishes (``vitalwatch.delivery.payloads.Topics``)::

    .../alerts              every transition, QoS 1, not retained, from the outbox (priority lanes)
    .../alarms/{alert_id}   retained latest transition while active; empty retained when it ends;
                            the whole active set republished on every (re)connect
    .../status              retained online + phase/links/version, heartbeat every heartbeat_s;
                            last will offline; offline published on a clean stop
    .../vitals/{kind}       latest value, QoS 0
    .../cmd (in)  ->  .../cmd/result (out, QoS 1)

Delivery: an alert transition is committed to SQLite (:class:`vitalwatch.delivery.outbox.Store`) before
it is offered to the broker and marked delivered only after ``publish(qos=1)`` returned, which
in aiomqtt 2.x means the PUBACK arrived (bounded by ``publish_timeout_s``: a SIGSTOPped broker
keeps TCP open and never answers). One transition is in flight at a time, so nothing after a
failure can overtake it. A fresh ``aiomqtt.Client`` is built for every connection: paho keeps
unacknowledged QoS 1 messages in memory and would resend them on its own after a reconnect,
beside what we resend from the outbox (operations note §2.1). Receivers de-duplicate on
``(alert_id, seq)``. If the database cannot be written, sending goes on from memory and the
store holds the refused rows until the disk takes them again (:mod:`vitalwatch.delivery.outbox`); the
delivery mark is deferred by the store (a crash before it is written means one resend).

Broker unreachable: if alerts could not be delivered for ``unreachable_alarm_s`` (disconnected
that long, or the oldest undelivered alert made no progress that long), ``on_unreachable(True)``
raises the local technical alarm; it is cleared once delivery works again. Reconnects use
capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import structlog

from vitalwatch.bed import VitalPayload
from vitalwatch.config import MqttConfig
from vitalwatch.continuity.statestore import transition_to_json
from vitalwatch.delivery.outbox import Entry, Lanes, PendingRow, Store
from vitalwatch.delivery.payloads import Topics, WallClock, alert_payload, command_result_payload, encode
from vitalwatch.engine.outputs import AlertState, AlertTransition
from vitalwatch.link.device_link import backoff_delay
from vitalwatch.ops.metrics import ALERTS_DELIVERED, OUTBOX_OLDEST_AGE, OUTBOX_PENDING, PUBLISH_ACK_LATENCY

__all__ = ["BedPublisher", "read_password", "tls_context"]

log = structlog.get_logger("vitalwatch.delivery.publisher")

# How long an alert waits for its SQLite commit before it is sent anyway: a stalled SD card
# must not hold back a nurse's alert (the row is still written when the disk answers).
PERSIST_WAIT_S = 2.0
# The systemd credential name (``LoadCredential=mqtt-password:...`` in systemd/vitalwatch.service).
CREDENTIAL_NAME = "mqtt-password"
# Reconnect backoff cap: short enough that a restarted broker is used again quickly.
MAX_RECONNECT_S = 10.0


def read_password(path: Path | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The broker password: from ``path``, else from the systemd credential, else None.

    Never from the command line or the main configuration (``ps``, shell history, a config
    copied into a ticket). Without ``password_file`` the daemon uses
    ``$CREDENTIALS_DIRECTORY/mqtt-password`` if systemd put it there (``LoadCredential=``).
    First line only, without its newline. An EMPTY file means "no password": install.sh
    creates an empty placeholder because ``LoadCredential=`` refuses to start the unit when
    the source is missing, and sending an empty password would fail the login instead.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        path = candidate if candidate.is_file() else None
    if path is None:
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0] if lines and lines[0] else None


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


def _utc_iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _no_delay(client: aiomqtt.Client) -> None:
    """Set TCP_NODELAY on the broker connection.

    Alerts are small writes that follow QoS 0 vitals the broker never answers: without
    TCP_NODELAY, Nagle holds an alert until the broker's delayed ACK arrives (up to 40 ms on
    Linux; measured 10-20 ms per alert, docs/performance.md section 1).
    """
    sock = client._client.socket()  # paho's socket; aiomqtt 2.x has no public accessor
    if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too; a test double is not
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return b"" if payload is None else str(payload).encode()


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
        store: Store | None = None,
        commands: Callable[[bytes], dict[str, Any]] | None = None,
        on_unreachable: Callable[[bool], None] | None = None,
        on_alert_sent: Callable[[], None] | None = None,
    ) -> None:
        self._cfg = cfg
        # Called right after an alert is offered to the broker (the engine snapshot is written
        # then, not before: it is milliseconds of work the alert must not wait for).
        self._on_alert_sent = on_alert_sent
        self._site = site
        self.bed = bed
        self.topics = Topics(cfg.topic_prefix, site, bed)
        self._wall = wall
        self._status = status
        self._rng = rng or random.Random()
        self._store = store
        self._commands = commands
        self._on_unreachable = on_unreachable
        self._lanes = Lanes()
        self._retained: dict[str, bytes] = {}  # alert_id -> latest payload, active alarms only
        self._vitals: dict[str, VitalPayload] = {}  # latest per kind, built when sent
        self._wake = asyncio.Event()
        self._heartbeat = 0
        self._status_due = False  # publish the status before the next heartbeat
        self._timeout = cfg.publish_timeout_s
        self.connected = False
        self.delivered = 0
        self.unreachable = False
        loop = asyncio.get_running_loop()
        self._down_since: float | None = loop.time()  # not connected yet
        self._last_progress = loop.time()
        self._password = read_password(cfg.password_file)

    # ------------------------------------------------------------------ input side (sync)
    @property
    def pending(self) -> int:
        """Alert transitions not yet acknowledged by the broker."""
        return len(self._lanes)

    def pending_entries(self) -> list[Entry]:
        return list(self._lanes)

    def alert(self, transition: AlertTransition) -> None:
        """Journal one transition (fsync on the writer thread) and queue it for the broker."""
        payload = alert_payload(transition, site=self._site, wall=self._wall)
        clears = transition.state is AlertState.CLEARED
        persisted = None
        if self._store is not None:
            persisted = self._store.record(
                self.bed,
                alert_id=transition.alert_id,
                seq=transition.seq,
                rank=transition.priority.rank,
                clears=clears,
                payload=payload,
                transition=transition_to_json(transition, utc=self._wall.utc),
            )
        now = asyncio.get_running_loop().time()
        entry = Entry(transition.alert_id, transition.seq, transition.priority.rank, clears, payload, now)
        entry.persisted = persisted
        self._enqueue(entry, retain=True)

    def restore(self, rows: list[PendingRow], active: list[AlertTransition]) -> None:
        """After a restart: the undelivered rows and the alarms to show as active again."""
        for tr in active:
            self._retained[tr.alert_id] = encode(alert_payload(tr, site=self._site, wall=self._wall))
        now = asyncio.get_running_loop().time()
        for row in rows:
            self._enqueue(Entry(row.alert_id, row.seq, row.rank, row.clears, row.payload, now), retain=False)

    def _enqueue(self, entry: Entry, *, retain: bool) -> None:
        """Queue for the broker; ``retain`` also updates the retained view of the active set."""
        if retain:
            if entry.clears:
                self._retained.pop(entry.alert_id, None)
            else:
                self._retained[entry.alert_id] = encode(entry.payload)
        self._lanes.push(entry)
        OUTBOX_PENDING.labels(self.bed).set(len(self._lanes))
        self._wake.set()

    def vital(self, kind: str, payload: VitalPayload) -> None:
        """Latest value per kind; a newer value replaces one not yet sent (QoS 0 telemetry).

        ``payload`` may be a function: it is called (and the result encoded) only when sent.
        """
        self._vitals[kind] = payload
        self._wake.set()

    # ------------------------------------------------------------------ connection
    def _new_client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(self.topics.status, encode(self._status_doc("offline")), qos=1, retain=True)
        return aiomqtt.Client(
            self._cfg.host,
            self._cfg.port,
            identifier=self._cfg.client_id and f"{self._cfg.client_id}-{self.topics.bed}",
            username=self._cfg.username,
            password=self._password,
            will=will,
            keepalive=self._cfg.keepalive_s,
            tls_context=tls_context(self._cfg),
            timeout=self._timeout,
        )

    async def run(self) -> None:
        """Connect, publish, reconnect; until cancelled, then say offline and disconnect."""
        watchdog = asyncio.create_task(self._watch(), name=f"unreachable[{self.bed}]")
        attempt = 0
        try:
            while True:
                client = self._new_client()
                try:
                    async with client:
                        _no_delay(client)
                        self._set_connected(True)
                        attempt = 0
                        log.info(
                            "mqtt.connected", host=self._cfg.host, port=self._cfg.port, pending=self.pending
                        )
                        await self._on_connect(client)
                        await self._pump(client)
                except aiomqtt.MqttError as exc:
                    log.warning("mqtt.disconnected", error=str(exc), pending=self.pending)
                finally:
                    self._set_connected(False)
                await asyncio.sleep(backoff_delay(attempt, self._rng, cap=MAX_RECONNECT_S))
                attempt += 1
        finally:
            watchdog.cancel()
            await self._say_offline()

    async def _pump(self, client: aiomqtt.Client) -> None:
        """Send and receive until one fails (its exception is raised) or we are cancelled.

        Not a TaskGroup: aiomqtt 2.x waits for PUBACKs with ``asyncio.wait_for``, which on
        Python 3.11 can swallow a cancellation that arrives as the wait completes; a child that
        swallowed it would keep a TaskGroup (and the daemon's shutdown) waiting forever. Here a
        child that outlives its cancellation has its connection cut under it.
        """
        tasks = {
            asyncio.create_task(self._serve(client), name=f"send[{self.bed}]"),
            asyncio.create_task(self._receive(client), name=f"receive[{self.bed}]"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises the failure (MqttError: reconnect; anything else: a bug)
        finally:
            for task in tasks:
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=2.0)
            if pending:
                with contextlib.suppress(Exception):
                    client._client.disconnect()  # wakes a message iterator that ignored the cancel
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=2.0)

    def _set_connected(self, up: bool) -> None:
        now = asyncio.get_running_loop().time()
        if up:
            self._down_since = None
            self._last_progress = now
        elif self.connected:
            self._down_since = self._stuck_since() or now
        self.connected = up

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        """Commands first (none missed), then online status and the whole active set (the truth).

        Subscribing to our own ``alarms/+`` makes the broker send its retained copies; any it
        holds for an alarm we do not know as active is cleared in :meth:`_receive`, so a
        station never sees a stale alarm from before a crash (docs/mqtt.md, "The active set").
        """
        if self._commands is not None:
            await client.subscribe(self.topics.cmd, qos=1, timeout=self._timeout)
        await client.subscribe(self.topics.alarm("+"), qos=1, timeout=self._timeout)
        await self._publish_status(client, "online")
        for alert_id, body in list(self._retained.items()):
            await client.publish(self.topics.alarm(alert_id), body, qos=1, retain=True, timeout=self._timeout)
        self._last_progress = asyncio.get_running_loop().time()

    async def _say_offline(self) -> None:
        """On a clean stop the broker sends no will, so publish offline ourselves."""
        client = self._new_client()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3.0):
                async with client:
                    await self._publish_status(client, "offline")

    async def _publish_status(self, client: aiomqtt.Client, state: str) -> None:
        self._status_due = False
        payload = self._status_doc(state)
        await client.publish(self.topics.status, encode(payload), qos=1, retain=True, timeout=self._timeout)

    def _status_doc(self, state: str) -> dict[str, Any]:
        """The status callable's document plus what only the publisher knows.

        ``outbox_pending`` is this publisher's backlog; ``technical`` adds broker_unreachable
        and persistence_degraded (the store's health) to whatever the caller listed.
        """
        doc = self._status(state, self._heartbeat)
        doc.setdefault("phase_minutes", None)
        doc["outbox_pending"] = self.pending
        technical = set(doc.get("technical", ()))
        if self.unreachable:
            technical.add("broker_unreachable")
        if self._store is not None and not self._store.healthy:
            technical.add("persistence_degraded")
        doc["technical"] = sorted(technical)
        return doc

    # ------------------------------------------------------------------ sending
    async def _send(self, client: aiomqtt.Client, entry: Entry) -> None:
        if entry.persisted is not None:
            try:
                async with asyncio.timeout(PERSIST_WAIT_S):
                    await asyncio.shield(entry.persisted)
            except TimeoutError:
                log.warning("persistence.slow", alert_id=entry.alert_id, seq=entry.seq)
            entry.persisted = None
        body = dict(entry.payload)
        body["sent_utc"] = _utc_iso(datetime.now(UTC))
        offered = time.monotonic()
        await client.publish(self.topics.alerts, encode(body), qos=1, timeout=self._timeout)
        PUBLISH_ACK_LATENCY.labels(self.bed).observe(time.monotonic() - offered)
        if self._on_alert_sent is not None:
            self._on_alert_sent()
        # The retained topic always carries the latest state (or nothing once it ended), so a
        # backlog sent after a reconnect never puts an older state back on a station's screen.
        retained = self._retained.get(entry.alert_id, b"")
        await client.publish(
            self.topics.alarm(entry.alert_id), retained, qos=1, retain=True, timeout=self._timeout
        )
        self._lanes.pop(entry)
        self._last_progress = asyncio.get_running_loop().time()
        self.delivered += 1
        ALERTS_DELIVERED.labels(self.bed).inc()
        OUTBOX_PENDING.labels(self.bed).set(len(self._lanes))
        if self._store is not None:
            self._store.delivered(self.bed, entry.alert_id, entry.seq)
        log.info("alert.published", alert_id=entry.alert_id, seq=entry.seq)

    async def _serve(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self._cfg.heartbeat_s
        while True:
            self._wake.clear()
            entry = self._lanes.peek()
            while entry is not None:
                await self._send(client, entry)
                if loop.time() >= next_beat:
                    break  # a long backlog must not starve the heartbeat
                entry = self._lanes.peek()
            while self._vitals:
                kind, payload = self._vitals.popitem()
                body = encode(payload() if callable(payload) else payload)
                await client.publish(self.topics.vital(kind), body, qos=0)
            if loop.time() >= next_beat:
                self._heartbeat += 1
                await self._publish_status(client, "online")
                next_beat = loop.time() + self._cfg.heartbeat_s
            elif self._status_due:  # a local technical alarm changed: say so now, not at the next beat
                await self._publish_status(client, "online")
            if self._lanes.peek() is not None or self._vitals or self._status_due:
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as the wait completes, and a shutdown would then hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_beat - loop.time())):
                    await self._wake.wait()

    # ------------------------------------------------------------------ commands
    async def _receive(self, client: aiomqtt.Client) -> None:
        """Commands (one result each) and the broker's retained alarms (stale ones cleared)."""
        alarms = self.topics.alarm("")
        async for message in client.messages:
            topic = str(message.topic)
            if topic.startswith(alarms):
                await self._check_retained(client, topic[len(alarms) :], message)
            elif topic == self.topics.cmd and self._commands is not None:
                await client.publish(
                    self.topics.cmd_result,
                    encode(self._command_result(_payload_bytes(message.payload))),
                    qos=1,
                    timeout=self._timeout,
                )

    def _command_result(self, payload: bytes) -> dict[str, Any]:
        assert self._commands is not None
        try:
            return self._commands(payload)
        except Exception as exc:  # a bug must not kill the connection; the sender hears of it
            log.exception("command.failed")
            return command_result_payload(
                request_id=None,
                command=None,
                ok=False,
                error=("internal", f"gateway error {type(exc).__name__}; nothing was changed"),
                site=self._site,
                bed=self.bed,
                sent_at=datetime.now(UTC),
            )

    async def _check_retained(self, client: aiomqtt.Client, alert_id: str, message: aiomqtt.Message) -> None:
        """A retained alarm the broker kept but we do not know as active is stale: clear it.

        Only messages flagged retained count: those are the broker's stored copies sent at
        subscribe time; our own live publishes come back unflagged (MQTT 3.1.1 §3.3.1.3).
        """
        if not message.retain or not _payload_bytes(message.payload) or alert_id in self._retained:
            return
        log.info("alarm.stale_cleared", alert_id=alert_id)
        await client.publish(self.topics.alarm(alert_id), b"", qos=1, retain=True, timeout=self._timeout)

    # ------------------------------------------------------------------ unreachable alarm
    def _stuck_since(self) -> float | None:
        """Since when alerts could not be delivered (None: delivery works)."""
        if not self.connected:
            return self._down_since
        oldest = self._lanes.oldest_queued_at()
        if oldest is None:
            return None
        return max(oldest, self._last_progress)

    async def _watch(self) -> None:
        limit = self._cfg.unreachable_alarm_s
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            since = self._stuck_since()
            oldest = self._lanes.oldest_queued_at()
            OUTBOX_OLDEST_AGE.labels(self.bed).set(0.0 if oldest is None else now - oldest)
            stuck = since is not None and now - since >= limit
            if stuck != self.unreachable:
                self.unreachable = stuck
                if stuck:
                    log.error(
                        "broker.unreachable", seconds=round(now - (since or now), 1), pending=self.pending
                    )
                else:
                    log.info("broker.reachable", pending=self.pending)
                if self._on_unreachable is not None:
                    self._on_unreachable(stuck)
                self._status_due = True
                self._wake.set()
            await asyncio.sleep(min(0.5, limit / 4))
