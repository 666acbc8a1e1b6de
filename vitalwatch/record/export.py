"""Reading the session record back: one session's data, its summary, and the de-identified export row.

Why one module for both: ``vitalwatch report`` and ``vitalwatch export`` must agree on what a
baseline, a peak or a response time is, so both use :func:`summarise`. Every export field is
documented in docs/session-record.md; change the two together (and bump :data:`SCHEMA`).

Times in a summary are seconds since the session started (as stored); the export turns them
into minutes relative to the infusion start (negative in the baseline), or to the session
start when no infusion was recorded (``infusion_started`` false).
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vitalwatch import strict_json
from vitalwatch.delivery.payloads import priority_rank
from vitalwatch.engine.vocabulary import CONDITIONS

__all__ = [
    "CSV_FIELDS",
    "SCHEMA",
    "AlarmLife",
    "SessionData",
    "Summary",
    "export_row",
    "last_session_of_bed",
    "load_session",
    "sessions_since",
    "summarise",
    "write_export",
]

SCHEMA = "vitalwatch-session-record/2"
PRIORITIES = ("high", "medium", "low")
# An NIBP reading stands for the blood pressure until the next valid one, at most this long (the
# recovery measuring interval, 15 min): beyond it nobody knows, and it is not counted.
NIBP_HOLD_S = 900.0
# Registry thresholds for NIBP time (SpO2 and pulse ones are counted live: sessionlog.THRESHOLDS).
NIBP_THRESHOLDS = (("sbp_180_or_more", "systolic", 180.0), ("dbp_110_or_more", "diastolic", 110.0))
# Observations a nurse enters (``nurse_<kind>`` events): counted with times in the export. A free
# note is a kind of its own and never exported, not even counted (it may say anything).
NURSE_EVENTS = ("dissociation", "emergence", "agitation", "nausea", "vomiting", "rescue_medication")
# The nurse's steps, prompts and observations, in the record's events (docs/session-record.md).
NURSE_KINDS = frozenset(
    {"start_session", "start_infusion", "phase_command", "pump_stopped", "end_session"}
    | {"prompt", "prompt_done", "prompt_closed"}
    | {f"nurse_{k}" for k in (*NURSE_EVENTS, "note")}
)


@dataclass(frozen=True, slots=True)
class NibpRow:
    t_s: float
    systolic: float | None
    diastolic: float | None
    mean: float | None
    valid: bool


@dataclass(frozen=True, slots=True)
class MinuteRow:
    t_s: float
    span_s: float
    phase: str
    stats: dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class SessionData:
    """Everything stored for one session (its ``sessions`` row, minutes, NIBP readings, events)."""

    info: dict[str, Any]
    minutes: list[MinuteRow]
    nibp: list[NibpRow]
    events: list[tuple[float, str, dict[str, Any]]]


@dataclass(slots=True)
class AlarmLife:
    """One alarm occurrence within the session, from its transitions."""

    alert_id: str
    condition: str
    category: str
    priority: str  # the highest priority it reached
    raised_s: float
    acknowledged_s: float | None = None
    cleared_s: float | None = None

    @property
    def response_s(self) -> float | None:
        """Raised -> first acknowledgement, seconds (None when never acknowledged)."""
        return None if self.acknowledged_s is None else self.acknowledged_s - self.raised_s


@dataclass(slots=True)
class Summary:
    """What report and export say about one session; times in seconds since session start."""

    session_id: str
    record_id: str
    bed: str
    started: datetime
    complete: bool
    end_s: float
    phases: list[tuple[str, float, float]]  # (phase, start_s, end_s)
    infusion_s: float | None
    recovery_s: float | None
    dose_mg_per_kg: float | None
    planned_minutes: float | None
    baseline: dict[str, float | None]
    peaks: dict[str, tuple[float, float] | None]  # name -> (value, t_s)
    beyond_s: dict[str, float]
    nibp_readings: int
    alarms: list[AlarmLife]
    acks: list[float]
    discharge_ready_s: float | None
    reference_s: float = field(default=0.0)  # infusion start, or 0 without one
    # The nurse's steps and observations: (t_s, kind, data) in order (NURSE_KINDS).
    nurse: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def override(self) -> dict[str, Any] | None:
        """The infusion start's override (reason and open items), None when it started ready."""
        return next(
            (
                d
                for _, k, d in self.nurse
                if k in ("start_infusion", "phase_command") and d.get("override_reason")
            ),
            None,
        )


def load_session(conn: sqlite3.Connection, session_id: str) -> SessionData:
    """KeyError when the record has no session ``session_id``."""
    row = conn.execute("SELECT * FROM sessions WHERE session_id=?", (session_id,)).fetchone()
    if row is None:
        raise KeyError(session_id)
    minutes = [
        MinuteRow(r[0], r[1], r[2], json.loads(r[3]))
        for r in conn.execute(
            "SELECT t_s, span_s, phase, stats FROM minutes WHERE session_id=? ORDER BY t_s", (session_id,)
        )
    ]
    nibp = [
        NibpRow(r[0], r[1], r[2], r[3], bool(r[4]))
        for r in conn.execute(
            "SELECT t_s, systolic, diastolic, mean, valid FROM nibp WHERE session_id=? ORDER BY t_s",
            (session_id,),
        )
    ]
    events = [
        (float(r[0]), str(r[1]), json.loads(r[2]))
        for r in conn.execute(
            "SELECT t_s, kind, data FROM events WHERE session_id=? ORDER BY n", (session_id,)
        )
    ]
    return SessionData(dict(zip(row.keys(), tuple(row), strict=True)), minutes, nibp, events)


def last_session_of_bed(conn: sqlite3.Connection, bed: str) -> str | None:
    """The id of the most recently started session of ``bed``."""
    row = conn.execute(
        "SELECT session_id FROM sessions WHERE bed=? ORDER BY started_utc DESC LIMIT 1", (bed,)
    ).fetchone()
    return None if row is None else str(row[0])


def sessions_since(conn: sqlite3.Connection, since: datetime) -> list[str]:
    """Ids of the sessions that started at or after ``since``, oldest first."""
    rows = conn.execute(
        "SELECT session_id FROM sessions WHERE started_utc>=? ORDER BY started_utc", (since.timestamp(),)
    )
    return [str(r[0]) for r in rows]


def _phases(data: SessionData, end_s: float) -> list[tuple[str, float, float]]:
    marks = [(t, d["phase"]) for t, kind, d in data.events if kind == "phase"]
    spans = []
    for i, (t, phase) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else end_s
        if phase != "ended":
            spans.append((phase, t, stop))
    return spans


def _alarms(data: SessionData) -> tuple[list[AlarmLife], list[float]]:
    lives: dict[str, AlarmLife] = {}
    acks: list[float] = []
    for t, kind, d in data.events:
        if kind != "alert":
            continue
        life = lives.get(d["alert_id"])
        if life is None:
            life = lives[d["alert_id"]] = AlarmLife(
                d["alert_id"], d["condition"], d["category"], d["priority"], d.get("onset_s", t)
            )
        if priority_rank(d["priority"]) > priority_rank(life.priority):
            life.priority = d["priority"]
        if d["state"] == "acknowledged":
            acks.append(t)
            if life.acknowledged_s is None:
                life.acknowledged_s = t
        elif d["state"] == "cleared":
            life.cleared_s = t
    return sorted(lives.values(), key=lambda a: a.raised_s), acks


def summarise(data: SessionData) -> Summary:
    """Durations, baseline, peaks, time beyond thresholds, alarms and discharge-ready of one session."""
    info = data.info
    # An open session's row is not rewritten every minute (SD budget): its end is the latest thing seen.
    end_s = (
        float(info["ended_s"])
        if info["ended_s"] is not None
        else max(
            [float(info["last_s"])]
            + [m.t_s + m.span_s for m in data.minutes[-1:]]
            + [r.t_s for r in data.nibp[-1:]]
            + [e[0] for e in data.events[-1:]]
        )
    )
    phases = _phases(data, end_s)
    infusion_s = next((s for p, s, _ in phases if p == "infusion"), None)
    recovery_s = next((s for p, s, _ in phases if p == "recovery" and s >= (infusion_s or 0.0)), None)
    ref = infusion_s if infusion_s is not None else 0.0
    # Peaks and time beyond limits count from the infusion start: the baseline is before the drug.
    after = data.minutes
    if infusion_s is not None:
        after = [m for m in data.minutes if m.phase in ("infusion", "recovery")]
    peaks: dict[str, tuple[float, float] | None] = {}
    for name, kind, pick in (
        ("min_spo2", "spo2", "min"),
        ("max_pulse", "pulse_rate", "max"),
        ("min_pulse", "pulse_rate", "min"),
    ):
        cands = [
            (m.stats[kind][pick], m.stats[kind][f"{pick}_t"]) for m in after if m.stats.get(kind, {}).get("n")
        ]
        peaks[name] = (min if pick == "min" else max)(cands, key=lambda c: c[0]) if cands else None
    valid = [r for r in data.nibp if r.valid and (infusion_s is None or r.t_s >= ref - 1e-6)]
    for name, attr, lowest in (
        ("max_systolic", "systolic", False),
        ("min_systolic", "systolic", True),
        ("max_diastolic", "diastolic", False),
    ):
        vals: list[tuple[float, float]] = [
            (getattr(r, attr), r.t_s) for r in valid if getattr(r, attr) is not None
        ]
        if vals:
            peaks[name] = min(vals, key=lambda c: c[0]) if lowest else max(vals, key=lambda c: c[0])
        else:
            peaks[name] = None
    beyond: dict[str, float] = {}
    for m in after:
        for kind, stats in m.stats.items():
            for key, value in stats.items():
                if key.startswith(("below_", "above_")):
                    name = f"{kind}_{key}"
                    beyond[name] = beyond.get(name, 0.0) + float(value)
    all_valid = [r for r in data.nibp if r.valid]
    for name, attr, limit in NIBP_THRESHOLDS:
        total = 0.0
        for i, r in enumerate(all_valid):
            if r.t_s < ref - 1e-6 and infusion_s is not None:
                continue
            value = getattr(r, attr)
            if value is not None and value >= limit:
                stop = all_valid[i + 1].t_s if i + 1 < len(all_valid) else end_s
                total += max(0.0, min(stop, r.t_s + NIBP_HOLD_S, end_s) - r.t_s)
        beyond[name] = total
    alarms, acks = _alarms(data)
    ready = next(
        (t for t, k, d in data.events if k == "status" and d["code"] == "discharge_ready" and d["active"]),
        None,
    )
    return Summary(
        session_id=str(info["session_id"]),
        record_id=str(info["record_id"]),
        bed=str(info["bed"]),
        started=datetime.fromtimestamp(float(info["started_utc"]), UTC),
        complete=info["ended_s"] is not None,
        end_s=end_s,
        phases=phases,
        infusion_s=infusion_s,
        recovery_s=recovery_s,
        dose_mg_per_kg=info["dose_mg_per_kg"],
        planned_minutes=info["planned_minutes"],
        baseline={
            "systolic": info["bl_systolic"],
            "diastolic": info["bl_diastolic"],
            "spo2": info["bl_spo2"],
            "pulse_rate": info["bl_pulse"],
        },
        peaks=peaks,
        beyond_s=beyond,
        nibp_readings=len(data.nibp),
        alarms=alarms,
        acks=acks,
        discharge_ready_s=ready,
        reference_s=ref,
        nurse=[(t, k, d) for t, k, d in data.events if k in NURSE_KINDS],
    )


def _min(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60.0, 1)


def _phase_minutes(s: Summary, phase: str) -> float | None:
    spans = [b - a for p, a, b in s.phases if p == phase]
    return _min(sum(spans)) if spans else None


def export_row(s: Summary, *, include_bed: bool = False) -> dict[str, Any]:
    """The de-identified registry row of one session (docs/session-record.md, field by field)."""
    row: dict[str, Any] = {
        "schema": SCHEMA,
        "record_id": s.record_id,
        "complete": s.complete,
        "infusion_started": s.infusion_s is not None,
        "session_minutes": _min(s.end_s),
        "baseline_minutes": _phase_minutes(s, "baseline"),
        "infusion_minutes": _phase_minutes(s, "infusion"),
        "recovery_minutes": _phase_minutes(s, "recovery"),
        "dose_mg_per_kg": s.dose_mg_per_kg,
        "planned_infusion_minutes": s.planned_minutes,
        "baseline_systolic": s.baseline["systolic"],
        "baseline_diastolic": s.baseline["diastolic"],
        "baseline_spo2": s.baseline["spo2"],
        "baseline_pulse": s.baseline["pulse_rate"],
    }
    for name in ("max_systolic", "min_systolic", "max_diastolic", "min_spo2", "max_pulse", "min_pulse"):
        peak = s.peaks.get(name)
        row[name] = None if peak is None else peak[0]
        row[f"{name}_at_min"] = None if peak is None else _min(peak[1] - s.reference_s)
    row["nibp_readings"] = s.nibp_readings
    for name in (
        "spo2_below_90",
        "pulse_rate_above_120",
        "pulse_rate_below_50",
        "sbp_180_or_more",
        "dbp_110_or_more",
    ):
        row[f"minutes_{name}"] = _min(s.beyond_s.get(name, 0.0))
    by: dict[str, dict[str, int]] = {}
    for a in s.alarms:
        by.setdefault(a.condition, {}).setdefault(a.priority, 0)
        by[a.condition][a.priority] += 1
    row["alarms_total"] = len(s.alarms)
    for p in PRIORITIES:
        row[f"alarms_{p}"] = sum(1 for a in s.alarms if a.priority == p)
    responses = [a.response_s for a in s.alarms if a.response_s is not None]
    row["alarms_acknowledged"] = len(responses)
    row["ack_response_median_s"] = round(statistics.median(responses), 1) if responses else None
    row["ack_response_max_s"] = round(max(responses), 1) if responses else None
    row["alarms"] = by
    override = s.override
    row["infusion_override"] = override is not None
    row["override_open_items"] = len(override.get("open_items") or []) if override is not None else 0
    prompts = [k for _, k, _ in s.nurse if k.startswith("prompt")]
    row["prompts_opened"] = prompts.count("prompt")
    row["prompts_done_by_nurse"] = prompts.count("prompt_done")
    events: dict[str, dict[str, Any]] = {}
    for t_s, kind, data in s.nurse:
        name = kind.removeprefix("nurse_")
        if name not in NURSE_EVENTS:
            continue  # steps, prompts and free notes: a note is never exported
        entry = events.setdefault(name, {"count": 0, "at_min": []})
        entry["count"] += 1
        entry["at_min"].append(_min(t_s - s.reference_s))
        if isinstance(data.get("score"), int):
            entry["max_score"] = max(entry.get("max_score", 0), data["score"])
    row["nurse_events"] = events
    ready = s.discharge_ready_s
    row["discharge_ready_at_min"] = None if ready is None else _min(ready - s.reference_s)
    row["discharge_ready_after_recovery_min"] = (
        None if ready is None or s.recovery_s is None else _min(ready - s.recovery_s)
    )
    if include_bed:
        row["bed"] = s.bed
    return row


def _csv_fields(include_bed: bool, leading: Sequence[str] = ()) -> list[str]:
    dummy = [k for k in export_row(_EMPTY) if k not in ("alarms", "nurse_events")]
    alarm_cols = [f"alarms_{c}_{p}" for c in CONDITIONS for p in PRIORITIES]
    event_cols = [f"events_{e}" for e in NURSE_EVENTS]
    return [*leading, *dummy, *alarm_cols, *event_cols] + (["bed"] if include_bed else [])


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in row.items() if k not in ("alarms", "nurse_events")}
    for c in CONDITIONS:
        for p in PRIORITIES:
            flat[f"alarms_{c}_{p}"] = row.get("alarms", {}).get(c, {}).get(p, 0)
    for e in NURSE_EVENTS:  # a registry row from an older gateway has none
        flat[f"events_{e}"] = row.get("nurse_events", {}).get(e, {}).get("count", 0)
    return {k: ("" if v is None else str(v).lower() if isinstance(v, bool) else v) for k, v in flat.items()}


def write_export(
    rows: Iterable[dict[str, Any]], fmt: str, *, include_bed: bool = False, leading: Sequence[str] = ()
) -> str:
    """Rows as JSON Lines (one object per line) or CSV (header, flat alarm columns); the text.

    ``leading``: CSV columns before the row's own (the registry's ``site`` and ``month``).
    """
    if fmt == "jsonl":
        return "".join(
            strict_json.dumps(r, what="export", sort_keys=False, separators=(",", ":")) + "\n" for r in rows
        )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_csv_fields(include_bed, leading), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(_csv_row(r))
    return buf.getvalue()


_EMPTY = Summary(
    session_id="",
    record_id="",
    bed="",
    started=datetime.fromtimestamp(0, UTC),
    complete=False,
    end_s=0.0,
    phases=[],
    infusion_s=None,
    recovery_s=None,
    dose_mg_per_kg=None,
    planned_minutes=None,
    baseline={"systolic": None, "diastolic": None, "spo2": None, "pulse_rate": None},
    peaks={},
    beyond_s={},
    nibp_readings=0,
    alarms=[],
    acks=[],
    discharge_ready_s=None,
)

CSV_FIELDS: Sequence[str] = tuple(_csv_fields(False))
