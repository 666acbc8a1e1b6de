"""One session of the record as a de-identified FHIR R4 Bundle (``vitalwatch export --format fhir``).

Why FHIR beside the registry row: a hospital's data platform takes FHIR R4, and the per-minute
vitals, the NIBP readings, the infusion and the alarms are exactly what its resources describe.
The mapping is documented field by field in docs/interop.md; it says the same as the JSONL row
(:mod:`vitalwatch.record.export`), from the same :func:`~vitalwatch.record.export.summarise`.

De-identified like the row: no patient identifier (none is ever received), no bed, no site, no
real date. The Patient resource is an empty pseudonym; every resource id is derived from the
session's random ``record_id``; every time is the *anchor* (a fixed placeholder instant,
:data:`DEFAULT_ANCHOR`) plus the time since the infusion start (since the session start when no
infusion was recorded), so intervals are true and calendar dates are not.

Resources (type ``collection``):

- ``Patient``: no element but its id, labelled pseudonymised.
- ``Observation`` (vital-signs profile): one per minute row and kind for SpO2 (LOINC 59408-5 and
  2708-6), pulse rate (8867-4) and respiratory rate (9279-1), value = the minute's mean of valid
  samples, ``effectivePeriod`` = the minute; one blood-pressure panel (85354-9 with 8480-6 /
  8462-4 components) and one mean arterial pressure (8478-0) per valid NIBP reading. The IEEE
  11073 MDC code is a second coding beside LOINC.
- ``MedicationAdministration``: the infusion (ketamine, RxNorm 6130, intravenous), its period from
  the infusion phase, the dose in mg/kg when the nurse entered it.
- ``DetectedIssue``: one per alarm occurrence, severity from its priority, ``identifiedPeriod``
  from raised to cleared, an acknowledgement as a ``mitigation`` (its time, never who).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from vitalwatch import strict_json
from vitalwatch.engine.vocabulary import CONDITIONS
from vitalwatch.record.export import AlarmLife, SessionData, Summary, summarise

__all__ = ["DEFAULT_ANCHOR", "LOINC", "MDC", "fhir_bundle", "write_bundles"]

# Where the infusion start is placed on the calendar: a placeholder, not a date anything happened.
DEFAULT_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)

LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
SECURITY = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
# VitalWatch's own codes: the alarm conditions of docs/alarms.md and what a nurse did about one.
CONDITION_SYSTEM = "urn:vitalwatch:fhir:alarm-condition"
ACTION_SYSTEM = "urn:vitalwatch:fhir:alarm-action"
PROFILE = "http://hl7.org/fhir/StructureDefinition/"

# Namespace of every resource id: uuid5(namespace, record_id + "/" + local name).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:vitalwatch:fhir-export")

Coding = dict[str, str]

# kind -> (profile, [LOINC codings], MDC coding, unit display, UCUM code)
_MINUTE_KINDS: dict[str, tuple[str, list[Coding], Coding, str, str]] = {
    "spo2": (
        "oxygensat",
        [
            {
                "system": LOINC,
                "code": "59408-5",
                "display": "Oxygen saturation in Arterial blood by Pulse oximetry",
            },
            {"system": LOINC, "code": "2708-6", "display": "Oxygen saturation in Arterial blood"},
        ],
        {"system": MDC, "code": "150456", "display": "MDC_PULS_OXIM_SAT_O2"},
        "%",
        "%",
    ),
    "pulse_rate": (
        "heartrate",
        [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}],
        {"system": MDC, "code": "149530", "display": "MDC_PULS_OXIM_PULS_RATE"},
        "beats/minute",
        "/min",
    ),
    "resp_rate": (
        "resprate",
        [{"system": LOINC, "code": "9279-1", "display": "Respiratory rate"}],
        {"system": MDC, "code": "151562", "display": "MDC_RESP_RATE"},
        "breaths/minute",
        "/min",
    ),
}
_TEXT = {"spo2": "SpO2", "pulse_rate": "Pulse rate", "resp_rate": "Respiratory rate"}
_BP_PANEL: list[Coding] = [
    {"system": LOINC, "code": "85354-9", "display": "Blood pressure panel with all children optional"},
    {"system": MDC, "code": "150020", "display": "MDC_PRESS_BLD_NONINV"},
]
_SYSTOLIC: list[Coding] = [
    {"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"},
    {"system": MDC, "code": "150021", "display": "MDC_PRESS_BLD_NONINV_SYS"},
]
_DIASTOLIC: list[Coding] = [
    {"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"},
    {"system": MDC, "code": "150022", "display": "MDC_PRESS_BLD_NONINV_DIA"},
]
_MEAN: list[Coding] = [
    {"system": LOINC, "code": "8478-0", "display": "Mean blood pressure"},
    {"system": MDC, "code": "150023", "display": "MDC_PRESS_BLD_NONINV_MEAN"},
]
_SEVERITY = {"high": "high", "medium": "moderate", "low": "low"}


class _Builder:
    """Collects the entries of one Bundle; ids and times derived from the record id and anchor."""

    def __init__(self, summary: Summary, anchor: datetime) -> None:
        self.summary = summary
        self.anchor = anchor
        self.entries: list[dict[str, Any]] = []

    def ident(self, local: str) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"{self.summary.record_id}/{local}"))

    def when(self, t_s: float) -> str:
        """Session seconds -> the anchored instant (whole seconds, UTC)."""
        at = self.anchor + timedelta(seconds=round(t_s - self.summary.reference_s))
        return at.strftime("%Y-%m-%dT%H:%M:%SZ")

    def add(self, local: str, resource: dict[str, Any]) -> str:
        """Add a resource; its reference (``urn:uuid:...``) for other resources."""
        rid = self.ident(local)
        self.entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": {**resource, "id": rid}})
        return f"urn:uuid:{rid}"


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def _vital(
    patient: str, profile: str, codings: list[Coding], text: str, effective: dict[str, Any]
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "meta": {"profile": [PROFILE + "vitalsigns", PROFILE + profile]},
        "status": "final",
        "category": [
            {
                "coding": [{"system": CATEGORY, "code": "vital-signs", "display": "Vital Signs"}],
                "text": "Vital Signs",
            }
        ],
        "code": {"coding": codings, "text": text},
        "subject": {"reference": patient},
        **effective,
    }


def _minute_observations(b: _Builder, data: SessionData, patient: str) -> None:
    for row in data.minutes:
        for kind, (profile, loinc, mdc, unit, ucum) in _MINUTE_KINDS.items():
            stats = row.stats.get(kind)
            if not stats or not stats.get("n"):
                continue  # a minute without a valid sample says nothing (gaps are not values)
            effective = {"effectivePeriod": {"start": b.when(row.t_s), "end": b.when(row.t_s + row.span_s)}}
            obs = _vital(patient, profile, [*loinc, mdc], _TEXT[kind], effective)
            obs["valueQuantity"] = _quantity(float(stats["mean"]), unit, ucum)
            b.add(f"minute/{row.t_s:.3f}/{kind}", obs)


def _nibp_observations(b: _Builder, data: SessionData, patient: str) -> None:
    for row in data.nibp:
        if not row.valid or row.systolic is None or row.diastolic is None:
            continue  # an invalid reading is not a blood pressure
        effective = {"effectiveDateTime": b.when(row.t_s)}
        panel = _vital(patient, "bp", _BP_PANEL, "Blood pressure", effective)
        panel["component"] = [
            {
                "code": {"coding": _SYSTOLIC, "text": "Systolic"},
                "valueQuantity": _quantity(row.systolic, "mmHg", "mm[Hg]"),
            },
            {
                "code": {"coding": _DIASTOLIC, "text": "Diastolic"},
                "valueQuantity": _quantity(row.diastolic, "mmHg", "mm[Hg]"),
            },
        ]
        b.add(f"nibp/{row.t_s:.3f}", panel)
        if row.mean is not None:
            mean = _vital(patient, "vitalsigns", _MEAN, "Mean arterial pressure", effective)
            mean["meta"] = {"profile": [PROFILE + "vitalsigns"]}
            mean["valueQuantity"] = _quantity(row.mean, "mmHg", "mm[Hg]")
            b.add(f"nibp/{row.t_s:.3f}/mean", mean)


def _infusion(b: _Builder, patient: str) -> str | None:
    s = b.summary
    spans = [(a, z) for phase, a, z in s.phases if phase == "infusion"]
    if not spans:
        return None
    start, end = spans[0][0], spans[-1][1]
    stopped = s.recovery_s is not None or s.complete
    period: dict[str, str] = {"start": b.when(start)}
    if stopped:
        period["end"] = b.when(end)
    dosage: dict[str, Any] = {
        "route": {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]}
    }
    # The amount given is the total in mg when the nurse's start_infusion carried dose and
    # weight (the session command computes it); otherwise the per-kilogram dose she entered.
    entered: dict[str, Any] = next((d for _, kind, d in s.nurse if kind == "start_infusion"), {})
    total = entered.get("total_mg")
    texts: list[str] = []
    if isinstance(total, int | float):
        dosage["dose"] = _quantity(float(total), "mg", "mg")
        if s.dose_mg_per_kg is not None:
            texts.append(f"{s.dose_mg_per_kg:g} mg/kg")
    elif s.dose_mg_per_kg is not None:
        dosage["dose"] = _quantity(s.dose_mg_per_kg, "mg/kg", "mg/kg")
    if s.planned_minutes is not None:
        texts.append(f"planned infusion length {s.planned_minutes:g} min")
    if texts:
        dosage["text"] = "; ".join(texts)
    resource = {
        "resourceType": "MedicationAdministration",
        "status": "completed" if stopped else "in-progress",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": "6130", "display": "ketamine"}],
            "text": "ketamine",
        },
        "subject": {"reference": patient},
        "effectivePeriod": period,
        "dosage": dosage,
    }
    return b.add("infusion", resource)


def _alarm(b: _Builder, alarm: AlarmLife, patient: str, infusion: str | None) -> None:
    info = CONDITIONS.get(alarm.condition)
    meaning = info.meaning if info is not None else alarm.condition
    period = {"start": b.when(alarm.raised_s)}
    if alarm.cleared_s is not None:
        period["end"] = b.when(alarm.cleared_s)
    resource: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "status": "final",
        "code": {
            "coding": [{"system": CONDITION_SYSTEM, "code": alarm.condition, "display": meaning}],
            "text": alarm.condition,
        },
        "severity": _SEVERITY.get(alarm.priority, "low"),
        "patient": {"reference": patient},
        "identifiedPeriod": period,
        "detail": f"{alarm.priority.upper()} {alarm.category} alarm: {meaning}",
    }
    infusion_s = b.summary.infusion_s
    if infusion is not None and infusion_s is not None and alarm.raised_s >= infusion_s:
        resource["implicated"] = [{"reference": infusion}]
    if alarm.acknowledged_s is not None:
        resource["mitigation"] = [
            {
                "action": {
                    "coding": [
                        {"system": ACTION_SYSTEM, "code": "acknowledged", "display": "Acknowledged by staff"}
                    ]
                },
                "date": b.when(alarm.acknowledged_s),
            }
        ]
    b.add(f"alarm/{alarm.alert_id}", resource)


def fhir_bundle(data: SessionData, summary: Summary, *, anchor: datetime = DEFAULT_ANCHOR) -> dict[str, Any]:
    """The session as a FHIR R4 ``collection`` Bundle (plain JSON data, see the module docstring)."""
    if anchor.tzinfo is None:
        anchor = anchor.replace(tzinfo=UTC)
    b = _Builder(summary, anchor.astimezone(UTC))
    patient = b.add(
        "patient",
        {
            "resourceType": "Patient",
            "meta": {"security": [{"system": SECURITY, "code": "PSEUDED", "display": "pseudonymized"}]},
        },
    )
    _minute_observations(b, data, patient)
    _nibp_observations(b, data, patient)
    infusion = _infusion(b, patient)
    for alarm in summary.alarms:
        _alarm(b, alarm, patient, infusion)
    return {
        "resourceType": "Bundle",
        "id": b.ident("bundle"),
        "meta": {"security": [{"system": SECURITY, "code": "PSEUDED", "display": "pseudonymized"}]},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{_record_uuid(summary.record_id)}"},
        "type": "collection",
        "entry": b.entries,
    }


def _record_uuid(record_id: str) -> str:
    """The record id (32 hex digits) in UUID form; other ids are hashed into one."""
    try:
        return str(uuid.UUID(hex=record_id))
    except ValueError:
        return str(uuid.uuid5(_NAMESPACE, record_id))


def write_bundles(sessions: list[SessionData], *, anchor: datetime = DEFAULT_ANCHOR) -> str:
    """NDJSON: one Bundle per session per line (the FHIR bulk-data file layout)."""
    return "".join(
        strict_json.dumps(
            fhir_bundle(data, summarise(data), anchor=anchor),
            what="export",
            sort_keys=False,
            separators=(",", ":"),
        )
        + "\n"
        for data in sessions
    )
