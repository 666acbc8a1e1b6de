"""Time to alert measured from the first crossing of an alarm limit, and the table's own delay.

Time from a labelled event's start mixes two things: how fast the patient's value fell to the
limit, and how long the alarm logic waited after that. This module measures the second part on
a 1 Hz stream of (time, value, valid) samples, independently of the engine:

- :func:`first_crossing`: the first valid sample beyond a limit in a window (what a nurse would
  call "when it went below 90");
- :func:`table_fire_time`: when a ``sustained`` rule of the alarm table fires on that stream
  by the table's own words (docs/alarms.md): out of range for ``delay`` seconds of valid
  signal; a valid in-range value resets the timer, an invalid or absent one pauses it;
- :func:`between`: what happened between the first crossing and the alert (the value came back
  in range, or the signal was invalid), the two reasons an alert may come later than
  first crossing + delay without the engine adding anything.

The engine's alert time minus :func:`table_fire_time` is what the engine adds beyond the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vitalwatch.engine.table import compare

__all__ = ["Gaps", "Point", "between", "first_crossing", "table_fire_time"]

EPS = 1e-6

# (t, value, valid): one sample as the engine receives it; value None is "no value".
Point = tuple[float, float | None, bool]


def _beyond(p: Point, op: str, limit: float) -> bool:
    _, value, valid = p
    return valid and value is not None and compare(op, value, limit)


def first_crossing(points: Sequence[Point], op: str, limit: float, start: float, end: float) -> float | None:
    """Time of the first valid sample in [start, end] that is ``<op> limit``; None if none is."""
    for p in points:
        if p[0] < start:
            continue
        if p[0] > end:
            return None
        if _beyond(p, op, limit):
            return p[0]
    return None


def table_fire_time(
    points: Sequence[Point],
    op: str,
    limit: float,
    *,
    delay: float,
    start: float,
    end: float,
    hold_s: float = 5.0,
) -> float | None:
    """When a sustained rule (``<op> limit`` for ``delay`` s of valid signal) fires in [start, end].

    Each sample holds until the next one (at most ``hold_s``); the time it holds counts toward
    the delay when it is valid and out of range. A valid in-range sample resets the count, an
    invalid one stops the counting without resetting it. The rule fires at the first sample time
    at which the count has reached ``delay`` and no valid in-range sample has reset it.
    """
    acc = 0.0
    held: Point | None = None
    for p in points:
        t = p[0]
        if t > end:
            return None
        if held is not None and t >= start and _beyond(held, op, limit):
            acc += min(t - held[0], hold_s)
        if p[2] and p[1] is not None and not compare(op, p[1], limit):
            acc = 0.0  # a valid value back in range: the table's timer starts again
        held = p
        if t >= start and acc >= delay - EPS:
            return t
    return None


@dataclass(frozen=True, slots=True)
class Gaps:
    """Between a first crossing and the alert: seconds back in range, seconds without valid signal."""

    in_range_s: float
    invalid_s: float


def between(points: Sequence[Point], op: str, limit: float, start: float, end: float) -> Gaps:
    """Count the samples in [start, end) that were valid and in range, and those that were not valid."""
    in_range = invalid = 0.0
    for t, value, valid in points:
        if t < start or t >= end:
            continue
        if not valid or value is None:
            invalid += 1
        elif not compare(op, value, limit):
            in_range += 1
    return Gaps(in_range, invalid)
