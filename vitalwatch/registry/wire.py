"""The record and receipt payloads: what a gateway offers and what the registry answers.

Both sides import this module so they can never disagree about a field. A record message
carries the de-identified export row of one session (:func:`vitalwatch.record.export.export_row`)
and the month it started (a registry counts per clinic and month; the row itself has no date).
A receipt names the record it is for; the gateway drops its copy on that receipt and nothing
else. Alert receipts are the same idea per alert transition ``(alert_id, seq)`` on their own topic
(``.../alerts/receipt``), so a broker ACL can let a central station confirm alerts without
letting it confirm session records. Schemas: ``schemas/session_record.schema.json``,
``schemas/receipt.schema.json`` and ``schemas/alert_receipt.schema.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vitalwatch import strict_json
from vitalwatch.delivery.payloads import iso_utc

__all__ = [
    "ALERT_RECEIPT_SCHEMA",
    "RECEIPT_SCHEMA",
    "RECORD_SCHEMA",
    "AlertMessage",
    "AlertReceipt",
    "BadMessage",
    "Receipt",
    "RecordMessage",
    "alert_receipt_payload",
    "alert_receipt_topic",
    "alerts_topic",
    "parse_alert",
    "parse_alert_receipt",
    "parse_receipt",
    "parse_record",
    "receipt_payload",
    "receipt_topic",
    "record_payload",
    "record_topic",
    "topic_site_bed",
]

RECORD_SCHEMA = "vitalwatch.session_record/1"
RECEIPT_SCHEMA = "vitalwatch.receipt/1"
ALERT_RECEIPT_SCHEMA = "vitalwatch.alert_receipt/1"
ALERT_SCHEMA = "vitalwatch.alert/1"
# The same rule as a configuration id: one whole topic level, never a wildcard or "$...".
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RECORD_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_MONTH = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
# Any version of the export row: a region's clinics do not all upgrade on one day, and the
# registry keeps each row as its gateway sent it (docs/registry.md).
_ROW_SCHEMA = re.compile(r"^vitalwatch-session-record/[1-9][0-9]*$")
MAX_RECORD_BYTES = 64 * 1024
MAX_ALERT_BYTES = 16 * 1024
MAX_RECEIPT_BYTES = 4096


class BadMessage(ValueError):
    """A payload that is not a valid record or receipt; the text names the field, never a value."""


@dataclass(frozen=True, slots=True)
class RecordMessage:
    """One session record as offered by a gateway."""

    record_id: str
    site: str
    bed: str
    month: str  # YYYY-MM (UTC) the session started
    row: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Receipt:
    """The registry has the record ``record_id`` (``stored`` now, or ``duplicate``: it had it)."""

    record_id: str
    site: str
    bed: str
    status: str


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """One alert transition as a gateway published it on ``.../alerts`` (first send or re-offer)."""

    alert_id: str
    seq: int
    site: str
    bed: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AlertReceipt:
    """A consumer (``by``) has the alert transition ``(alert_id, seq)`` of ``site``/``bed``."""

    alert_id: str
    seq: int
    site: str
    bed: str
    status: str  # stored now, or duplicate: it had it
    by: str


def alerts_topic(prefix: str, site: str, bed: str) -> str:
    return f"{prefix}/{site}/{bed}/alerts"


def alert_receipt_topic(prefix: str, site: str, bed: str) -> str:
    return f"{prefix}/{site}/{bed}/alerts/receipt"


def record_topic(prefix: str, site: str, bed: str) -> str:
    return f"{prefix}/{site}/{bed}/record"


def receipt_topic(prefix: str, site: str, bed: str) -> str:
    return f"{prefix}/{site}/{bed}/receipt"


def topic_site_bed(prefix: str, topic: str, leaf: str) -> tuple[str, str]:
    """(site, bed) of ``{prefix}/{site}/{bed}/{leaf}``; BadMessage for any other topic.

    ``leaf`` may have more than one level (``alerts/receipt``).
    """
    head = prefix + "/"
    parts = topic[len(head) :].split("/", 2) if topic.startswith(head) else []
    if len(parts) != 3 or parts[2] != leaf or not _ID.match(parts[0]) or not _ID.match(parts[1]):
        raise BadMessage(f"topic is not {prefix}/{{site}}/{{bed}}/{leaf}")
    return parts[0], parts[1]


def record_payload(*, row: dict[str, Any], site: str, bed: str, started: datetime, sent: datetime) -> bytes:
    """The message a gateway publishes for one session (compact JSON, keys sorted)."""
    body = {
        "schema": RECORD_SCHEMA,
        "record_id": row["record_id"],
        "site": site,
        "bed": bed,
        "month": started.strftime("%Y-%m"),
        "sent_utc": iso_utc(sent),
        "record": row,
    }
    return _compact(body, "record")


def _compact(body: dict[str, Any], what: str) -> bytes:
    """Compact strict JSON with sorted keys: the bytes of every message here."""
    return strict_json.dumps(body, what=what, sort_keys=True, separators=(",", ":")).encode()


def _object(payload: bytes, limit: int) -> dict[str, Any]:
    if len(payload) > limit:
        raise BadMessage(f"payload larger than {limit} bytes")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadMessage("payload is not JSON") from None
    if not isinstance(doc, dict):
        raise BadMessage("payload is not a JSON object")
    return doc


def _field(doc: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not pattern.match(value):
        raise BadMessage(f"field {name!r} missing or malformed")
    return value


def parse_record(payload: bytes, *, site: str, bed: str) -> RecordMessage:
    """A record received on ``{site}/{bed}/record``; BadMessage when it does not hold.

    The site and bed in the payload must be the topic's: the broker's ACL vouches for the topic
    (a clinic's bridge can only write its own prefix), not for what a payload claims.
    """
    doc = _object(payload, MAX_RECORD_BYTES)
    if doc.get("schema") != RECORD_SCHEMA:
        raise BadMessage(f"field 'schema' is not {RECORD_SCHEMA!r}")
    record_id = _field(doc, "record_id", _RECORD_ID)
    _site_bed(doc, site, bed)
    month = _field(doc, "month", _MONTH)
    row = doc.get("record")
    if not isinstance(row, dict):
        raise BadMessage("field 'record' is not an object")
    if not _ROW_SCHEMA.match(str(row.get("schema"))) or row.get("record_id") != record_id:
        raise BadMessage("field 'record' is not a vitalwatch-session-record row of this record_id")
    return RecordMessage(record_id, site, bed, month, row)


def receipt_payload(receipt: Receipt, *, now: datetime) -> bytes:
    body = {
        "schema": RECEIPT_SCHEMA,
        "kind": "session_record",
        "record_id": receipt.record_id,
        "site": receipt.site,
        "bed": receipt.bed,
        "status": receipt.status,
        "receipt_utc": iso_utc(now),
    }
    return _compact(body, "receipt")


def parse_receipt(payload: bytes, *, site: str, bed: str) -> Receipt:
    """A receipt received on ``{site}/{bed}/receipt``; BadMessage when it does not hold."""
    doc = _object(payload, MAX_RECEIPT_BYTES)
    if doc.get("schema") != RECEIPT_SCHEMA or doc.get("kind") != "session_record":
        raise BadMessage(f"not a {RECEIPT_SCHEMA} session_record receipt")
    _site_bed(doc, site, bed)
    return Receipt(_field(doc, "record_id", _RECORD_ID), site, bed, _status(doc))


def _status(doc: dict[str, Any]) -> str:
    status = doc.get("status")
    if status not in ("stored", "duplicate"):
        raise BadMessage("field 'status' is not 'stored' or 'duplicate'")
    return str(status)


def _seq(doc: dict[str, Any]) -> int:
    seq = doc.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq < 2**53:
        raise BadMessage("field 'seq' missing or not a positive integer")
    return seq


def _site_bed(doc: dict[str, Any], site: str, bed: str) -> None:
    if (doc.get("site"), doc.get("bed")) != (site, bed):
        raise BadMessage("fields 'site' and 'bed' differ from the topic")


def parse_alert(payload: bytes, *, site: str, bed: str) -> AlertMessage:
    """An alert transition received on ``{site}/{bed}/alerts``; BadMessage when it does not hold.

    Only what storing and receipting need is checked here (the id, the seq, the topic's site and
    bed); the full contract is ``schemas/alert.schema.json``, which the gateway's tests hold it to.
    """
    doc = _object(payload, MAX_ALERT_BYTES)
    if doc.get("schema") != ALERT_SCHEMA:
        raise BadMessage(f"field 'schema' is not {ALERT_SCHEMA!r}")
    _site_bed(doc, site, bed)
    return AlertMessage(_field(doc, "alert_id", _ID), _seq(doc), site, bed, doc)


def alert_receipt_payload(receipt: AlertReceipt, *, now: datetime) -> bytes:
    body = {
        "schema": ALERT_RECEIPT_SCHEMA,
        "alert_id": receipt.alert_id,
        "seq": receipt.seq,
        "site": receipt.site,
        "bed": receipt.bed,
        "status": receipt.status,
        "by": receipt.by,
        "receipt_utc": iso_utc(now),
    }
    return _compact(body, "receipt")


def parse_alert_receipt(payload: bytes, *, site: str, bed: str) -> AlertReceipt:
    """An alert receipt received on ``{site}/{bed}/alerts/receipt``; BadMessage when it does not hold."""
    doc = _object(payload, MAX_RECEIPT_BYTES)
    if doc.get("schema") != ALERT_RECEIPT_SCHEMA:
        raise BadMessage(f"field 'schema' is not {ALERT_RECEIPT_SCHEMA!r}")
    _site_bed(doc, site, bed)
    return AlertReceipt(
        _field(doc, "alert_id", _ID), _seq(doc), site, bed, _status(doc), _field(doc, "by", _ID)
    )
