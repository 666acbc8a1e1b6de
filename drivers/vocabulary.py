"""Observation kinds, units (UCUM), IEEE 11073 MDC codes and status codes shared by all drivers.

One table, so that a Masimo line, a Nonin frame and an HL7 OBX all become the same
``Observation(kind="spo2", unit="%", mdc=150456)`` and the alarm engine never needs to
know which family a reading came from.

Status codes (``DeviceStatus.code``), the documented vocabulary:

======================  =================================================================
code                    meaning
======================  =================================================================
sensor_off              sensor present but not on the patient (finger out)
no_sensor               no sensor connected
sensor_fault            defective, unrecognised, incompatible or expired sensor/cable
searching               pulse search: the device is acquiring, values not yet valid
artifact                motion artifact / out of track / interference
low_perfusion           low perfusion; values shown but may be less accurate
low_signal_quality      low signal quality index; values questionable
interference            optical or electrical interference
ambient_light           too much ambient light
calibrating             sensor calibrating
low_battery             device battery low
device_alarm            the device's own alarm is sounding (detail says which)
alarm_silenced          the device's own alarm audio is silenced
measuring               NIBP cuff cycle in progress
cuff_error              NIBP measurement failed (detail carries the device error code)
cuff_overpressure       NIBP cuff over-pressure
demo                    the device is in demo mode: values are not from a patient
device_fault            the device reports an internal fault (self test, RAM/ROM)
======================  =================================================================

:data:`UNRELIABLE_STATUSES` are the codes under which a physiological value from the same
device must not raise a physiological alarm (they raise technical ones instead).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "KINDS",
    "STATUS_CODES",
    "UNRELIABLE_STATUSES",
    "Kind",
    "kind_for_mdc",
]


@dataclass(frozen=True, slots=True)
class Kind:
    """One observation kind: its name, UCUM unit and MDC code (None when 11073 has none)."""

    name: str
    unit: str
    mdc: int | None


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("spo2", "%", 150456),  # MDC_PULS_OXIM_SAT_O2
        Kind("pulse_rate", "/min", 149530),  # MDC_PULS_OXIM_PULS_RATE
        Kind("perfusion_index", "%", 150488),  # MDC_BLD_PERF_INDEX
        Kind("nibp_systolic", "mm[Hg]", 150021),  # MDC_PRESS_BLD_NONINV_SYS
        Kind("nibp_diastolic", "mm[Hg]", 150022),  # MDC_PRESS_BLD_NONINV_DIA
        Kind("nibp_mean", "mm[Hg]", 150023),  # MDC_PRESS_BLD_NONINV_MEAN
        Kind("nibp_pulse_rate", "/min", 149546),  # MDC_PULS_RATE_NON_INV
        Kind("cuff_pressure", "mm[Hg]", None),  # live cuff pressure while inflating
        Kind("pvi", "%", None),  # Masimo pleth variability index
        Kind("sphb", "g/dL", None),  # Masimo total haemoglobin
        Kind("spco", "%", None),  # Masimo carboxyhaemoglobin
        Kind("spmet", "%", None),  # Masimo methaemoglobin
        Kind("heart_rate", "/min", 147842),  # MDC_ECG_HEART_RATE
        Kind("resp_rate", "/min", 151562),  # MDC_RESP_RATE
        Kind("temperature", "Cel", 150344),  # MDC_TEMP
    )
}

# The cuff ("CUFF") family of NIBP codes is used by some monitors instead of "NONINV".
_MDC_ALIASES: dict[int, str] = {
    150301: "nibp_systolic",  # MDC_PRESS_CUFF_SYS
    150302: "nibp_diastolic",  # MDC_PRESS_CUFF_DIA
    150303: "nibp_mean",  # MDC_PRESS_CUFF_MEAN
}

_BY_MDC: dict[int, str] = {k.mdc: k.name for k in KINDS.values() if k.mdc is not None} | _MDC_ALIASES

STATUS_CODES: frozenset[str] = frozenset(
    {
        "sensor_off",
        "no_sensor",
        "sensor_fault",
        "searching",
        "artifact",
        "low_perfusion",
        "low_signal_quality",
        "interference",
        "ambient_light",
        "calibrating",
        "low_battery",
        "device_alarm",
        "alarm_silenced",
        "measuring",
        "cuff_error",
        "cuff_overpressure",
        "demo",
        "device_fault",
    }
)

UNRELIABLE_STATUSES: frozenset[str] = frozenset(
    {
        "sensor_off",
        "no_sensor",
        "sensor_fault",
        "searching",
        "artifact",
        "interference",
        "ambient_light",
        "calibrating",
        "cuff_error",
        "cuff_overpressure",
        "demo",
        "device_fault",
    }
)


def kind_for_mdc(code: int) -> str | None:
    """The observation kind for a numeric MDC code, accepting both NIBP code families."""
    return _BY_MDC.get(code)
