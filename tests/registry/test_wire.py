"""The record and receipt payloads the code builds validate against schemas/, and parse back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from vitalwatch.record.export import SCHEMA
from vitalwatch.registry.wire import (
    AlertReceipt,
    BadMessage,
    Receipt,
    alert_receipt_payload,
    parse_alert,
    parse_alert_receipt,
    parse_receipt,
    parse_record,
    receipt_payload,
    record_payload,
    topic_site_bed,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
NOW = datetime(2026, 3, 2, 10, 41, 5, 120000, tzinfo=UTC)


def validate(name: str, payload: bytes) -> None:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(
        json.loads(payload)
    )


def test_record_payload_is_valid_and_parses_back() -> None:
    row = {"schema": SCHEMA, "record_id": "abc123", "dose_mg_per_kg": 0.5, "alarms": {}}
    payload = record_payload(row=row, site="clinic-a", bed="chair-1", started=NOW, sent=NOW)
    validate("session_record", payload)
    msg = parse_record(payload, site="clinic-a", bed="chair-1")
    assert ("abc123", "2026-03", row) == (msg.record_id, msg.month, msg.row)
    with pytest.raises(BadMessage, match="differ from the topic"):
        parse_record(payload, site="clinic-b", bed="chair-1")


def test_receipt_payload_is_valid_and_parses_back() -> None:
    payload = receipt_payload(Receipt("abc123", "clinic-a", "chair-1", "duplicate"), now=NOW)
    validate("receipt", payload)
    assert Receipt("abc123", "clinic-a", "chair-1", "duplicate") == parse_receipt(
        payload, site="clinic-a", bed="chair-1"
    )
    for bad in (b"[]", b"{", json.dumps({"schema": "vitalwatch.receipt/1"}).encode(), b"x" * 5000):
        with pytest.raises(BadMessage):
            parse_receipt(bad, site="clinic-a", bed="chair-1")


def test_alert_receipt_payload_is_valid_and_parses_back() -> None:
    receipt = AlertReceipt("01JC3W9Q2K8Y3V7T6M0ZP4H1RX", 7, "clinic-a", "chair-1", "stored", "registry")
    payload = alert_receipt_payload(receipt, now=NOW)
    validate("alert_receipt", payload)
    assert receipt == parse_alert_receipt(payload, site="clinic-a", bed="chair-1")
    doc = json.loads(payload)
    for bad in (
        b"[]",
        b"x" * 5000,
        json.dumps({**doc, "seq": 0}).encode(),
        json.dumps({**doc, "seq": True}).encode(),
        json.dumps({**doc, "seq": "7"}).encode(),
        json.dumps({**doc, "status": "maybe"}).encode(),
        json.dumps({**doc, "by": "a/b"}).encode(),
        json.dumps({**doc, "alert_id": "+"}).encode(),
        json.dumps({**doc, "schema": "vitalwatch.receipt/1"}).encode(),
    ):
        with pytest.raises(BadMessage):
            parse_alert_receipt(bad, site="clinic-a", bed="chair-1")
    with pytest.raises(BadMessage, match="differ from the topic"):
        parse_alert_receipt(payload, site="clinic-a", bed="chair-2")


def test_an_alert_is_taken_by_id_and_seq_from_its_own_topic_only() -> None:
    from tests.service.test_schemas import WALL, transition
    from vitalwatch.delivery.payloads import alert_payload, encode

    payload = encode(
        {**alert_payload(transition(), site="clinic-a", wall=WALL), "sent_utc": "2026-03-01T10:15:02.331Z"}
    )
    validate("alert", payload)
    msg = parse_alert(payload, site="clinic-a", bed="chair-1")
    assert ("01JC3W9Q2K8Y3V7T6M0ZP4H1RX", 3) == (msg.alert_id, msg.seq)
    with pytest.raises(BadMessage, match="differ from the topic"):
        parse_alert(payload, site="clinic-a", bed="chair-2")
    with pytest.raises(BadMessage):
        parse_alert(json.dumps({**json.loads(payload), "seq": -1}).encode(), site="clinic-a", bed="chair-1")
    assert ("a", "b") == topic_site_bed("vitalwatch/v1", "vitalwatch/v1/a/b/alerts/receipt", "alerts/receipt")
    with pytest.raises(BadMessage):
        topic_site_bed("vitalwatch/v1", "vitalwatch/v1/a/b/receipt", "alerts/receipt")


@pytest.mark.parametrize(
    "topic",
    [
        "vitalwatch/v1/clinic-a/chair-1/alerts",
        "vitalwatch/v1/clinic-a/record",
        "other/v1/a/b/record",
        "vitalwatch/v1/$SYS/b/record",
        "vitalwatch/v1/a/b/c/record",
    ],
)
def test_only_a_records_own_topic_names_its_site_and_bed(topic: str) -> None:
    with pytest.raises(BadMessage):
        topic_site_bed("vitalwatch/v1", topic, "record")
    assert ("a", "b") == topic_site_bed("vitalwatch/v1", "vitalwatch/v1/a/b/record", "record")
