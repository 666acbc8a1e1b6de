"""The closed vocabulary of events every driver produces.

Drivers turn bytes into these three frozen dataclasses and nothing else; the bed session
dispatches on them with ``match``. Keeping the set small and closed is what lets one alarm
engine serve every device family (model: h11 ``_events.py``).

- :class:`Observation`: something the device measured (or said it could not measure:
  ``value is None``). Kinds, units and MDC codes come from :mod:`vitalwatch.drivers.vocabulary`.
- :class:`DeviceStatus`: a device condition that switched on (``active=True``) or off
  (``active=False``). Drivers report *changes* only, so the receiver keeps the current set.
- :class:`DecodeProblem`: bytes that could not be decoded. It carries the reason and the
  length, never the bytes, so a log line can never leak what the device printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["DecodeProblem", "DeviceStatus", "Event", "Observation", "event_to_json_dict"]


@dataclass(frozen=True, slots=True)
class Observation:
    """A measured value; ``value is None`` when the device says it has none."""

    kind: str
    value: float | None
    unit: str
    mdc: int | None = None
    device_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A device condition turned on or off (sensor off, searching, cuff error, measuring ...)."""

    code: str
    active: bool = True
    detail: Mapping[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DecodeProblem:
    """Bytes skipped because they could not be decoded; never carries the bytes themselves."""

    reason: str
    length: int


Event = Observation | DeviceStatus | DecodeProblem


def event_to_json_dict(event: Event) -> dict[str, Any]:
    """Render an event as the documented ``vitalwatch decode`` JSON object."""
    match event:
        case Observation(kind=kind, value=value, unit=unit, mdc=mdc, device_time=device_time):
            return {
                "event": "observation",
                "kind": kind,
                "value": value,
                "unit": unit,
                "mdc": mdc,
                "device_time": device_time.isoformat() if device_time is not None else None,
            }
        case DeviceStatus(code=code, active=active, detail=detail):
            rendered: dict[str, Any] = {"event": "status", "code": code, "active": active}
            for key, val in detail.items():
                rendered.setdefault(key, val)
            return rendered
        case DecodeProblem(reason=reason, length=length):
            return {"event": "problem", "reason": reason, "length": length}
