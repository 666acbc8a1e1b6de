"""Ctrl-C and systemd's SIGTERM stop a long-running command the same way: by cancelling its task.

Why cancellation and not KeyboardInterrupt: the task's ``finally`` blocks and ``async with``
exits run, so brokers, ports and state are closed as they are on a normal end, whichever signal
came.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

__all__ = ["cancel_on_stop_signals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def cancel_on_stop_signals() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM cancel the current task (CancelledError inside)."""
    task = asyncio.current_task()
    assert task is not None, "only inside a running task"
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, task.cancel)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
