"""Replay speed: a 100-minute session with three devices through drivers and engine in virtual time.

Why: ``vitalwatch replay`` and the alarm-quality study push hours of sessions through the same
drivers and engine; at >= 3000x real time a 100-minute session takes under 2 s, so hundreds of
sessions fit in a CI run.

What: :func:`vitalwatch.engine.replay.run_scenario` with the ``session`` scenario (100 min:
baseline, infusion with the ketamine rise, recovery) and three devices - a Masimo oximeter, a
Nonin oximeter (75 frames/s binary) and a SunTech NIBP module (polled every 5 min) - with the
shipped alarm table: simulator bytes -> drivers -> engine, every output consumed. Median of
``RUNS`` runs; speed = scenario seconds / wall seconds.

Run: ``python -m bench replay_speed``.
"""

from __future__ import annotations

import statistics
import time

from bench.common import report, row

DEVICES = ("masimo", "nonin", "suntech")
RUNS = 3
TARGET = 3000.0


def one_run() -> tuple[float, int, float]:
    """(wall seconds, outputs, scenario seconds) for one replay."""
    from vitalwatch.engine.replay import run_scenario
    from vitalwatch.engine.table import load_alarm_table
    from vitalwatch.simulators.scenarios import get_scenario

    scenario = get_scenario("session", seed=0)
    table = load_alarm_table(None)
    t0 = time.perf_counter()
    n = sum(1 for _ in run_scenario(scenario, DEVICES, table=table, seed=0))
    return time.perf_counter() - t0, n, scenario.duration


def main() -> None:
    """Replay RUNS times; print the table (text and JSON); write results/replay_speed.json."""
    runs = [one_run() for _ in range(RUNS)]
    wall = statistics.median(r[0] for r in runs)
    duration = runs[0][2]
    speed = duration / wall
    rows = [
        row("session length (virtual)", round(duration / 60, 1), "min"),
        row(f"replay wall time, median of {RUNS}", round(wall, 3), "s"),
        row("replay speed, masimo+nonin+suntech", round(speed), "x", f">= {TARGET:.0f}", speed >= TARGET),
        row("engine outputs per run", runs[0][1], "outputs"),
    ]
    report("replay_speed", rows, {"devices": DEVICES, "walls_s": [r[0] for r in runs]})


if __name__ == "__main__":
    main()
