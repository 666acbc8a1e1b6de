"""The device statuses in force for each device, and what happens to them when a connection starts afresh.

Drivers report status *edges* (:class:`~vitalwatch.drivers.events.DeviceStatus`), and a driver
learns a status is over only by comparing a frame with the frames it saw before. So a status
can end unreported whenever the driver instance that remembered it is gone: the port closed
and a new connection got a fresh driver, or the driver raised an exception and was replaced
(the link's ``driver_fault`` status switching on). The fresh driver reports what the device
asserts in its first frames; it can never report "off" for a status it did not see on. Kept
as it was, such a status would stay on for good: a ``sensor_off`` from before a cable pull
keeps that oximeter's SpO2 invalid (no desaturation alarm from it) and ``signal_lost`` on
after the probe is back on the finger.

The rule: at a fresh start every status held for the device (except ``driver_fault``, which
the link itself ends) is *carried over*. It stays in force, so no value counts as valid while
the device may still be asserting it, until the fresh connection settles it:

- it reports the status on: the status is simply on, with no moment off in between;
- it reports it off: it ends at once, as always;
- neither within :data:`STATUS_CONFIRM_S` of its first decoded data (any observation or status
  of the fresh connection): it ends then. Every family VitalWatch decodes carries the statuses
  that make values invalid in every frame or message, so one still asserted comes back with the
  fresh connection's first frames (the checksum-less families trust a frame's bits after 5
  frames in a row, well under a second); a cuff module reports a failed cycle with its result,
  and its next cycle (``measuring``, cuff pressure) long before that result.

A value alone does not end a carried-over status early: devices show numbers under
``artifact``, ``interference``, ``demo`` or ``calibrating``, and one family (the Accutorr) sends
a record's values before its status words, so a value cannot prove the status gone before the
frame's statuses are read. The price is at most :data:`STATUS_CONFIRM_S` more of invalid signal
after a reconnect, against ``signal_lost``'s 30 s.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

__all__ = ["FAULT_STATUS", "STATUS_CONFIRM_S", "DeviceStatuses"]

# How long after a fresh connection's first decoded data a status carried over from before
# ends, unless the connection reported it again.
STATUS_CONFIRM_S = 3.0
# The link's own status for a driver that raised and was restarted: the link reports its end.
FAULT_STATUS = "driver_fault"


class DeviceStatuses:
    """The statuses on per device, with the carried-over ones and their confirmation windows."""

    def __init__(self, devices: Set[str] | Mapping[str, object]) -> None:
        self.on: dict[str, set[str]] = {d: set() for d in devices}
        self._carried: dict[str, set[str]] = {}  # device -> on from before its fresh start, unconfirmed
        self._data_from: dict[str, float] = {}  # device -> its fresh connection's first decoded data

    def report(self, device: str, code: str, active: bool) -> None:
        """The device's driver reported ``code`` on or off (an off, or a report again, settles a
        carried-over status; a ``driver_fault`` switching on means a fresh driver comes next)."""
        if active and code == FAULT_STATUS:
            self.fresh_start(device)
        statuses = self.on.setdefault(device, set())
        if active:
            statuses.add(code)
        else:
            statuses.discard(code)
        carried = self._carried.get(device)
        if carried is not None:
            carried.discard(code)
            if not carried:
                self._settled(device)

    def fresh_start(self, device: str) -> None:
        """A fresh driver will speak for ``device`` (link up, driver restarted): carry its statuses over."""
        carried = self.on.get(device, set()) - {FAULT_STATUS}
        self._data_from.pop(device, None)
        if carried:
            self._carried[device] = carried
        else:
            self._carried.pop(device, None)

    def data(self, device: str, now: float) -> None:
        """``device`` delivered decoded data at ``now``: the first after a fresh start opens its window."""
        if device in self._carried and device not in self._data_from:
            self._data_from[device] = now

    def expire(self, now: float) -> bool:
        """End the carried-over statuses whose window has passed by ``now``; True when any ended."""
        if not self._data_from:
            return False
        ended = False
        for device, since in list(self._data_from.items()):
            if now >= since + STATUS_CONFIRM_S:
                self.on[device] -= self._carried[device]
                self._settled(device)
                ended = True
        return ended

    def at(self, device: str, now: float) -> Set[str]:
        """The statuses of ``device`` in force at ``now`` (what :meth:`expire` would leave), unchanged."""
        statuses = self.on.get(device, set())
        since = self._data_from.get(device)
        if since is not None and now >= since + STATUS_CONFIRM_S:
            return statuses - self._carried[device]
        return statuses

    def carried(self, device: str) -> frozenset[str]:
        """The statuses of ``device`` carried over a fresh start and not settled yet."""
        return frozenset(self._carried.get(device, ()))

    def _settled(self, device: str) -> None:
        self._carried.pop(device, None)
        self._data_from.pop(device, None)
