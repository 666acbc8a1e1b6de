"""Device roles: which vital signs a bed's device is trusted to measure.

Every configured device has a role: ``spo2`` (a pulse oximeter: SpO2 and pulse rate), ``nibp``
(a blood-pressure monitor: host-driven, silent between measurements) or ``multi`` (a monitor
that measures both, such as an HL7 patient monitor or an Accutorr). The configuration's
default per driver family, the engine's routing of observations, the NIBP request dispatch and
the replay all ask here, so a role cannot mean one thing live and another in a replay.
"""

from __future__ import annotations

__all__ = ["DEFAULT_ROLES", "ROLES", "measures_nibp", "measures_oximetry", "role_for_driver", "streams"]

ROLES: tuple[str, ...] = ("spo2", "nibp", "multi")
# Driver families whose devices are not pulse oximeters (any other family defaults to spo2).
DEFAULT_ROLES: dict[str, str] = {"suntech": "nibp", "accutorr": "multi", "hl7": "multi"}


def role_for_driver(driver: str) -> str:
    """The default role of a driver family's device (a configuration may set another)."""
    return DEFAULT_ROLES.get(driver, "spo2")


def measures_nibp(role: str) -> bool:
    """A device of ``role`` takes blood pressures (and can be asked to start one)."""
    return role in ("nibp", "multi")


def measures_oximetry(role: str) -> bool:
    """A device of ``role`` reports SpO2 and pulse rate."""
    return role in ("spo2", "multi")


def streams(role: str) -> bool:
    """A device of ``role`` sends values continuously, so its silence is an alarm (an NIBP-only
    module is host-driven and legitimately silent between measurements)."""
    return role != "nibp"
