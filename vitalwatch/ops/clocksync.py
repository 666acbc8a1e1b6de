"""Whether the system (wall) clock is synchronised, so alerts can carry ``clock_synced``.

A Raspberry Pi 4 has no RTC: at boot the wall clock is whatever fake-hwclock saved, and services
start before NTP steps it (systemd-timesyncd marks the clock synchronised only once it has).
Durations in VitalWatch use the monotonic clock and never depend on this; the flag only tells
receivers whether the UTC stamp on an alert can be trusted.

Two sources, in order:

1. ``timedatectl show -p NTPSynchronized`` (systemd-timedated over D-Bus) when the program exists
   and answers; this is what an engineer sees, so the daemon agrees with them.
2. The kernel's NTP state from ``adjtimex(2)`` (modes=0: read-only), through ctypes. This is the
   same fact timedated reports (systemd's ``ntp_synced()``), without D-Bus or a subprocess, so it
   also works in a container or when the bus is down.

Synchronised means ``STA_UNSYNC`` is clear, or the kernel's maximum error is below 16 s (systemd's
rule: chrony without ``rtcsync`` keeps STA_UNSYNC set on purpose to stop the kernel writing the RTC).
When no source answers the answer is False: an unknown clock is not a trusted one.

Never blocking the loop for long: answers are cached for ``max_age_s``; :meth:`ClockSync.refresh`
runs the subprocess with asyncio and a timeout; :meth:`ClockSync.synchronized` only probes
synchronously (bounded by ``timeout_s``) when the cache is stale, so the daemon should call
``await refresh()`` from a periodic task and ``synchronized()`` when stamping.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import shutil
import subprocess
import time
from collections.abc import Callable

__all__ = [
    "ClockSync",
    "adjtimex_synchronized",
    "parse_timedatectl",
]

# <linux/timex.h>
STA_UNSYNC = 0x0040
# NTP_PHASE_LIMIT in the kernel: maxerror reaches 16 s (in µs) when nothing disciplines the clock.
MAXERROR_UNSYNC_US = 16_000_000


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """``struct timex`` from <sys/timex.h> (glibc; ``long`` is the native word on 32- and 64-bit)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        # The kernel reserves 11 ints of padding; extra room guards against a larger libc layout.
        ("_reserved", ctypes.c_int * 32),
    ]


def adjtimex_synchronized() -> bool | None:
    """The kernel's view (``adjtimex`` with modes=0, which changes nothing); None if unavailable."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    buf = _Timex()
    buf.modes = 0
    if adjtimex(ctypes.byref(buf)) < 0:
        return None
    return not (buf.status & STA_UNSYNC) or buf.maxerror < MAXERROR_UNSYNC_US


def parse_timedatectl(output: str) -> bool | None:
    """``NTPSynchronized=yes|no`` from ``timedatectl show``; None when the property is missing."""
    for line in output.splitlines():
        key, _, value = line.strip().partition("=")
        if key == "NTPSynchronized":
            if value == "yes":
                return True
            if value == "no":
                return False
    return None


class ClockSync:
    """Cached answer to "is the wall clock synchronised?", from timedatectl or adjtimex.

    ``timedatectl`` is the program path (``"auto"``: looked up on PATH; None: never used).
    ``clock`` and ``adjtimex`` are injectable for tests.
    """

    def __init__(
        self,
        *,
        timedatectl: str | None = "auto",
        max_age_s: float = 60.0,
        timeout_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        adjtimex: Callable[[], bool | None] = adjtimex_synchronized,
    ) -> None:
        self._program = shutil.which("timedatectl") if timedatectl == "auto" else timedatectl
        self._max_age_s = max_age_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._adjtimex = adjtimex
        self._value = False
        self._checked_at: float | None = None
        self.source = "none"  # which source gave the cached answer: timedatectl, adjtimex or none

    def _store(self, from_timedatectl: bool | None) -> bool:
        if from_timedatectl is not None:
            self._value, self.source = from_timedatectl, "timedatectl"
        else:
            kernel = self._adjtimex()
            if kernel is not None:
                self._value, self.source = kernel, "adjtimex"
            else:
                self._value, self.source = False, "none"
        self._checked_at = self._clock()
        return self._value

    def _fresh(self) -> bool:
        return self._checked_at is not None and self._clock() - self._checked_at < self._max_age_s

    def synchronized(self) -> bool:
        """The cached answer; probes synchronously (at most ``timeout_s``) only when stale."""
        if self._fresh():
            return self._value
        return self._store(self._run_sync())

    async def refresh(self) -> bool:
        """Probe now without blocking the event loop (subprocess via asyncio, with a timeout)."""
        return self._store(await self._run_async())

    def _run_sync(self) -> bool | None:
        if self._program is None:
            return None
        try:
            done = subprocess.run(
                [self._program, "show", "-p", "NTPSynchronized"],
                capture_output=True,
                text=True,
                timeout=self._timeout_s,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return parse_timedatectl(done.stdout) if done.returncode == 0 else None

    async def _run_async(self) -> bool | None:
        if self._program is None:
            return None
        try:
            proc = await asyncio.create_subprocess_exec(
                self._program,
                "show",
                "-p",
                "NTPSynchronized",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError:
            return None
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancellation that arrives as
            # the child finishes, and the clock loop would then outlive the daemon's shutdown.
            async with asyncio.timeout(self._timeout_s):
                stdout, _ = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return None
        return parse_timedatectl(stdout.decode(errors="replace")) if proc.returncode == 0 else None
