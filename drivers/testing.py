"""Helpers for driver tests, shipped so every family's tests feed bytes the same three ways.

Model: h11's ``tr()`` byte-at-a-time helper and websockets' ``assertFrameData``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from vitalwatch.drivers.base import Driver
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event, Observation

__all__ = [
    "feed_bytewise",
    "feed_chunks",
    "feed_whole",
    "observations",
    "only_events",
    "problems",
    "statuses",
]

DriverFactory = Callable[[], Driver]


def feed_whole(factory: DriverFactory, data: bytes, *, eof: bool = True) -> list[Event]:
    """Feed everything in one call."""
    driver = factory()
    events = driver.feed(data, 0.0)
    return events + (driver.feed_eof() if eof else [])


def feed_bytewise(factory: DriverFactory, data: bytes, *, eof: bool = True) -> list[Event]:
    """Feed one byte per call: every buffer boundary is exercised."""
    driver = factory()
    events: list[Event] = []
    for i in range(len(data)):
        events += driver.feed(data[i : i + 1], float(i))
    return events + (driver.feed_eof() if eof else [])


def feed_chunks(factory: DriverFactory, data: bytes, *, seed: int = 0, eof: bool = True) -> list[Event]:
    """Feed random-sized chunks (fixed seed, so failures reproduce)."""
    rng = random.Random(seed)
    driver = factory()
    events: list[Event] = []
    i = 0
    while i < len(data):
        n = rng.randint(1, 64)
        events += driver.feed(data[i : i + n], float(i))
        i += n
    return events + (driver.feed_eof() if eof else [])


def observations(events: list[Event]) -> list[Observation]:
    return [e for e in events if isinstance(e, Observation)]


def statuses(events: list[Event]) -> list[DeviceStatus]:
    return [e for e in events if isinstance(e, DeviceStatus)]


def problems(events: list[Event]) -> list[DecodeProblem]:
    return [e for e in events if isinstance(e, DecodeProblem)]


def only_events(events: list[object]) -> bool:
    """True when every item is one of the three event types (the fuzz invariant)."""
    return all(isinstance(e, Observation | DeviceStatus | DecodeProblem) for e in events)
