"""Logs: JSON lines off a terminal, bound bed/device context, no locals in tracebacks, no patient data."""

from __future__ import annotations

import io
import json

import structlog
from structlog.contextvars import bound_contextvars

from vitalwatch.ops.logconfig import configure_logging


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_with_bound_context() -> None:
    out = io.StringIO()  # not a TTY: JSON, as journald gets it
    configure_logging("info", "auto", stream=out)
    with bound_contextvars(bed="chair-1", device="oximeter"):
        structlog.get_logger("t").info("device.connected", driver="masimo")
    (record,) = lines(out)
    assert record["event"] == "device.connected"
    assert record["bed"] == "chair-1" and record["device"] == "oximeter"
    assert record["level"] == "info"
    assert str(record["timestamp"]).endswith("Z")


def test_level_filters() -> None:
    out = io.StringIO()
    configure_logging("warning", "json", stream=out)
    structlog.get_logger("t").info("quiet")
    structlog.get_logger("t").warning("loud")
    assert [r["event"] for r in lines(out)] == ["loud"]


def test_tracebacks_carry_no_local_variables() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    patient_secret = "Jane Doe 1970-01-01"  # a local that must never reach a log line
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("t").exception("device.crashed")
    text = out.getvalue()
    assert "device.crashed" in text and "ValueError" in text
    assert patient_secret not in text
    assert '"locals"' not in text


def test_forbidden_keys_are_redacted() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    structlog.get_logger("t").info("oops", patient_name="Jane Doe", password="hunter2", bed="chair-1")
    text = out.getvalue()
    assert "Jane Doe" not in text and "hunter2" not in text
    assert lines(out)[0]["bed"] == "chair-1"


def test_console_format_is_not_json() -> None:
    out = io.StringIO()
    configure_logging("info", "console", stream=out)
    structlog.get_logger("t").info("device.connected", bed="chair-1")
    text = out.getvalue()
    assert "device.connected" in text and not text.lstrip().startswith("{")
