"""BedPublisher against a fake broker: order, resend, delivery marks, the unreachable alarm, commands.

Each fault is chosen and timed by the test (tests/fakes/mqtt.py); the same behaviour under real
broker kills and SIGSTOP is covered with Mosquitto in tests/integration/test_delivery_faults.py.
Times are short (publish timeout 0.2 s) and every wait is on a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.alerts import transition
from tests.fakes.mqtt import FakeBroker
from vitalwatch.config import MqttConfig
from vitalwatch.delivery.payloads import WallClock, status_payload
from vitalwatch.delivery.publisher import BedPublisher
from vitalwatch.delivery.store import DB_NAME, Store
from vitalwatch.delivery.vitals import VITALS_EVERY_S
from vitalwatch.engine.outputs import AlertState, Priority
from vitalwatch.wake_grid import next_multiple, sleep_until

SITE, BED = "clinic-a", "chair-1"
CFG = MqttConfig(heartbeat_s=0.5, publish_timeout_s=0.2, unreachable_alarm_s=0.6)
BASE = f"{CFG.topic_prefix}/{SITE}/{BED}"
ALERTS = f"{BASE}/alerts"


class QuickRetry(random.Random):
    """Reconnect backoff of at most 20 ms, so a test does not wait for the jitter."""

    def uniform(self, a: float, b: float) -> float:
        return min(b, 0.02)


def status(state: str, heartbeat: int) -> dict[str, Any]:
    return status_payload(
        state=state, site=SITE, bed=BED, phase=None, links={}, heartbeat=heartbeat, sent_at=datetime.now(UTC)
    )


class Port:
    """The bed side of a publisher under test (the daemon's BedRuntime in production)."""

    def __init__(
        self,
        commands: Callable[[bytes], dict[str, Any]] | None = None,
        on_unreachable: Callable[[bool], None] | None = None,
    ) -> None:
        self._commands = commands
        self._on_unreachable = on_unreachable

    def status(self, state: str, heartbeat: int) -> dict[str, Any]:
        return status(state, heartbeat)

    def command(self, payload: bytes, *, retained: bool = False) -> dict[str, Any]:
        assert self._commands is not None, "this test sends no command"
        assert not retained, "this test sends no retained command"
        return self._commands(payload)

    def unreachable(self, stuck: bool) -> None:
        if self._on_unreachable is not None:
            self._on_unreachable(stuck)

    def alert_sent(self) -> None:
        pass


def publisher(
    broker: FakeBroker,
    *,
    commands: Callable[[bytes], dict[str, Any]] | None = None,
    on_unreachable: Callable[[bool], None] | None = None,
    **kwargs: Any,
) -> BedPublisher:
    return BedPublisher(
        CFG,
        site=SITE,
        bed=BED,
        wall=WallClock(0.0),
        port=Port(commands, on_unreachable),
        rng=QuickRetry(),
        client_factory=broker.factory,
        **kwargs,
    )


@contextlib.asynccontextmanager
async def running(pub: BedPublisher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(pub.run())
    try:
        yield task
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5.0)
        assert done, "the publisher did not stop when cancelled"


def sent(broker: FakeBroker, topic: str = ALERTS) -> list[tuple[str, int]]:
    return [(m.json()["alert_id"], m.json()["seq"]) for m in broker.on(topic)]


async def undelivered(store: Store) -> list[int]:
    await store.flush()
    return [row.seq for row in store.pending(BED)]


@pytest.mark.asyncio
async def test_backlog_sends_high_first_and_each_alert_in_seq_order() -> None:
    """Queued before the broker answered: the HIGH alarm leaves first, every alert_id in seq order."""
    broker = FakeBroker()
    pub = publisher(broker)
    low = Priority.LOW
    pub.alert(transition("a", 1, priority=low))
    pub.alert(transition("b", 2, priority=low))
    pub.alert(transition("a", 3, AlertState.RENOTIFIED, priority=low))
    pub.alert(transition("h", 4, priority=Priority.HIGH))
    pub.alert(transition("a", 5, AlertState.CLEARED, priority=low))
    async with running(pub):
        await broker.wait_for(lambda: pub.pending == 0 and len(sent(broker)) == 5, what="backlog sent")
    assert [("h", 4), ("a", 1), ("b", 2), ("a", 3), ("a", 5)] == sent(broker)
    assert 5 == pub.delivered
    # The retained set shows the latest state of each active alarm; the cleared one is gone.
    assert {f"{BASE}/alarms/b", f"{BASE}/alarms/h"} == {t for t in broker.retained if "/alarms/" in t}
    assert 4 == json.loads(broker.retained[f"{BASE}/alarms/h"])["seq"]
    # A backlog never puts an older state back: after each of a's transitions its topic is empty.
    assert [b"", b"", b""] == [m.payload for m in broker.on(f"{BASE}/alarms/a")]


@pytest.mark.asyncio
async def test_lost_message_is_sent_again_on_a_new_connection(tmp_path: Path) -> None:
    """The broker never got it: no PUBACK, timeout, reconnect, the same (alert_id, seq) again."""
    broker = FakeBroker()
    broker.lose_next(1, topic=ALERTS)
    store = Store(tmp_path / DB_NAME)
    try:
        pub = publisher(broker, store=store)
        pub.alert(transition("a", 1))
        pub.alert(transition("a", 2, AlertState.CLEARED))
        async with running(pub):
            await broker.wait_for(lambda: pub.pending == 0, what="delivered after the loss")
            assert 2 == broker.connects
        assert ["lost", "acked", "acked"] == [a.fate for a in broker.attempts if a.topic == ALERTS]
        assert [("a", 1), ("a", 2)] == sent(broker)
        assert [] == await undelivered(store)
    finally:
        store.close()


@pytest.mark.asyncio
async def test_nothing_is_marked_delivered_without_the_ack(tmp_path: Path) -> None:
    """The broker has the alert but its PUBACK is lost: still undelivered, resent, then marked."""
    broker = FakeBroker()
    broker.lose_next(1, topic=ALERTS, ack_only=True)
    store = Store(tmp_path / DB_NAME)
    try:
        pub = publisher(broker, store=store)
        async with running(pub):
            await broker.wait_for(lambda: broker.connected == 1, what="connected")
            pub.alert(transition("a", 7, priority=Priority.HIGH))
            await broker.wait_for(lambda: len(sent(broker)) == 1, what="first copy at the broker")
            assert [7] == await undelivered(store)  # waiting for a PUBACK that never comes
            assert (1, 0) == (pub.pending, pub.delivered)
            await broker.wait_for(lambda: pub.pending == 0, what="delivered after the resend")
        assert [("a", 7), ("a", 7)] == sent(broker)  # the same pair twice: receivers de-duplicate
        assert [] == await undelivered(store)
    finally:
        store.close()


@pytest.mark.asyncio
async def test_dropped_connection_mid_backlog_loses_nothing_and_keeps_order() -> None:
    """The connection dies during a backlog: the last will says offline, the rest follows in order."""
    broker = FakeBroker()
    broker.ack_delay = 0.02
    pub = publisher(broker)
    for seq in range(1, 9):
        pub.alert(transition("a", seq, AlertState.RAISED if seq == 1 else AlertState.RENOTIFIED))
    async with running(pub):
        await broker.wait_for(lambda: len(sent(broker)) >= 3, what="part of the backlog sent")
        broker.drop_connections()
        await broker.wait_for(lambda: pub.pending == 0, what="backlog drained after the reconnect")
        assert 2 == broker.connects
    seqs = [seq for _, seq in sent(broker)]
    assert list(range(1, 9)) == sorted(set(seqs))
    assert seqs == sorted(seqs)  # never out of order; at most the in-flight one twice
    wills = [a for a in broker.accepted if a.fate == "will"]
    assert ["offline"] == [w.json()["state"] for w in wills]


@pytest.mark.asyncio
async def test_stalled_broker_raises_the_unreachable_alarm_until_delivery_works() -> None:
    """A broker that keeps TCP open and answers nothing: the local alarm after unreachable_alarm_s."""
    broker = FakeBroker()
    news: list[bool] = []
    changed = asyncio.Event()

    def on_unreachable(stuck: bool) -> None:
        news.append(stuck)
        changed.set()

    pub = publisher(broker, on_unreachable=on_unreachable)
    async with running(pub):
        await broker.wait_for(lambda: broker.connected == 1, what="connected")
        broker.stall()
        pub.alert(transition("a", 1, priority=Priority.HIGH))
        async with asyncio.timeout(5.0):
            await changed.wait()
        assert ([True], True) == (news, pub.unreachable)
        assert (1, 0) == (pub.pending, pub.delivered)
        changed.clear()
        broker.resume()
        async with asyncio.timeout(5.0):
            await changed.wait()
        assert ([True, False], False) == (news, pub.unreachable)
        await broker.wait_for(lambda: pub.pending == 0, what="delivered after the stall")

        def says_reachable() -> bool:
            statuses = broker.on(f"{BASE}/status")
            return bool(statuses) and "broker_unreachable" not in statuses[-1].json()["technical"]

        await broker.wait_for(says_reachable, what="status without broker_unreachable")
    assert [("a", 1)] == sent(broker)


@pytest.mark.asyncio
async def test_broker_refusing_from_the_start_raises_the_alarm() -> None:
    broker = FakeBroker()
    broker.refusing = True
    changed = asyncio.Event()
    pub = publisher(broker, on_unreachable=lambda stuck: changed.set())
    pub.alert(transition("a", 1))
    async with running(pub):
        async with asyncio.timeout(5.0):
            await changed.wait()
        assert pub.unreachable and not pub.connected
    assert [] == broker.accepted


@pytest.mark.asyncio
async def test_commands_get_one_result_each_and_a_failing_handler_answers_internal() -> None:
    broker = FakeBroker()
    seen: list[bytes] = []

    def commands(payload: bytes) -> dict[str, Any]:
        seen.append(payload)
        if payload == b"boom":
            raise RuntimeError("a bug")
        return {"ok": True, "echo": payload.decode()}

    pub = publisher(broker, commands=commands)
    async with running(pub):
        await broker.wait_for(lambda: broker.connected == 1, what="connected")
        await broker.inject(f"{BASE}/cmd", b"ping")
        await broker.inject(f"{BASE}/cmd", b"boom")
        await broker.wait_for(lambda: len(broker.on(f"{BASE}/cmd/result")) == 2, what="two results")
    ok, failed = (m.json() for m in broker.on(f"{BASE}/cmd/result"))
    assert [b"ping", b"boom"] == seen
    assert {"ok": True, "echo": "ping"} == ok
    assert (False, "internal") == (failed["ok"], failed["error"]["code"])


@pytest.mark.asyncio
async def test_connect_republishes_the_active_set_and_clears_stale_retained_alarms() -> None:
    broker = FakeBroker()
    broker.retained[f"{BASE}/alarms/old"] = b'{"alert_id": "old"}'  # from before a crash
    pub = publisher(broker)
    pub.restore([], [transition("live", 3, priority=Priority.MEDIUM)])
    async with running(pub):
        await broker.wait_for(
            lambda: f"{BASE}/alarms/old" not in broker.retained and f"{BASE}/alarms/live" in broker.retained,
            what="stale alarm cleared, active one retained",
        )
    assert 3 == json.loads(broker.retained[f"{BASE}/alarms/live"])["seq"]


@pytest.mark.asyncio
async def test_vitals_send_only_the_latest_value_and_build_it_only_when_sent() -> None:
    broker = FakeBroker()
    built: list[float] = []

    def lazy(value: float) -> Callable[[], dict[str, Any]]:
        def build() -> dict[str, Any]:
            built.append(value)
            return {"kind": "spo2", "value": value}

        return build

    pub = publisher(broker)
    pub.vital("spo2", lazy(96.0))
    pub.vital("spo2", lazy(97.0))  # replaces the unsent one
    async with running(pub):
        await broker.wait_for(lambda: bool(broker.on(f"{BASE}/vitals/spo2")), what="vital sent")
    assert [97.0] == [m.json()["value"] for m in broker.on(f"{BASE}/vitals/spo2")]
    assert [97.0] == built


@pytest.mark.asyncio
async def test_vitals_leave_at_the_next_whole_second_one_message_per_kind_however_many_came() -> None:
    """A waveform-rate oximeter hands the bed several values a second; the publisher wakes for
    them once, at the next whole second of the loop clock (every bed's in the same loop turn),
    and sends the latest value per kind, not one message per value."""
    broker = FakeBroker()
    loop = asyncio.get_running_loop()
    # A heartbeat far away: a status send would take the waiting vitals along early.
    pub = BedPublisher(
        dataclasses.replace(CFG, heartbeat_s=60.0),
        site=SITE,
        bed=BED,
        wall=WallClock(0.0),
        port=Port(),
        rng=QuickRetry(),
        client_factory=broker.factory,
    )
    async with running(pub):
        await broker.wait_for(lambda: bool(broker.on(f"{BASE}/status")), what="online")
        await sleep_until(next_multiple(loop.time(), VITALS_EVERY_S) + 0.02)  # early in a period
        first_put = loop.time()
        for value in range(90, 100):
            pub.vital("spo2", {"kind": "spo2", "value": value})
            pub.vital("pulse_rate", {"kind": "pulse_rate", "value": value - 20})
            await asyncio.sleep(0.02)
        await broker.wait_for(lambda: bool(broker.on(f"{BASE}/vitals/spo2")), what="vitals sent")
        sent_by = loop.time()
        await sleep_until(next_multiple(loop.time(), VITALS_EVERY_S) + 0.1)  # nothing else follows
    assert sent_by >= next_multiple(first_put, VITALS_EVERY_S) - 1e-3  # not before the whole second
    assert [99] == [m.json()["value"] for m in broker.on(f"{BASE}/vitals/spo2")]
    assert [79] == [m.json()["value"] for m in broker.on(f"{BASE}/vitals/pulse_rate")]


@pytest.mark.asyncio
async def test_clean_stop_publishes_offline_itself() -> None:
    """No last will on a clean disconnect, so the publisher says offline before it goes."""
    broker = FakeBroker()
    pub = publisher(broker)
    async with running(pub):
        await broker.wait_for(lambda: bool(broker.on(f"{BASE}/status")), what="online status")
    statuses = [m for m in broker.on(f"{BASE}/status")]
    assert ("online", "offline") == (statuses[0].json()["state"], statuses[-1].json()["state"])
    assert "will" != statuses[-1].fate
    assert "offline" == json.loads(broker.retained[f"{BASE}/status"])["state"]


@pytest.mark.asyncio
async def test_an_escalation_also_goes_to_the_escalations_topic() -> None:
    """The second recipient (a charge nurse) reads .../escalations: the escalated transition, and
    nothing else, is published there too, with the same alert_id and seq as on alerts."""
    broker = FakeBroker()
    pub = publisher(broker)
    pub.alert(transition("h", 1, priority=Priority.HIGH))
    pub.alert(transition("h", 2, AlertState.ESCALATED, priority=Priority.HIGH))
    pub.alert(transition("h", 3, AlertState.ACKNOWLEDGED, priority=Priority.HIGH))
    async with running(pub):
        await broker.wait_for(lambda: pub.pending == 0, what="all sent")
    assert [("h", 1), ("h", 2), ("h", 3)] == sent(broker)
    assert [("h", 2)] == sent(broker, f"{BASE}/escalations")
    assert "escalated" == broker.on(f"{BASE}/escalations")[0].json()["state"]
