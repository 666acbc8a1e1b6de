"""Small inline SVG charts for the registry page, drawn on the server (no script, no network).

Why server-side SVG: the page is a report, read and printed, never animated; an SVG in the HTML
needs no JavaScript (the page's Content-Security-Policy allows none) and no chart library.
Every mark carries ``data-month`` and ``data-value``, so a test (and a curious reader's
developer tools) can check what was drawn against the numbers. Text is escaped: a condition
name comes from a gateway's record, which the registry does not trust.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Series", "bar_chart", "line_chart", "range_chart", "stacked_chart"]

WIDTH, HEIGHT = 390, 230
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 30, 42


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    color: str
    values: Sequence[float | None]


def _nice_max(peak: float) -> float:
    """A round top for the y axis at or above ``peak`` (1, 2, 2.5 or 5 times a power of ten)."""
    if peak <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(peak))
    for step in (1, 2, 2.5, 5, 10):
        if peak <= step * power:
            return step * power
    return 10 * power


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1 or v == 0 else f"{v:.2g}"


class _Frame:
    """Axes, grid and month labels of one chart; maps (month index, value) to pixels."""

    def __init__(self, ident: str, title: str, months: Sequence[str], top: float, unit: str) -> None:
        self.ident, self.months, self.top = ident, months, top
        self.parts: list[str] = [
            f'<svg id="{escape(ident)}" class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}"'
            f' width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
            f"<title>{escape(title)}</title>",
            f'<text x="{LEFT}" y="18" class="chart-title">{escape(title)}</text>',
        ]
        for k in range(5):
            v = top * k / 4
            y = self.y(v)
            self.parts.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_fmt(v)}</text>'
            )
        self.parts.append(
            f'<text x="12" y="{TOP + self.plot_h / 2:.0f}" class="unit" text-anchor="middle"'
            f' transform="rotate(-90 12 {TOP + self.plot_h / 2:.0f})">{escape(unit)}</text>'
        )
        every = max(1, math.ceil(len(months) / 12))
        for i, month in enumerate(months):
            if i % every == 0:
                self.parts.append(
                    f'<text x="{self.x(i):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle"'
                    f' class="tick">{escape(month)}</text>'
                )

    @property
    def plot_w(self) -> float:
        return WIDTH - LEFT - RIGHT

    @property
    def plot_h(self) -> float:
        return HEIGHT - TOP - BOTTOM

    @property
    def slot(self) -> float:
        return self.plot_w / max(1, len(self.months))

    def x(self, i: int) -> float:
        return LEFT + self.slot * (i + 0.5)

    def y(self, v: float) -> float:
        return TOP + self.plot_h * (1 - min(v, self.top) / self.top)

    def legend(self, series: Sequence[Series]) -> None:
        x = WIDTH - RIGHT
        for s in reversed(series):
            label = escape(s.label)
            x -= 22 + 7 * len(s.label)
            self.parts.append(
                f'<rect x="{x:.0f}" y="{HEIGHT - 14}" width="10" height="10" fill="{s.color}" class="key"/>'
                f'<text x="{x + 13:.0f}" y="{HEIGHT - 5}" class="tick">{label}</text>'
            )

    def done(self) -> str:
        return "".join([*self.parts, "</svg>"])


def _peak(values: Sequence[float | None]) -> float:
    return max((v for v in values if v is not None), default=0.0)


def bar_chart(ident: str, title: str, months: Sequence[str], values: Sequence[float | None], *,
              unit: str, color: str) -> str:  # fmt: skip
    """One bar per month (none for an unknown value)."""
    f = _Frame(ident, title, months, _nice_max(_peak(values)), unit)
    width = f.slot * 0.7
    for i, (month, v) in enumerate(zip(months, values, strict=True)):
        if v is None:
            continue
        y = f.y(v)
        f.parts.append(
            f'<rect class="bar" data-month="{escape(month)}" data-value="{v:g}" x="{f.x(i) - width / 2:.1f}"'
            f' y="{y:.1f}" width="{width:.1f}" height="{TOP + f.plot_h - y:.1f}" fill="{color}"/>'
        )
    return f.done()


def range_chart(ident: str, title: str, months: Sequence[str], lows: Sequence[float | None],
                highs: Sequence[float | None], *, unit: str, color: str) -> str:  # fmt: skip
    """A vertical bar from the lowest to the highest value of each month, with end caps."""
    f = _Frame(ident, title, months, _nice_max(_peak(highs)), unit)
    for i, (month, lo, hi) in enumerate(zip(months, lows, highs, strict=True)):
        if lo is None or hi is None:
            continue
        x, y_lo, y_hi = f.x(i), f.y(lo), f.y(hi)
        caps = "".join(
            f'<line x1="{x - 8:.1f}" x2="{x + 8:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{color}"'
            ' stroke-width="2"/>'
            for y in (y_hi, y_lo)
        )
        f.parts.append(
            f'<g class="range" data-month="{escape(month)}" data-value="{lo:g}-{hi:g}">'
            f'<rect x="{x - 3:.1f}" y="{y_hi:.1f}" width="6" height="{max(1.0, y_lo - y_hi):.1f}"'
            f' fill="{color}"/>{caps}</g>'
        )
    return f.done()


def line_chart(ident: str, title: str, months: Sequence[str], series: Sequence[Series], *, unit: str) -> str:
    """One line per series with a dot per known month (a gap where a month is unknown)."""
    f = _Frame(ident, title, months, _nice_max(max((_peak(s.values) for s in series), default=0.0)), unit)
    for s in series:
        run: list[str] = []
        runs: list[list[str]] = [run]
        for i, (month, v) in enumerate(zip(months, s.values, strict=True)):
            if v is None:
                run = []
                runs.append(run)
                continue
            x, y = f.x(i), f.y(v)
            run.append(f"{x:.1f},{y:.1f}")
            f.parts.append(
                f'<circle class="point" data-series="{escape(s.label)}" data-month="{escape(month)}"'
                f' data-value="{v:g}" cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{s.color}"/>'
            )
        for points in runs:
            if len(points) > 1:
                f.parts.append(
                    f'<polyline class="line" points="{" ".join(points)}" fill="none" stroke="{s.color}"'
                    ' stroke-width="2"/>'
                )
    f.legend(series)
    return f.done()


def stacked_chart(
    ident: str, title: str, months: Sequence[str], series: Sequence[Series], *, unit: str
) -> str:
    """Bars stacked bottom-up in the order of ``series`` (unknown counts as 0)."""
    totals = [sum(s.values[i] or 0.0 for s in series) for i in range(len(months))]
    f = _Frame(ident, title, months, _nice_max(max(totals, default=0.0)), unit)
    width = f.slot * 0.7
    for i, month in enumerate(months):
        base = 0.0
        for s in series:
            v = s.values[i] or 0.0
            if v <= 0:
                continue
            y0, y1 = f.y(base), f.y(base + v)
            f.parts.append(
                f'<rect class="bar" data-series="{escape(s.label)}" data-month="{escape(month)}"'
                f' data-value="{v:g}" x="{f.x(i) - width / 2:.1f}" y="{y1:.1f}" width="{width:.1f}"'
                f' height="{y0 - y1:.1f}" fill="{s.color}"/>'
            )
            base += v
    f.legend(series)
    return f.done()
