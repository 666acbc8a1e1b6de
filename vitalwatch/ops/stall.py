"""A stall of the daemon itself: its own local alarm, never a device's ``link_lost``.

When the whole process does not run (SIGSTOP, a frozen VM, swap storm, a blocking bug), the
monitors keep sending and the kernel buffers their bytes. When it runs again, the event loop
reads one device's buffer first; that observation makes the engine evaluate every rule while
the other devices' bytes are still unread, so every other device looked silent for the whole
stall: a HIGH ``link_lost`` on every bed that cleared a moment later, blaming the monitors.

The daemon's ticker passes through here every :data:`vitalwatch.ops.daemon.TICK_S` (0.25 s)
while the loop runs, and so does every input of every bed before it reaches an engine
(:class:`vitalwatch.bed.BedSession` calls :meth:`StallGuard.check`). A gap above
:data:`STALL_S` between two of them means the daemon did not run. At the first input after it,
before that input reaches its engine, every bed is told (``BedSession.gateway_paused``: the
recording journals it and the engine does not count the gap as device silence), and the local
technical alarm ``daemon_stalled`` is raised with the gap in the log line. It clears after
:data:`STALL_ALARM_HOLD_S` without another stall: long enough to be seen in the status
payload and by the local alarm command, short enough not to hide the next one.

A monitor that really stopped stays silent after the stall too, so its ``link_lost`` comes
once the link timeout has passed in time the gateway ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import structlog

from vitalwatch.ops.local_alarms import LocalAlarms

__all__ = ["STALLED_ALARM", "STALL_ALARM_HOLD_S", "STALL_S", "Pausable", "StallGuard"]

log = structlog.get_logger("vitalwatch.ops.stall")

# A gap between two passes this much longer than the ticker's 0.25 s is the daemon not
# running, not a slow loop turn (an SD-card stall blocks a thread, never the loop, and the
# housekeeping's loop-lag measure sees turns of tens of milliseconds). Below every link
# timeout (2 s is the table's minimum: a shorter stall cannot fake a link_lost of 3 s).
STALL_S = 2.0
# The alarm stays raised this long after the stall ended (module docstring).
STALL_ALARM_HOLD_S = 60.0
STALLED_ALARM = "daemon_stalled"


class Pausable(Protocol):
    """What a bed offers the guard (:class:`vitalwatch.bed.BedSession`)."""

    def gateway_paused(self, gap_s: float, now: float) -> None: ...


class StallGuard:
    """Finds gaps in the daemon's own running and tells every bed before its engine sees an input."""

    def __init__(
        self,
        beds: Callable[[], Iterable[Pausable]],
        alarms: LocalAlarms,
        *,
        stall_s: float = STALL_S,
        hold_s: float = STALL_ALARM_HOLD_S,
    ) -> None:
        self._beds = beds
        self._alarms = alarms
        self._stall_s = stall_s
        self._hold_s = hold_s
        self._last: float | None = None
        self._raised_at: float | None = None
        self.stalls: list[tuple[float, float]] = []  # (now, gap_s), for tests and status

    def check(self, now: float) -> None:
        """The loop runs at ``now`` (an input or a tick); called before the input reaches an engine."""
        last = self._last
        if last is None or now > last:
            self._last = now
        if last is not None and now - last > self._stall_s:
            gap = now - last
            self.stalls.append((now, gap))
            log.error(
                "daemon.stalled",
                gap_s=round(gap, 2),
                detail="the gateway itself did not run; not counted as device silence",
            )
            for bed in self._beds():
                bed.gateway_paused(gap, now)
            self._raised_at = now
            self._alarms.set(STALLED_ALARM, "*", True)
        elif self._raised_at is not None and now - self._raised_at >= self._hold_s:
            self._raised_at = None
            self._alarms.set(STALLED_ALARM, "*", False)
