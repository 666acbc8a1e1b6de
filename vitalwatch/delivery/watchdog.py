"""The local "broker unreachable" technical alarm of one bed.

A nurse must learn that alerts are not getting out, and the gateway is the only one who can
tell: the station sees nothing at all. Delivery counts as stuck when the publisher has been
disconnected for ``unreachable_alarm_s``, or while connected when the oldest undelivered alert
made no progress that long (a SIGSTOPped broker keeps TCP open and never acknowledges). The
alarm clears once delivery works again. Timing uses the event loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from prometheus_client import Gauge

from vitalwatch.delivery.lanes import Lanes
from vitalwatch.ops.metrics import OUTBOX_OLDEST_AGE
from vitalwatch.wake_grid import next_multiple, sleep_until

__all__ = ["UnreachableWatchdog"]

log = structlog.get_logger("vitalwatch.delivery.watchdog")


class UnreachableWatchdog:
    """Watches the connection and the oldest undelivered entry of ``lanes``.

    The publisher reports :meth:`connection` changes and :meth:`progress` (an alert
    acknowledged, the active set republished); :meth:`run` checks a few times per
    ``limit_s`` and calls ``on_change(stuck)`` when the verdict flips.
    """

    def __init__(
        self,
        lanes: Lanes,
        *,
        bed: str,
        limit_s: float,
        on_change: Callable[[bool], None],
        oldest_age: Gauge | None = None,
        destination: str = "broker",
    ) -> None:
        """``oldest_age`` and ``destination`` (log events ``{destination}.unreachable``) let another
        sender watch its own lanes the same way (the PCD-04 reporter); defaults: the bed's broker."""
        self._lanes = lanes
        self._bed = bed
        self._age = oldest_age if oldest_age is not None else OUTBOX_OLDEST_AGE.labels(bed)
        self._destination = destination
        self._limit = limit_s
        self._on_change = on_change
        self.connected = False
        self.unreachable = False
        now = asyncio.get_running_loop().time()
        self._down_since: float | None = now  # not connected yet
        self._last_progress = now

    def connection(self, up: bool) -> None:
        """The broker connection came up or went down."""
        now = asyncio.get_running_loop().time()
        if up:
            self._down_since = None
            self._last_progress = now
        elif self.connected:
            self._down_since = self.stuck_since() or now
        self.connected = up

    def progress(self) -> None:
        """The broker acknowledged something the bed was waiting on."""
        self._last_progress = asyncio.get_running_loop().time()

    def stuck_since(self) -> float | None:
        """Since when alerts could not be delivered (None: delivery works)."""
        if not self.connected:
            return self._down_since
        oldest = self._lanes.oldest_queued_at()
        if oldest is None:
            return None
        return max(oldest, self._last_progress)

    async def run(self) -> None:
        """Check until cancelled (also keeps the outbox-age metric current)."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            since = self.stuck_since()
            oldest = self._lanes.oldest_queued_at()
            self._age.set(0.0 if oldest is None else now - oldest)
            stuck = since is not None and now - since >= self._limit
            if stuck != self.unreachable:
                self.unreachable = stuck
                if stuck:
                    log.error(
                        f"{self._destination}.unreachable",
                        seconds=round(now - (since or now), 1),
                        pending=len(self._lanes),
                    )
                else:
                    log.info(f"{self._destination}.reachable", pending=len(self._lanes))
                self._on_change(stuck)
            # On the multiples of the period (vitalwatch.wake_grid): every bed's check, and the
            # device links' and the ticker's wake-ups, in one loop turn.
            await sleep_until(next_multiple(loop.time(), min(0.5, self._limit / 4)))
