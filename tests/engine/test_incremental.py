"""The incremental engine gives exactly the outputs of evaluating every rule at every call.

Two references: the goldens recorded from the evaluate-everything engine before the change
(tests/golden/engine, see bench/engine_identity.py), and the reference strategy still in the
engine (``evaluate_all=True``) on inputs nobody recorded: random replay CSVs drawn by
Hypothesis and a cohort session. Every field of every alert transition is compared, and the
other outputs (requests, phases, statuses) as the replay prints them. The long version (every
golden, three device sets, hundreds of CSVs, the whole cohort): ``python -m bench engine_identity``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.engine_identity import (
    cohort_records,
    csv_records,
    first_difference,
    random_csv,
    read_golden,
    scenario_records,
)
from vitalwatch.drivers.events import DeviceStatus, Observation
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import load_alarm_table


def same(fast: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    diff = first_difference(fast, reference)
    assert diff is None, diff
    assert fast, "no outputs at all: the case proves nothing"


@pytest.mark.parametrize("name", ["probe_off", "silence"])
def test_scenarios_match_the_goldens_of_the_evaluate_everything_engine(name: str) -> None:
    same(scenario_records(name), read_golden(f"scenario-{name}"))


@pytest.mark.parametrize("seed", [0, 2, 7])
def test_random_csvs_match_their_goldens(seed: int) -> None:
    same(csv_records(random_csv(seed)), read_golden(f"csv-{seed:03d}"))


def test_a_cohort_session_matches_its_golden() -> None:
    same(cohort_records(3), read_golden("cohort-003"))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=10_000, max_value=2**32))
def test_unrecorded_random_csvs_match_the_reference_strategy(seed: int) -> None:
    text = random_csv(seed, minutes=20.0)
    same(csv_records(text), csv_records(text, evaluate_all=True))


def test_an_unrecorded_cohort_session_matches_the_reference_strategy() -> None:
    same(cohort_records(101), cohort_records(101, evaluate_all=True))


def _rule_runs(engine: BedEngine) -> list[int]:
    """Counts the engine's rule evaluations (its one per-rule method)."""
    calls = [0]
    inner = engine._rule_findings

    def counted(*args: Any) -> Any:
        calls[0] += 1
        return inner(*args)

    engine._rule_findings = counted  # type: ignore[method-assign]
    return calls


def test_a_quiet_bed_runs_its_rules_only_when_inputs_change_or_timers_are_due() -> None:
    """A complete baseline, then an hour of steady 1 Hz oximetry and a BP every 5 min: a small
    fraction of the rule runs of the reference strategy."""
    table = load_alarm_table(None)
    runs = {}
    for evaluate_all in (False, True):
        engine = BedEngine(table, "b", {"ox": "spo2", "bp": "nibp"}, evaluate_all=evaluate_all)
        calls = _rule_runs(engine)
        for t in range(-300, 3600):
            if t == 0:
                engine.set_phase("infusion", 0.0)
            engine.observe("ox", Observation("spo2", 97.0, "%"), float(t))
            engine.observe("ox", Observation("pulse_rate", 72.0, "/min"), float(t))
            if t % 300 == 0 or t == -150:
                engine.observe("bp", DeviceStatus("cuff_error", False), float(t))
                for kind, v in (("nibp_systolic", 125.0), ("nibp_diastolic", 80.0), ("nibp_mean", 95.0)):
                    engine.observe("bp", Observation(kind, v, "mm[Hg]"), float(t))
            engine.tick(t + 0.5)
        runs[evaluate_all] = calls[0]
    assert runs[True] > 100_000
    assert runs[False] < runs[True] / 50, runs
