"""Plausible ranges of every observation kind, and the screen that applies them to driver output.

Why: a corrupted digit, a shifted HL7 field or a 16-bit register read as a pressure gives a number
no patient can have (SpO2 150 %, pulse 703/min, systolic 65535 mmHg). Handed to the alarm engine as
a valid sample it *looks like* good news: an SpO2 of 150 is above every low limit, so it ends the
"sustained below 90 %" evidence a real desaturation was building. Outside its range a value is
therefore never a number: it becomes a ``DecodeProblem`` (counted and logged like any undecodable
input) followed by the same observation with ``value=None``, which the engine treats as "no valid
value" (timers pause; a long gap is a technical alarm).

The ranges are the union of what the supported devices can display, widened to the physical
limit where one exists; they are **not** clinical limits (those live in the alarm table). Sources
and the reasoning for each bound are in ``docs/devices.md`` ("Plausible ranges"). One table here,
so every driver and every test uses the same numbers.

Applied once per driver class by :func:`screened` (a class decorator on every driver family): it
wraps ``feed``, ``feed_eof`` and ``on_timer`` so that no code path inside a driver can hand an
unchecked number to the service. ``tests/drivers/test_plausibility.py`` checks that every class in
the registry carries it.

NIBP is also checked as a reading: when systolic and diastolic come out of one driver call, as
every NIBP family delivers them, systolic must be above diastolic; otherwise the reading's values
(systolic, diastolic and mean) become ``None`` with one ``implausible_reading:nibp`` problem. The
mean is only range-checked: the Accutorr 3 manual's own sample reads SYS 120, MEAN 45, DIA 80, so
"diastolic <= mean <= systolic" would refuse the one published sample of a supported device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from vitalwatch.drivers.events import DecodeProblem, Event, Observation

__all__ = [
    "MAX_NUMBER_CHARS",
    "PLAUSIBLE_RANGES",
    "PlausibleRange",
    "implausible",
    "is_screened",
    "screen",
    "screened",
]

MAX_NUMBER_CHARS = 32
"""The longest text any driver reads as one number.

The longest legitimate value is an HL7 NM such as ``-123456.1234567890`` (under 20 characters); a
longer "number" is a damaged or hostile field, and bounding it first keeps parsing linear and
keeps ``float()`` from turning ``1`` followed by 308 zeros into something that overflows later.
"""


@dataclass(frozen=True, slots=True)
class PlausibleRange:
    """Inclusive bounds of one kind, in the kind's vocabulary unit."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        return math.isfinite(value) and self.low <= value <= self.high


# Rates: 0-350 /min. Nonin 7500 displays 18-321 /min, Mindray's IBP-derived pulse 25-350 /min;
# negative is impossible, and a very low real rate is the alarm rules' business, not a decode error.
_RATE = PlausibleRange(0.0, 350.0)
# Pressures: an oscillometric reading cannot exceed the highest cuff pressure; adult modules are
# capped at 300 mmHg (+20 tolerance) by an independent over-pressure circuit (Masimo Rad-97: 280).
_PRESSURE = PlausibleRange(1.0, 320.0)

PLAUSIBLE_RANGES: dict[str, PlausibleRange] = {
    "spo2": PlausibleRange(0.0, 100.0),  # a saturation is a fraction; Nonin 7500 displays 0-100 %
    "pulse_rate": _RATE,
    "nibp_pulse_rate": _RATE,
    "heart_rate": _RATE,
    "nibp_systolic": _PRESSURE,
    "nibp_diastolic": _PRESSURE,
    "nibp_mean": _PRESSURE,
    "cuff_pressure": PlausibleRange(0.0, 320.0),  # deflated cuff reads 0
    "perfusion_index": PlausibleRange(0.0, 100.0),  # a percentage (Masimo displays 0.02-20 %)
    "pvi": PlausibleRange(0.0, 100.0),  # Masimo PVI 0-100 %
    "sphb": PlausibleRange(0.0, 25.0),  # Masimo SpHb display 0-25 g/dL
    "spco": PlausibleRange(0.0, 100.0),  # a percentage (Masimo displays 0-99 %)
    "spmet": PlausibleRange(0.0, 100.0),  # a percentage (Masimo displays 0-99.9 %)
    "resp_rate": PlausibleRange(0.0, 200.0),  # Mindray BeneVision N1 measures 0-200 rpm
    "temperature": PlausibleRange(0.0, 50.0),  # Mindray BeneVision N1 temperature limits 1-49 Cel
}

_NIBP = ("nibp_systolic", "nibp_diastolic", "nibp_mean")
# PLAUSIBLE_RANGES as (low, high) pairs for :func:`screen`'s one pass. Every bound is finite, so
# ``low <= value <= high`` is also false for a NaN or an infinity, as PlausibleRange.contains is.
_BOUNDS: dict[str, tuple[float, float]] = {kind: (r.low, r.high) for kind, r in PLAUSIBLE_RANGES.items()}
if not all(math.isfinite(bound) for pair in _BOUNDS.values() for bound in pair):
    raise ValueError("PLAUSIBLE_RANGES bounds must be finite (screen relies on it)")


def implausible(kind: str, value: float | None) -> bool:
    """True when ``value`` is a number this kind can never have (non-finite is never plausible).

    A kind without a range (none today; the tests require one per vocabulary kind) is only
    checked for being finite.
    """
    if value is None:
        return False
    bounds = PLAUSIBLE_RANGES.get(kind)
    if bounds is None:
        return not math.isfinite(value)
    return not bounds.contains(value)


def screen(events: list[Event]) -> list[Event]:
    """Driver output with every impossible value replaced by a problem plus an invalid sample.

    Returns ``events`` itself when nothing needed changing (the common case, and cheap: one pass
    that checks every value and finds the reading's systolic and diastolic; only output that
    needs changing goes through :func:`_screen_values`).
    """
    if not events:  # most reads of a fast device complete no value
        return events
    systolic = diastolic = None
    for event in events:
        if isinstance(event, Observation) and event.value is not None:
            kind, value = event.kind, event.value
            bounds = _BOUNDS.get(kind)
            if not (math.isfinite(value) if bounds is None else bounds[0] <= value <= bounds[1]):
                return _screen_values(events)  # implausible(kind, value)
            if kind == "nibp_systolic":
                systolic = value
            elif kind == "nibp_diastolic":
                diastolic = value
    if systolic is None or diastolic is None or systolic > diastolic:
        return events
    return _check_nibp_reading(events)


def _screen_values(events: list[Event]) -> list[Event]:
    """:func:`screen` for output where some value is implausible (the careful path, as it always was)."""
    if not any(isinstance(e, Observation) and implausible(e.kind, e.value) for e in events):
        screened_events = events
    else:
        screened_events = []
        for event in events:
            if isinstance(event, Observation) and implausible(event.kind, event.value):
                screened_events.append(DecodeProblem(f"implausible:{event.kind}", 0))
                screened_events.append(_without_value(event))
            else:
                screened_events.append(event)
    return _check_nibp_reading(screened_events)


def _without_value(event: Observation) -> Observation:
    return Observation(event.kind, None, event.unit, event.mdc, event.device_time)


def _check_nibp_reading(events: list[Event]) -> list[Event]:
    """Systolic > diastolic, for a reading delivered in one batch (see the module docstring)."""
    found: dict[str, float] = {}
    for event in events:
        if isinstance(event, Observation) and event.kind in _NIBP and event.value is not None:
            found[event.kind] = event.value
    systolic, diastolic = found.get("nibp_systolic"), found.get("nibp_diastolic")
    if systolic is None or diastolic is None:
        return events
    if systolic > diastolic:
        return events
    out: list[Event] = [DecodeProblem("implausible_reading:nibp", 0)]
    for event in events:
        if isinstance(event, Observation) and event.kind in _NIBP and event.value is not None:
            out.append(_without_value(event))
        else:
            out.append(event)
    return out


_C = TypeVar("_C", bound=type[Any])

_SCREENED_METHODS = ("feed", "feed_eof", "on_timer")


def _screening(method: Callable[..., list[Event]]) -> Callable[..., list[Event]]:
    @functools.wraps(method)
    def wrapper(self: object, *args: Any, **kwargs: Any) -> list[Event]:
        return screen(method(self, *args, **kwargs))

    return wrapper


def screened(cls: _C) -> _C:
    """Class decorator for a driver: its ``feed``, ``feed_eof`` and ``on_timer`` output is screened.

    Every event a driver hands out passes :func:`screen`, whichever method produced it, so a new
    code path in a driver cannot forget the check. ``is_screened`` tells the registry test.
    """
    for name in _SCREENED_METHODS:
        method = cls.__dict__.get(name)
        if method is None:
            raise TypeError(f"{cls.__name__} defines no {name}(); screened() wraps the driver's own methods")
        setattr(cls, name, _screening(method))
    cls.__vitalwatch_screened__ = True
    return cls


def is_screened(cls: type[Any]) -> bool:
    """True when ``cls`` was decorated with :func:`screened`."""
    return bool(cls.__dict__.get("__vitalwatch_screened__", False))
