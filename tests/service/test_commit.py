"""A journal record's commit as its senders wait for it (vitalwatch.delivery.commit).

The `asyncio.sleep(0)` calls here are single event-loop turns, not waits for time: these tests count
turns (how soon a waiting sender runs after the commit) or let a just-created task start waiting.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from vitalwatch.delivery.commit import Commit
from vitalwatch.delivery.store import DB_NAME, Store


async def _turns_until_done(task: asyncio.Task[object]) -> int:
    """How many loop turns pass before ``task`` has finished (at most 10)."""
    for turns in range(1, 11):
        await asyncio.sleep(0)
        if task.done():
            return turns
    return 99


@pytest.mark.asyncio
async def test_a_waiting_sender_runs_in_the_loop_turn_after_the_commit() -> None:
    """No extra hop between the commit and the send: asyncio.shield took one more turn."""
    commit = Commit()
    waiter = asyncio.ensure_future(_await(commit))
    await asyncio.sleep(0)  # the waiter now waits
    commit.settle(True)
    assert 1 == await _turns_until_done(waiter)
    assert waiter.result() is True

    # The same measure on the old way (a shared future behind asyncio.shield) takes two turns:
    # the check above would fail if the commit were waited for like that.
    shared: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
    shielded = asyncio.ensure_future(_await(asyncio.shield(shared)))
    await asyncio.sleep(0)
    shared.set_result(True)
    assert 2 == await _turns_until_done(shielded)


async def _await(awaitable: object) -> object:
    return await awaitable  # type: ignore[misc]


@pytest.mark.asyncio
async def test_a_sender_that_gives_up_cancels_nothing_shared() -> None:
    """A timed-out or cancelled wait leaves the commit pending for every other reader."""
    commit = Commit()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await commit
    cancelled = asyncio.ensure_future(_await(commit))
    other = asyncio.ensure_future(_await(commit))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    assert cancelled.cancelled() and not commit.done() and not other.done()
    commit.settle(True)
    assert await other is True
    assert await commit is True  # waited for again later: at once
    commit.settle(None)  # later news of the same record is ignored
    assert await commit is True


@pytest.mark.asyncio
async def test_a_failed_or_cancelled_job_reaches_every_waiter() -> None:
    failed, cancelled = Commit(), Commit()
    waiting = asyncio.ensure_future(_await(failed))
    await asyncio.sleep(0)
    failed.fail(OSError("disk gone"))
    with pytest.raises(OSError, match="disk gone"):
        await waiting
    with pytest.raises(OSError, match="disk gone"):
        await failed
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled


@pytest.mark.asyncio
async def test_a_record_waited_for_again_after_a_cancelled_wait_is_still_committed(tmp_path: Path) -> None:
    """The publisher's task is cancelled when the broker connection drops while it waits for the
    fsync; after the reconnect it waits for the same record again and must see it committed,
    not a cancelled future (the reason the shared future used to sit behind a shield)."""
    store = Store(tmp_path / DB_NAME)
    gate = threading.Event()
    store._pool.submit(gate.wait)  # a slow card: the commit waits
    commit = store.record(
        "chair-1", alert_id="a", seq=1, rank=3, clears=False, payload={"alert_id": "a"}, transition={}
    )
    first = asyncio.ensure_future(_await(commit))
    await asyncio.sleep(0)
    first.cancel()  # the connection dropped
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    assert await commit is True
    store.close()


@pytest.mark.asyncio
async def test_done_callbacks_run_after_the_waiters_were_woken_and_at_once_when_settled() -> None:
    """The bed session resumes from a callback: the sender woken by the same commit must go first."""
    commit = Commit()
    order: list[str] = []

    async def sender() -> None:
        await commit
        order.append("sender")

    task = asyncio.ensure_future(sender())
    await asyncio.sleep(0)  # the sender now waits
    loop = asyncio.get_running_loop()
    commit.add_done_callback(lambda: loop.call_soon(order.append, "callback's work"))
    assert order == []
    commit.settle(True)
    await task
    await asyncio.sleep(0)
    assert order == ["sender", "callback's work"]
    late: list[str] = []
    commit.add_done_callback(lambda: late.append("at once"))
    assert late == ["at once"]


@pytest.mark.asyncio
async def test_the_writers_report_can_be_waited_for_on_the_thread_and_settled_at_once() -> None:
    commit = Commit()
    assert commit.wait_written(0.001) is False  # nothing written: the wait runs out
    commit.settle_written()
    assert not commit.done()  # nothing to settle with yet
    writer = threading.Thread(target=commit.written, args=(None,))  # the disk refused it: held
    writer.start()
    assert commit.wait_written(5.0) is True
    commit.settle_written()
    assert commit.done() and await commit is None
    commit.settle(True)  # the writer's own loop callback comes later and changes nothing
    assert await commit is None
    writer.join()
