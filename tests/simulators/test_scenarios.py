"""Scenarios: deterministic per seed, physiologically plausible, and each does what its name says."""

from __future__ import annotations

import random

import pytest

from vitalwatch.simulators.base import PatientState, Scenario
from vitalwatch.simulators.scenarios import SCENARIO_NAMES, get_scenario

REQUIRED = (
    "normal",
    "desaturation",
    "tachycardia",
    "bradycardia",
    "probe_off",
    "silence",
    "hypertensive_response",
    "hypotension",
    "cuff_error",
    "session",
)


def states(name: str, seed: int = 0, step: float = 1.0) -> list[tuple[float, PatientState]]:
    scenario = get_scenario(name, seed)
    n = int(scenario.duration / step)
    return [(k * step, scenario.state_at(k * step)) for k in range(n + 1)]


def longest_run(flags: list[bool]) -> int:
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def test_every_required_name_exists_and_is_a_scenario() -> None:
    """The names other modules and the CLI rely on are all registered and satisfy the protocol."""
    for name in REQUIRED:
        assert name in SCENARIO_NAMES
        scenario = get_scenario(name)
        assert isinstance(scenario, Scenario)
        assert name == scenario.name
        times = [t for t, _ in scenario.phases]
        assert times == sorted(times)
        assert scenario.phases[-1][1] == "ended"


def test_unknown_name_raises_key_error_listing_known() -> None:
    with pytest.raises(KeyError, match="normal"):
        get_scenario("no-such-thing")


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_same_seed_same_values_in_any_call_order(name: str) -> None:
    """state_at is a pure function of t: two builds agree, whatever order t is asked in."""
    a = get_scenario(name, seed=7)
    b = get_scenario(name, seed=7)
    times = [random.Random(1).uniform(0, a.duration) for _ in range(200)]
    forward = [a.state_at(t) for t in times]
    backward = [b.state_at(t) for t in reversed(times)]
    assert forward == list(reversed(backward))


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_different_seeds_differ(name: str) -> None:
    a, b = get_scenario(name, seed=1), get_scenario(name, seed=2)
    assert [a.state_at(t).spo2 for t in range(0, 600, 10)] != [b.state_at(t).spo2 for t in range(0, 600, 10)]


def test_interpolates_between_grid_points_and_clamps() -> None:
    s = get_scenario("normal")
    lo, hi, mid = s.state_at(100.0), s.state_at(101.0), s.state_at(100.5)
    assert (lo.pulse_rate + hi.pulse_rate) / 2 == pytest.approx(mid.pulse_rate)
    assert s.state_at(-5.0) == s.state_at(0.0)
    assert s.state_at(s.duration + 100.0) == s.state_at(s.duration)


def test_mean_pressure_is_dia_plus_a_third_of_pulse_pressure() -> None:
    st = get_scenario("normal").state_at(777.0)
    assert st.diastolic + (st.systolic - st.diastolic) / 3 == pytest.approx(st.mean)


def test_normal_stays_within_limits_with_a_mild_ketamine_rise() -> None:
    course = states("normal")
    assert all(95 <= s.spo2 <= 100 for _, s in course)
    assert all(55 < s.pulse_rate < 100 for _, s in course)
    assert all(100 < s.systolic < 160 and 60 < s.diastolic < 100 for _, s in course)
    assert not any(s.probe_off or s.silent or s.artifact or s.cuff_error for _, s in course)
    baseline = sum(s.systolic for t, s in course if t < 300) / 300
    near_peak = sum(s.systolic for t, s in course if 2200 <= t < 2500) / 300
    assert 4 < near_peak - baseline < 16
    assert 96 < sum(s.spo2 for _, s in course[:300]) / 300 < 99


def test_desaturation_alarms_within_the_first_minute_then_recovers() -> None:
    """SpO2 < 90 % for at least 15 s before t = 60 s (the demo's first alert), back up by ~3 min."""
    for seed in range(5):
        course = states("desaturation", seed)
        early = [s.spo2 < 90 for t, s in course if t < 60]
        assert longest_run(early) >= 15
        assert min(s.spo2 for t, s in course if t < 200) == pytest.approx(84, abs=2)
        assert all(s.spo2 > 93 for t, s in course if 200 <= t < 1000)
    # The SpO2 rules apply during the infusion, so the scenario starts in it.
    assert get_scenario("desaturation").phases[0][1] == "infusion"


def test_tachycardia_is_sustained_for_minutes() -> None:
    assert longest_run([s.pulse_rate > 140 for _, s in states("tachycardia")]) >= 180


def test_bradycardia_is_sustained() -> None:
    assert longest_run([s.pulse_rate < 40 for _, s in states("bradycardia")]) >= 60


def test_probe_off_has_short_and_long_periods() -> None:
    run = longest_run([s.probe_off for _, s in states("probe_off")])
    assert run > 30  # long enough for the "signal lost" technical alarm
    assert not get_scenario("probe_off").state_at(10).probe_off


def test_silence_stops_mid_stream_and_resumes() -> None:
    course = states("silence")
    flags = [s.silent for _, s in course]
    assert not any(flags[:600])
    assert longest_run(flags) >= 60
    first_off = flags.index(True)
    assert not all(flags[first_off:])  # it comes back, then goes silent again
    assert flags[-1]


def test_hypertensive_response_goes_above_180_110_around_35_min_into_infusion() -> None:
    course = states("hypertensive_response")
    high = [t for t, s in course if s.systolic > 180 and s.diastolic > 110]
    assert high
    assert any(300 + 1800 <= t <= 300 + 2400 for t in high)
    peak_t = max(course, key=lambda ts: ts[1].systolic)[0]
    assert 300 + 1500 <= peak_t <= 300 + 2700


def test_hypertensive_typical_is_about_16_over_11() -> None:
    course = states("hypertensive_typical")
    base_s = sum(s.systolic for t, s in course if t < 300) / 300
    base_d = sum(s.diastolic for t, s in course if t < 300) / 300
    peak = [s for t, s in course if 2300 <= t < 2500]
    assert 10 < sum(s.systolic for s in peak) / len(peak) - base_s < 22
    assert 6 < sum(s.diastolic for s in peak) / len(peak) - base_d < 16


def test_hypotension_goes_below_85_systolic_for_several_nibp_cycles() -> None:
    assert longest_run([s.systolic < 85 for _, s in states("hypotension")]) >= 600


def test_cuff_error_has_periods() -> None:
    flags = [s.cuff_error for _, s in states("cuff_error")]
    assert longest_run(flags) >= 120
    assert not all(flags)


def test_session_is_100_minutes_with_brief_artifacts() -> None:
    s = get_scenario("session")
    assert s.duration == 6000.0
    assert s.phases == ((0.0, "baseline"), (600.0, "infusion"), (3000.0, "recovery"), (6000.0, "ended"))
    flags = [s.state_at(t).artifact for t in range(6001)]
    assert 0 < longest_run(flags) <= 10
    assert 0 < sum(flags) < 30


@pytest.mark.parametrize("name", ["session", "probe_off", "silence"])
def test_columns_at_gives_state_at_numbers_for_many_times(name: str) -> None:
    """The vectorised states the simulators read are state_at's, field for field, bit for bit
    (on and between grid seconds, at both ends and past them); any scenario gets the same."""
    import numpy as np

    from vitalwatch.simulators.scenarios import columns_at

    scenario = get_scenario(name, seed=2)
    rng = random.Random(3)
    times = [-2.0, 0.0, 0.5, scenario.duration - 0.25, scenario.duration, scenario.duration + 3.0]
    times += [float(k) for k in range(0, int(scenario.duration), 97)]
    times += [rng.uniform(0, scenario.duration) for _ in range(500)]
    values, flags = scenario.columns_at(np.array(times))
    for column, t in enumerate(times):
        st = scenario.state_at(t)
        expected = (st.spo2, st.pulse_rate, st.perfusion_index, st.systolic, st.diastolic)
        assert tuple(values[:, column].tolist()) == expected
        assert tuple(flags[:, column].tolist()) == (st.probe_off, st.artifact, st.silent, st.cuff_error)

    class Wrapped:  # not a grid scenario: columns_at asks it state by state
        name, duration, phases = scenario.name, scenario.duration, scenario.phases

        def state_at(self, t: float) -> PatientState:
            return scenario.state_at(t)

    generic_values, generic_flags = columns_at(Wrapped(), np.array(times))
    assert generic_values.tolist() == values.tolist()
    assert generic_flags.tolist() == flags.tolist()
