"""A lost or damaged alert journal at start: found, kept for forensics, and the session recovered.

The alert journal (``vitalwatch.sqlite3``: outbox, active alarms, phase, counters, snapshots)
is what a restart resumes from. If it is gone or damaged while the session record
(``sessions.sqlite3``) shows a session, starting on an empty journal would silently reset the
bed: active alarms forgotten, ``seq`` restarted at 1, every bed back in ``baseline`` (where no
link or SpO2 rule runs) while the record still says ``recovery``.

:func:`check_journal` runs before the journal is opened. A journal is lost when it is

- missing while the session record holds a session (both are created at the first start);
- empty (zero bytes), or not an SQLite database (its header);
- damaged: ``PRAGMA quick_check`` does not answer ``ok``, or SQLite cannot read it at all
  (a truncated file). Cheap at these sizes: the journal keeps at most ten thousand rows.

A lost journal's files (and its ``-wal``/``-shm``) are moved aside to
``vitalwatch.sqlite3.lost-<UTC>``, never deleted. The daemon raises the local technical
alarm ``journal_lost`` and a fresh journal is created.

:func:`recover_session` then reads each bed's open session from the record: the phase and when
it began (the last phase event), the baseline the record froze, and the highest alert-id
counter and ``seq`` it saw. The bed resumes from those (:mod:`vitalwatch.ops.bed_runtime`):

- the phase is entered again with its real start, and the baseline is restored;
- ``seq`` continues after the highest the record saw, and alert ids get a new counter epoch
  (the next multiple of :data:`ID_EPOCH` above the highest recorded counter). So every alert
  id issued after the loss is new, and ``(alert_id, seq)`` cannot repeat a pair a subscriber
  saw, even for transitions the record had not written yet (it commits once a minute);
- alarms the record shows active are *not* continued under their old ids, since their last
  ``seq`` may be newer than the record: they are named in the log line, the publisher clears
  their retained copies as unknown at its first connect, and the engine raises any condition
  that is still present again, under a new id.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from vitalwatch.record.sessionlog import connect_readonly

__all__ = [
    "ID_EPOCH",
    "JOURNAL_LOST_ALARM",
    "JournalLoss",
    "RecoveredSession",
    "check_journal",
    "next_id_epoch",
    "recover_session",
]

log = structlog.get_logger("vitalwatch.continuity.journal_loss")

JOURNAL_LOST_ALARM = "journal_lost"
# Alert-id counters after a lost journal start at the next multiple of this (a new epoch).
ID_EPOCH = 10_000
_SQLITE_HEADER = b"SQLite format 3\x00"
_SIDE_FILES = ("-wal", "-shm")


@dataclass(frozen=True, slots=True)
class JournalLoss:
    """Why the journal at ``path`` was lost, and where its remains were moved (None: missing)."""

    path: Path
    reason: str
    moved_to: Path | None


@dataclass(frozen=True, slots=True)
class RecoveredSession:
    """One bed's open session as the session record last wrote it."""

    session_id: str
    phase: str
    phase_start_epoch: float
    baseline: dict[str, float | None]  # systolic, diastolic, spo2, pulse_rate (None: not recorded)
    id_counter: int  # the highest alert-id counter recorded
    seq: int  # the highest seq recorded
    active: tuple[str, ...]  # alert ids the record last saw active


def check_journal(path: Path, *, record: Path) -> JournalLoss | None:
    """None when the journal at ``path`` is sound (or this is a first start); else the loss."""
    if not path.exists():
        if _record_has_sessions(record):
            return JournalLoss(path, "missing while the session record holds a session", None)
        return None
    if not path.is_file():
        # Not a journal at all (a directory, a device): nothing of ours to judge or move. The
        # store cannot open it, so the daemon runs with persistence_degraded and says so.
        return None
    reason = _damage(path)
    if reason is None:
        return None
    return JournalLoss(path, reason, _move_aside(path))


def _damage(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if not header:
        return "empty (zero bytes)"
    if header != _SQLITE_HEADER:
        return "not an SQLite database"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return f"damaged: {exc}"
    found = [str(r[0]) for r in rows]
    if found != ["ok"]:
        return f"damaged: {found[0] if found else 'no answer from quick_check'}"
    return None


def _move_aside(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.lost-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.lost-{stamp}-{n}")
    path.rename(target)
    for suffix in _SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    return target


def _record_has_sessions(record: Path) -> bool:
    try:
        conn = connect_readonly(record)
    except sqlite3.Error:
        return False
    try:
        return bool(conn.execute("SELECT count(*) FROM sessions").fetchone()[0] > 0)
    finally:
        conn.close()


def recover_session(record: Path, bed: str) -> RecoveredSession | None:
    """The bed's open session in the record (None: no record, no session, or it ended)."""
    try:
        conn = connect_readonly(record)
    except sqlite3.Error as exc:
        log.warning("journal.recovery_unavailable", bed=bed, record=str(record), error=str(exc))
        return None
    try:
        row = conn.execute(
            "SELECT * FROM sessions WHERE bed=? ORDER BY started_utc DESC LIMIT 1", (bed,)
        ).fetchone()
        if row is None or row["ended_s"] is not None:
            return None
        sid = str(row["session_id"])
        phase, phase_t = str(row["phase"]), 0.0
        events = conn.execute(
            "SELECT t_s, kind, data FROM events WHERE session_id=? AND kind IN ('phase', 'alert') ORDER BY n",
            (sid,),
        ).fetchall()
        counter = seq = 0
        active: dict[str, bool] = {}
        for t_s, kind, data in events:
            fields = _json(data)
            recorded_phase = fields.get("phase")
            if kind == "phase" and isinstance(recorded_phase, str):
                phase, phase_t = recorded_phase, float(t_s)
                continue
            alert_id = str(fields.get("alert_id", ""))
            counter = max(counter, _counter_of(alert_id))
            recorded_seq = fields.get("seq")
            if isinstance(recorded_seq, int):
                seq = max(seq, recorded_seq)
            active[alert_id] = fields.get("state") != "cleared"
        started = float(row["started_utc"])
        baseline = {
            key: _number(row[col])
            for key, col in (
                ("systolic", "bl_systolic"),
                ("diastolic", "bl_diastolic"),
                ("spo2", "bl_spo2"),
                ("pulse_rate", "bl_pulse"),
            )
        }
        return RecoveredSession(
            session_id=sid,
            phase=phase,
            phase_start_epoch=started + phase_t,
            baseline=baseline,
            id_counter=counter,
            seq=seq,
            active=tuple(a for a, on in active.items() if on and a),
        )
    except (sqlite3.Error, ValueError) as exc:
        log.warning("journal.recovery_unavailable", bed=bed, record=str(record), error=str(exc))
        return None
    finally:
        conn.close()


def next_id_epoch(counter: int) -> int:
    """The alert-id counter to continue from after a loss: the next multiple of :data:`ID_EPOCH`."""
    return (counter // ID_EPOCH + 1) * ID_EPOCH


def _counter_of(alert_id: str) -> int:
    tail = alert_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _json(text: str) -> dict[str, object]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
