"""The bed's recent trend as one retained document: what a station that opens mid-session draws at once.

Why: vitals are QoS 0 and not retained (a dead gateway must not leave a reassuring old SpO2 on a
screen), so a station page that opens, or reloads, in the middle of a session used to start
with an empty trend and blank values. The gateway therefore keeps the last :data:`WINDOW_S`
seconds of each kind in memory, **downsampled** to one point per :data:`STEP_S` seconds (mean,
min and max of the valid samples in it), plus each kind's latest value with its quality, and
publishes them retained on ``.../trend`` (docs/mqtt.md, "Trend"). Every time in the document is
an age in seconds on the gateway's monotonic clock, relative to the document's ``sent_utc``: a
gateway with a wrong wall clock cannot bend the curve, and a receiver can tell how old each
value is.

At start the book is seeded from the session record (:mod:`vitalwatch.record.recent`), so a
daemon restarted mid-session still has the trend of the minutes before. Bounded: at most
:data:`MAX_POINTS` points per kind (about 8 KiB per document in all), far below the broker's
packet limit.

Pure: the clock is passed in; the bed runtime decides when to publish (every
:data:`PUBLISH_EVERY_S` seconds, through the publisher's retained documents, after alerts).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vitalwatch.delivery.payloads import TREND_SCHEMA, iso_utc
from vitalwatch.drivers.vocabulary import KINDS

__all__ = [
    "MAX_POINTS",
    "PUBLISH_EVERY_S",
    "STEP_S",
    "TREND_KINDS",
    "WINDOW_S",
    "SeedLatest",
    "SeedPoint",
    "TrendBook",
]

STEP_S = 10.0  # one point per kind per 10 s: a 30 min line is 180 points, smooth on any tile
WINDOW_S = 1800.0  # the last 30 min; a station's trend_minutes (default 10) shows a part of it
MAX_POINTS = int(WINDOW_S // STEP_S) + 1  # a bound even for a clock that jumps or a flood of seeds
PUBLISH_EVERY_S = 10.0  # republished this often while anything is known (and on every reconnect)
# The kinds a station shows: SpO2 and pulse as lines, the NIBP readings as points and values.
TREND_KINDS = ("spo2", "pulse_rate", "nibp_systolic", "nibp_diastolic", "nibp_mean")


@dataclass(frozen=True, slots=True)
class SeedPoint:
    """A point of the session record: ``age_s`` seconds before now, with mean, min and max."""

    kind: str
    age_s: float
    mean: float
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class SeedLatest:
    """The last recorded value of a kind, ``age_s`` seconds before now (``value`` None when invalid)."""

    kind: str
    age_s: float
    value: float | None
    quality: str


@dataclass(slots=True)
class _Point:
    """Valid samples of one step: their time span, count, sum, min and max."""

    index: int  # floor(t / step): the step the samples fell in
    first_t: float
    last_t: float
    n: int
    total: float
    lo: float
    hi: float

    @property
    def t(self) -> float:
        return (self.first_t + self.last_t) / 2

    def summary(self) -> list[float]:
        """Mean, min and max, one decimal (the devices' own resolution is whole numbers)."""
        return [round(self.total / self.n, 1), round(self.lo, 1), round(self.hi, 1)]

    def add(self, t: float, value: float) -> None:
        self.last_t = t
        self.n += 1
        self.total += value
        self.lo = min(self.lo, value)
        self.hi = max(self.hi, value)


@dataclass(frozen=True, slots=True)
class _Latest:
    value: float | None
    quality: str
    t: float
    device: str | None  # None: taken from the session record, which does not keep device ids


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class TrendBook:
    """The recent trend and latest values of one bed (see the module docstring)."""

    def __init__(self, *, step_s: float = STEP_S, window_s: float = WINDOW_S) -> None:
        self.step_s, self.window_s = step_s, window_s
        self._max = int(window_s // step_s) + 1
        self._points: dict[str, deque[_Point]] = {}
        self._latest: dict[str, _Latest] = {}

    def __bool__(self) -> bool:
        """Anything to show."""
        return bool(self._latest) or any(self._points.values())

    def clear(self) -> None:
        """The session ended (or a new one began): the last patient's trend is not shown again."""
        self._points.clear()
        self._latest.clear()

    def observation(self, device: str, kind: str, value: float | None, valid: bool, now: float) -> bool:
        """One observation at monotonic ``now``; only valid finite values enter the line.

        True when the kind had no value yet: worth publishing now rather than at the next
        period, so a page opened at the start of a session shows it at once.
        """
        if kind not in TREND_KINDS:
            return False
        good = valid and _finite(value)
        first = kind not in self._latest
        self._latest[kind] = _Latest(value if good else None, "valid" if good else "invalid", now, device)
        if good:
            assert value is not None
            self._add(kind, now, value, value, value, n=1)
        return first

    def seed(self, points: Iterable[SeedPoint], latest: Iterable[SeedLatest], now: float) -> None:
        """What the session record holds from before this process (oldest first), as of ``now``."""
        for p in points:  # a negative age (the wall clock went back since it was recorded) has no place
            if p.kind in TREND_KINDS and p.age_s >= 0 and all(map(_finite, (p.mean, p.lo, p.hi))):
                self._add(p.kind, now - p.age_s, p.mean, p.lo, p.hi, n=1)
        for item in latest:
            if item.kind in TREND_KINDS and item.kind not in self._latest and item.age_s >= 0:
                good = item.quality == "valid" and _finite(item.value)
                value, quality = (item.value, "valid") if good else (None, "invalid")
                self._latest[item.kind] = _Latest(value, quality, now - item.age_s, None)

    def _add(self, kind: str, t: float, mean: float, lo: float, hi: float, *, n: int) -> None:
        series = self._points.setdefault(kind, deque(maxlen=self._max))
        index = math.floor(t / self.step_s)
        last = series[-1] if series else None
        if last is not None and last.index == index and t >= last.last_t:
            last.add(t, mean)
            last.lo, last.hi = min(last.lo, lo), max(last.hi, hi)
        elif last is None or t > last.last_t:
            series.append(_Point(index, t, t, n, mean * n, lo, hi))
        # an older time than the newest point (a seed after live data): dropped, the line is ordered

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        for series in self._points.values():
            while series and series[0].last_t < horizon:
                series.popleft()
        for kind in [k for k, v in self._latest.items() if v.t < horizon]:
            del self._latest[kind]

    def document(
        self, *, site: str, bed: str, now: float, utc: Callable[[float], datetime], sent_at: datetime
    ) -> dict[str, Any] | None:
        """The retained ``.../trend`` document as of ``now``, or None when nothing is known.

        ``utc`` labels a monotonic time (the daemon's ``WallClock.utc``) for ``measured_utc``.
        """
        self._prune(now)
        if not self:
            return None
        series = {
            kind: [[round(max(0.0, now - p.t), 1), *p.summary()] for p in points]
            for kind, points in sorted(self._points.items())
            if points
        }
        latest = {
            kind: {
                "value": v.value,
                "unit": KINDS[kind].unit,
                "quality": v.quality,
                "measured_utc": iso_utc(utc(v.t)),
                "age_s": round(max(0.0, now - v.t), 1),
                "device": v.device,
            }
            for kind, v in sorted(self._latest.items())
        }
        return {
            "schema": TREND_SCHEMA,
            "site": site,
            "bed": bed,
            "step_s": int(self.step_s),
            "window_s": int(self.window_s),
            "series": series,
            "latest": latest,
            "sent_utc": iso_utc(sent_at),
        }
