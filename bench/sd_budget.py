"""SD-card write budget of the session record: bytes written per hour of a busy session.

Why: issue 7 §8 allows at most 5 MB/hour written to the state directory, so the card lasts
years. The session record (:mod:`vitalwatch.record.sessionlog`) is the part that grows with the
number of readings, so this drives it with a busy session in virtual time and counts every
byte the process hands to ``write()`` (``wchar`` in ``/proc/self/io``: WAL frames, checkpoints
and the database file; it over-counts nothing we do not write, and counts what the page
cache may still merge, so it is an upper bound on what reaches the card).

Busy session per bed, real device rates: a Masimo oximeter (SpO2, pulse, PI, PVI at 1 Hz), a
second oximeter (SpO2, pulse at 1 Hz) and an NIBP monitor (systolic, diastolic, mean, pulse
every 3 min, each preceded by a confirmation request); an alarm every 3 minutes going
raised -> renotified -> renotified -> acknowledged -> cleared; a phase change every 20 min.
Beds are offset by 20 s so their minute rows commit separately (the worst case: no
coalescing by the caller). The writer commits at most once per ``commit_interval_s`` (60 s)
for all beds together; the bench reproduces that by draining it once per virtual minute.

Run: ``python -m bench.sd_budget [HOURS]`` (default 1); prints bytes/hour for 1 and 3 beds.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vitalwatch.drivers.events import Observation
from vitalwatch.engine.outputs import (
    AlertState,
    AlertTransition,
    Category,
    NibpRequest,
    PhaseChanged,
    Priority,
)
from vitalwatch.record.sessionlog import SESSIONS_DB_NAME, SessionDb, SessionLog

TARGET_BYTES_PER_HOUR = 5_000_000
PHASES = ("baseline", "infusion", "recovery")
ALARM_STATES = (
    (0, AlertState.RAISED),
    (30, AlertState.RENOTIFIED),
    (60, AlertState.RENOTIFIED),
    (70, AlertState.ACKNOWLEDGED),
    (120, AlertState.CLEARED),
)


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def _second(log: SessionLog, bed: str, t: int, now: float) -> None:
    """One second of one busy bed."""
    obs = log.observation
    obs("masimo", Observation("spo2", 96.0 + t % 3, "%"), now, True)
    obs("masimo", Observation("pulse_rate", 80.0 + t % 7, "/min"), now, True)
    obs("masimo", Observation("perfusion_index", 2.5, "%"), now, True)
    obs("masimo", Observation("pvi", 14.0, "%"), now, True)
    obs("nonin", Observation("spo2", 97.0, "%"), now, t % 90 > 5)
    obs("nonin", Observation("pulse_rate", 81.0, "/min"), now, t % 90 > 5)
    if t % 180 == 0:
        log.output(NibpRequest(t=now, bed=bed, reason="confirm"))
    if t % 180 == 30:
        for kind, v in (
            ("nibp_systolic", 150),
            ("nibp_diastolic", 95),
            ("nibp_mean", 113),
            ("nibp_pulse_rate", 82),
        ):
            obs("nibp", Observation(kind, float(v), "mm[Hg]"), now, True)
    for offset, state in ALARM_STATES:
        if t % 180 == 60 + offset:
            log.output(
                AlertTransition(
                    t=now, bed=bed, alert_id=f"{bed}-{t // 180:06d}", seq=t, state=state,
                    priority=Priority.HIGH, category=Category.PHYSIOLOGICAL, condition="spo2_low",
                    parameter="spo2", value=86.0, unit="%", limit=90.0, phase="infusion",
                    phase_elapsed_s=0.0, onset_t=now - offset, message="SpO2 86 % below 90 % for 15 s",
                )
            )  # fmt: skip
    if t % 1200 == 1199:
        i = (t // 1200) % 3
        log.output(PhaseChanged(t=now, bed=bed, phase=PHASES[(i + 1) % 3], previous=PHASES[i]))


def measure(beds: int, hours: float, directory: Path) -> dict[str, float]:
    """Bytes written (write() calls) and the database size after ``hours`` of ``beds`` busy beds."""
    start = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
    before = _wchar()
    db = SessionDb(directory / SESSIONS_DB_NAME)
    logs = [SessionLog(db, f"bed-{i}", wall=lambda t: start + timedelta(seconds=t)) for i in range(beds)]
    for t in range(int(hours * 3600)):
        for i, log in enumerate(logs):
            if t >= 20 * i:
                _second(log, log.bed, t - 20 * i, float(t))
        if t % int(db.commit_interval_s) == 0:
            db.flush()  # what the writer does once per commit interval in real time
    for log in logs:
        log.close(hours * 3600.0)
    db.close()
    written = _wchar() - before
    size = sum(p.stat().st_size for p in directory.iterdir())
    return {"beds": beds, "bytes_per_hour": written / hours, "files_bytes": size}


def main(argv: list[str] | None = None) -> None:
    """Print the figure for one and for three beds, and whether it meets the 5 MB/hour target."""
    args = sys.argv[1:] if argv is None else argv
    hours = float(args[0]) if args else 1.0
    for beds in (1, 3):
        with tempfile.TemporaryDirectory() as tmp:
            r = measure(beds, hours, Path(tmp))
        ok = "within" if r["bytes_per_hour"] <= TARGET_BYTES_PER_HOUR else "OVER"
        print(
            f"session record, {beds} busy bed(s): {r['bytes_per_hour'] / 1e6:.2f} MB/hour written "
            f"({ok} the 5 MB/hour budget); files after {hours:g} h: {r['files_bytes'] / 1e6:.2f} MB"
        )


if __name__ == "__main__":
    main()
