"""The supervisor keeps one task's exception inside that task: reported, restarted, siblings untouched."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.helpers import wait_until
from vitalwatch.ops.supervise import supervise


@pytest.mark.asyncio
async def test_a_crashing_body_is_reported_and_restarted_and_its_taskgroup_sibling_keeps_running() -> None:
    runs: list[int] = []
    crashes: list[str] = []
    sibling_ticks = 0

    async def body() -> None:
        runs.append(len(runs) + 1)
        if len(runs) <= 3:
            raise RuntimeError(f"crash {len(runs)}")
        await asyncio.Event().wait()  # the fourth run stays up

    async def sibling() -> None:
        nonlocal sibling_ticks
        while True:
            sibling_ticks += 1
            await asyncio.sleep(0.01)  # the subject: a sibling doing periodic work of its own

    async def group() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                supervise("device[b/x]", body, lambda e: crashes.append(str(e)), rng=random.Random(1))
            )
            tg.create_task(sibling())

    task = asyncio.create_task(group())
    try:
        await wait_until(lambda: len(runs) >= 4, 10, "the fourth run")
        ticks = sibling_ticks
        await wait_until(lambda: sibling_ticks > ticks, 5, "the sibling ticking on (never cancelled)")
        assert ["crash 1", "crash 2", "crash 3"] == crashes
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()  # cancellation still goes through the supervisor


@pytest.mark.asyncio
async def test_a_failing_crash_report_does_not_stop_the_restart() -> None:
    runs = 0

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ValueError("first")

    def report(exc: Exception) -> None:
        raise TypeError("the reporter is broken too")

    async with asyncio.timeout(5):
        await supervise("device[b/y]", body, report, rng=random.Random(2))
    assert 2 == runs  # restarted and then returned normally
