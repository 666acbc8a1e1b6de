"""While an alert's commit is in flight, the writer thread gets the interpreter within microseconds.

Why: the writer thread needs the GIL between its SQLite calls (the PRAGMA, BEGIN, the inserts,
COMMIT; the fsync itself runs without it), and right after the alert is submitted the event
loop goes on with the rest of the device's bytes (the line's other values, vitals, the session
record, log lines: about 0.5 ms). With CPython's default switch interval of 5 ms, a thread
waiting for the GIL only gets it when the holder blocks, so the commit started only once the
loop went idle, and the alert waited for both, one after the other (docs/performance.md, alarm
latency stages). A short interval while a record is in flight lets the writer's steps in
between, so the fsync overlaps the loop's work; once no record is in flight the interval in
force before is back, and the loop is not interrupted for anything else.

The switch interval belongs to the whole process, so the count of records in flight does too:
every journal writer of the process shares it.
"""

from __future__ import annotations

import sys
import threading

__all__ = ["COMMIT_PRIORITY", "COMMIT_SWITCH_S", "CommitPriority"]

# 20 us: the writer's handful of GIL acquisitions before the fsync then take about 0.1 ms in all
# while the loop is busy, instead of waiting for the loop to go idle. (An in-process probe with
# 0.5 ms of loop work after the submit, outbox on tmpfs, alternating: submit -> commit seen by
# the loop, median 0.74 -> 0.64 ms, p90 4.4 -> 0.8 ms.)
COMMIT_SWITCH_S = 0.00002


class CommitPriority:
    """The records in flight, counted across every writer; the short interval while any is."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._in_flight = 0
        self._saved = sys.getswitchinterval()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def started(self) -> None:
        """A record was submitted: the first one in flight sets the short interval."""
        if self.interval_s <= 0:
            return
        with self._lock:
            if self._in_flight == 0:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(min(self.interval_s, self._saved))
            self._in_flight += 1

    def ended(self) -> None:
        """A record settled (once per :meth:`started`): the last one puts the interval back."""
        if self.interval_s <= 0:
            return
        with self._lock:
            if self._in_flight == 0:
                return
            self._in_flight -= 1
            if self._in_flight == 0:
                sys.setswitchinterval(self._saved)


COMMIT_PRIORITY = CommitPriority(COMMIT_SWITCH_S)  # the process's one switch interval, so one count
