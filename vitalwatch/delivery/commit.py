"""A record's commit as the senders wait for it: resolved directly by the writer's loop callback.

Why not hand out the asyncio future of the commit: a sender stops waiting now and then (its
wait for a stalled disk timed out, or its task was cancelled when the broker connection
dropped), and awaiting a future inside a cancelled task cancels that future. A shared future
cancelled that way would tell every other reader, and the same sender after a reconnect, that
the record was never committed. ``asyncio.shield`` prevents that, at the price of one more
loop turn between the commit and the send: the shield's own done-callback is scheduled, runs,
and only then schedules the waiting task. Here each wait gets a future of its own that
:meth:`Commit.settle` resolves in the same callback, so the waiting task runs in the very next
loop turn after the commit, and a wait given up costs nobody anything.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator
from typing import Any

__all__ = ["Commit"]


class Commit:
    """Awaitable outcome of one journal record: True committed, None failed (held for retry).

    Settled once, on the loop thread; later news of the same record is ignored. Awaiting it
    after it settled returns at once; awaiting it before suspends on a future of the waiter's
    own. Cancelling a waiter cancels only that waiter's future.
    """

    __slots__ = ("_callbacks", "_exception", "_result", "_settled", "_waiters", "_written", "_written_result")

    def __init__(self) -> None:
        self._settled = False
        self._result: bool | None = None
        self._exception: BaseException | None = None
        self._waiters: list[asyncio.Future[bool | None]] = []
        self._callbacks: list[Callable[[], object]] = []
        # Set on the writer thread the moment the transaction ended, before the loop hears of it.
        self._written = threading.Event()
        self._written_result: bool | None = None

    def done(self) -> bool:
        """Whether the writer has settled the record (committed, failed or given up)."""
        return self._settled

    def written(self, result: bool | None) -> None:
        """(Writer thread) the record's transaction ended with ``result``; the loop's
        :meth:`settle` follows through the loop's queue."""
        self._written_result = result
        self._written.set()

    def wait_written(self, timeout: float) -> bool:
        """Block this thread up to ``timeout`` s until the writer thread is done with the record.

        The event loop may call it for an alert it just submitted: waiting here releases the
        interpreter, so the writer thread's SQLite steps run without waiting for the loop's
        Python between them (vitalwatch.bed). True when the writer is done (or the record settled).
        """
        return self._settled or self._written.wait(timeout)

    def settle_written(self) -> None:
        """(Loop thread) settle now with what the writer thread reported, when it has: the loop
        that waited in :meth:`wait_written` need not wait for the writer's callback too (which
        then finds the record settled and changes nothing)."""
        if not self._settled and self._written.is_set():
            self.settle(self._written_result)

    def add_done_callback(self, fn: Callable[[], object]) -> None:
        """Call ``fn`` when the record settles, after its waiters were woken (so they run first);
        at once if it has settled. A callback cannot cancel anything, so readers may share it."""
        if self._settled:
            fn()
        else:
            self._callbacks.append(fn)

    def settle(self, result: bool | None) -> None:
        """(Loop thread) the record's transaction ended with ``result``; wakes every waiter now."""
        self._finish(result, None)

    def fail(self, exception: BaseException) -> None:
        """(Loop thread) the record's job itself failed."""
        self._finish(None, exception)

    def cancel(self) -> None:
        """(Loop thread) the record's job was cancelled (the writer closed before it ran)."""
        self._finish(None, asyncio.CancelledError())

    def _finish(self, result: bool | None, exception: BaseException | None) -> None:
        if self._settled:
            return
        self._settled, self._result, self._exception = True, result, exception
        for waiter in self._waiters:
            if waiter.done():
                continue
            if exception is None:
                waiter.set_result(result)
            elif isinstance(exception, asyncio.CancelledError):
                waiter.cancel()
            else:
                waiter.set_exception(exception)
        self._waiters.clear()
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn()

    def __await__(self) -> Generator[Any, None, bool | None]:
        if not self._settled:
            waiter: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                return (yield from waiter)
            finally:
                if waiter in self._waiters:  # gave up before the record settled
                    self._waiters.remove(waiter)
        if self._exception is not None:
            raise self._exception
        return self._result
