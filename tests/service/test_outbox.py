"""The SQLite outbox/journal and the priority lanes, without a broker."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.alerts import transition
from tests.helpers import wait_until
from vitalwatch.continuity.statestore import transition_from_json, transition_to_json
from vitalwatch.delivery.commit import Commit
from vitalwatch.delivery.lanes import Entry, Lanes
from vitalwatch.delivery.payloads import WallClock
from vitalwatch.delivery.store import DB_NAME, Store
from vitalwatch.engine.outputs import AlertState


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


# ------------------------------------------------------------------ SD-card wear and held writes


async def record(store: Store, seq: int, alert_id: str = "a", *, clears: bool = False) -> bool | None:
    return await submit(store, seq, alert_id, clears=clears)


def submit(store: Store, seq: int, alert_id: str = "a", *, clears: bool = False) -> Commit:
    """Hand one transition to the store now; awaiting the result waits until it is committed."""
    tr = transition(alert_id, seq, AlertState.CLEARED if clears else AlertState.RAISED)
    return store.record(
        "chair-1",
        alert_id=alert_id,
        seq=seq,
        rank=3,
        clears=clears,
        payload={"alert_id": alert_id, "seq": seq, "message": "SpO2 84 % below 90 %" * 20},
        transition=transition_to_json(tr, utc=WallClock(0.0).utc),
    )


def on_writer(store: Store, sql: str) -> None:
    """Run one statement on the store's own connection (its writer thread)."""

    def work() -> None:
        assert store._conn is not None
        store._conn.execute(sql)

    store._pool.submit(work).result()


def rows(path: Path) -> list[tuple[str, int, bool]]:
    """(alert_id, seq, delivered) of every outbox row in insertion order, read by another connection."""
    conn = sqlite3.connect(path)
    try:
        found = conn.execute("SELECT alert_id, seq, delivered IS NOT NULL FROM outbox ORDER BY id").fetchall()
    finally:
        conn.close()
    return [(a, s, bool(d)) for a, s, d in found]


def wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar")


@pytest.mark.asyncio
async def test_new_file_has_small_pages_and_no_delivered_index(tmp_path: Path) -> None:
    """A new journal uses 1 KiB pages (a commit writes whole pages) and has no index on delivered."""
    store = Store(tmp_path / DB_NAME)
    assert await record(store, 1) is True
    store.close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    assert 1024 == conn.execute("PRAGMA page_size").fetchone()[0]
    indexes = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")]
    conn.close()
    assert "outbox_undelivered" not in indexes


@pytest.mark.asyncio
async def test_existing_4k_file_of_the_old_schema_keeps_working(tmp_path: Path) -> None:
    """A journal written by the previous version (4 KiB pages, delivered index, meta.seq) is read
    as before: pending rows, active alarms and seq come back; it keeps its page size."""
    path = tmp_path / DB_NAME
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA page_size=4096")
    old.execute("PRAGMA journal_mode=WAL")
    old.executescript(
        """
        CREATE TABLE outbox(id INTEGER PRIMARY KEY, bed TEXT NOT NULL, alert_id TEXT NOT NULL,
            seq INTEGER NOT NULL, rank INTEGER NOT NULL, clears INTEGER NOT NULL, payload TEXT NOT NULL,
            created REAL NOT NULL, delivered REAL, UNIQUE(bed, alert_id, seq));
        CREATE INDEX outbox_undelivered ON outbox(bed, delivered);
        CREATE TABLE active(bed TEXT NOT NULL, alert_id TEXT NOT NULL, transition TEXT NOT NULL,
            PRIMARY KEY(bed, alert_id));
        CREATE TABLE meta(bed TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(bed, key));
        INSERT INTO outbox VALUES (1, 'chair-1', 'a', 7, 3, 0, '{"seq": 7}', 0, NULL);
        INSERT INTO outbox VALUES (2, 'chair-1', 'b', 8, 3, 0, '{"seq": 8}', 0, 5.0);
        INSERT INTO active VALUES ('chair-1', 'a', '{"alert_id": "a", "seq": 7}');
        INSERT INTO meta VALUES ('chair-1', 'seq', '9');
        """
    )
    old.close()
    store = Store(path)
    assert [("a", 7)] == [(r.alert_id, r.seq) for r in store.pending("chair-1")]
    assert ["a"] == [t["alert_id"] for t in store.active("chair-1")]
    assert 9 == store.meta("chair-1")["seq"]  # meta.seq (9) beats the outbox's highest (8)
    assert await record(store, 10, "c") is True
    assert 10 == store.meta("chair-1")["seq"]  # no meta.seq write any more: the outbox says 10
    store.close()
    conn = sqlite3.connect(path)
    assert 4096 == conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()


@pytest.mark.asyncio
async def test_delivery_marks_ride_along_with_the_next_commit(tmp_path: Path) -> None:
    """A delivery mark is not a commit of its own: it is written by the next record (or flush)."""
    store = Store(tmp_path / DB_NAME, defer_s=60.0)
    assert await record(store, 1) is True
    writes = store.writes
    assert await store.delivered("chair-1", "a", 1) is True
    assert writes == store.writes
    assert [("a", 1, False)] == rows(tmp_path / DB_NAME)
    assert await record(store, 2, "b") is True
    assert writes + 1 == store.writes
    assert [("a", 1, True), ("b", 2, False)] == rows(tmp_path / DB_NAME)
    await store.delivered("chair-1", "b", 2)
    store.close()  # close writes what is still deferred
    assert [("a", 1, True), ("b", 2, True)] == rows(tmp_path / DB_NAME)


@pytest.mark.asyncio
async def test_deferring_hands_the_writer_no_job_of_its_own(tmp_path: Path) -> None:
    """An alert's id counter is deferred just before the alert is journalled: deferring must not
    wake the writer thread (it would then take turns with the loop before the alert's commit)."""
    store = Store(tmp_path / DB_NAME, defer_s=60.0)
    assert await record(store, 1) is True
    jobs: list[object] = []
    submit = store._pool.submit

    def counted(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        jobs.append(fn)
        return submit(fn, *args, **kwargs)

    store._pool.submit = counted  # type: ignore[method-assign]
    await store.delivered("chair-1", "a", 1)
    await store.put_meta("chair-1", {"id_counter": 7}, sync="NORMAL")
    assert jobs == []
    assert await record(store, 2, "b") is True  # one job: the marks ride with the record
    assert len(jobs) == 1
    assert [("a", 1, True), ("b", 2, False)] == rows(tmp_path / DB_NAME)
    assert 7 == store.meta("chair-1")["id_counter"]
    store.close()


@pytest.mark.asyncio
async def test_a_deferred_value_never_overwrites_a_later_one(tmp_path: Path) -> None:
    """A deferred (NORMAL) value goes in before any write submitted after it, never after."""
    store = Store(tmp_path / DB_NAME, defer_s=60.0)
    store.put_meta("chair-1", {"phase": "baseline"}, sync="NORMAL")
    assert await store.put_meta("chair-1", {"phase": "infusion"}) is True  # FULL, submitted later
    assert "infusion" == store.meta("chair-1")["phase"]
    store.put_meta("chair-1", {"phase": "recovery"}, sync="NORMAL")
    store.close()  # close writes what is still deferred
    reopened = Store(tmp_path / DB_NAME)
    assert "recovery" == reopened.meta("chair-1")["phase"]
    reopened.close()


@pytest.mark.asyncio
async def test_deferred_mark_is_written_by_the_timer(tmp_path: Path) -> None:
    """With nothing else to write, a deferred mark is committed after defer_s."""
    store = Store(tmp_path / DB_NAME, defer_s=0.05)
    assert await record(store, 1) is True
    await store.delivered("chair-1", "a", 1)
    await wait_until(lambda: [("a", 1, True)] == rows(tmp_path / DB_NAME), 5, "the mark written by the timer")
    store.close()


@pytest.mark.asyncio
async def test_failed_rows_are_held_and_written_later_in_order(tmp_path: Path) -> None:
    """Writes refused by SQLite degrade the store; the next write that succeeds first writes the
    held rows in their order, then its own, and the store is healthy again."""
    news: list[bool] = []
    store = Store(tmp_path / DB_NAME, on_health=lambda ok, reason: news.append(ok), retry_s=60.0)
    assert await record(store, 1) is True
    on_writer(store, "PRAGMA query_only=1")  # every write now fails like a read-only disk
    assert await record(store, 2) is None
    assert await record(store, 3, clears=True) is None
    assert await store.put_snapshot("chair-1", b"s", written=1.0) is None
    assert store.healthy is False
    assert [("a", 1, False)] == rows(tmp_path / DB_NAME)
    on_writer(store, "PRAGMA query_only=0")
    assert await record(store, 4, "b") is True
    await wait_until(lambda: len(news) == 2, 5, "the health news handed to the loop thread")
    assert store.healthy is True
    assert [False, True] == news
    assert [("a", 1, False), ("a", 2, False), ("a", 3, False), ("b", 4, False)] == rows(tmp_path / DB_NAME)
    assert [] == [t["alert_id"] for t in store.active("chair-1") if t["alert_id"] == "a"]  # 3 cleared it
    assert store.snapshot("chair-1") is None  # snapshots are not held: the next one replaces them
    assert 2 == store.replayed
    store.close()


@pytest.mark.asyncio
async def test_held_rows_are_retried_without_a_new_write(tmp_path: Path) -> None:
    """Once the disk takes writes again, held rows are written by the retry timer on their own."""
    news: list[bool] = []
    store = Store(tmp_path / DB_NAME, on_health=lambda ok, reason: news.append(ok), retry_s=0.05)
    on_writer(store, "PRAGMA query_only=1")
    assert await record(store, 1) is None
    await wait_until(lambda: store.failures >= 2, 5, "a retry by the timer, still refused")
    assert store.healthy is False
    on_writer(store, "PRAGMA query_only=0")
    await wait_until(lambda: store.healthy, 5, "the held row written by the retry timer")
    assert [("a", 1, False)] == rows(tmp_path / DB_NAME)
    assert [False, True] == news
    store.close()


@pytest.mark.asyncio
async def test_held_writes_are_bounded_oldest_dropped(tmp_path: Path) -> None:
    """At most max_held writes wait in memory; beyond that the oldest are dropped and counted."""
    store = Store(tmp_path / DB_NAME, max_held=3, retry_s=60.0)
    on_writer(store, "PRAGMA query_only=1")
    for seq in range(1, 6):
        assert await record(store, seq) is None
    assert 2 == store.dropped
    on_writer(store, "PRAGMA query_only=0")
    await store.flush()
    assert [3, 4, 5] == [s for _, s, _ in rows(tmp_path / DB_NAME)]
    store.close()


@pytest.mark.asyncio
async def test_records_waiting_for_the_writer_share_one_commit(tmp_path: Path) -> None:
    """Records queued while the writer is busy (a slow card) are committed in one transaction."""
    store = Store(tmp_path / DB_NAME)
    gate = threading.Event()
    store._pool.submit(gate.wait)  # the writer is stuck in a slow write
    writes = store.writes
    futures = [submit(store, seq, f"x{seq}") for seq in (1, 2, 3)]  # all queued behind the slow write
    gate.set()
    assert [True, True, True] == await asyncio.gather(*futures)
    assert writes + 1 == store.writes
    assert [1, 2, 3] == [s for _, s, _ in rows(tmp_path / DB_NAME)]
    store.close()


@pytest.mark.asyncio
async def test_bytes_written_per_transition_stay_small(tmp_path: Path) -> None:
    """Guard for the SD-card budget: a transition (record, delivery mark, checkpoints) writes well
    under the 41.6 kB the first version wrote (docs/operations.md, SD-card write budget)."""
    store = Store(tmp_path / DB_NAME)
    for seq in range(1, 21):
        await record(store, seq, f"w{seq // 4}", clears=seq % 4 == 0)
        await store.delivered("chair-1", f"w{seq // 4}", seq)
    await store.flush()
    before = wchar()
    n = 200
    for seq in range(21, 21 + n):
        await record(store, seq, f"w{seq // 4}", clears=seq % 4 == 0)
        await store.delivered("chair-1", f"w{seq // 4}", seq)
    await store.flush()
    per = (wchar() - before) / n
    store.close()
    assert per < 14_000, f"{per:.0f} bytes per transition"


@pytest.mark.asyncio
async def test_an_alert_record_is_committed_before_a_queue_of_other_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of command ids queued before an alert does not hold the alert's fsync back: the
    writer commits waiting records before its next job, and the alert's commit says so then."""
    store = Store(tmp_path / DB_NAME)
    gate = threading.Event()
    store._pool.submit(gate.wait)  # the writer is busy with one write
    flood = [store.remember_request("chair-1", f"flood-{n}") for n in range(500)]
    alert = submit(store, 1, "high")
    # The order the writer settles them in (its call_soon_threadsafe calls run in that order), not
    # how many are still open when this task wakes: the writer goes on meanwhile, and under load
    # it settled 100 more before the loop got here. A flood write's done callback runs one loop
    # turn after it settled, so the alert is noted when it settles, not when its waiter wakes.
    settled: list[str] = []
    settle = Commit.settle

    def noting_settle(commit: Commit, result: bool | None) -> None:
        if commit is alert and not commit.done():
            settled.append("alert")
        settle(commit, result)

    monkeypatch.setattr(Commit, "settle", noting_settle)

    def note(name: str) -> Callable[[asyncio.Future[bool | None]], None]:
        return lambda _f: settled.append(name)

    for n, job in enumerate(flood):
        job.add_done_callback(note(f"flood-{n}"))
    gate.set()
    assert await alert is True
    await asyncio.gather(*flood)
    assert settled.index("alert") < 100, settled.index("alert")  # committed ahead of (nearly) all of them
    assert [("high", 1, False)] == rows(tmp_path / DB_NAME)
    store.close()
