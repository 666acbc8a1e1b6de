"""The PCD-04 alert reporter against the alarm-manager double: ACK, NAK, drop, lost ACK, stall, outage.

Real parts: a real SQLite store (the reporter journals in its transaction) and a real TCP server
(simulators/alarm_manager.py) that parses what arrives with python-hl7. Every wait is on a
condition. The ACK timeout is 5 s, so a loaded machine never fakes a lost ACK, except in the two
tests about a lost ACK and a stall, which set 0.3 s; the unreachable alarm comes after 0.6 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from tests.fakes.alerts import transition
from tests.helpers import wait_until
from vitalwatch.config import AlertReporterConfig
from vitalwatch.delivery.alarm_manager import AlertReporter
from vitalwatch.delivery.commit import Commit
from vitalwatch.delivery.payloads import WallClock, alert_payload
from vitalwatch.delivery.store import DB_NAME, Store
from vitalwatch.delivery.writer import Work
from vitalwatch.engine.outputs import AlertState, AlertTransition, Priority
from vitalwatch.simulators.alarm_manager import AlarmManagerDouble, Behaviour

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

SITE = "clinic-a"
WALL = WallClock(0.0)
CFG = AlertReporterConfig(id="am", host="127.0.0.1", ack_timeout_s=5.0, unreachable_alarm_s=0.6)
QUICK_ACK_TIMEOUT_S = 0.3  # only where the test is about a missing ACK
A, B = "chair-1-20250304T100000-0001", "chair-1-20250304T100001-0002"


class QuickRetry(random.Random):
    """Reconnect and NAK backoff of at most 20 ms, so a test does not wait for the jitter."""

    def uniform(self, a: float, b: float) -> float:
        return min(b, 0.02)


def record(store: Store, tr: AlertTransition) -> Commit:
    """What the MQTT publisher does with a transition: journal it (the reporter taps this)."""
    return store.record(
        tr.bed,
        alert_id=tr.alert_id,
        seq=tr.seq,
        rank=tr.priority.rank,
        clears=tr.state is AlertState.CLEARED,
        payload=alert_payload(tr, site=SITE, wall=WALL),
        transition={"alert_id": tr.alert_id, "seq": tr.seq},
    )


def life(alert_id: str, first_seq: int, priority: Priority = Priority.HIGH) -> list[AlertTransition]:
    """raised, acknowledged, cleared: three transitions of one alert."""
    return [
        transition(alert_id, first_seq, AlertState.RAISED, priority=priority),
        transition(alert_id, first_seq + 1, AlertState.ACKNOWLEDGED, priority=priority),
        transition(alert_id, first_seq + 2, AlertState.CLEARED, priority=priority),
    ]


@contextlib.asynccontextmanager
async def reporting(
    store: Store, double: AlarmManagerDouble, alarms: list[bool] | None = None, **changes: Any
) -> AsyncIterator[AlertReporter]:
    cfg = dataclasses.replace(CFG, port=double.port, **changes)
    reporter = AlertReporter(
        cfg,
        site=SITE,
        store=store,
        on_unreachable=None if alarms is None else alarms.append,
        rng=QuickRetry(),
    )
    task = asyncio.create_task(reporter.run())
    try:
        yield reporter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    db = Store(tmp_path / DB_NAME)
    try:
        yield db
    finally:
        db.close()


@pytest_asyncio.fixture
async def double() -> AsyncIterator[AlarmManagerDouble]:
    async with AlarmManagerDouble() as manager:
        yield manager


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_every_transition_reaches_the_manager_in_order(
    store: Store, double: AlarmManagerDouble
) -> None:
    delivered_before = metric("vitalwatch_pcd04_delivered_total", reporter="am")
    async with reporting(store, double) as reporter:
        for tr in life(A, 1):
            record(store, tr)
        await double.wait_for(lambda: len(double.accepted) == 3, what="three reports")
        await wait_until(lambda: reporter.pending == 0, 10, "the reporter saw the last ACK")
        assert double.accepted_keys() == [(A, 0), (A, 1), (A, 2)]
        assert [r.facet("MDC_ATTR_EVENT_PHASE") for r in double.accepted] == ["start", "update", "end"]
        assert [r.control_id for r in double.accepted] == [f"{A}.0", f"{A}.1", f"{A}.2"]
        assert reporter.pending == 0 and reporter.delivered == 3 and double.duplicates == 0
    await store.flush()
    assert store.report_pending("am") == []  # marked delivered after the ACK
    assert metric("vitalwatch_pcd04_delivered_total", reporter="am") - delivered_before == 3
    assert metric("vitalwatch_pcd04_pending", reporter="am") == 0


@pytest.mark.parametrize("refusal", [Behaviour.AE, Behaviour.AR])
async def test_a_nak_is_resent_until_accepted(
    store: Store, double: AlarmManagerDouble, refusal: Behaviour
) -> None:
    naks_before = metric("vitalwatch_pcd04_naks_total", reporter="am", code=refusal.value.upper())
    double.script(refusal, refusal)
    async with reporting(store, double) as reporter:
        for tr in life(A, 1):
            record(store, tr)
        await double.wait_for(lambda: len(double.accepted) == 3, what="three reports after two NAKs")
        await wait_until(lambda: reporter.pending == 0, 10, "the reporter saw the last ACK")
        first = [r for r in double.received if r.key == (A, 0)]
        assert [r.answered for r in first] == [refusal.value.upper(), refusal.value.upper(), "AA"]
        assert len({r.text for r in first}) == 1  # the same bytes each time, same MSH-10
        assert double.accepted_keys() == [(A, 0), (A, 1), (A, 2)]  # nothing overtook the refused one
        assert reporter.naks == 2
    assert metric("vitalwatch_pcd04_naks_total", reporter="am", code=refusal.value.upper()) - naks_before == 2


async def test_a_dropped_connection_resends_on_the_next(store: Store, double: AlarmManagerDouble) -> None:
    double.script(Behaviour.ACK, Behaviour.DROP)
    async with reporting(store, double):
        for tr in life(A, 1):
            record(store, tr)
        await double.wait_for(lambda: len(double.accepted) == 3, what="three reports after a drop")
    assert [r.key for r in double.received] == [(A, 0), (A, 1), (A, 1), (A, 2)]
    assert double.received[1].answered is None
    assert double.accepted_keys() == [(A, 0), (A, 1), (A, 2)]
    assert double.connections == 2


async def test_a_lost_ack_means_one_identical_resend_the_manager_drops(
    store: Store, double: AlarmManagerDouble
) -> None:
    double.script(Behaviour.ACK_LOST)
    async with reporting(store, double, ack_timeout_s=QUICK_ACK_TIMEOUT_S):
        for tr in life(A, 1):
            record(store, tr)
        await double.wait_for(lambda: len(double.accepted) == 3, what="three reports after a lost ACK")
    copies = [r for r in double.received if r.key == (A, 0)]
    assert len(copies) == 2 and copies[0].text == copies[1].text
    assert double.duplicates == 1  # de-duplicated by (alert id, counter)
    assert double.accepted_keys() == [(A, 0), (A, 1), (A, 2)]


async def test_a_stalled_manager_times_out_and_gets_the_report_again(
    store: Store, double: AlarmManagerDouble
) -> None:
    double.script(Behaviour.STALL)
    timeouts_before = metric("vitalwatch_pcd04_disconnects_total", reporter="am", reason="ack_timeout")
    async with reporting(store, double, ack_timeout_s=QUICK_ACK_TIMEOUT_S):
        record(store, life(A, 1)[0])
        await double.wait_for(lambda: len(double.accepted) == 1, what="the report after a stall")
    assert [(r.key, r.answered) for r in double.received] == [((A, 0), None), ((A, 0), "AA")]
    assert metric("vitalwatch_pcd04_disconnects_total", reporter="am", reason="ack_timeout") > timeouts_before


async def test_outage_raises_the_technical_alarm_and_the_backlog_goes_in_order(
    store: Store, double: AlarmManagerDouble
) -> None:
    await double.outage()
    alarms: list[bool] = []
    async with reporting(store, double, alarms) as reporter:
        low = life(B, 1, Priority.LOW)
        high = life(A, 4, Priority.HIGH)
        for tr in [low[0], low[1], high[0], high[1], low[2], high[2]]:
            record(store, tr)
        await wait_until(lambda: reporter.unreachable, 10, "the unreachable alarm")
        assert alarms == [True] and reporter.pending == 6
        assert metric("vitalwatch_pcd04_unreachable", reporter="am") == 1
        await double.start()  # the manager is back on the same port
        await double.wait_for(lambda: len(double.accepted) == 6, what="the whole backlog")
        await wait_until(lambda: not reporter.unreachable, 10, "the unreachable alarm cleared")
    assert alarms == [True, False]
    keys = double.accepted_keys()
    assert len(set(keys)) == len(keys) == 6 and double.duplicates == 0
    for alert in (A, B):
        assert [c for a, c in keys if a == alert] == [0, 1, 2]  # each alert strictly in counter order
    assert keys[:3] == [(A, 0), (A, 1), (A, 2)]  # the high-priority alert first
    assert metric("vitalwatch_pcd04_unreachable", reporter="am") == 0


async def test_after_a_restart_the_journal_is_resent_and_counters_continue(tmp_path: Path) -> None:
    manager = AlarmManagerDouble()
    await manager.start()
    await manager.outage()
    first = Store(tmp_path / DB_NAME)
    try:
        async with reporting(first, manager) as reporter:
            raised, acked, cleared = life(A, 1)
            await record(first, raised)
            await record(first, acked)
            assert reporter.pending == 2
    finally:
        first.close()  # the daemon stops (or dies) with two reports unaccepted
    again = Store(tmp_path / DB_NAME)
    try:
        assert [(r.alert_id, r.counter) for r in again.report_pending("am")] == [(A, 0), (A, 1)]
        await manager.start()
        async with reporting(again, manager) as reporter:
            assert reporter.pending == 2
            record(again, acked)  # journalled again after the restart: not a new report
            record(again, cleared)
            await manager.wait_for(lambda: len(manager.accepted) == 3, what="journal and the new report")
            assert manager.accepted_keys() == [(A, 0), (A, 1), (A, 2)]
            assert [r.facet("MDC_ATTR_EVENT_PHASE") for r in manager.accepted] == ["start", "update", "end"]
            assert len(manager.received) == 3
    finally:
        again.close()
        await manager.stop()


async def test_a_failing_tap_never_costs_the_mqtt_outbox_row(store: Store) -> None:
    class Broken:
        def journal(self, bed: str, payload: dict[str, Any]) -> Work | None:
            raise RuntimeError("encoder bug")

        def journalled(self, persisted: Commit) -> None:
            raise RuntimeError("queue bug")

    store.add_tap(Broken())
    assert await record(store, life(A, 1)[0]) is True
    assert [(r.alert_id, r.seq) for r in store.pending("chair-1")] == [(A, 1)]
