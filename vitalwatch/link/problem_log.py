"""How often a device's decode problems reach the log: counted always, logged at most every 10 s.

A monitor on the wrong baud rate produces a problem every few dozen bytes, all day. Each one is
counted (the link's counter, the ``vitalwatch_decode_problems_total`` metric), but a log line per
problem would flood the journal and the SD card; one line per period says how many were not
logged since the last one, by reason.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["LOG_EVERY_S", "ProblemLog"]

LOG_EVERY_S = 10.0


class ProblemLog:
    """Decides which decode problems of one device are logged (clock passed in)."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self._every_s = every_s
        self._next_at: float | None = None
        self._suppressed: Counter[str] = Counter()

    def admit(self, reason: str, now: float) -> dict[str, int] | None:
        """None when this problem is only counted; else the problems held back since the last line."""
        if self._next_at is not None and now < self._next_at:
            self._suppressed[reason] += 1
            return None
        self._next_at = now + self._every_s
        held, self._suppressed = dict(self._suppressed), Counter()
        return held
