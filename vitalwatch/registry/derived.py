"""What the registry derives from each record as it stores it, for the registry page's queries.

The page aggregates a few fields of every record (docs/registry.md, "The registry page"). Read
out of each record's JSON at query time they cost a parse per row and query; kept in their own
columns and rows (migration 4) they are read from covering indexes. This is the one rule for
them; the migration fills records stored before it by the same rule, in SQL.

A value that is not a JSON number is unknown (NULL), never a guess; an alarm count is kept only
when it is a whole number of 1..1,000,000 under a condition object (anything else in a record
from a newer or broken gateway is left out, so it cannot fail the batch it came in).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ALARM_COUNT_MAX", "FIGURE_COLUMNS", "alarm_counts", "figure_values"]

# column -> field of the export row (docs/session-record.md)
FIGURE_COLUMNS: dict[str, str] = {
    "dose_mg_per_kg": "dose_mg_per_kg",
    "max_systolic": "max_systolic",
    "max_diastolic": "max_diastolic",
    "min_spo2": "min_spo2",
    "min_pulse": "min_pulse",
    "discharge_ready_min": "discharge_ready_after_recovery_min",
}
ALARM_COUNT_MAX = 1_000_000


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def figure_values(row: dict[str, Any]) -> tuple[float | None, ...]:
    """The record's values for :data:`FIGURE_COLUMNS`, in that order."""
    return tuple(_number(row.get(field)) for field in FIGURE_COLUMNS.values())


def alarm_counts(row: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(condition, priority, occurrences) of the record's ``alarms`` object."""
    alarms = row.get("alarms")
    if not isinstance(alarms, dict):
        return []
    out: list[tuple[str, str, int]] = []
    for condition, by_priority in alarms.items():
        if not isinstance(by_priority, dict):
            continue
        for priority, n in by_priority.items():
            if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= ALARM_COUNT_MAX:
                out.append((str(condition), str(priority), n))
    return out
