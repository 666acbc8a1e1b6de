"""IHE PCD-04 "Report Alert": one alert transition as an HL7 v2.6 ORU^R40 message (pure, no I/O).

The input is the alert payload the MQTT outbox journals (``vitalwatch.alert/1``,
:func:`vitalwatch.delivery.payloads.alert_payload`), so both destinations say the same thing.
Layout (docs/pcd04.md has the field-by-field table and the public sources)::

    MSH  ORU^R40^ORU_R40, v2.6, AL/NE, UTF-8, MSH-21 = the IHE PCD ACM profile id
    PID  empty unless the clinic mapped the bed to an identifier (PID-3)
    PV1  PV1-3 = point of care ^^ bed ^ facility
    OBR  OBR-3 = update counter ^ alert id [^ EUI-64 ^ EUI-64]; OBR-4 = MDC_EVT_ALARM;
         OBR-7 onset, OBR-8 end (last report only); OBR-29 = the alert's first report (counter 0)
    OBX 1.0.0.0.1  MDC_EVT_ALARM: the event (MDC_EVT_HI / _LO / _ALARM, our condition as the local
                   alternate code, the nurse's text as original text); OBX-8 = abnormality~priority~kind
    OBX 1.0.0.0.2  the parameter (MDC code, value, unit, limit as OBX-7) or, without one, the alert source
    OBX 1.0.0.0.3  MDC_ATTR_EVENT_PHASE              start | continue | escalate | update | end
    OBX 1.0.0.0.4  MDC_ATTR_ALARM_STATE              active | inactive
    OBX 1.0.0.0.5  MDC_ATTR_ALARM_INACTIVATION_STATE enabled | alert-acknowledged
    OBX 1.0.0.0.6  MDC_ATTR_ALARM_PRIORITY           PH | PM | PL | PN
    OBX 1.0.0.0.7  MDC_ATTR_ALERT_TYPE               SP | ST | SA

Each message names its alert by ``(alert id, update counter)``: the counter is 0 for the alert's
first report and +1 for each later transition, so an alarm manager orders the reports of one
alert and drops a resent copy; MSH-10 is ``{alert id}.{counter}``, the same on every resend.
No patient identifier is sent unless the configuration maps one for the bed.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from vitalwatch.config import AlertReporterConfig
from vitalwatch.drivers.hl7 import Delimiters, escape

__all__ = [
    "ALERT_TYPE",
    "ATTRIBUTES",
    "EVENT_CODES",
    "PRIORITY",
    "control_id",
    "facets",
    "hl7_time",
    "oru_r40",
]

_D = Delimiters()

# IEEE 11073-10101 codes (code, reference id) used in the message.
MDC_EVT_ALARM = ("196616", "MDC_EVT_ALARM")
EVENT_CODES = {
    "H": ("196648", "MDC_EVT_HI"),  # above a limit
    "L": ("196670", "MDC_EVT_LO"),  # below a limit
    "A": MDC_EVT_ALARM,  # any other alarm (technical, advisory, not a limit)
}
MDC_ATTR_ALERT_SOURCE = ("68480", "MDC_ATTR_ALERT_SOURCE")
ATTRIBUTES = {
    "phase": ("68481", "MDC_ATTR_EVENT_PHASE"),
    "state": ("68482", "MDC_ATTR_ALARM_STATE"),
    "inactivation": ("68483", "MDC_ATTR_ALARM_INACTIVATION_STATE"),
    "priority": ("68484", "MDC_ATTR_ALARM_PRIORITY"),
    "kind": ("68485", "MDC_ATTR_ALERT_TYPE"),
}
# The parameters an alert can name (payload ``parameter.mdc``) and the units of their values.
_PARAMETER_NAMES = {
    150456: "MDC_PULS_OXIM_SAT_O2",
    149530: "MDC_PULS_OXIM_PULS_RATE",
    150021: "MDC_PRESS_BLD_NONINV_SYS",
}
_UNITS = {
    "%": ("262688", "MDC_DIM_PERCENT"),
    "/min": ("264864", "MDC_DIM_BEAT_PER_MIN"),
    "mm[Hg]": ("266016", "MDC_DIM_MMHG"),
}

PRIORITY = {"high": "PH", "medium": "PM", "low": "PL", "info": "PN"}
ALERT_TYPE = {"physiological": "SP", "technical": "ST", "advisory": "SA"}
# Which side of its limit a threshold condition is on (OBX-8 abnormality, MDC_EVT_HI/LO, OBX-7).
_DIRECTION = {
    "spo2_low": "L",
    "spo2_below_baseline": "L",
    "pulse_low": "L",
    "nibp_low": "L",
    "pulse_high": "H",
    "pulse_above_baseline": "H",
    "nibp_high": "H",
    "nibp_rise_from_baseline": "H",
}


def facets(state: str, acknowledged: bool) -> tuple[str, str, str]:
    """(event phase, alarm state, inactivation state) of one VitalWatch transition state."""
    match state:
        case "raised":
            return "start", "active", "enabled"
        case "renotified":
            return "continue", "active", "enabled"
        case "escalated":
            return "escalate", "active", "alert-acknowledged" if acknowledged else "enabled"
        case "acknowledged":
            return "update", "active", "alert-acknowledged"
        case "cleared":
            return "end", "inactive", "alert-acknowledged" if acknowledged else "enabled"
    raise ValueError(f"unknown alert state {state!r}")


def control_id(alert_id: str, counter: int) -> str:
    """MSH-10: one per (alert, counter), so a resent message carries the same id."""
    return f"{alert_id}.{counter}"


def hl7_time(when: datetime) -> str:
    """HL7 DTM in UTC with milliseconds: ``YYYYMMDDHHMMSS.fff+0000``."""
    utc = when.astimezone(UTC)
    return utc.strftime("%Y%m%d%H%M%S.") + f"{utc.microsecond // 1000:03d}+0000"


def _payload_time(text: object) -> str:
    if not isinstance(text, str) or not text:
        return ""
    return hl7_time(datetime.fromisoformat(text))


def _number(value: object) -> str:
    """An NM value: up to 10 significant digits, no exponent for clinical magnitudes; "" if none."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return ""
    text = f"{float(value):.10g}"
    return text if "e" not in text else f"{float(value):f}".rstrip("0").rstrip(".")


def _segment(*fields: str) -> str:
    """One segment, trailing empty fields left out (an empty segment keeps one ``|``: ``PID|``,
    which every parser reads, where a bare ``PID`` trips some)."""
    items = list(fields)
    while len(items) > 2 and items[-1] == "":
        items.pop()
    return _D.field.join(items)


def _obx(
    set_id: int,
    value_type: str,
    identifier: tuple[str, str],
    value: str,
    *,
    units: str = "",
    reference_range: str = "",
    flags: str = "",
    observed: str = "",
) -> str:
    code, name = identifier
    return _segment(
        "OBX",
        str(set_id),
        value_type if value else "",
        f"{code}^{name}^MDC",
        f"1.0.0.0.{set_id}",
        value,
        units,
        reference_range,
        flags,
        "",
        "",
        "F",
        "",
        "",
        observed,
    )


def oru_r40(
    payload: dict[str, Any], *, counter: int, cfg: AlertReporterConfig, site: str, now: datetime
) -> str:
    """The ORU^R40 for one alert payload; segments end with CR (docs/pcd04.md)."""
    alert_id = str(payload["alert_id"])
    bed = str(payload["bed"])
    condition = str(payload.get("condition") or "")
    acknowledged = payload.get("acknowledged_by") is not None
    phase, alarm_state, inactivation = facets(str(payload["state"]), acknowledged)
    priority = PRIORITY[str(payload["priority"])]
    kind = ALERT_TYPE[str(payload["category"])]
    direction = _DIRECTION.get(condition, "A")
    event_time = _payload_time(payload.get("event_utc"))
    eui = f"^{cfg.eui64}^EUI-64" if cfg.eui64 else ""
    sub_eui = f"&{cfg.eui64}&EUI-64" if cfg.eui64 else ""
    esc_alert = escape(alert_id, _D)
    msh = _segment(
        "MSH",
        _D.encoding_characters,
        cfg.sending_application + eui,
        cfg.sending_facility or escape(site, _D),
        cfg.receiving_application,
        cfg.receiving_facility,
        hl7_time(now),
        "",
        "ORU^R40^ORU_R40",
        escape(control_id(alert_id, counter), _D),
        cfg.processing_id,
        "2.6",
        "",
        "",
        "AL",
        "NE",
        "",
        "UNICODE UTF-8",
        "",
        "",
        cfg.profile_id,
    )
    patient_id = cfg.patient_ids.get(bed)
    pid = _segment("PID", "", "", patient_id or "")
    pv1 = _segment(
        "PV1", "", "O", f"{cfg.point_of_care or escape(site, _D)}^^{escape(bed, _D)}^{cfg.facility}"
    )
    obr = _segment(
        "OBR",
        "1",
        "",
        f"{counter}^{esc_alert}{eui}",
        "{}^{}^MDC".format(*MDC_EVT_ALARM),
        "",
        "",
        _payload_time(payload.get("onset_utc")),
        event_time if phase == "end" else "",
        *([""] * 20),
        f"^0&{esc_alert}{sub_eui}" if counter > 0 else "",
    )
    event_code, event_name = EVENT_CODES[direction]
    text = escape(str(payload.get("message") or condition), _D)
    segments = [
        msh,
        pid,
        pv1,
        obr,
        _obx(
            1,
            "CWE",
            MDC_EVT_ALARM,
            f"{event_code}^{event_name}^MDC^{escape(condition, _D)}^^L^^^{text}",
            flags=f"{direction}~{priority}~{kind}",
            observed=event_time,
        ),
        _source(payload, direction, event_time),
    ]
    for set_id, (attribute, value) in enumerate(
        (
            ("phase", phase),
            ("state", alarm_state),
            ("inactivation", inactivation),
            ("priority", priority),
            ("kind", kind),
        ),
        start=3,
    ):
        segments.append(_obx(set_id, "ST", ATTRIBUTES[attribute], value))
    return "\r".join(segments) + "\r"


def _source(payload: dict[str, Any], direction: str, event_time: str) -> str:
    """OBX 2: the parameter with its value, unit and limit, or the alert's source without one."""
    parameter = payload.get("parameter")
    mdc = parameter.get("mdc") if isinstance(parameter, dict) else None
    if not isinstance(mdc, int):
        source = payload.get("device") or payload.get("bed") or ""
        return _obx(2, "ST", MDC_ATTR_ALERT_SOURCE, escape(str(source), _D), observed=event_time)
    unit = str(payload.get("unit") or "")
    unit_code = _UNITS.get(unit)
    units = (
        f"{unit_code[0]}^{unit_code[1]}^MDC^{escape(unit, _D)}^{escape(unit, _D)}^UCUM"
        if unit_code
        else (f"^^^{escape(unit, _D)}^{escape(unit, _D)}^UCUM" if unit else "")
    )
    limit = _number(payload.get("limit"))
    reference_range = {"L": f">{limit}", "H": f"<{limit}"}.get(direction, "") if limit else ""
    value = _number(payload.get("value"))
    return _obx(
        2,
        "NM",
        (str(mdc), _PARAMETER_NAMES.get(mdc, "")),
        value,
        units=units if value else "",
        reference_range=reference_range,
        observed=event_time,
    )
