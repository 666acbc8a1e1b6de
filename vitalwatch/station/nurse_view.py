"""How an alert reads to a nurse: one line with bed, priority, what, value, limit and time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = ["format_alert"]

_PRIORITY = {"high": "HIGH  ", "medium": "MEDIUM", "low": "LOW   ", "info": "INFO  "}


def _clock(iso: str | None) -> str:
    if not iso:
        return "--:--:--"
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return "--:--:--"


def _number(value: Any, unit: str | None) -> str:
    if value is None:
        return "-"
    text = f"{value:g}" if isinstance(value, int | float) else str(value)
    return f"{text} {unit}" if unit else text


def format_alert(payload: dict[str, Any]) -> str:
    """``12:03:15 chair-1 HIGH   RAISED   SpO2 86 % below 90 % for 15 s  (value 86 %, limit 90 %)``."""
    state = str(payload.get("state", "?")).upper()
    priority = _PRIORITY.get(str(payload.get("priority")), str(payload.get("priority", "?")).upper())
    unit = payload.get("unit")
    when = _clock(payload.get("event_utc") or payload.get("sent_utc"))
    details = f"value {_number(payload.get('value'), unit)}, limit {_number(payload.get('limit'), unit)}"
    who = payload.get("acknowledged_by")
    if state == "ACKNOWLEDGED" and who:
        details += f", by {who}"
    return (
        f"{when} {payload.get('bed', '?')} {priority} {state:<12} {payload.get('message', '')}  ({details})"
    )
