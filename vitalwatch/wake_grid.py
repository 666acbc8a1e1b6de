"""Timers on shared multiples of the loop clock, so the daemon's periodic wake-ups coincide.

Each wake-up of the event loop has a fixed cost (an ``epoll_wait`` return, a loop turn, cold
caches), and at real device rates those costs were most of the daemon's CPU, the budget that
matters on a Raspberry Pi (docs/performance.md, footprint). Timers set "this long after
now" by different tasks fall anywhere, so a ticker, eight device links and their read pauses each
wake the loop on their own. A timer set for the next multiple of its period instead lands on
the same instants as every other timer whose period divides it (the device links' 25 ms read
pause and the waveform-rate oximeters' 125 ms, their 0.5 s idle wake, the ticker's 0.25 s, the vitals' whole
second), and the loop runs them all in one turn. No periodic wait gets longer: it is at most the
period, as before. A one-off deadline (a driver's poll or keep-alive) moved onto the grid with
:func:`first_multiple_from` comes at most one period late.
"""

from __future__ import annotations

import asyncio
import math

__all__ = ["first_multiple_from", "next_multiple", "sleep_until"]

# A timer may run a hair before its time (the loop takes what is due within its clock's
# resolution), so a ``now`` this close below a multiple (in periods) counts as that multiple.
_EARLY = 1e-6


def next_multiple(now: float, period: float) -> float:
    """The first multiple of ``period`` after ``now`` (loop time, seconds).

    A call at a multiple (or a nanosecond before it, as a loop timer may run) gets the next
    multiple, never the same one again.
    """
    return (math.floor(now / period + _EARLY) + 1) * period


def first_multiple_from(when: float, period: float) -> float:
    """The first multiple of ``period`` at or after ``when`` (a deadline moved onto the grid:
    never earlier than asked, at most one period later)."""
    return math.ceil(when / period - _EARLY) * period


async def sleep_until(when: float) -> None:
    """Sleep until loop time ``when`` exactly (``asyncio.sleep`` adds its delay to a later
    reading of the clock, which would put the timer a few microseconds past the multiple)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    handle = loop.call_at(when, done.set_result, None)
    try:
        await done
    finally:
        handle.cancel()
