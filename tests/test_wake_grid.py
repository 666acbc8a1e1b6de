"""The shared wake-up grid: the next multiple of a period, and a sleep that lands on it."""

from __future__ import annotations

import asyncio

import pytest

from vitalwatch.wake_grid import first_multiple_from, next_multiple, sleep_until


@pytest.mark.parametrize("period", [0.025, 0.25, 0.5])
def test_the_next_multiple_follows_now_even_from_a_timer_a_hair_early(period: float) -> None:
    """A call at a multiple, or a nanosecond before it (a loop timer may run that early), gets the
    next multiple, never the same one again; any other moment gets the multiple after it."""
    for k in (1, 7, 40_000, 123_456_789):
        at = k * period
        for now in (at, at - 1e-9, at + 1e-9, at + 0.4 * period, at + 0.99 * period):
            assert next_multiple(now, period) == pytest.approx((k + 1) * period, abs=1e-6)


@pytest.mark.parametrize("period", [0.025, 0.125, 0.5])
def test_a_deadline_moves_to_the_first_multiple_at_or_after_it_never_earlier(period: float) -> None:
    """A one-off deadline on the grid: a multiple stays itself (a nanosecond either side too,
    float sums of steps are not exact), anything else goes to the next multiple, never earlier."""
    for k in (1, 7, 40_000, 123_456_789):
        at = k * period
        for when in (at, at - 1e-9, at + 1e-9):
            assert first_multiple_from(when, period) == pytest.approx(at, abs=1e-6)
        for when in (at + 0.01 * period, at + 0.4 * period, at + 0.99 * period):
            got = first_multiple_from(when, period)
            assert got == pytest.approx((k + 1) * period, abs=1e-6)
            assert got >= when


def test_the_periods_of_the_daemon_share_their_multiples() -> None:
    """The waveform ports' 125 ms, the ticker's 0.25 s, the idle wake's 0.5 s, the unreachable
    check's 0.5 s and the vitals' 1 s are multiples of the 25 ms read pause and of the waveform
    pause (the drivers' timer grid), so their timers land on instants the read timers also use
    (one loop turn for all); the 50 ms pause of any other streaming port is on the 25 ms grid."""
    from vitalwatch.delivery.vitals import VITALS_EVERY_S
    from vitalwatch.link.device_link import (
        DRIVER_TIMER_GRID_S,
        IDLE_WAKE_S,
        READ_PAUSE_S,
        STREAM_READ_PAUSE_S,
        WAVEFORM_READ_PAUSE_S,
    )
    from vitalwatch.ops.bed_runtime import TIMERS_EVERY_S
    from vitalwatch.ops.daemon import TICK_S

    def on(grid: float, at: float) -> bool:
        phase = at % grid
        return phase == pytest.approx(0, abs=1e-6) or phase == pytest.approx(grid, abs=1e-6)

    for now in (1.0, 12_345.6789, 98_765.4321):
        for period in (WAVEFORM_READ_PAUSE_S, TICK_S, IDLE_WAKE_S, VITALS_EVERY_S, TIMERS_EVERY_S):
            assert on(READ_PAUSE_S, next_multiple(now, period))
            assert on(DRIVER_TIMER_GRID_S, next_multiple(now, period))
        assert on(READ_PAUSE_S, next_multiple(now, STREAM_READ_PAUSE_S))


@pytest.mark.asyncio
async def test_sleep_until_wakes_at_the_instant_not_before() -> None:
    loop = asyncio.get_running_loop()
    when = next_multiple(loop.time(), 0.025)
    await sleep_until(when)
    assert loop.time() >= when
