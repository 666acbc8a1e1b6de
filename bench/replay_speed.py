"""Replay speed: a 100-minute session with three devices through drivers and engine in virtual time.

Why: ``vitalwatch replay`` and the alarm-quality study push hours of sessions through the same
drivers and engine; at >= 5000x real time a 100-minute session takes under 1.2 s, so thousands
of sessions fit in a CI run.

What: :func:`vitalwatch.continuity.replay.run_scenario` with the ``session`` scenario (100 min:
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
# Without the 75 frames/s Nonin: what a set of 1 Hz devices costs (for the floor explanation).
LIGHT_DEVICES = ("masimo", "nellcor", "suntech")
RUNS = 3
TARGET = 5000.0
STEP_S = 0.25  # run_scenario's default step


def partial_run(devices: tuple[str, ...], *, decode: bool) -> float:
    """Wall seconds for the same loop as run_scenario without the engine (and without drivers).

    The simulators still get the drivers' commands when ``decode`` is on (SunTech is polled), so
    the bytes are the replay's bytes; without ``decode`` the NIBP module is simply never asked.
    """
    import math

    from vitalwatch.drivers import make_driver
    from vitalwatch.engine.replay import SCENARIO_DRIVER_OPTIONS
    from vitalwatch.simulators import make_simulator
    from vitalwatch.simulators.scenarios import get_scenario

    scenario = get_scenario("session", seed=0)
    sims = [make_simulator(n, scenario, seed=0) for n in devices]
    drvs = [make_driver(n, **SCENARIO_DRIVER_OPTIONS.get(n, {})) for n in devices]
    t0 = time.perf_counter()
    for i in range(math.ceil(scenario.duration / STEP_S) + 1):
        t = round(i * STEP_S, 6)
        for sim, drv in zip(sims, drvs, strict=True):
            data = sim.poll(t)
            if not decode:
                continue
            if data:
                drv.feed(data, t)
            deadline = drv.next_deadline()
            if deadline is not None and deadline <= t:
                drv.on_timer(t)
            sent = drv.data_to_send()
            if sent:
                sim.receive(sent, t)
    return time.perf_counter() - t0


def one_run(devices: tuple[str, ...] = DEVICES) -> tuple[float, int, float]:
    """(wall seconds, outputs, scenario seconds) for one replay."""
    from vitalwatch.continuity.replay import run_scenario
    from vitalwatch.engine.table import load_alarm_table
    from vitalwatch.simulators.scenarios import get_scenario

    scenario = get_scenario("session", seed=0)
    table = load_alarm_table(None)
    t0 = time.perf_counter()
    n = sum(1 for _ in run_scenario(scenario, devices, table=table, seed=0))
    return time.perf_counter() - t0, n, scenario.duration


def main() -> None:
    """Replay RUNS times; split the cost; print the table (text and JSON); write results/replay_speed.json."""
    runs = [one_run() for _ in range(RUNS)]
    wall = statistics.median(r[0] for r in runs)
    duration = runs[0][2]
    speed = duration / wall
    sims = partial_run(DEVICES, decode=False)
    sims_drivers = partial_run(DEVICES, decode=True)
    light = one_run(LIGHT_DEVICES)[0]
    light_sims_drivers = partial_run(LIGHT_DEVICES, decode=True)
    rows = [
        row("session length (virtual)", round(duration / 60, 1), "min"),
        row(f"replay wall time, median of {RUNS}", round(wall, 3), "s"),
        row("replay speed, masimo+nonin+suntech", round(speed), "x", f">= {TARGET:.0f}", speed >= TARGET),
        row("  of which simulators", round(sims, 3), "s"),
        row("  of which drivers", round(sims_drivers - sims, 3), "s"),
        row("  of which engine (rest)", round(wall - sims_drivers, 3), "s"),
        row("replay speed, masimo+nellcor+suntech", round(duration / light), "x"),
        row("  engine share there", round((light - light_sims_drivers) / light * 100), "%"),
        row("engine outputs per run", runs[0][1], "outputs"),
    ]
    report(
        "replay_speed",
        rows,
        {"devices": DEVICES, "walls_s": [r[0] for r in runs], "light_devices": LIGHT_DEVICES},
    )


if __name__ == "__main__":
    main()
