"""Alert receipts on the gateway, with the fake broker: kept until receipted, re-offered in order,
never in front of a first delivery, kept across a restart, and configured or refused at start."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fakes.alerts import transition
from tests.fakes.mqtt import FakeBroker
from tests.helpers import wait_until
from tests.service.test_publisher import ALERTS, BED, CFG, SITE, publisher, running
from vitalwatch.cli.status import _alerts_line
from vitalwatch.config import parse_config
from vitalwatch.delivery import store as store_module
from vitalwatch.delivery.store import DB_NAME, Store, read_unreceipted
from vitalwatch.engine.outputs import AlertState
from vitalwatch.errors import ConfigError
from vitalwatch.registry.alert_receipts import AlertLedger
from vitalwatch.registry.receipting import ReceiptLink
from vitalwatch.registry.wire import AlertReceipt, alert_receipt_payload, alert_receipt_topic

RECEIPTS = alert_receipt_topic(CFG.topic_prefix, SITE, BED)


def receipt(alert_id: str, seq: int, status: str = "stored") -> bytes:
    body = AlertReceipt(alert_id, seq, SITE, BED, status, "registry")
    return alert_receipt_payload(body, now=datetime.now(UTC))


@contextlib.asynccontextmanager
async def linked(broker: FakeBroker, store: Store, reoffer_s: float) -> AsyncIterator[AlertLedger]:
    """The daemon's receipts link with an alert ledger, on ``broker``."""
    ledger = AlertLedger(mqtt=CFG, site=SITE, beds=(BED,), store=store, reoffer_s=reoffer_s)
    link = ReceiptLink(CFG, [ledger], poll_s=0.05, client_factory=broker.factory)
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    try:
        await asyncio.wait_for(link.connected.wait(), 5)
        yield ledger
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def pairs(broker: FakeBroker) -> list[tuple[str, int]]:
    return [(m.json()["alert_id"], m.json()["seq"]) for m in broker.on(ALERTS)]


async def enabled_store(path: Path) -> Store:
    store = Store(path)
    await store.alert_receipts(True)
    return store


@pytest.mark.asyncio
async def test_an_alert_stays_until_receipted_and_is_re_offered_in_order_meanwhile(tmp_path: Path) -> None:
    broker = FakeBroker()
    store = await enabled_store(tmp_path / DB_NAME)
    try:
        pub = publisher(broker, store=store)
        async with running(pub), linked(broker, store, reoffer_s=0.3) as ledger:
            pub.alert(transition("a", 1))
            pub.alert(transition("b", 2))
            pub.alert(transition("a", 3, AlertState.CLEARED))
            await broker.wait_for(lambda: pub.delivered == 3, what="first deliveries")
            # PUBACKed is not enough: all three wait, and each is offered again, in journal order.
            await broker.wait_for(lambda: len(pairs(broker)) >= 6, what="re-offers")
            assert [("a", 1), ("b", 2), ("a", 3)] * 2 == pairs(broker)[:6]
            state = await ledger.measure()
            assert (3, 3) == (state.count, state.offered)
            await broker.inject(RECEIPTS, receipt("a", 1))
            await broker.inject(RECEIPTS, receipt("a", 1, "duplicate"))  # a second consumer, say
            await broker.inject(RECEIPTS, receipt("b", 2))
            await wait_until(lambda: ledger.receipts == 2, 5, "two receipts taken")
            assert 1 == (await ledger.measure()).count
            before = len(pairs(broker))
            await broker.wait_for(lambda: len(pairs(broker)) >= before + 2, what="only a:3 goes on")
            assert {("a", 3)} == set(pairs(broker)[before:])
            await broker.inject(RECEIPTS, receipt("a", 3))
            await wait_until(lambda: ledger.receipts == 3, 5, "the last receipt")
            assert (0, 0.0) == ((s := await ledger.measure()).count, s.oldest_age_s)
        await store.flush()
        assert [] == read_unreceipted(sqlite3.connect(tmp_path / DB_NAME))
    finally:
        store.close()


@pytest.mark.asyncio
async def test_re_offers_never_hold_a_first_delivery(tmp_path: Path) -> None:
    """A backlog of unreceipted alerts being re-offered on a hung receipts connection: a new alert
    still goes out at once on its bed's own connection (the re-offers are not in its lanes)."""
    bed_broker, link_broker = FakeBroker(), FakeBroker(timeout=30.0)
    store = await enabled_store(tmp_path / DB_NAME)
    try:
        pub = publisher(bed_broker, store=store)
        async with running(pub), linked(link_broker, store, reoffer_s=0.1):
            for seq in range(1, 21):
                pub.alert(transition(f"old-{seq}", seq))
            await bed_broker.wait_for(lambda: pub.delivered == 20, what="the backlog's first sends")
            link_broker.stall()  # the receipts connection hangs in the middle of re-offering
            await link_broker.wait_for(
                lambda: any(a.fate == "stalled" for a in link_broker.attempts), what="a re-offer hung"
            )
            pub.alert(transition("new", 21))
            await bed_broker.wait_for(lambda: ("new", 21) in pairs(bed_broker), 2.0, "the new alert sent")
            link_broker.resume()
    finally:
        store.close()


@pytest.mark.asyncio
async def test_a_pubacked_unreceipted_alert_is_re_offered_after_a_restart(tmp_path: Path) -> None:
    broker = FakeBroker()
    store = await enabled_store(tmp_path / DB_NAME)
    pub = publisher(broker, store=store)
    async with running(pub):
        pub.alert(transition("a", 1))
        await broker.wait_for(lambda: pub.delivered == 1, what="PUBACK")
    store.close()  # the delivery mark is written; the receipt never came
    store = await enabled_store(tmp_path / DB_NAME)
    try:
        assert [] == store.pending(BED)  # the publisher will not send it again...
        async with linked(broker, store, reoffer_s=0.01) as ledger:
            await broker.wait_for(lambda: len(pairs(broker)) == 2, what="...the receipts link does")
            await broker.inject(RECEIPTS, receipt("a", 1))
            await wait_until(lambda: ledger.receipts == 1, 5, "receipted")
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    assert [] == read_unreceipted(conn)  # the receipt mark survived the close
    conn.close()


@pytest.mark.asyncio
async def test_rows_from_before_alert_receipts_are_never_re_offered_and_waiting_ones_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = FakeBroker()
    store = Store(tmp_path / DB_NAME)
    await store.alert_receipts(False)
    pub = publisher(broker, store=store)
    async with running(pub):
        pub.alert(transition("old", 1))
        await broker.wait_for(lambda: pub.delivered == 1, what="sent before receipts were on")
        await store.alert_receipts(True)
        pub.alert(transition("new", 2))
        pub.alert(transition("new", 3, AlertState.CLEARED))
        await broker.wait_for(lambda: pub.delivered == 3, what="sent with receipts on")
    await store.flush()
    store.close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("UPDATE outbox SET receipted = 1 WHERE seq = 3")
    conn.commit()
    conn.close()
    monkeypatch.setattr(store_module, "KEEP_DELIVERED", 0)  # prune every delivered row it may
    store = Store(tmp_path / DB_NAME)
    store.close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    try:
        assert [("new", 2)] == [(r.alert_id, r.seq) for r in read_unreceipted(conn)]
        assert [2] == [s for (s,) in conn.execute("SELECT seq FROM outbox")]
    finally:
        conn.close()


def test_alert_receipts_configuration_and_its_refusals() -> None:
    bed = {"id": "chair-1", "devices": [{"id": "ox", "driver": "masimo", "url": "socket://127.0.0.1:1"}]}
    cfg = parse_config({"site": "clinic-a", "beds": [bed]})
    assert (False, 60.0) == (cfg.registry.alert_receipts, cfg.registry.alert_reoffer_s)
    cfg = parse_config(
        {"site": "c", "beds": [bed], "registry": {"alert_receipts": True, "alert_reoffer_s": 30}}
    )
    assert (True, 30.0) == (cfg.registry.alert_receipts, cfg.registry.alert_reoffer_s)
    with pytest.raises(ConfigError) as info:
        parse_config({"site": "c", "beds": [bed], "registry": {"alert_receipts": "on", "alert_reoffer_s": 0}})
    assert ["registry.alert_receipts", "registry.alert_reoffer_s"] == sorted(
        p.key for p in info.value.problems
    )
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "site": "c",
                "beds": [bed],
                "mqtt": {"publish_timeout_s": 10},
                "registry": {"alert_receipts": True, "alert_reoffer_s": 5},
            }
        )
    (problem,) = info.value.problems
    assert "registry.alert_reoffer_s" == problem.key and "mqtt.publish_timeout_s" in problem.reason


def test_status_says_how_many_alerts_wait_and_for_how_long() -> None:
    assert "every alert transition is receipted" in _alerts_line(
        {"unreceipted": 0, "offered_unreceipted": 0, "oldest_unreceipted_age_s": 0.0}
    )
    line = _alerts_line({"unreceipted": 3, "offered_unreceipted": 2, "oldest_unreceipted_age_s": 95.0})
    assert "3 alert transition(s) awaiting a receipt (2 acknowledged by the broker), oldest 95 s old" in line
