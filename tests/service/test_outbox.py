"""The SQLite outbox/journal and the priority lanes, without a broker."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Priority
from vitalwatch.outbox import DB_NAME, Entry, Lanes, Store
from vitalwatch.payloads import WallClock
from vitalwatch.statestore import RestoringEngine, transition_from_json, transition_to_json


def entry(alert_id: str, seq: int, rank: int = 1) -> Entry:
    return Entry(alert_id, seq, rank, False, {"alert_id": alert_id, "seq": seq}, queued_at=float(seq))


def drain(lanes: Lanes) -> list[tuple[str, int]]:
    out = []
    while (e := lanes.peek()) is not None:
        out.append((e.alert_id, e.seq))
        lanes.pop(e)
    return out


def test_lanes_high_before_low_backlog_but_seq_order_per_alert() -> None:
    """A new HIGH alarm overtakes 100 older LOW transitions; each alert keeps its seq order."""
    lanes = Lanes()
    for i in range(100):
        lanes.push(entry(f"low-{i % 10}", i + 1, rank=1))
    lanes.push(entry("high", 101, rank=3))
    lanes.push(entry("high", 102, rank=3))
    order = drain(lanes)
    assert [("high", 101), ("high", 102)] == order[:2]
    per_alert: dict[str, list[int]] = {}
    for alert_id, seq in order:
        per_alert.setdefault(alert_id, []).append(seq)
    assert all(seqs == sorted(seqs) for seqs in per_alert.values())
    assert 102 == len(order)


def test_lanes_escalated_alert_moves_whole_alert_up_without_reordering_it() -> None:
    """A LOW alert that rose to HIGH goes first, but its older LOW transition still leads it."""
    lanes = Lanes()
    lanes.push(entry("a", 1, rank=1))
    lanes.push(entry("b", 2, rank=1))
    lanes.push(entry("b", 3, rank=3))
    assert [("b", 2), ("b", 3), ("a", 1)] == drain(lanes)


def test_lanes_same_transition_twice_is_kept_once() -> None:
    lanes = Lanes()
    lanes.push(entry("a", 1))
    lanes.push(entry("a", 1))
    assert 1 == len(lanes)


def transition(alert_id: str, seq: int, state: AlertState = AlertState.RAISED) -> AlertTransition:
    return AlertTransition(
        t=100.0 + seq,
        bed="chair-1",
        alert_id=alert_id,
        seq=seq,
        state=state,
        priority=Priority.HIGH,
        category=Category.PHYSIOLOGICAL,
        condition="spo2_low",
        parameter="spo2",
        value=84.0,
        unit="%",
        limit=90.0,
        phase="infusion",
        phase_elapsed_s=60.0,
        onset_t=100.0,
        message="SpO2 84 % below 90 %",
    )


@pytest.mark.asyncio
async def test_store_round_trip_pending_active_meta_requests(tmp_path: Path) -> None:
    """What was recorded and not delivered comes back, in seq order; cleared alarms are not active."""
    store = Store(tmp_path / DB_NAME)
    utc = WallClock(0.0).utc
    for seq, (alert_id, state) in enumerate(
        [("a", AlertState.RAISED), ("b", AlertState.RAISED), ("a", AlertState.CLEARED)], start=1
    ):
        tr = transition(alert_id, seq, state)
        ok = await store.record(
            "chair-1",
            alert_id=alert_id,
            seq=seq,
            rank=3,
            clears=state is AlertState.CLEARED,
            payload={"alert_id": alert_id, "seq": seq},
            transition=transition_to_json(tr, utc=utc),
        )
        assert ok is True
    assert await store.delivered("chair-1", "a", 1) is True
    await store.put_meta("chair-1", {"phase": "infusion"})
    await store.remember_request("chair-1", "r-1")
    store.close()

    again = Store(tmp_path / DB_NAME)
    assert [("b", 2), ("a", 3)] == [(r.alert_id, r.seq) for r in again.pending("chair-1")]
    assert ["b"] == [t["alert_id"] for t in again.active("chair-1")]
    meta = again.meta("chair-1")
    assert 3 == meta["seq"]
    assert "infusion" == meta["phase"]
    assert ["r-1"] == again.requests("chair-1")
    assert [] == again.pending("chair-2")
    again.close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    assert "wal" == conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()


def test_transition_json_round_trip_maps_times_to_the_new_clock() -> None:
    """A journalled transition comes back equal, its times shifted onto the new monotonic clock."""
    tr = transition("a", 7)
    wall = WallClock(200.0)  # monotonic 200 is "now"
    data = transition_to_json(tr, utc=wall.utc)
    epoch_now = wall.utc(200.0).timestamp()
    back = transition_from_json(data, mono_now=5000.0, epoch_now=epoch_now)
    assert pytest.approx(5000.0 - (200.0 - tr.onset_t)) == back.onset_t
    assert tr.alert_id == back.alert_id
    assert tr.state is back.state
    assert tr.priority is back.priority


@pytest.mark.asyncio
async def test_unwritable_database_degrades_and_reports(tmp_path: Path) -> None:
    """A store that cannot be written says so (persistence degraded) instead of raising."""
    blocked = tmp_path / DB_NAME
    blocked.mkdir()  # a directory where the database file should be: SQLite cannot open it
    news: list[bool] = []
    store = Store(blocked, on_health=lambda ok, reason: news.append(ok))
    result = await store.record(
        "chair-1", alert_id="a", seq=1, rank=3, clears=False, payload={}, transition={}
    )
    assert result is None
    assert store.healthy is False
    assert [] == store.pending("chair-1")
    store.close()
    assert [False] == news


class FakeEngine:
    """An engine that raises what the test says, with a seq counter like BedEngine's book."""

    def __init__(self) -> None:
        self.phase = "infusion"
        self._book = type("Book", (), {"_seq": 10})()
        self.next: list[AlertTransition] = []
        self.acks: list[str] = []

    def tick(self, now: float) -> list[AlertTransition]:
        out, self.next = self.next, []
        return out

    def acknowledge(self, alert_id: str, by: str, now: float) -> list[AlertTransition]:
        self.acks.append(alert_id)
        return []

    def active_alarms(self) -> list[AlertTransition]:
        return []


def test_restored_alarm_is_adopted_under_its_old_id_and_stale_ones_clear_after_grace() -> None:
    """The engine's new occurrence of a restored alarm keeps the old id; an unseen one clears."""
    engine = FakeEngine()
    kept = transition("old-1", 5)
    gone = replace(transition("old-2", 6), condition="pulse_high", parameter="pulse_rate")
    wrapper = RestoringEngine(engine, [kept, gone], now=0.0, grace_s=10.0, latching={})
    engine.next = [replace(transition("fresh-9", 11), onset_t=3.0)]
    out = [o for o in wrapper.tick(3.0) if isinstance(o, AlertTransition)]
    assert [("old-1", AlertState.RENOTIFIED, 100.0)] == [(o.alert_id, o.state, o.onset_t) for o in out]
    out = [o for o in wrapper.tick(11.0) if isinstance(o, AlertTransition)]
    assert [("old-2", AlertState.CLEARED, 11)] == [(o.alert_id, o.state, o.seq) for o in out]
    wrapper.acknowledge("old-1", "nurse", 12.0)
    assert ["fresh-9"] == engine.acks  # a nurse's ack of the old id reaches the engine's occurrence


def test_latched_restored_alarm_stays_until_acknowledged() -> None:
    """A HIGH physiological alarm that latches is not dropped by the grace timer: a nurse must ack it."""
    engine = FakeEngine()
    wrapper = RestoringEngine(
        engine, [transition("old-1", 5)], now=0.0, grace_s=1.0, latching={Priority.HIGH: True}
    )
    assert [] == wrapper.tick(5.0)
    assert ["old-1"] == [t.alert_id for t in wrapper.active_alarms()]
    out = [o for o in wrapper.acknowledge("old-1", "nurse", 6.0) if isinstance(o, AlertTransition)]
    assert [AlertState.ACKNOWLEDGED, AlertState.CLEARED] == [o.state for o in out]
    assert [11, 12] == [o.seq for o in out]
    assert [] == wrapper.active_alarms()
