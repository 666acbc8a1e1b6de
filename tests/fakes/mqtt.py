"""An in-memory MQTT broker and client for unit tests of the publisher and the command path.

The real-Mosquitto integration tests show that delivery survives real faults; these fakes let a
unit test *choose* the fault and the moment: acknowledge, lose a message, lose only its PUBACK,
answer late, stall (nothing answered, as a SIGSTOPped broker), refuse connections, or drop the
connection. :meth:`FakeBroker.factory` is a :data:`vitalwatch.delivery.broker.ClientFactory`.

The client behaves as ``aiomqtt.Client`` 2.x does where the publisher relies on it:
``publish(qos=1)`` returns once the broker acknowledged and raises ``aiomqtt.MqttError`` after
``timeout`` without an answer or when the connection drops; ``messages`` yields
``aiomqtt.Message`` objects and raises ``MqttError`` when the connection drops; subscribing
sends the matching retained messages flagged ``retain``; a dropped connection publishes the
client's last will; a clean exit does not. Waiting is on conditions (:meth:`FakeBroker.wait_for`),
never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiomqtt

__all__ = ["Attempt", "FakeBroker", "FakeClient", "topic_matches"]


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest)."""
    want, got = pattern.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(got) or (level != "+" and level != got[i]):
            return False
    return len(want) == len(got)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One publish a client made, whatever became of it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    fate: str  # "acked", "lost" (never reached the broker), "ack_lost" (reached it, PUBACK lost),
    # "stalled" (nobody answered), "dropped" (the connection died while waiting), "qos0"

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass(slots=True)
class _Loss:
    remaining: int
    topic: str | None  # a filter; None: any QoS 1 publish
    ack_only: bool


class FakeBroker:
    """Keeps what it accepted (:attr:`accepted`, :attr:`retained`) and every attempt (:attr:`attempts`)."""

    def __init__(self, *, timeout: float = 1.0) -> None:
        self.timeout = timeout  # a client's default answer timeout (aiomqtt's ``timeout=``)
        self.attempts: list[Attempt] = []
        self.accepted: list[Attempt] = []  # what reached the broker, in order (routed to subscribers)
        self.retained: dict[str, bytes] = {}
        self.connects = 0  # connections accepted
        self.refusing = False
        self.stalled = False
        self.ack_delay = 0.0
        self._losses: list[_Loss] = []
        self._clients: list[FakeClient] = []
        self._changed = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()

    # ------------------------------------------------------------------ the test's controls
    def factory(self, will: aiomqtt.Will | None = None) -> FakeClient:
        """A new client carrying ``will`` (pass as ``client_factory``); without one, as the receipts link."""
        return FakeClient(self, will)

    def lose_next(self, count: int = 1, *, topic: str | None = None, ack_only: bool = False) -> None:
        """The next ``count`` QoS 1 publishes (matching ``topic``) are lost: the message itself,
        or with ``ack_only`` only the broker's PUBACK (the broker has it; the sender does not know)."""
        self._losses.append(_Loss(count, topic, ack_only))

    def stall(self) -> None:
        """Answer nothing (connects, subscribes, QoS 1 publishes) until :meth:`resume`; TCP stays up."""
        self.stalled = True
        self._resumed.clear()

    def resume(self) -> None:
        self.stalled = False
        self._resumed.set()
        self._notify()

    def drop_connections(self) -> None:
        """Every open connection dies (waiting calls raise ``MqttError``; last wills are published)."""
        for client in list(self._clients):
            client._drop()

    async def inject(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Someone else (a nurse station) publishes ``payload`` on ``topic``."""
        self._accept(Attempt(topic, payload, 1, retain, "acked"))

    # ------------------------------------------------------------------ what the test reads
    def on(self, topic: str) -> list[Attempt]:
        """Accepted messages on topics matching the filter ``topic``, in order."""
        return [a for a in self.accepted if topic_matches(topic, a.topic)]

    @property
    def connected(self) -> int:
        return len(self._clients)

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
        """Until ``predicate()`` holds (checked at each broker event); AssertionError after ``within`` s."""
        try:
            async with asyncio.timeout(within):
                while not predicate():
                    changed = self._changed
                    await changed.wait()
        except TimeoutError:
            raise AssertionError(f"not within {within} s: {what or predicate}") from None

    # ------------------------------------------------------------------ broker side
    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _fate(self, topic: str) -> str:
        for loss in self._losses:
            if loss.remaining > 0 and (loss.topic is None or topic_matches(loss.topic, topic)):
                loss.remaining -= 1
                return "ack_lost" if loss.ack_only else "lost"
        return "acked"

    def _accept(self, message: Attempt) -> None:
        self.accepted.append(message)
        if message.retain:
            if message.payload:
                self.retained[message.topic] = message.payload
            else:
                self.retained.pop(message.topic, None)
        for client in list(self._clients):
            client._deliver(message.topic, message.payload, retain=False)
        self._notify()


class FakeClient:
    """One connection to a :class:`FakeBroker`; never reused after it ends (like the publisher's)."""

    def __init__(self, broker: FakeBroker, will: aiomqtt.Will | None) -> None:
        self._broker = broker
        self.will = will
        self._subscriptions: list[str] = []
        self._inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        self._dead = asyncio.Event()
        self._open = False

    # ------------------------------------------------------------------ MqttClient protocol
    async def __aenter__(self) -> FakeClient:
        broker = self._broker
        if broker.refusing:
            raise aiomqtt.MqttError("Connection refused")
        if broker.stalled:
            await self._wait_answer(broker.timeout)
        self._open = True
        broker._clients.append(self)
        broker.connects += 1
        broker._notify()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._open:  # a clean disconnect: no last will
            self._open = False
            self._broker._clients.remove(self)
            self._dead.set()
            self._broker._notify()

    async def subscribe(self, topic: str, qos: int = 0, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        self._check()
        if self._broker.stalled:
            await self._wait_answer(timeout)
        self._subscriptions.append(topic)
        for name, payload in list(self._broker.retained.items()):
            if topic_matches(topic, name):
                self._inbox.put_nowait(aiomqtt.Message(name, payload, qos, True, 0, None))
        return (qos,)

    async def publish(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> None:
        self._check()
        broker = self._broker
        if qos == 0:  # fire and forget: nobody waits, a stalled broker loses it silently
            broker.attempts.append(Attempt(topic, payload, qos, retain, "qos0"))
            if not broker.stalled:
                broker._accept(Attempt(topic, payload, qos, retain, "qos0"))
            return
        if broker.stalled:
            broker.attempts.append(Attempt(topic, payload, qos, retain, "stalled"))
            broker._notify()
            await self._wait_answer(timeout)
        fate = broker._fate(topic)
        attempt = Attempt(topic, payload, qos, retain, fate)
        broker.attempts.append(attempt)
        if fate != "lost":
            broker._accept(attempt)
        else:
            broker._notify()
        if fate != "acked":
            await self._wait_answer(timeout, forever=True)
        if broker.ack_delay:
            await self._wait_answer(timeout, delay=broker.ack_delay)

    @property
    def messages(self) -> _Messages:
        return _Messages(self)

    # ------------------------------------------------------------------ internals
    def _check(self) -> None:
        if not self._open or self._dead.is_set():
            raise aiomqtt.MqttError("Disconnected")

    async def _wait_answer(self, limit: float | None, *, forever: bool = False, delay: float = 0.0) -> None:
        """Wait as aiomqtt does: MqttError after ``limit`` s (None: the broker's) or a lost connection.

        Stalled: the answer comes when the broker resumes; ``forever``: it never comes (lost);
        ``delay``: it comes after that long.
        """
        if limit is None:
            limit = self._broker.timeout

        async def answer() -> None:
            if forever:
                await asyncio.Event().wait()
            elif delay:
                await asyncio.sleep(delay)
            else:
                await self._broker._resumed.wait()

        waits = {asyncio.ensure_future(answer()), asyncio.ensure_future(self._dead.wait())}
        try:
            done, _ = await asyncio.wait(waits, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        if not done:
            raise aiomqtt.MqttError("Operation timed out")
        if self._dead.is_set():
            raise aiomqtt.MqttError("Disconnected during the wait")

    def _deliver(self, topic: str, payload: bytes, *, retain: bool) -> None:
        if self._open and any(topic_matches(sub, topic) for sub in self._subscriptions):
            self._inbox.put_nowait(aiomqtt.Message(topic, payload, 1, retain, 0, None))

    def _drop(self) -> None:
        """The connection died: waiters fail, the broker publishes the last will."""
        if not self._open:
            return
        self._open = False
        self._dead.set()
        broker = self._broker
        broker._clients.remove(self)
        will = self.will
        if will is None:
            return
        body = will.payload if isinstance(will.payload, bytes) else str(will.payload or "").encode()
        broker._accept(Attempt(will.topic, body, will.qos, will.retain, "will"))


class _Messages:
    def __init__(self, client: FakeClient) -> None:
        self._client = client

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> aiomqtt.Message:
        client = self._client
        get = asyncio.ensure_future(client._inbox.get())
        dead = asyncio.ensure_future(client._dead.wait())
        try:
            await asyncio.wait({get, dead}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dead.cancel()
            if not get.done():
                get.cancel()
        if get.done() and not get.cancelled():
            return get.result()
        raise aiomqtt.MqttError("Disconnected during message iteration")
