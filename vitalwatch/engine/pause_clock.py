"""The phase clock that a nurse can pause: an infusion paused stops its clock, not its alarms.

A pause (the nurse stopped the pump for a while) keeps the phase ``infusion`` and every alarm
active, but the infusion's own schedule (``infusion_overrun``, the 35-40 min peak window, the NIBP
interval) counts only the time the infusion ran. This module keeps the pauses of the current
phase and answers "how much of ``t0..t1`` was not paused"; the engine resets it at every phase
change. Times are the engine's (monotonic seconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vitalwatch.engine.snapshot import StateReader

__all__ = ["PauseClock"]


class PauseClock:
    """The pauses of the current phase: closed ``(start, end)`` intervals and an open one."""

    def __init__(self) -> None:
        self._closed: list[tuple[float, float]] = []
        self._pause_start: float | None = None

    @property
    def paused(self) -> bool:
        """Whether the phase is paused now."""
        return self._pause_start is not None

    def pause(self, now: float) -> bool:
        """Start a pause at ``now``; False (nothing changes) when already paused."""
        if self._pause_start is not None:
            return False
        self._pause_start = now
        return True

    def resume(self, now: float) -> bool:
        """End the pause at ``now``; False (nothing changes) when not paused."""
        if self._pause_start is None:
            return False
        self._closed.append((self._pause_start, max(now, self._pause_start)))
        self._pause_start = None
        return True

    def reset(self) -> None:
        """A new phase: no pauses."""
        self._closed.clear()
        self._pause_start = None

    def paused_between(self, t0: float, t1: float) -> float:
        """Seconds of ``t0..t1`` spent paused (an open pause runs to ``t1``)."""
        if t1 <= t0:
            return 0.0
        spans = [*self._closed, *([(self._pause_start, t1)] if self._pause_start is not None else [])]
        return sum(max(0.0, min(end, t1) - max(start, t0)) for start, end in spans)

    def running(self, t0: float, t1: float) -> float:
        """Seconds of ``t0..t1`` not paused: the phase clock's view of that stretch."""
        return max(0.0, t1 - t0 - self.paused_between(t0, t1))

    def snapshot(self) -> dict[str, Any]:
        """Snapshot form (:mod:`vitalwatch.engine.snapshot`): times, moved by restore."""
        return {"closed": [{"start": a, "end": b} for a, b in self._closed], "open": self._pause_start}

    def restore_state(self, r: StateReader) -> None:
        self._closed = [(c.when("start"), c.when("end")) for c in r.children("closed", 1000)]
        self._pause_start = r.opt_when("open")
