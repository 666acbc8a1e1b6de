"""No payload carries a non-finite number: every schema's numeric fields, fed NaN and +/-Infinity.

``json.dumps`` writes ``Infinity`` by default, which is not JSON; a station's ``JSON.parse`` threw on
``"value":Infinity`` and the HIGH alarm it carried was lost. Outgoing payloads go through
``payloads.encode`` (strict_json): the non-finite number is refused (published as null), the field is
named in an error log line and counted, and the payload itself still goes out. Incoming commands
with a non-finite number are refused with a clear error.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from jsonschema import Draft202012Validator

from vitalwatch import strict_json
from vitalwatch.delivery.commands import CommandError, parse_command
from vitalwatch.delivery.payloads import (
    WallClock,
    alert_payload,
    command_result_payload,
    encode,
    status_payload,
    vital_payload,
)
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Priority
from vitalwatch.ops.metrics import NON_FINITE_VALUES

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
NOW = datetime(2026, 3, 1, 10, 15, 2, tzinfo=UTC)
NON_FINITE = (math.inf, -math.inf, math.nan)


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    return loaded


def numeric_fields(name: str) -> list[str]:
    """Top-level properties whose type admits a number (what a non-finite float could land in)."""
    found = []
    for key, spec in schema(name)["properties"].items():
        types = spec.get("type", [])
        if "number" in (types if isinstance(types, list) else [types]):
            found.append(key)
    return found


def example(name: str) -> dict[str, Any]:
    """A valid payload of each outgoing schema, built by the daemon's own builders."""
    match name:
        case "alert":
            tr = AlertTransition(
                t=100.0, bed="chair-1", alert_id="01JC3W9Q2K8Y3V7T6M0ZP4H1RX", seq=3,
                state=AlertState.RAISED, priority=Priority.HIGH, category=Category.PHYSIOLOGICAL,
                condition="spo2_low", parameter="spo2",
                value=86.0, unit="%", limit=90.0, phase="infusion", phase_elapsed_s=754.0, onset_t=85.0,
                message="SpO2 86 % below 90 % for 15 s", rule="spo2_low_high",
            )  # fmt: skip
            wall = WallClock(100.0, NOW, clock_synced=True)
            return alert_payload(tr, site="clinic-a", wall=wall, sent_at=NOW)
        case "status":
            return status_payload(
                state="online", site="s", bed="b", phase="infusion", links={"ox": True}, heartbeat=1,
                sent_at=NOW, phase_minutes=12.5, outbox_pending=0,
            )  # fmt: skip
        case "vital":
            return vital_payload(
                kind="spo2", value=97.0, unit="%", quality="valid", measured_at=NOW, device="ox"
            )
        case "command_result":
            return command_result_payload(
                request_id="r-1", command="ack", ok=True, site="s", bed="b", sent_at=NOW, detail={"n": 1.5}
            )
    raise AssertionError(name)


def strict_loads(data: bytes) -> Any:
    """A receiver's strict parser: NaN/Infinity are errors, as in a browser's JSON.parse."""

    def refuse(token: str) -> Any:
        raise ValueError(f"non-JSON constant {token}")

    return json.loads(data, parse_constant=refuse)


def counted() -> float:
    return sum(s.value for m in NON_FINITE_VALUES.collect() for s in m.samples if s.name.endswith("_total"))


def test_every_schema_is_covered() -> None:
    names = sorted(p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json"))
    assert names == [
        "alert", "alert_receipt", "command", "command_result", "prompts", "readiness", "receipt",
        "session_record", "status", "trend", "vital",
    ]  # fmt: skip
    assert numeric_fields("command") == ["dose_mg_per_kg", "planned_minutes", "weight_kg", "dose"]
    # prompts, readiness and receipts carry no number a non-finite float could land in; the
    # session record's numbers are inside its "record" (tested below)
    assert [] == numeric_fields("prompts") == numeric_fields("readiness") == numeric_fields("receipt")
    assert [] == numeric_fields("alert_receipt")  # its seq is an integer, never NaN or infinite
    assert [] == numeric_fields("session_record")
    # the trend's numbers are inside its series and latest values; the builder never lets a
    # non-finite one in (tests/service/test_trend.py), and encode would publish it as null
    assert [] == numeric_fields("trend")


@pytest.mark.parametrize("bad", NON_FINITE, ids=["inf", "-inf", "nan"])
def test_a_session_record_with_a_non_finite_number_is_published_strict(bad: float) -> None:
    from vitalwatch.registry.wire import record_payload

    row = {"record_id": "0f1c2d8314d04c528d641e89f0203232", "session_minutes": bad, "infusion_minutes": 40.0}
    before = counted()
    doc = strict_loads(record_payload(row=row, site="clinic-a", bed="chair-1", started=NOW, sent=NOW))
    assert doc["record"]["session_minutes"] is None and doc["record"]["infusion_minutes"] == 40.0
    assert counted() > before


@pytest.mark.parametrize("name", ["alert", "status", "vital", "command_result"])
@pytest.mark.parametrize("bad", NON_FINITE, ids=["inf", "-inf", "nan"])
def test_outgoing_payload_with_a_non_finite_number_is_published_strict(name: str, bad: float) -> None:
    fields = numeric_fields(name) + (["detail"] if name == "command_result" else [])
    assert fields, f"schema {name} has no numeric field to try"
    validator = Draft202012Validator(schema(name))
    for field in fields:
        doc = example(name)
        doc[field] = {"n": bad} if field == "detail" else bad
        before = counted()
        with structlog.testing.capture_logs() as logs:
            body = encode(doc)  # the publisher's only serialisation: must not raise
        received = strict_loads(body)
        assert received[field] in (None, {"n": None}), (name, field)
        assert counted() == before + 1
        assert [(e["event"], e["log_level"]) for e in logs] == [("json.non_finite", "error")]
        assert logs[0]["fields"] == [f"$.{field}" + (".n" if field == "detail" else "")]
        if "null" in schema(name)["properties"][field].get("type", []):
            validator.validate(received)  # nullable: the receiver gets a valid payload, value missing


@pytest.mark.parametrize(
    ("field", "command"),
    [
        ("dose_mg_per_kg", '"command":"phase","phase":"infusion"'),
        ("planned_minutes", '"command":"phase","phase":"infusion"'),
        ("weight_kg", '"command":"start_infusion","dose_mg_per_kg":0.5'),
        ("dose", '"command":"event","event":"rescue_medication","drug":"x","dose_unit":"mg"'),
        ("score", '"command":"event","event":"emergence"'),
    ],
)
@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_incoming_command_with_a_non_finite_number_is_refused(field: str, command: str, token: str) -> None:
    raw = f'{{"request_id":"r-1",{command},"{field}":{token},"by":"n"}}'
    result = parse_command(raw.encode(), site="s", bed="b")
    assert isinstance(result, CommandError) and result.code == "wrong_type", result


def test_finite_documents_are_unchanged_and_not_counted() -> None:
    before = counted()
    doc = {"a": [1.5, {"b": 2}], "c": None}
    assert strict_json.dumps(doc, what="test") == json.dumps(doc)
    assert counted() == before


def test_no_json_dumps_bypasses_the_strict_writer() -> None:
    """A new call site must use strict_json.dumps (or say allow_nan=False itself)."""
    allowed = {
        "vitalwatch/strict_json.py",  # the writer itself
        "vitalwatch/engine/snapshot.py",  # a digest of rule fields, never sent anywhere
        "vitalwatch/ops/failsafe.py",  # stdlib-only by design; logs strings from the environment
    }
    offenders = []
    for path in sorted((ROOT / "vitalwatch").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for line in path.read_text(encoding="utf-8").splitlines():
            strict = "allow_nan=False" in line or rel in allowed
            if re.search(r"\bjson\.dumps?\(", line) and not strict:
                offenders.append(f"{rel}: {line.strip()}")
    assert offenders == []
