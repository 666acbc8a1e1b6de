"""Keep one task's failure inside that task: log it, report it, run it again after a backoff.

The daemon runs every device link in one ``asyncio.TaskGroup``, and a TaskGroup cancels all its
tasks when one of them raises: one device's unexpected exception would take every bed offline.
Each device task body therefore runs under :func:`supervise`, which catches what escaped (the
link catches its own faults first; this is the second line), reports it through ``on_crash``
(the link turns it into a problem and the ``driver_fault`` alarm) and starts the body again,
with capped, jittered backoff so a body that fails at once does not spin. Cancellation still
goes through: stopping the daemon stops the task.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from vitalwatch.link.device_link import backoff_delay
from vitalwatch.link.driver_guard import fault_site

__all__ = ["STABLE_AFTER_S", "supervise"]

log = structlog.get_logger("vitalwatch.ops.supervise")

# A body that ran this long before failing counts as having worked: the backoff starts over.
STABLE_AFTER_S = 60.0


async def supervise(
    name: str,
    body: Callable[[], Coroutine[Any, Any, None]],
    on_crash: Callable[[Exception], None],
    *,
    rng: random.Random | None = None,
) -> None:
    """Run ``body()`` until it returns or the task is cancelled; restart it when it raises."""
    loop = asyncio.get_running_loop()
    rng = rng or random.Random()
    attempt = 0
    while True:
        started = loop.time()
        try:
            await body()
            return
        except Exception as exc:  # CancelledError is not an Exception: a stop still stops
            log.error("task.crashed", task=name, error_type=type(exc).__name__, where=fault_site(exc))
            try:
                on_crash(exc)
            except Exception as again:
                log.error("task.crash_unreported", task=name, error_type=type(again).__name__)
        if loop.time() - started >= STABLE_AFTER_S:
            attempt = 0
        await asyncio.sleep(backoff_delay(attempt, rng))
        attempt += 1
