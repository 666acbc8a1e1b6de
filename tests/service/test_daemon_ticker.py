"""The daemon's ticker: every bed's timers at each multiple of TICK_S on the loop clock.

A unit test with fake bed runtimes (only ``tick`` is called); the ticker's effect on the
engines and the stall guard is covered with the real daemon in tests/integration.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any, cast

import pytest
from structlog.contextvars import get_contextvars

from tests.helpers import wait_until
from vitalwatch.config import parse_config
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


async def run_ticker(beds: Runtimes, *, ticks: int) -> None:
    """Run the daemon's ticker over ``beds`` until bed-2 had ``ticks`` ticks, then stop it."""
    task = asyncio.create_task(Daemon._ticker(cast(Daemon, beds)))
    try:
        await wait_until(lambda: len(beds.runtimes["bed-2"].ticks) >= ticks, 10, f"{ticks} ticks")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_the_ticker_runs_every_bed_on_the_multiples_of_tick_s() -> None:
    """Each bed is ticked at most TICK_S apart, on the multiples of TICK_S (where the device
    links' read-pause timers also fall, so a tick needs no loop wake-up of its own); a ticker
    that slept TICK_S after each tick would drift anywhere in the period."""
    beds = Runtimes()
    await run_ticker(beds, ticks=5)
    for runtime in beds.runtimes.values():
        ticks = runtime.ticks
        assert all(0 < b - a <= TICK_S + 0.05 for a, b in itertools.pairwise(ticks)), ticks
        phases = [t % TICK_S for t in ticks[1:]]  # the first tick is at the start
        assert sum(1 for x in phases if x < 0.01) >= len(phases) - 1, [round(x, 4) for x in phases]


class BedSeen:
    """A bed runtime that notes which bed the logging context had bound at each tick."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.bound: list[object] = []

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        self.bound.append(get_contextvars().get("bed"))


@pytest.mark.asyncio
async def test_each_beds_tick_logs_with_that_bed_bound_and_nothing_leaks_out() -> None:
    """The ticker runs each bed's tick in a context with the bed bound (built once, not bound
    and unbound at every tick): a log line from bed-2's timers must never say bed-1."""
    beds = Runtimes()
    beds.runtimes = {"bed-1": BedSeen(), "bed-2": BedSeen()}
    await run_ticker(beds, ticks=3)
    for bed_id, runtime in beds.runtimes.items():
        assert {bed_id} == set(runtime.bound)
    assert "bed" not in get_contextvars()


@pytest.mark.asyncio
async def test_a_beds_record_and_document_timers_run_once_a_second_its_engine_at_every_tick(
    tmp_path: Path,
) -> None:
    """A real bed runtime ticked at 4 Hz: the engine's timers at every tick (the alarm path), the
    session record's, readiness and trend timers at the whole seconds only."""
    config = parse_config(
        {
            "site": "test-site",
            "mqtt": {"host": "127.0.0.1", "port": 1},
            "state": {"directory": str(tmp_path)},
            "beds": [
                {"id": "bed-1", "devices": [{"id": "ox", "driver": "masimo", "url": "/nonexistent/tty"}]}
            ],
        }
    )
    daemon = Daemon(config)
    try:
        runtime = daemon.runtimes["bed-1"]
        engine_ticks: list[float] = []
        slow_timers: list[float] = []
        engine_tick = runtime.session.tick
        runtime.session.tick = lambda now: (engine_ticks.append(now), engine_tick(now))[1]  # type: ignore[method-assign]
        runtime._timers = slow_timers.append  # type: ignore[method-assign]
        instants = [100.0 + k * TICK_S for k in range(13)]  # 100.0 ... 103.0
        instants[4] -= 1e-9  # a loop timer a hair before 101.0 still counts as 101.0
        for now in instants:
            runtime.tick(now)
        assert instants == engine_ticks
        assert [100.0, 101.0 - 1e-9, 102.0, 103.0] == slow_timers
    finally:
        await daemon.store.flush()
        for record in daemon.records.values():
            record.close(0.0)
        daemon.sessions.close()
        daemon.store.close()
