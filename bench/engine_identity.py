"""Engine identity: the incremental rule evaluation against the evaluate-everything reference.

Why: the engine evaluates only the rules whose inputs changed or whose timers are due
(docs/design-notes.md, "Incremental evaluation"). That is an optimisation and nothing else, so
every output must be exactly what evaluating every rule at every call gives. Three sources of
inputs, each run twice (``evaluate_all`` True and False) and compared output by output, every
field of every alert transition:

- the simulator scenario library through drivers and the bed session (:func:`scenario_records`);
- random replay CSVs, every row kind with inputs a clinic's file may hold and a test author
  would not think of (:func:`random_csv`, :func:`csv_records`);
- sessions of the alarm-quality cohort (:func:`cohort_records`).

Recorded goldens (``tests/golden/engine/``, written by ``--record`` from the code before the
incremental engine) pin the same outputs against the old code itself. ``make test`` runs a
small slice (``tests/engine/test_incremental.py``); this module's ``main`` runs all of it.

Run: ``python -m bench engine_identity`` (``--record`` rewrites the goldens: only from a
revision whose outputs are known good).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vitalwatch.drivers.vocabulary import STATUS_CODES
from vitalwatch.engine.outputs import AlertTransition, Output
from vitalwatch.engine.replay import DEFAULT_DEVICES, output_to_json, parse_observations
from vitalwatch.engine.table import AlarmTable, load_alarm_table
from vitalwatch.engine.transition_codec import transition_to_dict
from vitalwatch.simulators.scenarios import SCENARIO_NAMES

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden" / "engine"
SCENARIOS = SCENARIO_NAMES  # the whole library (a scenario added later has no golden yet)
SCENARIO_DEVICES = ("masimo", "suntech")
# Every device kind the scenario library can drive, for the long run.
DEVICE_SETS = (("masimo", "suntech"), ("masimo", "nonin", "suntech"), ("nellcor", "accutorr"))
CSV_SEEDS = range(40)  # the goldens' random CSVs
COHORT_SLICE = range(6)  # the goldens' cohort sessions


def record(out: Output) -> dict[str, Any]:
    """One output as compared: an alert transition with every field, others as the replay prints them."""
    if isinstance(out, AlertTransition):
        return {"type": "alert", **transition_to_dict(out)}
    return output_to_json(out)


def scenario_records(
    name: str, devices: tuple[str, ...] = SCENARIO_DEVICES, *, evaluate_all: bool = False, seed: int = 0
) -> list[dict[str, Any]]:
    """Every output of one scenario replayed through simulators, drivers and the bed session."""
    from vitalwatch.continuity.replay import run_scenario
    from vitalwatch.simulators.scenarios import get_scenario

    table = load_alarm_table(None)
    outs = run_scenario(
        get_scenario(name, seed=seed), devices, table=table, seed=seed, evaluate_all=evaluate_all
    )
    return [record(o) for o in outs]


# ------------------------------------------------------------------ random replay CSVs
_STATUS = sorted(STATUS_CODES)
_PHASE_NEXT = {
    "baseline": ("infusion", "infusion", "recovery", "ended"),
    "infusion": ("recovery", "recovery", "ended", "pause", "resume", "baseline"),
    "recovery": ("ended", "baseline", "infusion"),
    "ended": ("baseline",),
}


def _value(rng: random.Random, kind: str) -> str:
    """A value as a CSV may hold it: mostly plausible, sometimes extreme, sometimes empty."""
    if rng.random() < 0.06:
        return ""
    centre = {"spo2": 96, "pulse_rate": 75, "nibp_systolic": 130, "nibp_diastolic": 80, "nibp_mean": 95}[kind]
    spread = {"spo2": 6, "pulse_rate": 30, "nibp_systolic": 40, "nibp_diastolic": 25, "nibp_mean": 25}[kind]
    if rng.random() < 0.1:
        spread *= 3
    x = rng.gauss(centre, spread)
    if kind == "spo2":
        x = min(100.0, x)
    x = max(0.0, x)
    return str(round(x)) if rng.random() < 0.8 else f"{x:.2f}"


def random_csv(seed: int, *, minutes: float = 70.0) -> str:
    """One replay CSV (default devices: ``oximeter`` and ``nibp``) of every row kind, in time order.

    Long stretches of 1 Hz oximetry with gaps, drops and extreme values; BP readings (whole,
    partial, repeated at one instant); statuses on, off and ``ok``; links down and up; phase
    commands in any order the parser accepts (pauses too); acks of real-looking and unknown ids;
    times on and off the second, several rows at one instant.
    """
    rng = random.Random(seed)
    rows: list[str] = []
    t, end, phase = 0.0, minutes * 60.0, "baseline"
    oxi_on, spo2_base = True, rng.uniform(88, 99)
    nibp_next = rng.uniform(0, 120)
    while t < end:
        step = rng.choice((1.0, 1.0, 1.0, 0.5, 0.25, 2.0)) if rng.random() < 0.97 else rng.uniform(0, 90)
        if rng.random() < 0.05:
            step = round(step + rng.uniform(-0.2, 0.2), 3)
        t = round(t + max(0.0, step), 3)
        r = rng.random()
        if oxi_on:
            spo2 = (
                _value(rng, "spo2")
                if rng.random() < 0.3
                else str(round(min(100.0, spo2_base + rng.gauss(0, 1.5))))
            )
            rows.append(f"{t},obs,spo2,{spo2}")
            rows.append(f"{t},obs,pulse_rate,{_value(rng, 'pulse_rate')}")
        if rng.random() < 0.003:
            spo2_base = rng.uniform(78, 99)  # a desaturation or its recovery
        if t >= nibp_next:
            nibp_next = t + rng.choice((30.0, 100.0, 130.0, 150.0, 300.0, 600.0, 900.0))
            kinds = ["nibp_systolic", "nibp_diastolic", "nibp_mean"]
            if rng.random() < 0.1:
                kinds = rng.sample(kinds, rng.randint(1, 3))
            high = rng.random() < 0.25
            for kind in kinds:
                value = _value(rng, kind)
                if high and value and kind != "nibp_mean":
                    value = str(round(float(value) + 60))
                rows.append(f"{t},obs,{kind},{value}")
        if r < 0.004:
            rows.append(f"{t},status,{rng.choice(_STATUS)},{rng.choice(list(DEFAULT_DEVICES))}")
        elif r < 0.007:
            rows.append(f"{t},status,-{rng.choice(_STATUS)},{rng.choice(list(DEFAULT_DEVICES))}")
        elif r < 0.009:
            rows.append(f"{t},status,ok,{rng.choice(list(DEFAULT_DEVICES))}")
        elif r < 0.011:
            rows.append(f"{t},link,{rng.choice(list(DEFAULT_DEVICES))},{rng.choice(('up', 'down'))}")
        elif r < 0.013:
            oxi_on = not oxi_on
        elif r < 0.018:
            target = rng.choice(("*", f"bed-1-{rng.randint(1, 12):06d}", "nope"))
            rows.append(f"{t},ack,{target},nurse")
        elif r < 0.0215 or (phase == "baseline" and t > rng.uniform(600, 1800)):
            nxt = rng.choice(_PHASE_NEXT[phase])
            if nxt in ("pause", "resume"):
                rows.append(f"{t},phase,{nxt},")
            else:
                rows.append(f"{t},phase,{nxt},")
                phase = nxt
    return "t,event,name,value\n" + "\n".join(rows) + "\n"


def csv_records(text: str, *, evaluate_all: bool = False) -> list[dict[str, Any]]:
    """Every output of a replay CSV (the ``vitalwatch replay --observations`` path, default bed)."""
    from vitalwatch.continuity.replay import replay_rows

    table = load_alarm_table(None)
    rows = parse_observations(text.splitlines(), DEFAULT_DEVICES)
    outs = replay_rows(table, "bed-1", DEFAULT_DEVICES, rows, evaluate_all=evaluate_all)
    return [record(o) for o in outs]


# ------------------------------------------------------------------ the alarm-quality cohort
def cohort_records(index: int, *, evaluate_all: bool = False, seed: int = 1) -> list[dict[str, Any]]:
    """Every output of cohort session ``index`` (bench.alarm_quality's sessions and its driving loop)."""
    from bench.alarm_quality import make_session, run_engine
    from vitalwatch.engine.session import BedEngine

    seen: list[Output] = []

    class Recording(BedEngine):
        """The cohort's engine, keeping every output it returns."""

        def __init__(self, table: AlarmTable, bed: str, devices: dict[str, str]) -> None:
            super().__init__(table, bed, devices, evaluate_all=evaluate_all)

        def _kept(self, outs: list[Output]) -> list[Output]:
            seen.extend(outs)
            return outs

        def observe(self, device: str, event: Any, now: float) -> list[Output]:
            return self._kept(super().observe(device, event, now))

        def set_phase(self, phase: str, now: float) -> list[Output]:
            return self._kept(super().set_phase(phase, now))

        def tick(self, now: float) -> list[Output]:
            return self._kept(super().tick(now))

        def acknowledge(self, alert_id: str, by: str, now: float) -> list[Output]:
            return self._kept(super().acknowledge(alert_id, by, now))

    table = load_alarm_table(None)
    session = make_session(random.Random(seed * 100003 + index))
    run_engine(table, session, random.Random(index), engine_class=Recording)
    return [record(o) for o in seen]


# ------------------------------------------------------------------ goldens and the long run
def golden_cases() -> Iterator[tuple[str, Any]]:
    """(golden file stem, a function giving its records) for every recorded case."""
    for name in SCENARIOS:
        yield f"scenario-{name}", lambda name=name, **kw: scenario_records(name, **kw)
    for seed in CSV_SEEDS:
        yield f"csv-{seed:03d}", lambda seed=seed, **kw: csv_records(random_csv(seed), **kw)
    for index in COHORT_SLICE:
        yield f"cohort-{index:03d}", lambda index=index, **kw: cohort_records(index, **kw)


def read_golden(stem: str) -> list[dict[str, Any]]:
    """A recorded case: one JSON object per output (gzip: the evidence texts make them large)."""
    with gzip.open(GOLDEN / f"{stem}.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def write_golden(stem: str, records: list[dict[str, Any]]) -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    # mtime 0: the same outputs give the same bytes, so a re-record shows no change in git.
    (GOLDEN / f"{stem}.jsonl.gz").write_bytes(gzip.compress(text.encode(), mtime=0))


def first_difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str | None:
    """Where two output lists part, field by field; None when they are equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            fields = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
            return f"output {i}: {', '.join(f'{k}: {x.get(k)!r} != {y.get(k)!r}' for k in fields)}"
    if len(a) != len(b):
        return f"{len(a)} outputs != {len(b)}"
    return None


def main(argv: list[str] | None = None) -> None:
    """Compare incremental and reference on everything (and the goldens); ``--record`` writes goldens."""
    parser = argparse.ArgumentParser(prog="bench.engine_identity")
    parser.add_argument("--record", action="store_true", help="write the goldens from this revision")
    parser.add_argument("--csvs", type=int, default=100, help="random CSVs compared (beyond the goldens)")
    parser.add_argument("--cohort", type=int, default=60, help="cohort sessions compared")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    if args.record:
        for stem, make in golden_cases():
            write_golden(stem, make())
        print(f"goldens written to {GOLDEN}")
        return
    failures: list[str] = []

    def check(what: str, fast: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
        diff = first_difference(fast, reference)
        if diff is not None:
            failures.append(f"{what}: {diff}")

    for stem, make in golden_cases():
        if (GOLDEN / f"{stem}.jsonl.gz").exists():
            check(f"golden {stem}", make(), read_golden(stem))
    for devices in DEVICE_SETS:
        for name in SCENARIOS:
            fast = scenario_records(name, devices)
            check(f"scenario {name} {devices}", fast, scenario_records(name, devices, evaluate_all=True))
    for seed in range(1000, 1000 + args.csvs):
        text = random_csv(seed)
        check(f"csv seed {seed}", csv_records(text), csv_records(text, evaluate_all=True))
    for index in range(args.cohort):
        check(f"cohort {index}", cohort_records(index), cohort_records(index, evaluate_all=True))
    for failure in failures:
        print(failure)
    n = len(SCENARIOS) * len(DEVICE_SETS) + args.csvs + args.cohort
    print(
        f"{n} cases and the goldens compared in {time.perf_counter() - started:.0f} s: "
        f"{len(failures)} differences"
    )
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
