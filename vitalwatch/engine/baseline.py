"""The patient's baseline, taken in the baseline phase (docs/alarms.md, "Session and phases").

BL systolic/diastolic = median of >= 2 valid NIBP readings >= 2 min apart; BL SpO2 and pulse =
median over >= 3 min of valid signal [EJ]. While the phase is ``baseline`` the estimate is live
(the start gates use it); when the phase moves on it is frozen, and the baseline-relative rules
use the frozen copy. A baseline part that is not complete stays ``None`` and the rules that need
it are skipped (``baseline_incomplete`` tells the nurse).
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vitalwatch.engine.signals import NibpReading, fmt
from vitalwatch.engine.snapshot import encode_number
from vitalwatch.engine.table import BaselineSettings

if TYPE_CHECKING:
    from vitalwatch.engine.snapshot import StateReader

__all__ = ["Baseline", "BaselineCollector"]


def _nan(value: float) -> bool:
    """NaN, the one value unequal to itself (math.isnan overflows on a huge int)."""
    return value != value  # noqa: PLR0124


@dataclass(frozen=True, slots=True)
class Baseline:
    """A baseline estimate; a part is None until complete."""

    systolic: float | None
    diastolic: float | None
    spo2: float | None
    pulse_rate: float | None
    nibp_count: int
    oximetry_s: float  # the shorter of the SpO2 and pulse valid seconds
    nibp_span_s: float = 0.0  # seconds between the first and the last valid baseline reading
    spo2_s: float | None = None  # valid seconds of SpO2 (None: as oximetry_s)
    pulse_rate_s: float | None = None  # valid seconds of pulse (None: as oximetry_s)

    def valid_seconds(self, parameter: str) -> float:
        """Seconds of valid ``spo2`` or ``pulse_rate`` signal collected in the baseline phase."""
        seconds = self.spo2_s if parameter == "spo2" else self.pulse_rate_s
        return self.oximetry_s if seconds is None else seconds

    @property
    def complete(self) -> bool:
        return None not in (self.systolic, self.diastolic, self.spo2, self.pulse_rate)

    def get(self, parameter: str) -> float | None:
        """The baseline of ``spo2`` or ``pulse_rate``."""
        return self.spo2 if parameter == "spo2" else self.pulse_rate if parameter == "pulse_rate" else None

    def describe(self) -> str:
        """'BL 128/80 mmHg, SpO2 97 %, pulse 72 /min'."""
        return (
            f"BL {fmt(self.systolic)}/{fmt(self.diastolic)} mmHg, SpO2 {fmt(self.spo2)} %, "
            f"pulse {fmt(self.pulse_rate)} /min"
        )

    def to_state(self) -> dict[str, Any]:
        """Snapshot form (:mod:`vitalwatch.engine.snapshot`)."""
        return {
            "systolic": encode_number(self.systolic),
            "diastolic": encode_number(self.diastolic),
            "spo2": encode_number(self.spo2),
            "pulse_rate": encode_number(self.pulse_rate),
            "nibp_count": self.nibp_count,
            "oximetry_s": self.oximetry_s,
            "nibp_span_s": self.nibp_span_s,
            "spo2_s": self.spo2_s,
            "pulse_rate_s": self.pulse_rate_s,
        }

    @classmethod
    def from_state(cls, r: StateReader) -> Baseline:
        return cls(
            systolic=r.opt_number("systolic"),
            diastolic=r.opt_number("diastolic"),
            spo2=r.opt_number("spo2"),
            pulse_rate=r.opt_number("pulse_rate"),
            nibp_count=r.integer("nibp_count"),
            oximetry_s=r.seconds("oximetry_s"),
            # Added later: a snapshot of an earlier version of this engine lacks them.
            nibp_span_s=r.seconds("nibp_span_s") if r.has("nibp_span_s") else 0.0,
            spo2_s=r.seconds("spo2_s") if r.has("spo2_s") and r.raw("spo2_s") is not None else None,
            pulse_rate_s=(
                r.seconds("pulse_rate_s")
                if r.has("pulse_rate_s") and r.raw("pulse_rate_s") is not None
                else None
            ),
        )


class BaselineCollector:
    """Collects baseline-phase samples and readings; bounded (one hour of 1 Hz samples)."""

    def __init__(self, settings: BaselineSettings, *, window: int = 3600) -> None:
        """``window``: the samples kept per parameter, the latest (an hour of 1 Hz samples)."""
        self._settings = settings
        self._samples: dict[str, deque[float]] = {p: deque(maxlen=window) for p in ("spo2", "pulse_rate")}
        self._valid_s: dict[str, float] = {"spo2": 0.0, "pulse_rate": 0.0}
        self._readings: deque[NibpReading] = deque(maxlen=50)
        self._cache: Baseline | None = None
        # The medians, kept until a sample of their parameter arrives: the estimate is asked
        # for at every engine call of the baseline phase, and the valid time alone moves on.
        self._medians: dict[str, float] = {}
        # Each parameter's samples kept in sorted order as they come (insort, and the oldest
        # removed as the window drops it), so a median is two list lookups, not a sort of up to
        # an hour of samples at every sample. The order of equal values is their arrival order,
        # as a stable sort of the window gives, so the middle elements are the very same
        # objects statistics.median would pick. A NaN has no place in an order: a parameter with
        # one in its window is sorted again, as before (_unordered counts them).
        self._sorted: dict[str, list[float]] = {p: [] for p in self._samples}
        self._unordered: dict[str, int] = dict.fromkeys(self._samples, 0)
        # The NIBP part of the estimate (systolic, diastolic), kept until a reading arrives;
        # None: not worked out. Only while every reading's values are finite: an infinite or
        # NaN one makes a fresh object each time, as the estimate always did (_nibp_exact).
        self._nibp_part: tuple[float | None, float | None] | None = None
        self._nibp_exact = True

    def add_valid_time(self, parameter: str, seconds: float) -> None:
        """Seconds of valid signal of ``parameter`` in the baseline phase."""
        if seconds > 0:
            self._valid_s[parameter] += seconds
            self._cache = None

    def add_sample(self, parameter: str, value: float) -> None:
        window, ordered = self._samples[parameter], self._sorted[parameter]
        if len(window) == window.maxlen:  # the oldest drops out of the window
            oldest = window[0]
            if _nan(oldest):
                self._unordered[parameter] -= 1
            elif not self._unordered[parameter]:
                # The oldest of the values equal to it is the first of them in the order.
                del ordered[bisect_left(ordered, oldest)]
        window.append(value)
        if _nan(value):
            self._unordered[parameter] += 1
            ordered.clear()  # rebuilt from the window once it holds no NaN again
        elif not self._unordered[parameter]:
            if not ordered and len(window) > 1:
                ordered.extend(sorted(list(window)[:-1]))  # the window after its last NaN left
            insort(ordered, value)  # after the values equal to it: arrival order
        self._medians.pop(parameter, None)
        self._cache = None

    def add_reading(self, reading: NibpReading) -> None:
        if reading.valid:
            self._readings.append(reading)
            self._cache = None
            self._nibp_part = None
            for v in (reading.systolic, reading.diastolic):
                if v is not None and not math.isfinite(v):
                    self._nibp_exact = False

    def snapshot(self) -> dict[str, Any]:
        """What was collected (the estimate is recomputed from it)."""
        return {
            "samples": {p: [encode_number(v) for v in q] for p, q in self._samples.items()},
            "valid_s": dict(self._valid_s),
            "readings": [r.to_state() for r in self._readings],
        }

    def restore_state(self, r: StateReader) -> None:
        samples, valid_s = r.child("samples"), r.child("valid_s")
        for p, q in self._samples.items():
            q.clear()
            q.extend(samples.numbers(p, q.maxlen))
            self._valid_s[p] = valid_s.seconds(p)
        self._readings.clear()
        self._readings.extend(
            NibpReading.from_state(c) for c in r.children("readings", self._readings.maxlen)
        )
        for p, q in self._samples.items():
            self._unordered[p] = sum(1 for v in q if _nan(v))
            self._sorted[p] = [] if self._unordered[p] else sorted(q)
        self._nibp_exact = all(
            v is None or math.isfinite(v) for x in self._readings for v in (x.systolic, x.diastolic)
        )
        self._nibp_part = None
        self._medians.clear()
        self._cache = None

    def readings(self) -> list[NibpReading]:
        """The valid baseline NIBP readings, oldest first."""
        return list(self._readings)

    def _median(self, parameter: str) -> float:
        median = self._medians.get(parameter)
        if median is None:
            ordered = self._sorted[parameter]
            if self._unordered[parameter]:
                value = statistics.median(self._samples[parameter])
            elif len(ordered) % 2:
                value = ordered[len(ordered) // 2]  # statistics.median's own arithmetic
            else:
                i = len(ordered) // 2
                value = (ordered[i - 1] + ordered[i]) / 2
            median = self._medians[parameter] = float(value)
        return median

    def _nibp(self) -> tuple[float | None, float | None]:
        """The baseline systolic and diastolic (None until enough readings, spaced enough)."""
        if self._nibp_part is not None:
            return self._nibp_part
        s = self._settings
        readings = self._readings
        systolic = diastolic = None
        if len(readings) >= s.nibp_readings and readings[-1].t - readings[0].t >= s.nibp_spacing_s:
            systolic = float(statistics.median(r.systolic for r in readings if r.systolic is not None))
            diastolic = float(statistics.median(r.diastolic for r in readings if r.diastolic is not None))
        if self._nibp_exact:
            self._nibp_part = (systolic, diastolic)
        return systolic, diastolic

    def oximetry(self, parameter: str) -> float | None:
        """The baseline ``spo2`` or ``pulse_rate`` as :meth:`estimate` has it, without building
        the estimate (the engine asks at every call of the baseline phase)."""
        enough = self._valid_s[parameter] >= self._settings.oximetry_s - 1e-6 and self._samples[parameter]
        return self._median(parameter) if enough else None

    def systolic(self) -> float | None:
        """The baseline systolic as :meth:`estimate` has it, without building the estimate."""
        return self._nibp()[0]

    def key(self) -> tuple[float | None, float | None, float | None, float | None]:
        """(systolic, diastolic, SpO2, pulse) as :meth:`estimate` has them, without building it
        (from the estimate itself after a non-finite reading: the very objects it holds, as a
        NaN equals only itself)."""
        if not self._nibp_exact:
            b = self.estimate()
            return (b.systolic, b.diastolic, b.spo2, b.pulse_rate)
        return (*self._nibp(), self.oximetry("spo2"), self.oximetry("pulse_rate"))

    def reading_count(self) -> int:
        """How many valid baseline NIBP readings there are."""
        return len(self._readings)

    def last_reading(self) -> NibpReading | None:
        """The latest valid baseline NIBP reading."""
        return self._readings[-1] if self._readings else None

    def estimate(self) -> Baseline:
        """The baseline from what was collected so far."""
        if self._cache is not None:
            return self._cache
        readings = self._readings
        systolic, diastolic = self._nibp()
        oxi = {p: self.oximetry(p) for p in ("spo2", "pulse_rate")}
        self._cache = Baseline(
            systolic=systolic,
            diastolic=diastolic,
            spo2=oxi["spo2"],
            pulse_rate=oxi["pulse_rate"],
            nibp_count=len(readings),
            oximetry_s=min(self._valid_s.values()),
            nibp_span_s=readings[-1].t - readings[0].t if readings else 0.0,
            spo2_s=self._valid_s["spo2"],
            pulse_rate_s=self._valid_s["pulse_rate"],
        )
        return self._cache
