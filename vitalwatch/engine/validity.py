"""Whether a device's value is usable: the one rule for the alarms, the vitals topic and the record.

A device's values are unusable while a status of
:data:`~vitalwatch.drivers.vocabulary.UNRELIABLE_STATUSES` is on for it. A single-purpose
device (role ``spo2`` or ``nibp``) loses everything under any of them. A ``multi`` device
(oximeter and cuff in one box: an Accutorr, an HL7 monitor) is judged per part, because one
part failing says nothing about the other:

- the cuff statuses (``cuff_error``, ``cuff_overpressure``) spoil only its NIBP;
- the device-wide ones (``sensor_fault``, ``calibrating``, ``demo``, ``device_fault``) spoil
  everything;
- the rest (probe off, artifact, searching, ...) spoil only its SpO2 and pulse.

So during a cuff error the oximeter's SpO2 is still SpO2: the engine alarms on it, and the
vitals topic and the session record must call it valid too (:meth:`BedEngine.is_valid
<vitalwatch.engine.session.BedEngine.is_valid>` is what the bed session asks).
"""

from __future__ import annotations

from collections.abc import Set

from vitalwatch.drivers.vocabulary import UNRELIABLE_STATUSES

__all__ = ["CUFF_STATUSES", "DEVICE_WIDE_STATUSES", "NIBP_KINDS", "OXI_KINDS", "part_of", "unreliable"]

OXI_KINDS = ("spo2", "pulse_rate")
NIBP_KINDS = ("nibp_systolic", "nibp_diastolic", "nibp_mean")
CUFF_STATUSES = frozenset({"cuff_error", "cuff_overpressure"})
DEVICE_WIDE_STATUSES = frozenset({"sensor_fault", "calibrating", "demo", "device_fault"})


def part_of(kind: str) -> str:
    """Which part of a device measures ``kind``: ``nibp`` (the cuff) or ``oxi`` (everything else)."""
    return "nibp" if kind.startswith("nibp_") or kind == "cuff_pressure" else "oxi"


def unreliable(role: str, statuses: Set[str], part: str) -> bool:
    """Whether ``part`` (``oxi`` or ``nibp``) of a device of ``role`` is spoilt by ``statuses``."""
    bad = statuses & UNRELIABLE_STATUSES
    if not bad:
        return False
    if role != "multi" or bad & DEVICE_WIDE_STATUSES:
        return True
    return bool(bad & CUFF_STATUSES) if part == "nibp" else bool(bad - CUFF_STATUSES)
