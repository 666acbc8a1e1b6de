"""The systemd notify protocol (``sd_notify``): readiness, watchdog pings and status, with no package.

The protocol is one datagram of newline-separated ``KEY=VALUE`` assignments sent over an
``AF_UNIX``/``SOCK_DGRAM`` socket whose address systemd passes in ``$NOTIFY_SOCKET``. An address
starting with ``@`` names a Linux abstract socket (the ``@`` becomes a NUL byte). systemd documents
the protocol as stable and ships an MIT-0 reference implementation in ``sd_notify(3)``; this module
follows it rather than the unmaintained ``sdnotify`` package.

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op that returns ``False``, so the daemon
runs the same from a terminal, in tests, and under ``Type=notify``.

Why the daemon must be careful with ``WATCHDOG=1``: systemd restarts the service when pings stop,
which is the whole point. Ping only after positive health checks (see :mod:`vitalwatch.ops.health`),
never from a timer that keeps running while the work is stuck.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = [
    "Notifier",
    "notify",
    "watchdog_interval",
]

# A status line is shown by `systemctl status`; keep it to one short line (datagram size limits
# are generous, but a long line is useless there and might carry something it should not).
MAX_STATUS_CHARS = 200


def _address(raw: str) -> str | bytes | None:
    """The socket address for ``$NOTIFY_SOCKET``: a path, an abstract name, or None when unusable."""
    if raw.startswith("@"):
        # Linux abstract namespace: leading NUL instead of '@'; bytes keeps any trailing NULs exact.
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    # systemd also allows "vsock:" addresses (for VMs); a Pi service never gets one, so ignore it.
    return None


class Notifier:
    """A sender bound to one ``$NOTIFY_SOCKET`` value; ``enabled`` is False outside systemd.

    Reads the environment once, at construction, so a test can build one with its own mapping.
    Errors while sending are swallowed and reported by the return value: a failed notification
    must never crash the alarm daemon (systemd will notice the missing ping by itself).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _address(env.get("NOTIFY_SOCKET", ""))

    @property
    def enabled(self) -> bool:
        """True when systemd asked for notifications."""
        return self._address is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; True when the datagram was sent.

        Keys are upper-cased (``ready=1`` becomes ``READY=1``). Values must not contain a newline,
        which would split the assignment; a ValueError says so (misuse of the API, not a runtime
        condition).
        """
        if self._address is None or not fields:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value)
            if "\n" in text:
                raise ValueError(f"sd_notify value for {key} contains a newline")
            lines.append(f"{key.upper()}={text}")
        message = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block the event loop: a receiver whose queue is full (a stuck reader)
                # would otherwise stall the alarm daemon inside sendall().
                sock.setblocking(False)
                sock.connect(self._address)
                sock.sendall(message)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: startup is complete (config valid, database open, device tasks running)."""
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=_status_line(status))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the loop and every device task were just found healthy."""
        return self.send(WATCHDOG=1)

    def status(self, text: str) -> bool:
        """``STATUS=...``: a one-line, free-form state shown by ``systemctl status``."""
        return self.send(STATUS=_status_line(text))

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun (SIGTERM), so the exit is not a crash."""
        return self.send(STOPPING=1)


def _status_line(text: str) -> str:
    """One line, bounded: newlines folded to spaces, truncated to MAX_STATUS_CHARS."""
    flat = " ".join(text.split())
    return flat[:MAX_STATUS_CHARS]


def notify(**fields: str | int) -> bool:
    """Send ``KEY=VALUE`` assignments using the current environment (a no-op outside systemd)."""
    return Notifier().send(**fields)


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings: half of ``WatchdogSec=``, or None when no watchdog applies.

    systemd sets ``WATCHDOG_USEC`` (the timeout) and ``WATCHDOG_PID`` (the process meant to ping);
    when the PID is set and is not ours, the watchdog belongs to another process (for example a
    forked helper inherited the environment) and we must not ping. Half the timeout is what
    ``sd_watchdog_enabled(3)`` recommends, leaving room for one late ping.
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = env.get("WATCHDOG_PID", "")
    if raw_pid:
        try:
            pid = int(raw_pid)
        except ValueError:
            return None
        if pid != os.getpid():
            return None
    return usec / 1_000_000 / 2
