"""The daemon's ticker: every bed's timers at each multiple of TICK_S on the loop clock.

A unit test with fake bed runtimes (only ``tick`` is called); the ticker's effect on the
engines and the stall guard is covered with the real daemon in tests/integration.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, cast

import pytest

from tests.helpers import wait_until
from vitalwatch.ops.daemon import TICK_S, Daemon


class TickLog:
    """A bed runtime that notes the time of every tick."""

    def __init__(self) -> None:
        self.ticks: list[float] = []

    def tick(self, now: float) -> None:
        self.ticks.append(now)


class Runtimes:
    """What ``Daemon._ticker`` reads of the daemon: the bed runtimes by bed id."""

    def __init__(self) -> None:
        self.runtimes: dict[str, Any] = {"bed-1": TickLog(), "bed-2": TickLog()}


@pytest.mark.asyncio
async def test_the_ticker_runs_every_bed_on_the_multiples_of_tick_s() -> None:
    """Each bed is ticked at most TICK_S apart, on the multiples of TICK_S (where the device
    links' read-pause timers also fall, so a tick needs no loop wake-up of its own); a ticker
    that slept TICK_S after each tick would drift anywhere in the period."""
    beds = Runtimes()
    task = asyncio.create_task(Daemon._ticker(cast(Daemon, beds)))
    try:
        await wait_until(lambda: len(beds.runtimes["bed-2"].ticks) >= 5, 10, "five ticks")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    for runtime in beds.runtimes.values():
        ticks = runtime.ticks
        assert all(0 < b - a <= TICK_S + 0.05 for a, b in itertools.pairwise(ticks)), ticks
        phases = [t % TICK_S for t in ticks[1:]]  # the first tick is at the start
        assert sum(1 for x in phases if x < 0.01) >= len(phases) - 1, [round(x, 4) for x in phases]
