"""Fault isolation around one device's driver: an unexpected exception is a fault, not a crash.

Drivers promise never to raise on bad input, but a promise is not a proof: a bug in one family
(an encoder refusing a byte it was handed, an index off by one) must cost that device its
current driver instance, never the link task, another bed or the daemon. :class:`DriverGuard`
has the driver interface, so the live link, ``vitalwatch replay --recording`` and
``vitalwatch decode`` all wrap their driver the same way and see the same events:

- any ``Exception`` from ``feed``, ``feed_eof``, ``on_timer``, ``data_to_send`` or
  ``next_deadline`` becomes ``DecodeProblem("driver_fault:<ExceptionType>", 0)`` plus the
  ``driver_fault`` status switching on for the device (the engine's HIGH technical alarm);
- the faulty instance is dropped and a fresh one is built after a capped exponential backoff
  (1 s, 2 s, 4 s ... 60 s), so a driver that raises on every byte costs one fault per backoff
  period, not a busy loop; bytes arriving meanwhile are skipped and reported as one problem;
- the status switches off when the restarted driver decodes something again (any observation
  or status), and the backoff starts over.

Sans-I/O like the drivers: time is the ``now`` the caller passes (``feed``/``on_timer``), so a
replay of the same bytes at the same times gives the same faults. Nothing here logs: the
exception's type and where it was raised are kept in :attr:`DriverGuard.last_fault` for the
caller to log. The exception's message is never kept, because it may quote device bytes.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vitalwatch.drivers import Driver
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event

__all__ = ["FAULT_STATUS", "DriverFault", "DriverGuard", "fault_site"]

# The status code the engine's driver_fault rule watches (see docs/alarms.md).
FAULT_STATUS = "driver_fault"
# First restart delay after a fault; doubles with each fault in a row, up to the cap.
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True, slots=True)
class DriverFault:
    """One caught exception, described without its message (which may quote device bytes)."""

    error_type: str
    where: str  # "hl7.py:512 in _queue_ack": the innermost frame
    call: str  # which driver call raised (feed, on_timer, ...)
    in_a_row: int  # faults since the driver last decoded something
    restart_in_s: float


def fault_site(exc: BaseException) -> str:
    """``file.py:line in function`` of the innermost frame of ``exc``'s traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown"
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno} in {last.name}"


class DriverGuard:
    """A driver wrapper that turns an unexpected exception into a problem, a status and a restart."""

    def __init__(
        self,
        factory: Callable[[], Driver],
        *,
        first_backoff_s: float = FIRST_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self._factory = factory
        self._first_backoff_s = first_backoff_s
        self._max_backoff_s = max_backoff_s
        self.driver: Driver | None = None  # the current instance; None between sessions or while down
        self.faults = 0  # every fault caught, for metrics
        self.last_fault: DriverFault | None = None
        self._in_a_row = 0
        self._fault_active = False  # the driver_fault status is on
        self._restart_at: float | None = None  # while down: when a fresh driver may be built
        self._now = 0.0  # latest time a caller gave (calls without ``now`` use it)
        self._skipped = 0  # bytes dropped while down
        self._pending: list[Event] = []  # fault events from calls that cannot return events

    @property
    def fault_active(self) -> bool:
        return self._fault_active

    def start(self, now: float) -> list[Event]:
        """A port session begins: build the driver unless a restart is still backing off."""
        self._now = max(self._now, now)
        events = self._take_pending()
        if self.driver is None:
            events += self._build() if self._restart_at is None else self._restart_if_due()
        return events

    def note_fault(self, exc: BaseException, call: str, now: float | None = None) -> list[Event]:
        """A fault around the driver (the link, or what consumed its events): same report, same backoff.

        The instance is dropped too: after an exception half-way through delivering its
        events, its state is no longer known to be consistent.
        """
        if now is not None:
            self._now = max(self._now, now)
        return self._fault(exc, call)

    # -- the driver interface ------------------------------------------------------------------

    def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
        self._now = max(self._now, now)
        driver = self.driver
        if driver is not None and not self._pending:  # the common read: no report first, no restart
            try:
                got = driver.feed(data, now)
            except Exception as exc:
                return self._fault(exc, "feed")
            return [*self._seen(got)] if self._fault_active else [*got]
        events = self._take_pending() + self._restart_if_due()
        if self.driver is None:
            self._skipped += len(data)
            return events
        try:
            got = self.driver.feed(data, now)
        except Exception as exc:
            return events + self._fault(exc, "feed")
        return events + self._seen(got)

    def feed_eof(self) -> list[Event]:
        """End of the port session: the driver's leftovers, and the next session gets a fresh one."""
        events = self._take_pending()
        driver, self.driver = self.driver, None
        if driver is not None:
            try:
                events += self._seen(driver.feed_eof())
            except Exception as exc:
                events += self._fault(exc, "feed_eof")
        return events + self._flush_skipped()

    def data_to_send(self) -> bytes:
        if self.driver is None:
            return b""
        try:
            return self.driver.data_to_send()
        except Exception as exc:
            self._pending += self._fault(exc, "data_to_send")
            return b""

    def next_deadline(self) -> float | None:
        """The driver's deadline; while down (or with a fault to report), the restart time."""
        if self._pending:
            return self._now
        driver = self.driver
        if driver is None:
            return self._restart_at
        try:
            return driver.next_deadline()
        except Exception as exc:
            self._pending += self._fault(exc, "next_deadline")
            return self._now

    def on_timer(self, now: float) -> list[Event]:
        self._now = max(self._now, now)
        driver = self.driver
        if driver is not None and not self._pending:  # as in feed
            try:
                got = driver.on_timer(now)
            except Exception as exc:
                return self._fault(exc, "on_timer")
            return [*self._seen(got)] if self._fault_active else [*got]
        events = self._take_pending() + self._restart_if_due()
        if self.driver is None:
            return events
        try:
            got = self.driver.on_timer(now)
        except Exception as exc:
            return events + self._fault(exc, "on_timer")
        return events + self._seen(got)

    # -- internals -----------------------------------------------------------------------------

    def _build(self) -> list[Event]:
        try:
            self.driver = self._factory()
        except Exception as exc:  # a constructor that passed check-config and fails now
            return self._fault(exc, "start")
        self._restart_at = None
        return self._flush_skipped()

    def _restart_if_due(self) -> list[Event]:
        if self.driver is None and self._restart_at is not None and self._now >= self._restart_at:
            return self._build()
        return []

    def _fault(self, exc: BaseException, call: str) -> list[Event]:
        self.driver = None
        self.faults += 1
        self._in_a_row += 1
        delay = min(self._max_backoff_s, self._first_backoff_s * 2.0 ** (self._in_a_row - 1))
        self._restart_at = self._now + delay
        error_type = type(exc).__name__
        self.last_fault = DriverFault(error_type, fault_site(exc), call, self._in_a_row, delay)
        events: list[Event] = [DecodeProblem(f"driver_fault:{error_type}", 0)]
        if not self._fault_active:
            self._fault_active = True
            events.append(DeviceStatus(FAULT_STATUS, True, {"error": error_type}))
        return events

    def _seen(self, events: list[Event]) -> list[Event]:
        """The driver's events; the first decoded one after a fault ends the fault."""
        if self._fault_active and any(not isinstance(e, DecodeProblem) for e in events):
            self._in_a_row = 0
            self._fault_active = False
            return [*events, DeviceStatus(FAULT_STATUS, False)]
        return events

    def _flush_skipped(self) -> list[Event]:
        if not self._skipped:
            return []
        skipped, self._skipped = self._skipped, 0
        return [DecodeProblem("skipped_while_restarting", skipped)]

    def _take_pending(self) -> list[Event]:
        pending, self._pending = self._pending, []
        return pending
