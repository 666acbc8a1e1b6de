"""What every kind of device link shares: the guarded driver, the counters, and fault reporting.

A serial :class:`~vitalwatch.link.device_link.DeviceLink` and a network
:class:`~vitalwatch.link.mllp_listener.MllpRoute` differ in how bytes arrive; from the driver on
they must behave alike, so the bed, the metrics and the logs cannot tell them apart:

- the driver runs in a :class:`~vitalwatch.link.driver_guard.DriverGuard` (an exception is the
  device's ``driver_fault`` alarm and a fresh driver after a backoff);
- readings and decode problems are counted (``vitalwatch status``, metrics); problems are logged
  at most every :data:`~vitalwatch.link.problem_log.LOG_EVERY_S` per device (a monitor on the
  wrong baud rate makes one every few dozen bytes, all day), a caught fault with where it was
  raised (its type and place, never its text, which may quote device bytes);
- a fault around the driver (in the link, or in what consumes its events) is reported the same
  way, and so is one the daemon's supervisor caught escaping the link's task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from vitalwatch.config import DeviceConfig
from vitalwatch.drivers import Driver, Event
from vitalwatch.drivers.events import DecodeProblem
from vitalwatch.link.driver_guard import DriverGuard, fault_site
from vitalwatch.link.problem_log import ProblemLog

if TYPE_CHECKING:
    from vitalwatch.link.device_link import LinkListener

__all__ = ["GuardedDevice"]

log = structlog.get_logger("vitalwatch.link.device_link")


class GuardedDevice:
    """Base of a device link: its config, guarded driver, counters and fault reports."""

    def __init__(
        self,
        config: DeviceConfig,
        listener: LinkListener,
        factory: Callable[[], Driver],
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self._listener = listener
        self._clock = clock
        self.guard = DriverGuard(factory)
        self._problem_log = ProblemLog()
        self.readings = 0
        self.decode_problems = 0

    @property
    def driver(self) -> Driver | None:
        """The current driver instance (None between port sessions or while it restarts)."""
        return self.guard.driver

    @property
    def driver_faults(self) -> int:
        """Faults caught in this device's driver or link since start (for metrics)."""
        return self.guard.faults

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def report_fault(self, exc: BaseException, call: str) -> None:
        """An unexpected exception around this device: logged (type and place, never its text) and
        reported to the listener as a problem and the ``driver_fault`` alarm.
        """
        try:
            self._deliver(self.guard.note_fault(exc, call, self.now()), self.now())
        except Exception as again:  # the listener itself is failing: a log line is all that is left
            log.error(
                "device.fault_unreported",
                call=call,
                error_type=type(exc).__name__,
                where=fault_site(exc),
                report_error_type=type(again).__name__,
                report_where=fault_site(again),
            )

    def task_crashed(self, exc: Exception) -> None:
        """The daemon's supervisor caught ``exc`` escaping the link's task: report it like any fault."""
        self.report_fault(exc, "task")

    def _logged_problem(self, reason: str) -> None:
        """A decode problem was just logged (a link may add a debug dump of its recent bytes)."""

    def _deliver(self, events: list[Event], now: float) -> None:
        """Count and log ``events``, then hand them to the bed session."""
        if not events:
            return
        for event in events:
            if not isinstance(event, DecodeProblem):
                self.readings += 1
                continue
            self.decode_problems += 1
            held = self._problem_log.admit(event.reason, now)
            if held is not None:
                log.info(
                    "device.decode_problem",
                    reason=event.reason,
                    length=event.length,
                    total=self.decode_problems,
                    not_logged=held,
                )
                self._logged_problem(event.reason)
            fault = self.guard.last_fault
            if event.reason.startswith("driver_fault:") and fault is not None:
                log.error(
                    "device.driver_fault",
                    error_type=fault.error_type,
                    where=fault.where,
                    call=fault.call,
                    in_a_row=fault.in_a_row,
                    restart_in_s=fault.restart_in_s,
                )
        self._listener.on_events(self.config.id, events, now)
