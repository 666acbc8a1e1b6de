"""MQTT for one bed: the connection loop that takes alerts from the outbox to the broker.

What it publishes (``vitalwatch.delivery.payloads.Topics``)::

    .../alerts              every transition, QoS 1, not retained, from the outbox (priority lanes)
    .../alarms/{alert_id}   retained latest transition while active; empty retained when it ends;
                            the whole active set republished on every (re)connect
    .../status              retained online + phase/links/version, heartbeat every heartbeat_s;
                            last will offline; offline published on a clean stop
    .../vitals/{kind}       latest value, QoS 0
    .../prompts, .../readiness, .../trend   retained documents, latest only, resent on every
                            (re)connect, one at a time between alerts
    .../cmd (in)  ->  .../cmd/result (out, QoS 1)

Each concern has its own module; this one connects, reconnects and decides what is sent when:
:mod:`~vitalwatch.delivery.lanes` (which alert next), :mod:`~vitalwatch.delivery.retained`
(the active set), :mod:`~vitalwatch.delivery.status` (status and heartbeat),
:mod:`~vitalwatch.delivery.vitals` (latest-value telemetry), :mod:`~vitalwatch.delivery.watchdog`
(the broker-unreachable alarm) and :mod:`~vitalwatch.delivery.broker` (the client itself).

Delivery: an alert transition is committed to SQLite (:class:`vitalwatch.delivery.store.Store`)
before it is offered to the broker and marked delivered only after ``publish(qos=1)``
returned, which in aiomqtt 2.x means the PUBACK arrived (bounded by ``publish_timeout_s``: a
SIGSTOPped broker keeps TCP open and never answers). One transition is in flight at a time, so
nothing after a failure can overtake it. A fresh client is built for every connection: paho
keeps unacknowledged QoS 1 messages in memory and would resend them on its own after a
reconnect, beside what we resend from the outbox (operations note §2.1). Receivers
de-duplicate on ``(alert_id, seq)``. If the database cannot be written, sending goes on from
memory and the store holds the refused rows until the disk takes them again
(:mod:`vitalwatch.delivery.writer`); the delivery mark is deferred by the store (a crash
before it is written means one resend). Reconnects use capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import aiomqtt
import structlog

from vitalwatch.bed import VitalPayload
from vitalwatch.config import MqttConfig
from vitalwatch.continuity.statestore import transition_to_json
from vitalwatch.delivery.broker import (
    ClientFactory,
    MqttClient,
    aiomqtt_factory,
    cut_connection,
    message_bytes,
    no_delay,
    write_at_once,
)
from vitalwatch.delivery.commit import Commit
from vitalwatch.delivery.documents import RetainedDocuments
from vitalwatch.delivery.lanes import Entry, Lanes
from vitalwatch.delivery.payloads import (
    Topics,
    WallClock,
    alert_payload,
    command_result_payload,
    encode,
    iso_utc,
    stamped_encoder,
)
from vitalwatch.delivery.retained import RetainedAlarms
from vitalwatch.delivery.status import StatusReporter
from vitalwatch.delivery.store import PendingRow, Store
from vitalwatch.delivery.vitals import LatestVitals
from vitalwatch.delivery.watchdog import UnreachableWatchdog
from vitalwatch.engine.outputs import AlertState, AlertTransition
from vitalwatch.link.device_link import backoff_delay
from vitalwatch.ops.metrics import ALERTS_DELIVERED, OUTBOX_PENDING, PUBLISH_ACK_LATENCY

__all__ = ["BedPort", "BedPublisher"]

log = structlog.get_logger("vitalwatch.delivery.publisher")

# How long an alert waits for its SQLite commit before it is sent anyway: a stalled SD card
# must not hold back a nurse's alert (the row is still written when the disk answers).
PERSIST_WAIT_S = 2.0
# Reconnect backoff cap: short enough that a restarted broker is used again quickly.
MAX_RECONNECT_S = 10.0


class BedPort(Protocol):
    """What the publisher asks of its bed (the daemon's per-bed runtime answers)."""

    def status(self, state: str, heartbeat: int) -> dict[str, Any]:
        """The retained status document (``state`` online or offline)."""

    def command(self, payload: bytes, *, retained: bool = False) -> dict[str, Any]:
        """Apply one command from ``.../cmd``; the result payload for ``.../cmd/result``.

        ``retained``: the broker delivered a stored retained message (to be refused).
        """

    def unreachable(self, stuck: bool) -> None:
        """The broker has not taken an alert for too long (True), or does again (False)."""

    def alert_sent(self) -> None:
        """An alert was just offered to the broker."""


class BedPublisher:
    """Owns one bed's MQTT connection and everything published for it.

    ``client_factory`` builds the MQTT client of each connection attempt (default: aiomqtt
    with the configured broker, credentials and TLS); unit tests pass a fake broker's.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        *,
        site: str,
        bed: str,
        wall: WallClock,
        port: BedPort,
        rng: random.Random | None = None,
        store: Store | None = None,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self._cfg = cfg
        # Called right after an alert is offered to the broker (the engine snapshot is written
        # then, not before: it is milliseconds of work the alert must not wait for).
        self._on_alert_sent: Callable[[], None] | None = port.alert_sent
        self._site = site
        self.bed = bed
        self.topics = Topics(cfg.topic_prefix, site, bed)
        self._wall = wall
        self._rng = rng or random.Random()
        self._store = store
        self._commands: Callable[..., dict[str, Any]] | None = port.command
        self._on_unreachable: Callable[[bool], None] | None = port.unreachable
        self._timeout = cfg.publish_timeout_s
        self._new_client = client_factory or aiomqtt_factory(cfg, bed=self.topics.bed)
        self._lanes = Lanes()
        self._retained = RetainedAlarms(self.topics, timeout=self._timeout)
        self._vitals = LatestVitals(self.topics, on_due=self._wake_up)
        self._documents = RetainedDocuments(timeout=self._timeout)
        self._status = StatusReporter(self.topics, port.status, timeout=self._timeout)
        self._watchdog = UnreachableWatchdog(
            self._lanes, bed=bed, limit_s=cfg.unreachable_alarm_s, on_change=self._unreachable_changed
        )
        self._wake = asyncio.Event()
        self.delivered = 0

    def _wake_up(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ input side (sync)
    @property
    def pending(self) -> int:
        """Alert transitions not yet acknowledged by the broker."""
        return len(self._lanes)

    @property
    def connected(self) -> bool:
        return self._watchdog.connected

    @property
    def unreachable(self) -> bool:
        """The local "broker unreachable" technical alarm is on."""
        return self._watchdog.unreachable

    def pending_entries(self) -> list[Entry]:
        return list(self._lanes)

    def alert(self, transition: AlertTransition) -> Commit | None:
        """Journal one transition (fsync on the writer thread) and queue it for the broker.

        Returns the journal commit (None without a journal), which the bed session may wait for
        before it handles the rest of the input that raised the alert."""
        payload = alert_payload(transition, site=self._site, wall=self._wall)
        body = encode(payload)  # once: the outbox row's text and the retained copy
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
                encoded=body.decode(),
            )
        now = asyncio.get_running_loop().time()
        entry = Entry(transition.alert_id, transition.seq, transition.priority.rank, clears, payload, now)
        entry.persisted = persisted
        if clears:
            self._retained.clear(entry.alert_id)
        else:
            self._retained.set(entry.alert_id, body)
        self._enqueue(entry)
        return persisted

    def restore(self, rows: list[PendingRow], active: list[AlertTransition]) -> None:
        """After a restart: the undelivered rows and the alarms to show as active again."""
        for tr in active:
            self._retained.set(tr.alert_id, encode(alert_payload(tr, site=self._site, wall=self._wall)))
        now = asyncio.get_running_loop().time()
        for row in rows:
            self._enqueue(Entry(row.alert_id, row.seq, row.rank, row.clears, row.payload, now))

    def _enqueue(self, entry: Entry) -> None:
        self._lanes.push(entry)
        OUTBOX_PENDING.labels(self.bed).set(len(self._lanes))
        self._wake.set()

    def vital(self, kind: str, payload: VitalPayload) -> None:
        """Latest value per kind; a newer value replaces one not yet sent (QoS 0 telemetry).

        ``payload`` may be a function: it is called (and the result encoded) only when sent.
        Sent at the next whole second of the loop clock (:mod:`vitalwatch.delivery.vitals`).
        """
        self._vitals.put(kind, payload)

    def status_due(self) -> None:
        """Publish the status now, not at the next heartbeat (a phase or discharge-readiness edge)."""
        self._status.due = True
        self._wake.set()

    def document(self, topic: str, payload: dict[str, Any] | None, *, compare: dict[str, Any]) -> None:
        """A retained document of this bed (prompts, readiness, trend): sent when ``compare`` changed.

        ``None`` empties the topic (an empty retained message: the broker forgets the document).
        """
        if self._documents.put(topic, payload, compare=compare):
            self._wake.set()

    # ------------------------------------------------------------------ connection
    def _client(self) -> MqttClient:
        will = aiomqtt.Will(self.topics.status, encode(self._status_doc("offline")), qos=1, retain=True)
        return self._new_client(will)

    async def run(self) -> None:
        """Connect, publish, reconnect; until cancelled, then say offline and disconnect."""
        watchdog = asyncio.create_task(self._watchdog.run(), name=f"unreachable[{self.bed}]")
        attempt = 0
        try:
            while True:
                client = self._client()
                try:
                    async with client:
                        no_delay(client)
                        write_at_once(client)
                        self._watchdog.connection(True)
                        attempt = 0
                        log.info(
                            "mqtt.connected", host=self._cfg.host, port=self._cfg.port, pending=self.pending
                        )
                        await self._on_connect(client)
                        await self._pump(client)
                except aiomqtt.MqttError as exc:
                    log.warning("mqtt.disconnected", error=str(exc), pending=self.pending)
                finally:
                    self._watchdog.connection(False)
                await asyncio.sleep(backoff_delay(attempt, self._rng, cap=MAX_RECONNECT_S))
                attempt += 1
        finally:
            watchdog.cancel()
            self._vitals.close()
            await self._say_offline()

    async def _pump(self, client: MqttClient) -> None:
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
                cut_connection(client)
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=2.0)

    async def _on_connect(self, client: MqttClient) -> None:
        """Commands first (none missed), then online status and the whole active set (the truth).

        Subscribing to our own ``alarms/+`` makes the broker send its retained copies; any it
        holds for an alarm we do not know as active is cleared in :meth:`_receive`, so a
        station never sees a stale alarm from before a crash (docs/mqtt.md, "The active set").
        """
        if self._commands is not None:
            await client.subscribe(self.topics.cmd, qos=1, timeout=self._timeout)
        await client.subscribe(self.topics.alarm("+"), qos=1, timeout=self._timeout)
        await self._publish_status(client, "online")
        await self._retained.publish_all(client)
        self._documents.all_due()
        self._watchdog.progress()

    async def _say_offline(self) -> None:
        """On a clean stop the broker sends no will, so publish offline ourselves."""
        client = self._client()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3.0):
                async with client:
                    await self._publish_status(client, "offline")

    async def _publish_status(self, client: MqttClient, state: str) -> None:
        await self._status.publish(client, self._status_doc(state))

    def _status_doc(self, state: str) -> dict[str, Any]:
        degraded = self._store is not None and not self._store.healthy
        return self._status.document(
            state, pending=self.pending, unreachable=self.unreachable, degraded=degraded
        )

    def _unreachable_changed(self, stuck: bool) -> None:
        if self._on_unreachable is not None:
            self._on_unreachable(stuck)
        self._status.due = True  # say so now, not at the next heartbeat
        self._wake.set()

    # ------------------------------------------------------------------ sending
    async def _send(self, client: MqttClient, entry: Entry) -> None:
        stamp = stamped_encoder(entry.payload)  # encoded while the writer thread fsyncs
        if entry.persisted is not None:
            try:
                async with asyncio.timeout(PERSIST_WAIT_S):
                    await entry.persisted  # a wait of its own: giving up cancels nothing shared
            except TimeoutError:
                log.warning("persistence.slow", alert_id=entry.alert_id, seq=entry.seq)
            entry.persisted = None
        body = stamp(iso_utc(datetime.now(UTC)))
        offered = time.monotonic()
        await client.publish(self.topics.alerts, body, qos=1, timeout=self._timeout)
        if entry.payload.get("state") == "escalated":
            # The second recipient's topic: the same payload, sent before the entry counts as
            # delivered, so an escalation survives a lost connection like any alert (receivers
            # already drop a repeated (alert_id, seq)).
            await client.publish(self.topics.escalations, body, qos=1, timeout=self._timeout)
        PUBLISH_ACK_LATENCY.labels(self.bed).observe(time.monotonic() - offered)
        if self._on_alert_sent is not None:
            self._on_alert_sent()
        await self._retained.publish_latest(client, entry.alert_id)
        self._lanes.pop(entry)
        self._watchdog.progress()
        self.delivered += 1
        ALERTS_DELIVERED.labels(self.bed).inc()
        OUTBOX_PENDING.labels(self.bed).set(len(self._lanes))
        if self._store is not None:
            self._store.delivered(self.bed, entry.alert_id, entry.seq)
        log.info("alert.published", alert_id=entry.alert_id, seq=entry.seq)

    async def _serve(self, client: MqttClient) -> None:
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
            await self._vitals.publish(client)
            await self._documents.publish(client)
            if loop.time() >= next_beat:
                self._status.heartbeat += 1
                await self._publish_status(client, "online")
                next_beat = loop.time() + self._cfg.heartbeat_s
            elif self._status.due:  # a local technical alarm changed: say so now, not at the next beat
                await self._publish_status(client, "online")
            if self._lanes.peek() is not None or self._vitals.due or self._documents or self._status.due:
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as the wait completes, and a shutdown would then hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_beat - loop.time())):
                    await self._wake.wait()

    # ------------------------------------------------------------------ incoming
    async def _receive(self, client: MqttClient) -> None:
        """Commands (one result each) and the broker's retained alarms (stale ones cleared)."""
        alarms = self.topics.alarm("")
        async for message in client.messages:
            topic = str(message.topic)
            if topic.startswith(alarms):
                await self._retained.clear_if_stale(client, topic[len(alarms) :], message)
            elif topic == self.topics.cmd and self._commands is not None:
                await client.publish(
                    self.topics.cmd_result,
                    encode(self._command_result(message_bytes(message), bool(message.retain))),
                    qos=1,
                    timeout=self._timeout,
                )

    def _command_result(self, payload: bytes, retained: bool) -> dict[str, Any]:
        assert self._commands is not None
        try:
            return self._commands(payload, retained=retained)
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
