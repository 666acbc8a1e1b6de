"""`vitalwatch export --format fhir`: one de-identified FHIR R4 Bundle per session.

Checked three ways: against independent FHIR models (fhir.resources, R4B: the R4 technical
correction, whose Bundle, Observation, Patient, MedicationAdministration and DetectedIssue have the
elements used here unchanged), field by field for the documented mapping, and against a golden
Bundle of the scripted example session (tests/golden/fhir/; not tests/vectors/, which holds only
public device data). Regenerate the golden after an
intended mapping change with ``VITALWATCH_REGEN_GOLDEN=1``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.observation import Observation as FhirObservation
from pydantic import ValidationError

from tests.fakes.example_session import record_example_session
from tests.test_export import run_export
from vitalwatch.drivers.events import Observation
from vitalwatch.engine.outputs import PhaseChanged
from vitalwatch.record.export import SessionData, last_session_of_bed, load_session, summarise
from vitalwatch.record.fhir import DEFAULT_ANCHOR, LOINC, MDC, fhir_bundle
from vitalwatch.record.sessionlog import SessionDb, SessionLog

START = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
GOLDEN = Path(__file__).parent / "golden" / "fhir" / "example-session-bundle.json"
RECORD_ID = "5e55a0f1c0de4d00a0000000000000b1"  # fixed for the golden (the record's is random)


@pytest.fixture
def record(tmp_path: Path) -> Path:
    """The scripted example session on 2025-03-04, and a short one without infusion on 2025-03-05."""
    path = tmp_path / "sessions.sqlite3"
    db = SessionDb(path)
    record_example_session(SessionLog(db, "chair-2", wall=lambda t: START + timedelta(seconds=t - 1000.0)))
    short = SessionLog(db, "chair-1", wall=lambda t: START + timedelta(days=1, seconds=t))
    for t in range(120):
        short.observation("ox", Observation("spo2", 98.0, "%"), float(t), True)
    short.output(PhaseChanged(t=120.0, bed="chair-1", phase="ended", previous="baseline"))
    db.close()
    return path


def example(record: Path) -> SessionData:
    conn = sqlite3.connect(record)
    conn.row_factory = sqlite3.Row
    try:
        sid = last_session_of_bed(conn, "chair-2")
        assert sid is not None
        data = load_session(conn, sid)
    finally:
        conn.close()
    data.info["record_id"] = RECORD_ID
    return data


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def codes(resource: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in resource["code"]["coding"]]


def golden_text(bundle: dict[str, Any]) -> str:
    """The Bundle as JSON with one entry per line (reviewable diffs), keys sorted."""
    head = json.dumps({k: v for k, v in bundle.items() if k != "entry"}, sort_keys=True)
    entries = ",\n".join(json.dumps(e, sort_keys=True) for e in bundle["entry"])
    return head[:-1] + ', "entry": [\n' + entries + "\n]}\n"


def test_the_example_session_equals_the_golden_bundle(record: Path) -> None:
    data = example(record)
    text = golden_text(fhir_bundle(data, summarise(data)))
    if os.environ.get("VITALWATCH_REGEN_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "the FHIR mapping changed: review, then regenerate the golden"
    Bundle.model_validate_json(GOLDEN.read_text())  # the golden is a valid Bundle itself


def test_the_bundle_is_valid_for_independent_fhir_models(record: Path) -> None:
    data = example(record)
    bundle = fhir_bundle(data, summarise(data))
    model = Bundle.model_validate(bundle)
    types = Counter(type(e.resource).__name__ for e in model.entry or [])
    assert types == Counter(
        {"Observation": types["Observation"], "Patient": 1, "MedicationAdministration": 1, "DetectedIssue": 3}
    )
    assert types["Observation"] > 200
    for entry in model.entry or []:
        assert entry.fullUrl == f"urn:uuid:{entry.resource.id}"


def test_the_validator_can_refuse(record: Path) -> None:
    """The check above means something: structure, cardinality, types and formats are enforced."""
    data = example(record)
    bundle = fhir_bundle(data, summarise(data))
    obs = resources(bundle, "Observation")[0]
    for broken in (
        {**obs, "valueString": "97"},  # two value[x]
        {**obs, "effectivePeriod": {"start": "yesterday"}},  # not a dateTime
        {k: v for k, v in obs.items() if k != "status"},  # status is 1..1
        {**obs, "patient": obs["subject"]},  # no such element on Observation
    ):
        with pytest.raises(ValidationError):
            FhirObservation.model_validate(broken)
    with pytest.raises(ValidationError):
        MedicationAdministration.model_validate(
            {**resources(bundle, "MedicationAdministration")[0], "dose": 1}
        )


# The models do not check required value-set bindings, so the codes used are checked here against
# the R4 value sets (observation-status, detectedissue-severity, medication-admin-status, bundle-type).
REQUIRED_CODES = {
    ("Observation", "status"): {"registered", "preliminary", "final", "amended", "corrected", "cancelled",
                                "entered-in-error", "unknown"},
    ("DetectedIssue", "status"): {"registered", "preliminary", "final", "amended", "corrected", "cancelled",
                                  "entered-in-error", "unknown"},
    ("DetectedIssue", "severity"): {"high", "moderate", "low"},
    ("MedicationAdministration", "status"): {"in-progress", "not-done", "on-hold", "completed",
                                             "entered-in-error", "stopped", "unknown"},
}  # fmt: skip


def test_codes_with_required_bindings_are_from_their_value_sets(record: Path) -> None:
    data = example(record)
    bundle = fhir_bundle(data, summarise(data))
    assert bundle["type"] == "collection"
    checked = 0
    for entry in bundle["entry"]:
        res = entry["resource"]
        for (kind, element), allowed in REQUIRED_CODES.items():
            if res["resourceType"] == kind:
                assert res[element] in allowed, (kind, element, res[element])
                checked += 1
    assert checked > 200


def test_vital_signs_carry_loinc_and_mdc_codes_and_values(record: Path) -> None:
    data = example(record)
    bundle = fhir_bundle(data, summarise(data))
    by_code: dict[str, list[dict[str, Any]]] = {}
    for obs in resources(bundle, "Observation"):
        assert obs["category"][0]["coding"][0]["code"] == "vital-signs"
        systems = [s for s, _ in codes(obs)]
        assert systems[0] == LOINC and MDC in systems  # MDC beside LOINC, LOINC first
        by_code.setdefault(codes(obs)[0][1], []).append(obs)
    assert set(by_code) == {"59408-5", "8867-4", "9279-1", "85354-9", "8478-0"}
    spo2 = by_code["59408-5"][0]
    assert codes(spo2) == [(LOINC, "59408-5"), (LOINC, "2708-6"), (MDC, "150456")]
    assert spo2["valueQuantity"] == {
        "value": 97.0,
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
    }
    assert codes(by_code["8867-4"][0]) == [(LOINC, "8867-4"), (MDC, "149530")]
    rates = [(o["effectivePeriod"]["start"], o["valueQuantity"]["value"]) for o in by_code["9279-1"]]
    assert codes(by_code["9279-1"][0]) == [(LOINC, "9279-1"), (MDC, "151562")]
    assert {v for _, v in rates} == {16.0, 13.0}
    assert ("2000-01-01T00:00:00Z", 13.0) in rates  # the infusion's first minute, at the anchor
    # NIBP: 14 valid readings, each a panel with systolic/diastolic components and a MAP.
    panels = by_code["85354-9"]
    assert len(panels) == 14 and len(by_code["8478-0"]) == 14
    peak = next(p for p in panels if p["component"][0]["valueQuantity"]["value"] == 184.0)
    assert [codes(c)[0][1] for c in peak["component"]] == ["8480-6", "8462-4"]
    assert peak["component"][1]["valueQuantity"]["value"] == 110.0
    assert peak["effectiveDateTime"] == "2000-01-01T00:26:00Z"  # 41 min into the session, 26 after the start
    # A minute without valid samples would be no Observation; every value here is a number.
    assert all(o["valueQuantity"]["value"] is not None for o in by_code["59408-5"])


def test_infusion_and_alarms(record: Path) -> None:
    data = example(record)
    bundle = fhir_bundle(data, summarise(data))
    (infusion,) = resources(bundle, "MedicationAdministration")
    assert infusion["status"] == "completed"
    assert infusion["effectivePeriod"] == {"start": "2000-01-01T00:00:00Z", "end": "2000-01-01T00:40:00Z"}
    # The nurse entered 0.5 mg/kg for 70 kg: the amount given is 35 mg, the per-kg dose in the text.
    ucum = "http://unitsofmeasure.org"
    assert infusion["dosage"]["dose"] == {"value": 35.0, "unit": "mg", "system": ucum, "code": "mg"}
    assert infusion["dosage"]["text"] == "0.5 mg/kg; planned infusion length 40 min"
    issues = {i["code"]["text"]: i for i in resources(bundle, "DetectedIssue")}
    assert set(issues) == {"spo2_low", "pulse_high", "nibp_high"}
    assert issues["spo2_low"]["severity"] == "high" and issues["pulse_high"]["severity"] == "moderate"
    assert issues["spo2_low"]["identifiedPeriod"] == {
        "start": "2000-01-01T00:10:15Z",
        "end": "2000-01-01T00:11:00Z",
    }
    assert issues["spo2_low"]["mitigation"][0]["date"] == "2000-01-01T00:10:35Z"
    assert "mitigation" not in issues["pulse_high"]  # never acknowledged
    ref = next(e["fullUrl"] for e in bundle["entry"] if e["resource"] is infusion)
    assert all(i["implicated"] == [{"reference": ref}] for i in issues.values())


def test_nothing_identifying_and_no_real_date(record: Path) -> None:
    data = example(record)
    text = json.dumps(fhir_bundle(data, summarise(data)))
    for forbidden in ("chair", "2025", str(data.info["session_id"]), "SIM-0001"):
        assert forbidden not in text
    (patient,) = resources(json.loads(text), "Patient")
    assert set(patient) == {"resourceType", "id", "meta"}


def test_cli_writes_one_bundle_per_session_per_line(record: Path, tmp_path: Path) -> None:
    out = tmp_path / "sessions.ndjson"
    assert (
        run_export("--since", "2025-03-01", "--out", str(out), "--format", "fhir", "--db", str(record)) == 0
    )
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    bundles = [Bundle.model_validate_json(line) for line in lines]
    assert all(b.type == "collection" for b in bundles)
    # The short session has no infusion: anchored at its start, no MedicationAdministration.
    short = json.loads(lines[1])
    assert not resources(short, "MedicationAdministration")
    assert resources(short, "Observation")[0]["effectivePeriod"]["start"] == "2000-01-01T00:00:00Z"
    moved = tmp_path / "moved.ndjson"
    assert run_export(
        "--since", "2025-03-01", "--out", str(moved), "--format", "fhir", "--db", str(record),
        "--anchor", "2030-06-01T12:00:00Z",
    ) == 0  # fmt: skip
    assert '"start":"2030-06-01T12:00:00Z"' in moved.read_text().splitlines()[0]
    assert DEFAULT_ANCHOR.isoformat().startswith("2000-01-01")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "fhir", "--include-bed"], "--include-bed is not available with --format fhir"),
        (["--format", "jsonl", "--anchor", "2030-01-01"], "--anchor is for --format fhir"),
        (["--format", "fhir", "--anchor", "soon"], "--anchor must be an ISO date-time"),
    ],
)
def test_cli_refuses_options_that_do_not_fit(
    record: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "x"
    assert run_export("--since", "2025-03-01", "--out", str(out), "--db", str(record), *extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_docs_name_every_code_the_export_writes(record: Path) -> None:
    """docs/interop.md's mapping table and the exporter cannot drift apart."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "interop.md").read_text()
    data = example(record)
    bundle = fhir_bundle(data, summarise(data))
    written: set[str] = set()
    for entry in bundle["entry"]:
        res = entry["resource"]
        for part in [res, *res.get("component", [])]:
            if "code" in part and isinstance(part["code"], dict) and part["code"].get("coding"):
                written |= {c["code"] for c in part["code"]["coding"] if c["system"] in (LOINC, MDC)}
    assert written >= {"59408-5", "2708-6", "8867-4", "9279-1", "85354-9", "8480-6", "8462-4", "8478-0"}
    assert sorted(code for code in written if code not in doc) == []
