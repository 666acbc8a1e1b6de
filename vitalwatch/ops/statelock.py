"""One daemon per state directory: an advisory lock held for the daemon's whole life.

Why: two daemons on one state directory both "work" and harm each other. They share the alert
journal (the second restores the first's alarms later as phantoms), they fight over one MQTT
client id per bed (the broker drops the older connection, which then reconnects and drops the
newer: each bed's last will says ``offline`` again and again) and the second deletes the first's
status socket. The second must refuse to start, at once, naming who holds the directory.

``fcntl.flock`` on ``{state.directory}/vitalwatch.lock``: the kernel releases the lock when the
process dies, SIGKILL included, so a crash never leaves a stale lock that blocks a restart (a
pid file alone would). The file holds the holder's pid for the error message only; the lock, not
the pid, is the truth.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from vitalwatch.errors import StartupError

__all__ = ["LOCK_NAME", "StateDirectoryLocked", "StateLock"]

LOCK_NAME = "vitalwatch.lock"


class StateDirectoryLocked(StartupError):
    """Another live process holds the state directory; ``holder_pid`` is its pid when known."""

    def __init__(self, directory: Path, holder_pid: int | None) -> None:
        self.directory = directory
        self.holder_pid = holder_pid
        who = f"process {holder_pid}" if holder_pid is not None else "another process"
        super().__init__(
            f"state directory {directory} is in use by {who} (another vitalwatch daemon?); "
            "refusing to start a second one on it"
        )


class StateLock:
    """Context manager: hold ``{directory}/vitalwatch.lock`` exclusively, or raise at once."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; :class:`StateDirectoryLocked` when someone holds it.

        False when the lock file cannot be created at all (a read-only or full state directory):
        the daemon then runs degraded, as it does for the journal, rather than not monitoring.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StateDirectoryLocked(self.path.parent, holder) from None
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):  # the pid is for the message only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock back (the pid is left in the file; it means nothing without the lock)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
