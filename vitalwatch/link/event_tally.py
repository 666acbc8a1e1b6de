"""Counting and logging what one device's driver produced, the same for a serial port and a network sender.

Every link hands its driver's events to the bed session; before that it counts readings and
decode problems (the ``vitalwatch status`` and metrics counters), logs problems at most every
:data:`~vitalwatch.link.problem_log.LOG_EVERY_S` per device (a monitor on the wrong baud rate
makes one every few dozen bytes, all day), and logs a caught driver fault with where it was
raised. Kept in one place so a serial :class:`~vitalwatch.link.device_link.DeviceLink` and an
:class:`~vitalwatch.link.mllp_listener.MllpRoute` report alike.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from vitalwatch.drivers import Event
from vitalwatch.drivers.events import DecodeProblem
from vitalwatch.link.driver_guard import DriverGuard
from vitalwatch.link.problem_log import ProblemLog

__all__ = ["EventTally"]

log = structlog.get_logger("vitalwatch.link.device_link")


class EventTally:
    """One device's readings and decode problems, counted; problems and faults logged."""

    def __init__(self, guard: DriverGuard, *, on_logged_problem: Callable[[str], None] | None = None) -> None:
        self._guard = guard
        self._on_logged_problem = on_logged_problem  # e.g. the link's debug dump of recent bytes
        self._problem_log = ProblemLog()
        self.readings = 0
        self.decode_problems = 0

    def count(self, events: list[Event], now: float) -> None:
        """Count ``events`` and write the log lines they call for (before they go to the bed)."""
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
                if self._on_logged_problem is not None:
                    self._on_logged_problem(event.reason)
            fault = self._guard.last_fault
            if event.reason.startswith("driver_fault:") and fault is not None:
                log.error(
                    "device.driver_fault",
                    error_type=fault.error_type,
                    where=fault.where,
                    call=fault.call,
                    in_a_row=fault.in_a_row,
                    restart_in_s=fault.restart_in_s,
                )
