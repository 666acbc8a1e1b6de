"""The de-identified session record: per-minute vital summaries, NIBP readings and alarm history in SQLite.

Why: clinicians need a record of each infusion session (``vitalwatch report``) and the clinic
a de-identified registry row per session (``vitalwatch export``). Why not every reading: at
1 Hz from three devices that is ~10 000 rows an hour per bed, and an SD card wears with every
write (the budget is at most 5 MB/hour for the whole state directory, docs/operations.md). So readings are
summarised **in memory** and one small row per bed per minute is written:

.. code-block:: text

    BedSession ──observation(device, obs, now, valid)──▶ SessionLog ── minute bucket (min/max/mean/last,
               ──output(AlertTransition|PhaseChanged|      │            n valid, n invalid, seconds
                        StatusChanged|NibpRequest)──────▶  │            beyond thresholds)
    CommandHandler ──phase_fields({dose_mg_per_kg, ...})─▶ │ NIBP readings one by one (a few per hour)
                                                           ▼ once a minute, at a phase change and at the end
                                               SessionDb writer thread ─▶ {state.directory}/sessions.sqlite3

Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL``. This is the *record*, not the
alarm path (alerts are journalled with ``synchronous=FULL`` in the outbox before they are
sent); a power cut may lose the last minute of the record, never an alarm. Every write runs on
one writer thread, so an SD card that stalls for a second never blocks the event loop; batches
queued while it stalls are coalesced into one transaction.

A session runs from the first ``baseline`` phase (or the first data when no phase was ever
set, since the engine starts in ``baseline``) to ``ended``. After ``ended`` nothing is recorded
until the nurse sets a phase again (the leaving patient's last readings are not a new session).
Session ids are ``{bed}-{YYYYMMDD}-{n}`` (a location and a date, never a patient identifier);
each session also gets a random ``record_id`` (UUID4), the only id the export carries.
Nothing here stores who acknowledged an alarm (staff names) or any free text from a device.
Times in the database are seconds since the session started (monotonic differences), plus
the session's start in UTC for selecting sessions by date.
"""

from __future__ import annotations

import queue
import sqlite3
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from vitalwatch import strict_json
from vitalwatch.drivers.events import Observation
from vitalwatch.engine.outputs import AlertTransition, NibpRequest, Output, PhaseChanged, StatusChanged
from vitalwatch.engine.transition_codec import transition_to_dict

__all__ = [
    "SESSIONS_DB_NAME",
    "THRESHOLDS",
    "SessionDb",
    "SessionLog",
    "connect_readonly",
]

log = structlog.get_logger("vitalwatch.record.sessionlog")

SESSIONS_DB_NAME = "sessions.sqlite3"
SCHEMA_VERSION = 1

# Kinds summarised per minute (others, such as cuff_pressure while inflating, are not a vital).
# Respiratory rate comes from networked multi-parameter monitors (HL7); it has no registry
# threshold and no default alarm rule, but the record and the FHIR export carry it.
SUMMARISED = ("spo2", "pulse_rate", "perfusion_index", "resp_rate")
NIBP_KINDS = ("nibp_systolic", "nibp_diastolic", "nibp_mean")
# Seconds beyond these limits are counted per minute (documented in docs/session-record.md).
# They are the registry's thresholds, fixed so rows from different clinics compare; a clinic's
# alarm table may differ.
THRESHOLDS: dict[str, tuple[tuple[str, str, float], ...]] = {
    "spo2": (("below_90", "<", 90.0),),
    "pulse_rate": (("above_120", ">", 120.0), ("below_50", "<", 50.0)),
}
# A sample stands for the time until the next sample of its kind, at most this long (the
# engine's sample_hold_s): a gap in the signal is not counted as time beyond a limit.
HOLD_S = 5.0
# NIBP kinds of one reading arrive together; a kind seen again, or this much later, starts a new one.
NIBP_GROUP_S = 2.0
# Batches waiting for the writer; a card stalled for this many minutes of every bed loses
# the oldest record rows (logged), never blocks the loop.
MAX_QUEUED_BATCHES = 1000
PAGE_SIZE = 1024

_SCHEMA = f"""
PRAGMA user_version={SCHEMA_VERSION};
CREATE TABLE IF NOT EXISTS sessions(
    session_id TEXT PRIMARY KEY, record_id TEXT NOT NULL, bed TEXT NOT NULL,
    started_utc REAL NOT NULL, last_s REAL NOT NULL, ended_s REAL, phase TEXT NOT NULL,
    dose_mg_per_kg REAL, planned_minutes REAL,
    bl_systolic REAL, bl_diastolic REAL, bl_spo2 REAL, bl_pulse REAL);
CREATE INDEX IF NOT EXISTS sessions_bed ON sessions(bed, started_utc);
CREATE TABLE IF NOT EXISTS minutes(
    session_id TEXT NOT NULL, t_s REAL NOT NULL, span_s REAL NOT NULL, phase TEXT NOT NULL,
    stats TEXT NOT NULL, PRIMARY KEY(session_id, t_s)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nibp(
    session_id TEXT NOT NULL, t_s REAL NOT NULL, systolic REAL, diastolic REAL, mean REAL,
    valid INTEGER NOT NULL, PRIMARY KEY(session_id, t_s)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events(
    session_id TEXT NOT NULL, n INTEGER NOT NULL, t_s REAL NOT NULL, kind TEXT NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY(session_id, n)) WITHOUT ROWID;
"""

Statement = tuple[str, tuple[Any, ...]]


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open the record for reading (report, export); sqlite3.Error when missing or not a database."""
    if not path.is_file():
        raise sqlite3.OperationalError(f"no such file: {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    conn.execute("SELECT count(*) FROM sessions").fetchone()  # not a session record -> error now
    return conn


class SessionDb:
    """The sessions database: schema at open, then every write on one writer thread."""

    def __init__(self, path: Path, *, synchronous: str = "NORMAL", commit_interval_s: float = 60.0) -> None:
        self.path = path
        # At most one commit per interval for all beds together: each commit rewrites a few
        # pages (WAL frames), so commits, not rows, are what wear the card.
        self.commit_interval_s = commit_interval_s
        self._wake = threading.Event()
        self._urgent = 0  # flushes/closes waiting: commit without waiting out the interval
        self.failures = 0
        self._synchronous = synchronous
        self._queue: queue.Queue[list[Statement] | None] = queue.Queue(maxsize=MAX_QUEUED_BATCHES)
        self._thread = threading.Thread(target=self._run, name="vitalwatch-sessions", daemon=True)
        # The record is not the alarm path: a database that cannot be opened (read-only or full
        # state directory) costs the session record, never the monitoring.
        self.available = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path)
            try:
                # Small pages: a commit rewrites every page it touches (one per bed per table), so
                # 1 KiB pages write a quarter of the bytes of the 4 KiB default. Only effective when
                # the file is created (WAL fixes the page size afterwards).
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            self.failures += 1
            log.error("sessionlog.unavailable", path=str(path), error=str(exc))
            return
        self.available = True
        self._thread.start()

    def submit(self, batch: list[Statement]) -> None:
        """Queue statements to run in one transaction; never blocks (a full queue drops, logged)."""
        if not batch:
            return
        if not self.available:
            self.failures += 1
            return
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self.failures += 1
            log.error("sessionlog.queue_full", dropped_statements=len(batch))

    def flush(self) -> None:
        """Write everything submitted so far now, and wait for it (tests, shutdown, the benchmark)."""
        if not self.available:
            return
        self._urgent += 1
        self._wake.set()
        try:
            self._queue.join()
        finally:
            self._urgent -= 1

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        if not self.available:
            return
        self._urgent += 1
        self._queue.put(None)
        self._wake.set()
        self._thread.join(timeout=30)

    def read(self) -> sqlite3.Connection:
        """A separate connection for reads at start (open sessions); the caller closes it."""
        if self.available:
            conn = sqlite3.connect(self.path)
        else:  # nothing recorded: an empty database of the right shape
            conn = sqlite3.connect(":memory:")
            conn.executescript(_SCHEMA)
        conn.row_factory = sqlite3.Row
        return conn

    def _write(self, conn: sqlite3.Connection, statements: list[Statement]) -> bool:
        """One transaction; False (logged, counted) when it failed and was rolled back."""
        try:
            conn.execute("BEGIN")
            for sql, params in statements:
                conn.execute(sql, params)
            conn.execute("COMMIT")
            return True
        except sqlite3.Error as exc:
            self.failures += 1
            log.error("sessionlog.write_failed", error=str(exc), statements=len(statements))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return False

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=2000")
        try:
            last_commit = float("-inf")
            while True:
                batch = self._queue.get()
                # Wait out the commit interval (a flush or close cuts it short).
                if not self._urgent:
                    self._wake.wait(max(0.0, last_commit + self.commit_interval_s - time.monotonic()))
                self._wake.clear()
                last_commit = time.monotonic()
                batches = [batch]
                # Coalesce whatever else is waiting (other beds, a stall's backlog): one commit.
                while batch is not None and not self._queue.empty():
                    batch = self._queue.get_nowait()
                    batches.append(batch)
                work = [b for b in batches if b is not None]
                try:
                    if not self._write(conn, [s for b in work for s in b]) and len(work) > 1:
                        # One bad batch must not lose the others it was coalesced with.
                        for b in work:
                            self._write(conn, b)
                finally:
                    for _ in batches:
                        self._queue.task_done()
                if batches[-1] is None:
                    return
        finally:
            conn.close()


@dataclass(slots=True)
class _KindStats:
    """One kind's summary within one minute bucket."""

    n: int = 0
    bad: int = 0
    lo: float = float("inf")
    hi: float = float("-inf")
    lo_t: float = 0.0
    hi_t: float = 0.0
    total: float = 0.0
    last: float | None = None
    beyond: dict[str, float] = field(default_factory=dict)

    def add(self, value: float, t_s: float) -> None:
        self.n += 1
        self.total += value
        self.last = value
        if value < self.lo:
            self.lo, self.lo_t = value, t_s
        if value > self.hi:
            self.hi, self.hi_t = value, t_s

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"n": self.n, "bad": self.bad}
        if self.n:
            data.update(
                min=self.lo,
                max=self.hi,
                min_t=round(self.lo_t, 1),
                max_t=round(self.hi_t, 1),
                mean=round(self.total / self.n, 2),
                last=self.last,
            )
        data.update({k: round(v, 1) for k, v in self.beyond.items()})
        return data


def _beyond(kind: str, value: float) -> list[str]:
    names = []
    for name, op, limit in THRESHOLDS.get(kind, ()):
        if (op == "<" and value < limit) or (op == ">" and value > limit):
            names.append(name)
    return names


# What the record keeps of an alert transition (from the transition codec's dict), plus onset_s.
_ALERT_EVENT_FIELDS = (
    "alert_id",
    "seq",  # a lost alert journal continues seq above it (vitalwatch.continuity.journal_loss)
    "state",
    "priority",
    "category",
    "condition",
    "parameter",
    "value",
    "limit",
    "phase",
)


def _wall_now(t: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=t - time.monotonic())


class SessionLog:
    """Records one bed's sessions; call it from the bed session (see the module docstring).

    ``wall`` maps the engine's monotonic seconds to UTC (the daemon's ``WallClock.utc``);
    ``baseline`` returns the engine's baseline (an object with ``systolic``, ``diastolic``,
    ``spo2``, ``pulse_rate``) when the phase leaves ``baseline``; without one, or while a part
    of it is unknown, the medians of the recorded baseline-phase values are used.
    """

    def __init__(
        self,
        db: SessionDb,
        bed: str,
        *,
        wall: Callable[[float], datetime] = _wall_now,
        baseline: Callable[[], object] | None = None,
        minute_s: float = 60.0,
    ) -> None:
        self.db, self.bed = db, bed
        self._wall = wall
        self._baseline_fn = baseline
        self._minute_s = minute_s
        self.session_id: str | None = None
        self._ended = False  # an `ended` was seen: wait for a phase before recording again
        self._pending: list[Statement] = []
        self._dirty = False  # the session row needs writing
        self._t0 = self._last_t = self._bucket_t = self._started_utc = 0.0
        self._phase, self._record_id, self._n = "baseline", "", 0
        self._resume: sqlite3.Row | None = None
        self._last_number: tuple[str, int] = ("", 0)
        self._load()

    # ------------------------------------------------------------------ inputs
    def observation(self, device: str, obs: Observation, now: float, valid: bool) -> None:
        """A driver observation at monotonic ``now``; ``valid`` False under an unreliable status."""
        if self.session_id is None and not self._open(now, None):
            return
        self._advance(now)
        t_s = now - self._t0
        kind = obs.kind
        if kind in NIBP_KINDS:
            self._nibp_value(device, kind, obs.value if valid else None, t_s, valid)
            return
        if kind not in SUMMARISED:
            return
        stats = self._bucket.setdefault(kind, _KindStats())
        prev = self._last_sample.get(kind)
        if prev is not None:  # the previous sample stands for the time until this one
            for name in _beyond(kind, prev[1]):
                stats.beyond[name] = stats.beyond.get(name, 0.0) + max(0.0, min(t_s, prev[2]) - prev[0])
        if valid and obs.value is not None:
            stats.add(obs.value, t_s)
            self._last_sample[kind] = (t_s, obs.value, t_s + HOLD_S)
            if self._phase == "baseline" and kind in ("spo2", "pulse_rate"):
                self._baseline_values.setdefault(kind, []).append(obs.value)
                del self._baseline_values[kind][:-7200]  # bounded: two hours at 1 Hz
        else:
            stats.bad += 1
            self._last_sample.pop(kind, None)

    def output(self, out: Output) -> None:
        """An engine output (register as a BedSession observer); acks arrive as AlertTransitions."""
        match out:
            case PhaseChanged(phase=phase, t=t):
                self._phase_changed(phase, t)
            case AlertTransition() if self._open(out.t, None):
                self._advance(out.t)
                tr = transition_to_dict(out)
                data = {name: tr[name] for name in _ALERT_EVENT_FIELDS}
                data["onset_s"] = round(out.onset_t - self._t0, 1)
                self._event(out.t, "alert", data)
            case StatusChanged() if self._open(out.t, None):
                self._advance(out.t)
                self._event(out.t, "status", {"code": out.code, "active": out.active})
            case NibpRequest() if self._open(out.t, None):
                self._advance(out.t)
                self._event(out.t, "nibp_request", {})
            case _:
                pass

    def phase_fields(self, fields: Mapping[str, Any]) -> None:
        """The nurse's phase command fields; ``dose_mg_per_kg`` and ``planned_minutes`` are kept."""
        if self.session_id is None:
            return
        for name in ("dose_mg_per_kg", "planned_minutes"):
            value = fields.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._fields[name] = float(value)
        self._dirty = True

    def nurse_event(self, kind: str, data: Mapping[str, Any], now: float) -> None:
        """A step or observation of the nurse (session commands, prompts, events; docs/session-record.md).

        Kept as an event of the open session; nothing is recorded between sessions.
        """
        if self._open(now, None):
            self._advance(now)
            self._event(now, kind, dict(data))
            self._submit()

    def tick(self, now: float) -> None:
        """Close a minute that ended without any input (devices silent); cheap, call it often."""
        if self.session_id is not None:
            self._advance(now)

    def close(self, now: float) -> None:
        """Write the partial minute and everything pending (daemon stop)."""
        if self.session_id is not None:
            self._flush_nibp(now, force=True)  # a reading still being grouped is a reading
            self._close_bucket(now)
            self._last_t = max(self._last_t, now)
            self._dirty = True
            self._submit()

    # ------------------------------------------------------------------ sessions
    def _load(self) -> None:
        """Continue a session left open by a previous process (crash, restart)."""
        conn = self.db.read()
        try:
            row = conn.execute(
                "SELECT * FROM sessions WHERE bed=? ORDER BY started_utc DESC LIMIT 1", (self.bed,)
            ).fetchone()
            if row is None:
                return
            sid = str(row["session_id"])
            self._last_number = (sid.rsplit("-", 2)[-2], int(sid.rsplit("-", 1)[-1]))
            if row["ended_s"] is None:
                self._resume = row
                self._resume_n = conn.execute(
                    "SELECT coalesce(max(n), 0) FROM events WHERE session_id=?", (sid,)
                ).fetchone()[0]
            else:
                self._ended = True
        finally:
            conn.close()

    def _open(self, now: float, phase: str | None) -> bool:
        """Make sure a session is open (True) unless the last one ended and no phase came since."""
        if self.session_id is not None:
            return True
        if self._ended and phase is None:
            return False
        self._ended = False
        self._bucket: dict[str, _KindStats] = {}
        self._last_sample: dict[str, tuple[float, float, float]] = {}  # (counted to, value, hold end)
        self._nibp_open: dict[str, tuple[float, dict[str, float | None], bool]] = {}
        self._nibp_valid: list[tuple[float, float, float]] = []  # baseline-phase readings
        self._baseline_values: dict[str, list[float]] = {}
        self._baseline: dict[str, float | None] = {}
        self._fields: dict[str, float] = {}
        resume, self._resume = self._resume, None
        if resume is not None and phase is None:
            started = float(resume["started_utc"])
            self.session_id, self._record_id = str(resume["session_id"]), str(resume["record_id"])
            self._t0 = now - (self._wall(now).timestamp() - started)
            self._started_utc = started
            self._phase = str(resume["phase"])
            self._n = int(self._resume_n)
            for key, col in (
                ("systolic", "bl_systolic"),
                ("diastolic", "bl_diastolic"),
                ("spo2", "bl_spo2"),
                ("pulse_rate", "bl_pulse"),
            ):
                self._baseline[key] = resume[col]
            for name in ("dose_mg_per_kg", "planned_minutes"):
                if resume[name] is not None:
                    self._fields[name] = float(resume[name])
            log.info("sessionlog.resumed", session_id=self.session_id, phase=self._phase)
        else:
            if resume is not None:  # a phase command while an old session was left open: end it
                self._pending.append(
                    (
                        "UPDATE sessions SET ended_s=max(last_s, coalesce((SELECT max(t_s + span_s) "
                        "FROM minutes WHERE session_id=?1), 0)) WHERE session_id=?1",
                        (resume["session_id"],),
                    )
                )
            start = self._wall(now)
            day = start.strftime("%Y%m%d")
            n = self._last_number[1] + 1 if self._last_number[0] == day else 1
            self._last_number = (day, n)
            self.session_id, self._record_id = f"{self.bed}-{day}-{n}", uuid.uuid4().hex
            self._t0, self._started_utc, self._n = now, start.timestamp(), 0
            self._phase = phase or "baseline"
            self._event(now, "phase", {"phase": self._phase, "previous": None})
            log.info("sessionlog.opened", session_id=self.session_id, phase=self._phase)
        self._bucket_t = now - self._t0
        self._last_t = now
        self._dirty = True
        return True

    def _phase_changed(self, phase: str, now: float) -> None:
        if self.session_id is None:
            if phase == "ended":
                self._ended = True
                self._resume = None  # a resumed daemon re-entering `ended`: nothing is open
                return
            self._open(now, phase if self._resume is None else None)
            if phase == self._phase:
                return
        if phase == self._phase:  # a resumed daemon re-entering the phase it was in
            return
        self._close_bucket(now)
        if self._phase == "baseline":
            self._freeze_baseline()
        self._event(now, "phase", {"phase": phase, "previous": self._phase})
        self._phase = phase
        self._dirty = True
        if phase == "ended":
            self._flush_nibp(now, force=True)
            if not self._baseline:
                self._freeze_baseline()
            self._pending.append(self._session_row(ended_s=now - self._t0))
            self._dirty = False
            self._submit()
            log.info("sessionlog.ended", session_id=self.session_id)
            self.session_id, self._ended = None, True
        else:
            self._submit()

    def _freeze_baseline(self) -> None:
        """The engine's baseline where known, else medians of what the baseline phase recorded."""
        source = self._baseline_fn() if self._baseline_fn is not None else None
        readings = self._nibp_valid
        own: dict[str, float | None] = {
            "systolic": statistics.median(r[1] for r in readings) if readings else None,
            "diastolic": statistics.median(r[2] for r in readings) if readings else None,
        }
        for kind in ("spo2", "pulse_rate"):
            values = self._baseline_values.get(kind)
            own[kind] = round(statistics.median(values), 1) if values else None
        for key, value in own.items():
            theirs = getattr(source, key, None) if source is not None else None
            self._baseline[key] = float(theirs) if isinstance(theirs, int | float) else value

    # ------------------------------------------------------------------ buckets and rows
    def _advance(self, now: float) -> None:
        self._last_t = max(self._last_t, now)
        self._flush_nibp(now)
        if now - self._t0 - self._bucket_t >= self._minute_s:
            self._close_bucket(now)
            self._submit()

    def _close_bucket(self, now: float) -> None:
        t_s = now - self._t0
        # The sample still standing at the boundary is counted up to it, not beyond.
        for kind, (ref_t, value, hold_until) in list(self._last_sample.items()):
            names = _beyond(kind, value)
            if names:
                stats = self._bucket.setdefault(kind, _KindStats())
                for name in names:
                    stats.beyond[name] = stats.beyond.get(name, 0.0) + max(0.0, min(t_s, hold_until) - ref_t)
            if t_s < hold_until:
                self._last_sample[kind] = (t_s, value, hold_until)
            else:
                del self._last_sample[kind]
        if self._bucket:
            minute = {k: v.to_json() for k, v in self._bucket.items()}
            summary = strict_json.dumps(minute, what="session_record", separators=(",", ":"))
            self._pending.append(
                (
                    "INSERT OR REPLACE INTO minutes VALUES (?,?,?,?,?)",
                    (
                        self.session_id,
                        round(self._bucket_t, 3),
                        round(t_s - self._bucket_t, 3),
                        self._phase,
                        summary,
                    ),
                )
            )
        self._bucket = {}
        self._bucket_t = t_s

    def _nibp_value(self, device: str, kind: str, value: float | None, t_s: float, valid: bool) -> None:
        open_ = self._nibp_open.get(device)
        if open_ is not None and (kind in open_[1] or t_s - open_[0] > NIBP_GROUP_S):
            self._finish_nibp(device)
            open_ = None
        if open_ is None:
            open_ = (t_s, {}, True)
        open_[1][kind] = value
        self._nibp_open[device] = (open_[0], open_[1], open_[2] and valid)

    def _flush_nibp(self, now: float, *, force: bool = False) -> None:
        t_s = now - self._t0
        for device, (t0, _, _) in list(self._nibp_open.items()):
            if force or t_s - t0 > NIBP_GROUP_S:
                self._finish_nibp(device)

    def _finish_nibp(self, device: str) -> None:
        t_s, values, valid = self._nibp_open.pop(device)
        sys_v, dia_v = values.get("nibp_systolic"), values.get("nibp_diastolic")
        valid = valid and sys_v is not None and dia_v is not None
        self._pending.append(
            (
                "INSERT OR REPLACE INTO nibp VALUES (?,?,?,?,?,?)",
                (self.session_id, round(t_s, 3), sys_v, dia_v, values.get("nibp_mean"), int(valid)),
            )
        )
        if valid and self._phase == "baseline" and sys_v is not None and dia_v is not None:
            self._nibp_valid.append((t_s, sys_v, dia_v))
            del self._nibp_valid[:-50]

    def _event(self, now: float, kind: str, data: dict[str, Any]) -> None:
        self._n += 1
        self._pending.append(
            (
                "INSERT OR REPLACE INTO events VALUES (?,?,?,?,?)",
                (
                    self.session_id,
                    self._n,
                    round(now - self._t0, 3),
                    kind,
                    strict_json.dumps(data, what="session_record", separators=(",", ":")),
                ),
            )
        )

    def _session_row(self, ended_s: float | None = None) -> Statement:
        bl = self._baseline
        return (
            "INSERT OR REPLACE INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                self.session_id,
                self._record_id,
                self.bed,
                self._started_utc,
                round(self._last_t - self._t0, 3),
                None if ended_s is None else round(ended_s, 3),
                self._phase,
                self._fields.get("dose_mg_per_kg"),
                self._fields.get("planned_minutes"),
                bl.get("systolic"),
                bl.get("diastolic"),
                bl.get("spo2"),
                bl.get("pulse_rate"),
            ),
        )

    def _submit(self) -> None:
        # The session row changes rarely (open, phase, baseline, nurse fields, end): rewriting it
        # every minute would cost two more pages per commit on the card.
        if self.session_id is not None and self._dirty:
            self._pending.append(self._session_row())
        self._dirty = False
        batch, self._pending = self._pending, []
        self.db.submit(batch)
