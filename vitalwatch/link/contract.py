"""What the bed session and the daemon need from any device link, serial or network.

A serial :class:`~vitalwatch.link.device_link.DeviceLink` and an MLLP listener route
(:class:`~vitalwatch.link.mllp_listener.MllpRoute`) both satisfy it, so a bed does not care
whether its monitor is on a USB adapter or connects over the clinic network.
"""

from __future__ import annotations

from typing import Protocol

from vitalwatch.config import DeviceConfig
from vitalwatch.drivers import Driver

__all__ = ["Link"]


class Link(Protocol):
    """One configured device's link: run it, ask it its state, reach its driver for commands."""

    @property
    def config(self) -> DeviceConfig: ...

    @property
    def driver(self) -> Driver | None: ...

    @property
    def connected(self) -> bool:
        """Whether the device is reachable now (port open; for a network sender: it is sending)."""
        ...

    @property
    def readings(self) -> int: ...

    @property
    def decode_problems(self) -> int: ...

    @property
    def driver_faults(self) -> int:
        """Faults caught in this device's driver or link since start (for metrics)."""
        ...

    def poke(self) -> None:
        """Bytes a command queued in the driver should go out now."""
        ...

    async def run(self) -> None:
        """Run until cancelled."""
        ...

    def task_crashed(self, exc: Exception) -> None:
        """The daemon's supervisor caught ``exc`` escaping :meth:`run`: report it like any fault."""
        ...
