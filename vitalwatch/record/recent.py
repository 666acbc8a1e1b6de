"""The last minutes of a bed's open session, read back from the session record.

Why: the gateway's trend document (:mod:`vitalwatch.delivery.trend`) is kept in memory; after a
daemon restart in the middle of a session it would start empty, and a station opened then would
draw nothing of what happened before. The session record already holds what is needed: one
summary row per minute (mean, min, max, last of SpO2 and pulse) and every NIBP reading. This
module turns the open session's rows within the window into points with their age.

Times in the record are seconds since the session started plus its start in UTC
(:mod:`vitalwatch.record.sessionlog`), so an age is ``epoch_now - (started_utc + t_s)``: the
wall clock of this gateway, the same one that wrote the record. Read once at start, off the
alarm path; a record that cannot be read costs the seed, never the monitoring.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

import structlog

from vitalwatch.delivery.trend import SeedLatest, SeedPoint

__all__ = ["RecordTrend", "recent_trend"]

log = structlog.get_logger("vitalwatch.record.recent")

_SUMMARY_KINDS = ("spo2", "pulse_rate")
_NIBP_COLUMNS = (("nibp_systolic", "systolic"), ("nibp_diastolic", "diastolic"), ("nibp_mean", "mean"))


@dataclass(slots=True)
class RecordTrend:
    """Points (oldest first) and the last value of each kind, with their age in seconds."""

    points: list[SeedPoint] = field(default_factory=list)
    latest: list[SeedLatest] = field(default_factory=list)


def recent_trend(conn: sqlite3.Connection, bed: str, *, epoch_now: float, window_s: float) -> RecordTrend:
    """The open session of ``bed`` within the last ``window_s`` seconds (empty when none is open).

    A minute row becomes one point at the middle of its minute; its last value counts as measured
    at the **start** of that minute (the record does not keep the sample's time), so a seeded
    value never looks newer than it was.
    """
    found = RecordTrend()
    try:
        row = conn.execute(
            "SELECT session_id, started_utc, ended_s FROM sessions WHERE bed=? "
            "ORDER BY started_utc DESC LIMIT 1",
            (bed,),
        ).fetchone()
        if row is None or row[2] is not None:  # the bed's last session ended: nothing is open
            return found
        session_id, started = str(row[0]), float(row[1])
        since = epoch_now - window_s - started  # t_s of the oldest row that can still show
        minutes = conn.execute(
            "SELECT t_s, span_s, stats FROM minutes WHERE session_id=? AND t_s + span_s >= ? ORDER BY t_s",
            (session_id, since),
        ).fetchall()
        readings = conn.execute(
            "SELECT t_s, systolic, diastolic, mean, valid FROM nibp "
            "WHERE session_id=? AND t_s >= ? ORDER BY t_s",
            (session_id, since),
        ).fetchall()
    except sqlite3.Error as exc:
        log.warning("trend.record_unreadable", bed=bed, error=str(exc))
        return found
    last: dict[str, SeedLatest] = {}
    for t_s, span_s, stats in minutes:
        try:
            summary = json.loads(stats)
        except ValueError:
            continue  # a damaged row costs its minute, not the seed
        for kind in _SUMMARY_KINDS:
            s = summary.get(kind) if isinstance(summary, dict) else None
            if not isinstance(s, dict) or not s.get("n"):
                continue
            try:
                mean, lo, hi, value = float(s["mean"]), float(s["min"]), float(s["max"]), float(s["last"])
            except (KeyError, TypeError, ValueError):
                continue
            age = epoch_now - (started + float(t_s) + float(span_s) / 2)
            found.points.append(SeedPoint(kind, age, mean, lo, hi))
            last[kind] = SeedLatest(kind, epoch_now - (started + float(t_s)), value, "valid")
    for t_s, systolic, diastolic, mean, valid in readings:
        age = epoch_now - (started + float(t_s))
        for kind, value in zip((k for k, _ in _NIBP_COLUMNS), (systolic, diastolic, mean), strict=True):
            if valid and value is not None:
                found.points.append(SeedPoint(kind, age, float(value), float(value), float(value)))
            if value is not None or kind != "nibp_mean":  # a reading without a mean has no mean
                good = bool(valid) and value is not None
                seen = (float(value), "valid") if good else (None, "invalid")
                last[kind] = SeedLatest(kind, age, *seen)
    found.points.sort(key=lambda p: -p.age_s)
    found.latest = list(last.values())
    return found
