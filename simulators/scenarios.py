"""Named patient courses for an IV ketamine chair, deterministic per seed.

Every scenario is precomputed on a 1 s grid (numpy, seeded ``Generator``) when it is
built; :meth:`GridScenario.state_at` only interpolates, so it is a pure function of ``t``
that costs a few microseconds and can be called in any order (replay, 100 Hz simulators,
benchmarks). :func:`columns_at` gives the same numbers for many times at once, for the
simulators that work a stretch of time ahead (Nonin packets, Masimo seconds).

Physiology (defaults, all [EJ] around the cohorts cited in clinical-defaults.md): SpO2
97.5 % ± ~0.5, pulse 72/min ± ~2, PI 3.5 % ± 0.3, NIBP 125/78 mmHg drifting a few mmHg,
mean = dia + (sys − dia)/3. Ketamine raises BP by +16/+11 mmHg on average with the peak
30–40 min after the infusion starts and a return to baseline within about 1.5 h; the
curve here rises smoothly to a peak 35 min after the infusion starts, then decays with a
20 min time constant. Pulse follows the same curve by +6/min.

Default timeline (``phases``), what a nurse would enter:

.. code-block:: text

    t =    0 s  baseline
    t =  300 s  infusion     (5 min of baseline)
    t = 2700 s  recovery     (40 min infusion, pump stop)
    t = 3600 s  ended        (15 min of recovery; duration 3600 s)

Exceptions: ``desaturation`` starts *in* the infusion (phases 0 infusion, 2400 recovery,
3600 ended) because its first episode must alarm within the first minute and the SpO2
rules apply to infusion and recovery; ``session`` is a full 100 min session (0 baseline,
600 infusion, 3000 recovery, 6000 ended).

Scenarios (times are scenario seconds):

- ``normal``: within limits, mild ketamine rise (+10/+8 mmHg, +5/min).
- ``desaturation``: SpO2 < 90 % from ~35 s to ~145 s (nadir 84 %), again 1200–1290 s
  (nadir 86 %) and 2000–2060 s (nadir 87 %).
- ``tachycardia``: pulse > 140 from ~650 s to ~970 s (about 150/min).
- ``bradycardia``: pulse < 40 from ~660 s to ~850 s (about 36/min).
- ``probe_off``: probe off 400–460 s, 1500–1520 s and 2000–2200 s (values meaningless).
- ``silence``: the devices send nothing 900–1200 s and again from 3000 s to the end.
- ``hypertensive_response``: the outlier (baseline 135/84, peak about 192/118 at 35 min
  into the infusion; SBP above 180 for roughly 1750–2700 s, DBP above 110 for 1750–2550 s).
- ``hypertensive_typical``: the cohort average rise, +16/+11 mmHg at the peak.
- ``hypotension``: SBP < 85 from ~990 s to ~2000 s (about 78/48), pulse +15.
- ``cuff_error``: cuff cycles fail 600–900 s and 1800–2100 s.
- ``session``: 100 min, ketamine rise +14/+10, brief motion artifacts at 1400–1408 s and
  3500–3506 s.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from vitalwatch.simulators.base import PatientState, Scenario

__all__ = ["SCENARIO_NAMES", "GridScenario", "columns_at", "get_scenario"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

INFUSION_START = 300.0
INFUSION_LENGTH = 2400.0  # 40 min: the usual 0.5 mg/kg over 40 min
DURATION = 3600.0
BP_PEAK_AFTER = 2100.0  # BP peaks 30-40 min after the infusion starts [V]; 35 min
BP_DECAY_TAU = 1200.0  # back near baseline within ~1.5 h [V]; 20 min time constant [EJ]

# Row order of GridScenario.values and GridScenario.flags.
_VALUES = ("spo2", "pulse_rate", "perfusion_index", "systolic", "diastolic")
_FLAGS = ("probe_off", "artifact", "silent", "cuff_error")


@dataclass(slots=True, eq=False)
class GridScenario:
    """A scenario precomputed on a 1 s grid (implements :class:`~vitalwatch.simulators.base.Scenario`).

    ``values`` holds rows spo2, pulse_rate, perfusion_index, systolic, diastolic (linearly
    interpolated between seconds); ``flags`` holds rows probe_off, artifact, silent,
    cuff_error (held from the second at or before ``t``).
    """

    name: str
    duration: float
    phases: tuple[tuple[float, str], ...]
    seed: int
    values: FloatArray
    flags: BoolArray
    # The same grid as Python numbers, one tuple per second: a replay asks for a state tens of
    # thousands of times, and numpy's per-call overhead was most of each answer.
    _seconds: list[tuple[float, ...]] = field(init=False, repr=False)
    _flag_seconds: list[tuple[bool, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._seconds = [tuple(column) for column in self.values.T.tolist()]
        self._flag_seconds = [tuple(column) for column in self.flags.T.tolist()]

    def state_at(self, t: float) -> PatientState:
        """The state at scenario time ``t``, clamped to ``[0, duration]``.

        Linear between seconds, with numpy's arithmetic done on Python floats (the same IEEE
        operations in the same order, so the same numbers: ``a * (1 - frac) + b * frac``).
        """
        x = min(max(float(t), 0.0), self.duration)
        i = int(x)
        last = len(self._seconds) - 1
        i = min(i, last)
        j = min(i + 1, last)
        frac = x - i
        keep = 1.0 - frac
        a, b = self._seconds[i], self._seconds[j]
        f = self._flag_seconds[i]
        sys_, dia = a[3] * keep + b[3] * frac, a[4] * keep + b[4] * frac
        return PatientState(
            spo2=a[0] * keep + b[0] * frac,
            pulse_rate=a[1] * keep + b[1] * frac,
            perfusion_index=a[2] * keep + b[2] * frac,
            systolic=sys_,
            diastolic=dia,
            mean=dia + (sys_ - dia) / 3.0,
            probe_off=f[0],
            artifact=f[1],
            silent=f[2],
            cuff_error=f[3],
        )

    def columns_at(self, times: FloatArray) -> tuple[FloatArray, BoolArray]:
        """:meth:`state_at` for many (finite) times at once: ``values`` and ``flags`` rows, one
        column per time (``mean`` is not a row).

        Why: a simulator that needs a state three times a second (Nonin packets) spent most of a
        replay's simulator time asking one at a time. numpy does state_at's IEEE operations in the
        same order on whole arrays (a product and a sum each, never fused), so every number is
        the one state_at gives.
        """
        x = np.minimum(np.maximum(times, 0.0), self.duration)
        last = self.values.shape[1] - 1
        i = np.minimum(x.astype(np.int64), last)
        j = np.minimum(i + 1, last)
        frac = x - i
        keep = 1.0 - frac
        values: FloatArray = self.values[:, i] * keep + self.values[:, j] * frac
        return values, self.flags[:, i]


def columns_at(scenario: Scenario, times: FloatArray) -> tuple[FloatArray, BoolArray]:
    """Any scenario's states at ``times`` as :meth:`GridScenario.columns_at` gives them (rows spo2,
    pulse_rate, perfusion_index, systolic, diastolic; probe_off, artifact, silent, cuff_error):
    a grid scenario in one go, any other one state by state."""
    if isinstance(scenario, GridScenario):
        return scenario.columns_at(times)
    states = [scenario.state_at(t) for t in times.tolist()]
    values = np.array([[getattr(s, name) for s in states] for name in _VALUES], dtype=np.float64)
    flags = np.array([[getattr(s, name) for s in states] for name in _FLAGS], dtype=np.bool_)
    return values.reshape(len(_VALUES), len(states)), flags.reshape(len(_FLAGS), len(states))


def _ar1(rng: np.random.Generator, n: int, *, sd: float, tau: float) -> FloatArray:
    """Smooth noise: an AR(1) track with standard deviation ``sd`` and time constant ``tau`` s."""
    a = float(np.exp(-1.0 / tau))
    shocks = rng.standard_normal(n) * sd * float(np.sqrt(1.0 - a * a))
    out = np.empty(n)
    x = float(rng.standard_normal()) * sd  # start in the stationary distribution
    for k in range(n):
        x = a * x + float(shocks[k])
        out[k] = x
    return out


def _smoothstep(t: FloatArray, start: float, end: float) -> FloatArray:
    """0 before ``start``, 1 after ``end``, a smooth S in between."""
    x = np.clip((t - start) / max(end - start, 1e-9), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _episode(t: FloatArray, start: float, fall: float, hold: float, rise: float) -> FloatArray:
    """A 0→1→0 envelope: falls in ``fall`` s from ``start``, holds ``hold`` s, recovers in ``rise`` s."""
    up = np.clip((t - start) / fall, 0.0, 1.0)
    down = 1.0 - np.clip((t - (start + fall + hold)) / rise, 0.0, 1.0)
    return np.minimum(up, down)


def _ketamine_curve(t: FloatArray, infusion_start: float) -> FloatArray:
    """The shape of ketamine's BP effect: 0 → 1 at 35 min into the infusion, then decays."""
    peak = infusion_start + BP_PEAK_AFTER
    rising = _smoothstep(t, infusion_start, peak)
    decaying = np.exp(-np.clip(t - peak, 0.0, None) / BP_DECAY_TAU)
    out: FloatArray = np.where(t < peak, rising, decaying)
    return out


class _Course:
    """Mutable 1 s arrays that the recipes below edit before they are frozen into a scenario."""

    def __init__(self, name: str, seed: int, duration: float, *, sys0: float = 125.0, dia0: float = 78.0):
        n = int(duration) + 1
        # The name is part of the seed so scenarios with the same seed do not share noise.
        self.rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        self.t: FloatArray = np.arange(n, dtype=np.float64)
        jitter = self.rng.standard_normal(n) * 0.25  # beat-to-beat wobble of the SpO2 reading
        self.spo2 = 97.6 + _ar1(self.rng, n, sd=0.45, tau=20.0) + jitter
        self.pulse = 72.0 + _ar1(self.rng, n, sd=2.0, tau=30.0)
        self.pi = 3.5 + _ar1(self.rng, n, sd=0.3, tau=15.0)
        self.sys = sys0 + _ar1(self.rng, n, sd=3.0, tau=300.0)
        self.dia = dia0 + _ar1(self.rng, n, sd=2.0, tau=300.0)
        self.flags = np.zeros((len(_FLAGS), n), dtype=np.bool_)

    def ketamine(self, infusion_start: float, sys_rise: float, dia_rise: float, pulse_rise: float) -> None:
        curve = _ketamine_curve(self.t, infusion_start)
        self.sys += sys_rise * curve
        self.dia += dia_rise * curve
        self.pulse += pulse_rise * curve

    def flag(self, which: str, start: float, end: float | None = None) -> None:
        """Set a flag for ``start <= t < end`` (``end=None``: to the end)."""
        row = _FLAGS.index(which)
        stop = self.t[-1] + 1 if end is None else end
        self.flags[row, (self.t >= start) & (self.t < stop)] = True

    def build(self, name: str, seed: int, phases: tuple[tuple[float, str], ...]) -> GridScenario:
        spo2 = np.clip(self.spo2, 50.0, 100.0)
        pulse = np.clip(self.pulse, 20.0, 250.0)
        pi = np.clip(self.pi, 0.02, 20.0)
        dia = np.clip(self.dia, 20.0, 200.0)
        sys_ = np.maximum(self.sys, dia + 15.0)  # a pulse pressure below 15 mmHg is not a patient
        values = np.vstack([spo2, pulse, pi, sys_, dia]).astype(np.float64)
        return GridScenario(
            name=name,
            duration=float(self.t[-1]),
            phases=phases,
            seed=seed,
            values=values,
            flags=self.flags.copy(),
        )


def _default_phases(infusion_start: float = INFUSION_START, duration: float = DURATION) -> tuple[
    tuple[float, str], ...
]:
    return (
        (0.0, "baseline"),
        (infusion_start, "infusion"),
        (infusion_start + INFUSION_LENGTH, "recovery"),
        (duration, "ended"),
    )


def _normal(c: _Course) -> tuple[tuple[float, str], ...]:
    c.ketamine(INFUSION_START, 10.0, 8.0, 5.0)
    c.spo2 = np.maximum(c.spo2, 95.0)  # "normal" must never dip towards a limit by noise alone
    return _default_phases()


def _desaturation(c: _Course) -> tuple[tuple[float, str], ...]:
    # Joined during the infusion: the first episode has to alarm within a minute of launch.
    c.ketamine(0.0, 10.0, 8.0, 5.0)
    base = 97.6
    for start, fall, hold, rise, nadir in (
        (16.0, 32.0, 80.0, 40.0, 84.0),  # < 90 % from ~35 s to ~145 s
        (1185.0, 30.0, 60.0, 40.0, 86.0),
        (1990.0, 20.0, 40.0, 30.0, 87.0),
    ):
        env = _episode(c.t, start, fall, hold, rise)
        c.spo2 -= (base - nadir) * env
        c.pulse += 8.0 * env  # reflex tachycardia with hypoxaemia
        c.pi -= 0.8 * env
    return ((0.0, "infusion"), (INFUSION_LENGTH, "recovery"), (DURATION, "ended"))


def _tachycardia(c: _Course) -> tuple[tuple[float, str], ...]:
    c.ketamine(INFUSION_START, 12.0, 8.0, 5.0)
    env = _episode(c.t, 600.0, 60.0, 300.0, 90.0)
    c.pulse += (150.0 - 72.0) * env
    return _default_phases()


def _bradycardia(c: _Course) -> tuple[tuple[float, str], ...]:
    c.ketamine(INFUSION_START, 10.0, 8.0, 0.0)
    env = _episode(c.t, 600.0, 60.0, 180.0, 60.0)
    c.pulse -= (72.0 - 36.0) * env
    c.pulse = np.where(env > 0.99, np.minimum(c.pulse, 38.0), c.pulse)
    return _default_phases()


def _probe_off(c: _Course) -> tuple[tuple[float, str], ...]:
    c.ketamine(INFUSION_START, 10.0, 8.0, 5.0)
    for start, end in ((400.0, 460.0), (1500.0, 1520.0), (2000.0, 2200.0)):
        c.flag("probe_off", start, end)
    return _default_phases()


def _silence(c: _Course) -> tuple[tuple[float, str], ...]:
    c.ketamine(INFUSION_START, 10.0, 8.0, 5.0)
    c.flag("silent", 900.0, 1200.0)
    c.flag("silent", 3000.0)
    return _default_phases()


def _hypertensive_response(c: _Course) -> tuple[tuple[float, str], ...]:
    c.ketamine(INFUSION_START, 57.0, 34.0, 12.0)  # on 135/84: peak ~192/118
    return _default_phases()


def _hypertensive_typical(c: _Course) -> tuple[tuple[float, str], ...]:
    c.ketamine(INFUSION_START, 16.0, 11.0, 6.0)
    return _default_phases()


def _hypotension(c: _Course) -> tuple[tuple[float, str], ...]:
    c.ketamine(INFUSION_START, 4.0, 3.0, 0.0)
    env = _episode(c.t, 800.0, 240.0, 900.0, 300.0)
    c.sys -= (129.0 - 78.0) * env
    c.dia -= (81.0 - 48.0) * env
    c.pulse += 15.0 * env
    return _default_phases()


def _cuff_error(c: _Course) -> tuple[tuple[float, str], ...]:
    c.ketamine(INFUSION_START, 10.0, 8.0, 5.0)
    c.flag("cuff_error", 600.0, 900.0)
    c.flag("cuff_error", 1800.0, 2100.0)
    return _default_phases()


def _session(c: _Course) -> tuple[tuple[float, str], ...]:
    c.ketamine(600.0, 14.0, 10.0, 6.0)
    c.spo2 = np.maximum(c.spo2, 94.5)
    c.flag("artifact", 1400.0, 1408.0)
    c.flag("artifact", 3500.0, 3506.0)
    return ((0.0, "baseline"), (600.0, "infusion"), (3000.0, "recovery"), (6000.0, "ended"))


_Recipe = Callable[[_Course], tuple[tuple[float, str], ...]]

# name -> (recipe, duration, baseline systolic, baseline diastolic)
_RECIPES: dict[str, tuple[_Recipe, float, float, float]] = {
    "normal": (_normal, DURATION, 125.0, 78.0),
    "desaturation": (_desaturation, DURATION, 125.0, 78.0),
    "tachycardia": (_tachycardia, DURATION, 125.0, 78.0),
    "bradycardia": (_bradycardia, DURATION, 125.0, 78.0),
    "probe_off": (_probe_off, DURATION, 125.0, 78.0),
    "silence": (_silence, DURATION, 125.0, 78.0),
    "hypertensive_response": (_hypertensive_response, DURATION, 135.0, 84.0),
    "hypertensive_typical": (_hypertensive_typical, DURATION, 125.0, 78.0),
    "hypotension": (_hypotension, DURATION, 125.0, 78.0),
    "cuff_error": (_cuff_error, DURATION, 125.0, 78.0),
    "session": (_session, 6000.0, 125.0, 78.0),
}

SCENARIO_NAMES: tuple[str, ...] = tuple(_RECIPES)


def get_scenario(name: str, seed: int = 0) -> GridScenario:
    """Build a named scenario; the same ``(name, seed)`` always gives the same course.

    Raises KeyError naming the known scenarios for an unknown name.
    """
    try:
        recipe, duration, sys0, dia0 = _RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r} (known: {', '.join(SCENARIO_NAMES)})") from None
    course = _Course(name, seed, duration, sys0=sys0, dia0=dia0)
    phases = recipe(course)
    return course.build(name, seed, phases)
