"""The shared wake-up grid: the next multiple of a period, and a sleep that lands on it."""

from __future__ import annotations

import asyncio

import pytest

from vitalwatch.wake_grid import next_multiple, sleep_until


@pytest.mark.parametrize("period", [0.025, 0.25, 0.5])
def test_the_next_multiple_follows_now_even_from_a_timer_a_hair_early(period: float) -> None:
    """A call at a multiple, or a nanosecond before it (a loop timer may run that early), gets the
    next multiple, never the same one again; any other moment gets the multiple after it."""
    for k in (1, 7, 40_000, 123_456_789):
        at = k * period
        for now in (at, at - 1e-9, at + 1e-9, at + 0.4 * period, at + 0.99 * period):
            assert next_multiple(now, period) == pytest.approx((k + 1) * period, abs=1e-6)


def test_the_periods_of_the_daemon_share_their_multiples() -> None:
    """The ticker's 0.25 s and the idle wake's 0.5 s are multiples of the 25 ms read pause, so
    their timers land on instants the read timers also use (one loop turn for all)."""
    from vitalwatch.link.device_link import IDLE_WAKE_S, READ_PAUSE_S
    from vitalwatch.ops.daemon import TICK_S

    for now in (1.0, 12_345.6789, 98_765.4321):
        for period in (TICK_S, IDLE_WAKE_S):
            assert next_multiple(now, period) % READ_PAUSE_S == pytest.approx(0, abs=1e-6) or (
                next_multiple(now, period) % READ_PAUSE_S == pytest.approx(READ_PAUSE_S, abs=1e-6)
            )


@pytest.mark.asyncio
async def test_sleep_until_wakes_at_the_instant_not_before() -> None:
    loop = asyncio.get_running_loop()
    when = next_multiple(loop.time(), 0.025)
    await sleep_until(when)
    assert loop.time() >= when
