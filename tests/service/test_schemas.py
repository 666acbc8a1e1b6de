"""The MQTT contract: every payload the daemon builds validates against its JSON Schema in schemas/,
every example in docs/mqtt.md does too, and the schemas' enumerations are the code's vocabularies.

A field added to a builder without the schema (or the other way round) fails here, so
docs/mqtt.md, schemas/ and vitalwatch/delivery/payloads.py cannot drift apart.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from vitalwatch.delivery.commands import _FIELDS, EVENTS, Command, CommandError, parse_command
from vitalwatch.delivery.payloads import (
    COMMANDS,
    ERROR_CODES,
    TECHNICAL_ALARMS,
    Topics,
    WallClock,
    alert_payload,
    command_result_payload,
    discharge_doc,
    encode,
    prompts_payload,
    readiness_payload,
    status_payload,
    vital_payload,
)
from vitalwatch.drivers.vocabulary import KINDS
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Priority
from vitalwatch.engine.vocabulary import AGE_BANDS, CONDITIONS, PHASE_COMMANDS, PHASES

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
DOC = ROOT / "docs" / "mqtt.md"
NAMES = (
    "alert",
    "status",
    "vital",
    "command",
    "command_result",
    "prompts",
    "readiness",
    "alert_receipt",
    "trend",
)
NOW = datetime(2026, 3, 1, 10, 15, 2, 331000, tzinfo=UTC)


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def check(name: str, doc: Any) -> None:
    """Validate after a JSON round trip, as a receiver would see it (tuples become lists etc.)."""
    validator(name).validate(json.loads(json.dumps(doc)))


def transition(**changes: Any) -> AlertTransition:
    fields: dict[str, Any] = {
        "t": 100.0,
        "bed": "chair-1",
        "alert_id": "01JC3W9Q2K8Y3V7T6M0ZP4H1RX",
        "seq": 3,
        "state": AlertState.RAISED,
        "priority": Priority.HIGH,
        "category": Category.PHYSIOLOGICAL,
        "condition": "spo2_low",
        "parameter": "spo2",
        "value": 86.0,
        "unit": "%",
        "limit": 90.0,
        "phase": "infusion",
        "phase_elapsed_s": 754.0,
        "onset_t": 85.0,
        "message": "SpO2 86 % below 90 % for 15 s",
        "rule": "spo2_low_high",
    }
    fields.update(changes)
    return AlertTransition(**fields)


WALL = WallClock(100.0, NOW, clock_synced=True)


@pytest.mark.parametrize("name", NAMES)
def test_every_schema_is_valid_draft_2020_12(name: str) -> None:
    """A schema that is itself malformed would validate nothing."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    assert "https://json-schema.org/draft/2020-12/schema" == schema["$schema"]
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("state", list(AlertState))
@pytest.mark.parametrize("priority", list(Priority))
def test_alert_payload_for_every_state_and_priority_validates(state: AlertState, priority: Priority) -> None:
    """Each transition the engine can emit is a valid alert document."""
    check("alert", alert_payload(transition(state=state, priority=priority), site="clinic-a", wall=WALL))


def test_alert_payload_for_technical_and_acknowledged_alerts_validates() -> None:
    """No parameter, no value (link lost) and an acknowledged one with who and when."""
    tech = transition(
        condition="link_lost",
        category=Category.TECHNICAL,
        parameter=None,
        value=None,
        unit=None,
        limit=None,
        device="oximeter",
        message="oximeter: no data for 10 s",
    )
    check("alert", alert_payload(tech, site="clinic-a", wall=WALL, sent_at=NOW))
    acked = transition(state=AlertState.ACKNOWLEDGED, acknowledged_by="RN Kim", acknowledged_t=120.0)
    doc = alert_payload(acked, site="clinic-a", wall=WALL, sent_at=NOW)
    check("alert", doc)
    assert "2026-03-01T10:15:22.331Z" == doc["acknowledged_utc"]
    assert {"name": "spo2", "mdc": 150456} == doc["parameter"]


def test_alert_schema_rejects_what_a_receiver_must_not_get() -> None:
    """Missing seq, seq 0, a local time without Z and an undocumented field each fail."""
    good = alert_payload(transition(), site="clinic-a", wall=WALL, sent_at=NOW)
    for bad in (
        {k: v for k, v in good.items() if k != "seq"},
        good | {"seq": 0},
        good | {"onset_utc": "2026-03-01T11:15:02.331+01:00"},
        good | {"patient_name": "Doe^John"},
        good | {"bed": "chair/1"},
    ):
        with pytest.raises(ValidationError):
            validator("alert").validate(bad)


def test_status_payloads_validate_online_and_offline() -> None:
    """Online with links, a heartbeat, minutes in phase, a backlog and a technical alarm; offline (the
    last will) too, before any phase is set."""
    for state, phase, minutes, technical in (
        ("online", "baseline", 12.345, ["persistence_degraded", "broker_unreachable"]),
        ("offline", None, None, []),
    ):
        doc = status_payload(
            state=state,
            site="clinic-a",
            bed="chair-1",
            phase=phase,
            links={"oximeter": True, "cuff": False},
            heartbeat=42,
            sent_at=NOW,
            phase_minutes=minutes,
            outbox_pending=3,
            technical=technical,
        )
        check("status", doc)
    assert {"cuff": "down", "oximeter": "up"} == doc["links"]
    assert (None, 3, []) == (doc["phase_minutes"], doc["outbox_pending"], doc["technical"])


def test_status_defaults_validate_and_technical_is_sorted_and_known() -> None:
    """A caller that knows nothing extra still builds a valid status; an unknown technical alarm
    name is refused by the schema (a receiver can rely on the list)."""
    doc = status_payload(
        state="online", site="s", bed="b", phase="infusion", links={}, heartbeat=0, sent_at=NOW
    )
    check("status", doc)
    assert (None, 0, []) == (doc["phase_minutes"], doc["outbox_pending"], doc["technical"])
    with_alarms = status_payload(
        state="online",
        site="s",
        bed="b",
        phase="infusion",
        links={},
        heartbeat=0,
        sent_at=NOW,
        phase_minutes=7.04,
        technical=("persistence_degraded", "broker_unreachable", "broker_unreachable"),
    )
    assert ["broker_unreachable", "persistence_degraded"] == with_alarms["technical"]
    assert 7.0 == with_alarms["phase_minutes"]
    assert sorted(TECHNICAL_ALARMS) == sorted(
        schema_enum("status", "properties", "technical", "items", "enum")
    )
    with pytest.raises(ValidationError):
        validator("status").validate(doc | {"technical": ["coffee_empty"]})
    with pytest.raises(ValidationError):
        validator("status").validate({k: v for k, v in doc.items() if k != "outbox_pending"})


def test_prompts_readiness_and_discharge_payloads_validate() -> None:
    """The chairside documents: open prompts (and none), readiness with an open item, discharge."""
    prompt = {
        "prompt_id": "chair-1-p3",
        "kind": "confirm_bp",
        "text": "Take a blood pressure by hand to confirm: confirm BP 182/113 mmHg (nibp_high)",
        "reason": "confirm BP 182/113 mmHg (nibp_high)",
        "opened_utc": "2026-03-01T10:15:02.331Z",
        "then": "the BP alarm needs a second reading within the confirmation window",
    }
    for prompts in ([prompt], []):
        check("prompts", prompts_payload(site="s", bed="b", prompts=prompts, sent_at=NOW))
    items = [
        {"item": "device:oximeter", "ok": True, "text": "oximeter linked, valid reading"},
        {"item": "baseline", "ok": False, "text": "baseline incomplete: NIBP 1 of 2 readings"},
    ]
    doc = readiness_payload(site="s", bed="b", phase="baseline", items=items, sent_at=NOW)
    check("readiness", doc)
    assert (False, ["baseline incomplete: NIBP 1 of 2 readings"]) == (doc["ready"], doc["open"])
    with pytest.raises(ValidationError):
        validator("readiness").validate(doc | {"items": [{"item": "coffee", "ok": True, "text": "x"}]})
    discharge = discharge_doc(False, ["pulse ok"], ["BP 1 of 2 within 20 % of baseline"], ["escort present"])
    check(
        "status",
        status_payload(
            state="online", site="s", bed="b", phase="recovery", links={}, heartbeat=1, sent_at=NOW,
            discharge=discharge,
        ),
    )  # fmt: skip
    with pytest.raises(ValidationError):
        validator("status").validate(
            status_payload(
                state="online", site="s", bed="b", phase="recovery", links={}, heartbeat=1, sent_at=NOW
            )
            | {"discharge": {"ready": True}}
        )


def test_command_schema_takes_exactly_the_parsers_fields() -> None:
    """Each command's allowed and required fields in the schema are the parser's table."""
    schema = json.loads((SCHEMAS / "command.schema.json").read_text(encoding="utf-8"))
    common = {"request_id", "command", "by", "site", "bed", "sent_utc"}
    per_command = {
        rule["if"]["properties"]["command"]["const"]: rule["then"]
        for rule in schema["allOf"]
        if "propertyNames" in rule["then"]
    }
    assert set(_FIELDS) == set(per_command)
    for command, (required, optional) in _FIELDS.items():
        assert sorted(common | required | optional) == per_command[command]["propertyNames"]["enum"], command
        assert sorted(required) == sorted(per_command[command].get("required", [])), command
    assert sorted(EVENTS) == sorted(schema["properties"]["event"]["enum"])
    assert list(AGE_BANDS) == schema["properties"]["age_band"]["enum"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_vital_payload_for_every_kind_validates(kind: str) -> None:
    """Every observation kind can be published; a missing value is null, not a number."""
    for value, quality in ((97.0, "valid"), (None, "invalid")):
        check(
            "vital",
            vital_payload(
                kind=kind, value=value, unit=KINDS[kind].unit, quality=quality, measured_at=NOW, device="ox-1"
            ),
        )


def test_command_result_payloads_validate_and_ok_excludes_error() -> None:
    """A success has no error; a refusal names one (code + message); a result for unreadable
    input echoes nulls."""
    ok = command_result_payload(
        request_id="r-1",
        command="ack",
        ok=True,
        site="clinic-a",
        bed="chair-1",
        sent_at=NOW,
        detail={"acknowledged": ["01JC3W9Q2K8Y3V7T6M0ZP4H1RX"]},
    )
    check("command_result", ok)
    refused = command_result_payload(
        request_id=None,
        command=None,
        ok=False,
        error=("bad_json", "not UTF-8 JSON: Expecting value: line 1 column 1 (char 0)"),
        site="clinic-a",
        bed="chair-1",
        sent_at=NOW,
    )
    check("command_result", refused)
    assert "bad_json" == refused["error"]["code"]
    with pytest.raises(ValidationError):
        validator("command_result").validate(ok | {"error": {"code": "bad_json", "message": "x"}})
    with pytest.raises(ValidationError):
        validator("command_result").validate(refused | {"error": None})
    with pytest.raises(ValidationError):
        validator("command_result").validate(refused | {"error": {"code": "oops", "message": "x"}})
    with pytest.raises(ValueError, match="either ok"):
        command_result_payload(
            request_id="r", command="ack", ok=False, site="s", bed="b", sent_at=NOW, error=None
        )
    with pytest.raises(ValueError, match="unknown error code"):
        command_result_payload(
            request_id="r", command="ack", ok=False, site="s", bed="b", sent_at=NOW, error=("oops", "x")
        )


GOOD_COMMANDS: list[dict[str, Any]] = [
    {"request_id": "r-1", "command": "ack", "alert_id": "01JC3W9Q2K8Y3V7T6M0ZP4H1RX", "by": "RN Kim"},
    {"request_id": "r-2", "command": "ack", "alert_id": "*", "by": "RN Kim"},
    {
        "request_id": "r-3",
        "command": "phase",
        "phase": "infusion",
        "by": "RN Kim",
        "dose_mg_per_kg": 0.5,
        "planned_minutes": 40,
    },
    {"request_id": "r-4", "command": "phase", "phase": "ended"},
    {"request_id": "r-4p", "command": "phase", "phase": "pause"},
    {"request_id": "r-4r", "command": "phase", "phase": "resume", "by": "RN Kim"},
    {"request_id": "r-4q", "command": "phase", "phase": "baseline", "age_band": "older_adult"},
    {"request_id": "r-4a", "command": "start_session", "by": "RN Kim", "age_band": "older_adult"},
    {"request_id": "r-4b", "command": "start_session", "by": "RN Kim"},
    {
        "request_id": "r-4c",
        "command": "start_infusion",
        "by": "RN Kim",
        "dose_mg_per_kg": 0.5,
        "weight_kg": 70,
        "planned_minutes": 40,
        "override_reason": "baseline SpO2 only 2 min: patient anxious, watched",
    },
    {"request_id": "r-4d", "command": "pump_stopped", "by": "RN Kim"},
    {"request_id": "r-4e", "command": "end_session", "by": "RN Kim"},
    {"request_id": "r-4f", "command": "prompt_done", "by": "RN Kim", "prompt_id": "chair-1-p3"},
    {"request_id": "r-4g", "command": "event", "by": "RN Kim", "event": "dissociation", "score": 2},
    {"request_id": "r-4h", "command": "event", "by": "RN Kim", "event": "nausea"},
    {"request_id": "r-4i", "command": "event", "by": "RN Kim", "event": "agitation"},
    {
        "request_id": "r-4j",
        "command": "event",
        "by": "RN Kim",
        "event": "rescue_medication",
        "drug": "ondansetron",
        "dose": 4,
        "dose_unit": "mg",
    },
    {
        "request_id": "r-4k",
        "command": "event",
        "by": "RN Kim",
        "event": "note",
        "note": "asked for a blanket",
    },
    {"request_id": "r-4l", "command": "phase", "phase": "infusion", "override_reason": "cuff swapped"},
    {"request_id": "r-5", "command": "nibp", "by": "RN Kim"},
    {
        "request_id": "r-6",
        "command": "nibp",
        "site": "clinic-a",
        "bed": "chair-1",
        "sent_utc": "2026-03-01T10:00:00Z",
    },
]

BAD_COMMANDS: list[tuple[str, Any]] = [
    ("not an object", ["ack"]),
    ("no request_id", {"command": "nibp"}),
    ("unknown command", {"request_id": "r", "command": "silence"}),
    ("ack without alert_id", {"request_id": "r", "command": "ack", "by": "RN Kim"}),
    ("ack without by", {"request_id": "r", "command": "ack", "alert_id": "*"}),
    ("ack with empty by", {"request_id": "r", "command": "ack", "alert_id": "*", "by": ""}),
    ("phase unknown", {"request_id": "r", "command": "phase", "phase": "sedation"}),
    ("phase missing", {"request_id": "r", "command": "phase"}),
    ("dose on ack", {"request_id": "r", "command": "ack", "alert_id": "*", "by": "x", "dose_mg_per_kg": 1}),
    ("negative dose", {"request_id": "r", "command": "phase", "phase": "infusion", "dose_mg_per_kg": -1}),
    ("alert_id on nibp", {"request_id": "r", "command": "nibp", "alert_id": "*"}),
    ("age band unknown", {"request_id": "r", "command": "phase", "phase": "baseline", "age_band": "67"}),
    (
        "age band on ack",
        {"request_id": "r", "command": "ack", "alert_id": "*", "by": "x", "age_band": "adult"},
    ),
    ("age band on nibp", {"request_id": "r", "command": "nibp", "age_band": "older_adult"}),
    ("pause spelled otherwise", {"request_id": "r", "command": "phase", "phase": "paused"}),
    ("unknown field", {"request_id": "r", "command": "nibp", "mrn": "123456"}),
    ("request_id too long", {"request_id": "r" * 65, "command": "nibp"}),
    ("request_id a number", {"request_id": 7, "command": "nibp"}),
    ("alert_id with a slash", {"request_id": "r", "command": "ack", "alert_id": "a/b", "by": "x"}),
    ("by with a newline", {"request_id": "r", "command": "ack", "alert_id": "*", "by": "a\nb"}),
    ("by with a bidi override", {"request_id": "r", "command": "ack", "alert_id": "*", "by": "RN \u202eKim"}),
    ("by with an isolate", {"request_id": "r", "command": "ack", "alert_id": "*", "by": "RN \u2067Kim"}),
    ("by with a mark", {"request_id": "r", "command": "ack", "alert_id": "*", "by": "RN \u200eKim"}),
    ("start_session without by", {"request_id": "r", "command": "start_session"}),
    ("age as a date", {"request_id": "r", "command": "start_session", "by": "x", "age_band": "1950-02-03"}),
    (
        "infusion without weight",
        {"request_id": "r", "command": "start_infusion", "by": "x", "dose_mg_per_kg": 1},
    ),
    (
        "weight zero",
        {"request_id": "r", "command": "start_infusion", "by": "x", "dose_mg_per_kg": 1, "weight_kg": 0},
    ),
    ("override on end", {"request_id": "r", "command": "end_session", "by": "x", "override_reason": "y"}),
    ("prompt_done without id", {"request_id": "r", "command": "prompt_done", "by": "x"}),
    ("score on nausea", {"request_id": "r", "command": "event", "by": "x", "event": "nausea", "score": 1}),
    ("score 4", {"request_id": "r", "command": "event", "by": "x", "event": "emergence", "score": 4}),
    ("score 1.5", {"request_id": "r", "command": "event", "by": "x", "event": "emergence", "score": 1.5}),
    (
        "rescue without unit",
        {
            "request_id": "r",
            "command": "event",
            "by": "x",
            "event": "rescue_medication",
            "drug": "midazolam",
            "dose": 1,
        },
    ),
    (
        "note with a date",
        {"request_id": "r", "command": "event", "by": "x", "event": "note", "note": "dob 1970"},
    ),
    (
        "note with a bidi",
        {"request_id": "r", "command": "event", "by": "x", "event": "note", "note": "a\u202eb"},
    ),
    ("unknown event", {"request_id": "r", "command": "event", "by": "x", "event": "sneeze"}),
    ("event on nibp", {"request_id": "r", "command": "nibp", "event": "note"}),
]


@pytest.mark.parametrize("doc", GOOD_COMMANDS, ids=lambda d: str(d["request_id"]))
def test_documented_commands_validate(doc: dict[str, Any]) -> None:
    """What a nurse station may send."""
    check("command", doc)


@pytest.mark.parametrize(("why", "doc"), BAD_COMMANDS, ids=[why for why, _ in BAD_COMMANDS])
def test_malformed_commands_are_rejected_by_the_schema(why: str, doc: Any) -> None:
    """Each of these must get an error result, so the schema must reject it."""
    with pytest.raises(ValidationError):
        validator("command").validate(doc)


def schema_enum(name: str, *path: str) -> list[Any]:
    node: Any = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    for key in path:
        node = node[key]
    return list(node)


def test_schema_vocabularies_are_the_codes_vocabularies() -> None:
    """A new phase, kind, state or command in the code must be documented in the schema too."""
    assert sorted(PHASES) == sorted(schema_enum("alert", "properties", "phase", "enum"))
    assert sorted(PHASE_COMMANDS) == sorted(schema_enum("command", "properties", "phase", "enum"))
    assert sorted(AGE_BANDS) == sorted(schema_enum("command", "properties", "age_band", "enum"))
    assert sorted(KINDS) == sorted(schema_enum("vital", "properties", "kind", "enum"))
    assert sorted(s.value for s in AlertState) == sorted(schema_enum("alert", "properties", "state", "enum"))
    assert sorted(p.value for p in Priority) == sorted(schema_enum("alert", "properties", "priority", "enum"))
    assert sorted(c.value for c in Category) == sorted(schema_enum("alert", "properties", "category", "enum"))
    assert sorted(COMMANDS) == sorted(schema_enum("command", "properties", "command", "enum"))
    error_object = schema_enum("command_result", "properties", "error", "oneOf")[1]
    assert list(ERROR_CODES) == error_object["properties"]["code"]["enum"]
    pattern = re.compile(
        json.loads((SCHEMAS / "alert.schema.json").read_text())["properties"]["condition"]["pattern"]
    )
    assert [] == [c for c in CONDITIONS if not pattern.match(c)]


def test_topics_are_site_and_bed_levels_under_the_prefix() -> None:
    """The exact topic names docs/mqtt.md documents."""
    t = Topics("vitalwatch/v1", "clinic-a", "chair-1")
    assert "vitalwatch/v1/clinic-a/chair-1/alerts" == t.alerts
    assert "vitalwatch/v1/clinic-a/chair-1/alarms/01J" == t.alarm("01J")
    assert "vitalwatch/v1/clinic-a/chair-1/status" == t.status
    assert "vitalwatch/v1/clinic-a/chair-1/vitals/spo2" == t.vital("spo2")
    assert "vitalwatch/v1/clinic-a/chair-1/cmd" == t.cmd
    assert "vitalwatch/v1/clinic-a/chair-1/cmd/result" == t.cmd_result


def test_encode_is_stable_compact_json() -> None:
    """Same payload, same bytes (so a retained message only changes when the content does)."""
    assert b'{"a":1,"b":[1,2]}' == encode({"b": [1, 2], "a": 1})


def test_trend_payload_validates_with_live_seeded_and_invalid_values() -> None:
    """The trend document: live and seeded points, a seeded latest value (no device), an invalid one."""
    from vitalwatch.delivery.trend import SeedLatest, SeedPoint, TrendBook

    book = TrendBook()
    book.seed(
        [SeedPoint("spo2", 90.0, 96.5, 95.0, 98.0)],
        [SeedLatest("nibp_systolic", 600.0, 121.0, "valid")],
        100.0,
    )
    book.observation("ox", "spo2", 97.0, True, 101.0)
    book.observation("ox", "pulse_rate", None, False, 102.0)
    doc = book.document(site="s", bed="b", now=103.0, utc=WALL.utc, sent_at=NOW)
    assert doc is not None
    check("trend", doc)
    with pytest.raises(ValidationError):  # a kind the contract does not name
        validator("trend").validate(json.loads(encode(doc | {"series": {"temperature": [[1, 2, 3, 4]]}})))


# <!-- example: NAME --> followed by a ```json block, in docs/mqtt.md.
_EXAMPLE = re.compile(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", re.S)


def doc_examples() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _EXAMPLE.finditer(DOC.read_text(encoding="utf-8"))]


def test_docs_have_an_example_of_every_payload() -> None:
    """docs/mqtt.md shows each payload at least once."""
    assert set(NAMES) <= {name for name, _ in doc_examples()}


@pytest.mark.parametrize(("name", "text"), doc_examples())
def test_docs_examples_validate(name: str, text: str) -> None:
    """What the documentation shows is what the daemon may send (or accept)."""
    check(name, json.loads(text))


# --- the daemon's command parser accepts exactly what the command schema accepts -----------------

SITE, BED = "clinic-a", "chair-1"

MORE_COMMANDS: list[Any] = [
    {"request_id": "r", "command": "ack", "alert_id": "all", "by": "RN Kim"},  # valid; not a wildcard
    {"request_id": "_.:-", "command": "nibp"},
    {"request_id": "r\n", "command": "nibp"},
    {"request_id": "", "command": "nibp"},
    {"request_id": "r", "command": "ack", "alert_id": "*", "by": "RN Kim ☕"},
    {"request_id": "r", "command": "ack", "alert_id": "*", "by": "x" * 64},
    {"request_id": "r", "command": "ack", "alert_id": "*", "by": "x" * 65},
    {"request_id": "r", "command": "ack", "alert_id": "*", "by": "a\x7fb"},
    {"request_id": "r", "command": "ack", "alert_id": "*", "by": "a\x85b"},
    {"request_id": "r", "command": "ack", "alert_id": "*", "by": 7},
    {"request_id": "r", "command": "ack", "alert_id": "**", "by": "x"},
    {"request_id": "r", "command": "ack", "alert_id": "-x", "by": "x"},
    {"request_id": "r", "command": "ack", "alert_id": "*", "by": "x", "phase": "infusion"},
    {"request_id": "r", "command": "phase", "phase": "infusion", "alert_id": "*"},
    {"request_id": "r", "command": "phase", "phase": "infusion", "by": "RN Kim"},
    {"request_id": "r", "command": "phase", "phase": "infusion", "dose_mg_per_kg": 0},
    {"request_id": "r", "command": "phase", "phase": "infusion", "dose_mg_per_kg": 10},
    {"request_id": "r", "command": "phase", "phase": "infusion", "dose_mg_per_kg": 10.01},
    {"request_id": "r", "command": "phase", "phase": "infusion", "dose_mg_per_kg": True},
    {"request_id": "r", "command": "phase", "phase": "infusion", "planned_minutes": 0.5},
    {"request_id": "r", "command": "phase", "phase": "infusion", "planned_minutes": 601},
    {"request_id": "r", "command": "phase", "phase": 3},
    {"request_id": "r", "command": "nibp", "dose_mg_per_kg": 1},
    {"request_id": "r", "command": "nibp", "phase": "infusion"},
    {"request_id": "r", "command": "nibp", "sent_utc": "2026-03-01T10:00:00.123Z"},
    {"request_id": "r", "command": "nibp", "sent_utc": "2026-03-01T10:00:00+00:00"},
    {"request_id": "r", "command": "nibp", "sent_utc": "2026-13-01T10:00:00Z"},
    {"request_id": "r", "command": "nibp", "sent_utc": 0},
    {"request_id": "r", "command": "nibp", "site": "clinic/a"},
    {"request_id": "r", "command": "nibp", "bed": 1},
    {"request_id": "r", "command": 7},
    {"request_id": "r", "command": "NIBP"},
    {"request_id": "r", "command": "event", "by": "x", "event": "agitation", "score": 0},
    {"request_id": "r", "command": "event", "by": "x", "event": "agitation", "score": True},
    {"request_id": "r", "command": "event", "by": "x", "event": "note", "note": "123 ok"},
    {"request_id": "r", "command": "event", "by": "x", "event": "note", "note": "x" * 201},
    {"request_id": "r", "command": "event", "by": "x", "event": "note", "note": ""},
    {
        "request_id": "r",
        "command": "event",
        "by": "x",
        "event": "rescue_medication",
        "drug": "a",
        "dose": 0,
        "dose_unit": "mg",
    },
    {
        "request_id": "r",
        "command": "event",
        "by": "x",
        "event": "rescue_medication",
        "drug": "a",
        "dose": 1,
        "dose_unit": "g",
    },
    {"request_id": "r", "command": "event", "by": "x", "event": 7},
    {"request_id": "r", "command": "start_infusion", "by": "x", "dose_mg_per_kg": 1, "weight_kg": 401},
    {
        "request_id": "r",
        "command": "start_infusion",
        "by": "x",
        "dose_mg_per_kg": 1,
        "weight_kg": 70,
        "override_reason": "\u2066x",
    },
    {"request_id": "r", "command": "start_session", "by": "x", "age_band": 65},
    {"request_id": "r", "command": "prompt_done", "by": "x", "prompt_id": "a/b"},
    {"request_id": "r", "command": "pump_stopped", "by": "x", "score": 1},
    "nibp",
    7,
    None,
]


def parsed_ok(doc: Any) -> bool:
    return isinstance(parse_command(json.dumps(doc).encode(), site=SITE, bed=BED), Command)


def schema_ok(doc: Any) -> bool:
    return validator("command").is_valid(json.loads(json.dumps(doc)))


@pytest.mark.parametrize(
    "doc",
    [*GOOD_COMMANDS, *(doc for _, doc in BAD_COMMANDS), *MORE_COMMANDS],
    ids=lambda d: json.dumps(d)[:60],
)
def test_parser_accepts_exactly_what_the_schema_accepts(doc: Any) -> None:
    """Documented, malformed and edge-case commands: the daemon and the schema agree on each."""
    assert schema_ok(doc) == parsed_ok(doc)


def test_documented_commands_are_accepted_by_the_daemon() -> None:
    """Positive control for the agreement test: every documented example parses ("RN Kim", "*")."""
    assert all(parsed_ok(doc) for doc in GOOD_COMMANDS)
    assert all(parsed_ok(json.loads(text)) for name, text in doc_examples() if name == "command")
    assert not any(parsed_ok(doc) for _, doc in BAD_COMMANDS)


_VALUES: dict[str, Any] = {
    "request_id": st.sampled_from(["r-1", "", "a b", "x" * 64, "x" * 65, 5, None]),
    "command": st.sampled_from([*COMMANDS, "reboot", 1]),
    "by": st.one_of(st.text(max_size=70), st.sampled_from(["RN Kim", "", 3])),
    "alert_id": st.sampled_from(["*", "all", "01JC3W9Q2K8Y3V7T6M0ZP4H1RX", "a/b", "", 1]),
    "phase": st.sampled_from(["baseline", "infusion", "recovery", "ended", "sedation", None]),
    "dose_mg_per_kg": st.one_of(st.floats(-1, 12), st.integers(-1, 12), st.booleans(), st.just("1")),
    "planned_minutes": st.one_of(st.floats(-1, 700), st.integers(-1, 700)),
    "site": st.sampled_from([SITE, "clinic-b", "a/b", 1]),
    "bed": st.sampled_from([BED, "chair-2", "", None]),
    "sent_utc": st.sampled_from(["2026-03-01T10:00:00Z", "2026-03-01T10:00:00.5Z", "yesterday", 0]),
    "mrn": st.just("123456"),
    "weight_kg": st.one_of(st.floats(-1, 500), st.just(70)),
    "override_reason": st.sampled_from(["swap", "", "a\u202eb", 3]),
    "age_band": st.sampled_from([*AGE_BANDS, "senior"]),
    "prompt_id": st.sampled_from(["chair-1-p1", "", "a b"]),
    "event": st.sampled_from([*EVENTS, "sneeze"]),
    "score": st.one_of(st.integers(-1, 4), st.just(1.5)),
    "drug": st.sampled_from(["ondansetron", ""]),
    "dose": st.one_of(st.floats(-1, 20000), st.integers(0, 5)),
    "dose_unit": st.sampled_from(["mg", "g"]),
    "note": st.sampled_from(["calm", "dob 1970", "a\u2066b"]),
}


@settings(max_examples=600, deadline=None)
@given(
    st.dictionaries(st.sampled_from(sorted(_VALUES)), st.none(), max_size=9).flatmap(
        lambda keys: st.fixed_dictionaries({k: _VALUES[k] for k in keys})
    )
)
def test_parser_and_schema_agree_on_generated_commands(doc: dict[str, Any]) -> None:
    """Random mixes of fields and values: accepted by the daemon iff valid per the schema, except
    that a schema-valid command naming another site or bed is refused as wrong_bed."""
    result = parse_command(json.dumps(doc).encode(), site=SITE, bed=BED)
    elsewhere = doc.get("site", SITE) != SITE or doc.get("bed", BED) != BED
    if schema_ok(doc) and elsewhere:
        assert isinstance(result, CommandError) and "wrong_bed" == result.code
    else:
        assert schema_ok(doc) == isinstance(result, Command), result
