"""The end-of-session report: a PNG plot of the whole session and a one-page HTML summary.

Why: a clinician reviewing a ketamine session wants one picture (vitals over time, the phases,
when alarms fired and when they were answered) and one page of numbers (baseline, peaks,
response times, discharge-ready time), not a database. Both come from the session record
(:mod:`vitalwatch.record.sessionlog`) through :func:`vitalwatch.record.export.summarise`, so the report and
the registry export always agree.

The plot uses matplotlib's object API (``Figure`` + Agg canvas, no pyplot): no display is
needed and no global state is touched. Times on the plot and in the summary are minutes
relative to the infusion start (negative in the baseline), the way a clinician counts them.
Alarm colours follow IEC 60601-1-8 (HIGH red, MEDIUM yellow, LOW cyan).
"""

from __future__ import annotations

import html
from pathlib import Path

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from vitalwatch.record.export import AlarmLife, SessionData, Summary, summarise

__all__ = ["PRIORITY_COLOURS", "render_html", "render_plot", "write_report"]

PRIORITY_COLOURS = {"high": "#d62728", "medium": "#e6b800", "low": "#17becf"}
PHASE_COLOURS = {"baseline": "#eeeeee", "infusion": "#fde3c8", "recovery": "#dff0d8"}
ACK_COLOUR = "#222222"
NURSE_COLOUR = "#8c564b"
# Short labels of the nurse's observations on the plot (the steps are the phase shading already).
_NURSE_LABELS = {
    "nurse_dissociation": "dissoc.",
    "nurse_emergence": "emerg.",
    "nurse_agitation": "agit.",
    "nurse_nausea": "nausea",
    "nurse_vomiting": "vomit",
    "nurse_rescue_medication": "rescue",
    "nurse_note": "note",
}


def _nurse_marks(axes: list[Axes], s: Summary) -> None:
    """A dotted line through every panel at each observation the nurse entered, labelled on top."""
    for t_s, kind, data in s.nurse:
        label = _NURSE_LABELS.get(kind)
        if label is None:
            continue
        if isinstance(data.get("score"), int):
            label += f" {data['score']}"
        x = _rel(s, t_s)
        for ax in axes:
            ax.axvline(x, color=NURSE_COLOUR, ls=":", lw=1)
        axes[0].annotate(
            label, (x, 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
            color=NURSE_COLOUR, va="top", ha="right",
        )  # fmt: skip


def _describe_step(kind: str, data: dict[str, object]) -> str:
    """One line for the report's table of the nurse's steps, prompts and observations."""
    skip = {"by", "open_items"}
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in data.items() if k not in skip]
    items = data.get("open_items")
    if isinstance(items, list) and items:
        parts.append("open: " + "; ".join(str(i) for i in items))
    return ", ".join(parts)


def _rel(s: Summary, t_s: float) -> float:
    return (t_s - s.reference_s) / 60.0


def _clock(s: Summary, t_s: float | None) -> str:
    """'+25:15' (minutes:seconds from the infusion start), '–' when unknown."""
    if t_s is None:
        return "–"
    sec = round(t_s - s.reference_s)
    sign = "-" if sec < 0 else "+"
    return f"{sign}{abs(sec) // 60}:{abs(sec) % 60:02d}"


def _series(data: SessionData, kind: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Minute midpoints (s), means, mins and maxes of one kind; a gap where the minute had no value."""
    ts: list[float] = []
    means: list[float] = []
    los: list[float] = []
    his: list[float] = []
    nan = float("nan")
    for m in data.minutes:
        st = m.stats.get(kind)
        ts.append(m.t_s + m.span_s / 2)
        if st and st.get("n"):
            means.append(st["mean"])
            los.append(st["min"])
            his.append(st["max"])
        else:
            means.append(nan)
            los.append(nan)
            his.append(nan)
    return ts, means, los, his


def _shade(ax: Axes, s: Summary) -> None:
    for phase, a, b in s.phases:
        ax.axvspan(_rel(s, a), _rel(s, b), color=PHASE_COLOURS.get(phase, "#ffffff"), zorder=0, lw=0)
    for alarm in s.alarms:
        ax.axvline(
            _rel(s, alarm.raised_s), color=PRIORITY_COLOURS.get(alarm.priority, "grey"), lw=1, alpha=0.7
        )
    if s.discharge_ready_s is not None:
        ax.axvline(_rel(s, s.discharge_ready_s), color="#2ca02c", lw=1.5, ls="--")
    ax.grid(True, color="#cccccc", lw=0.5, alpha=0.7)


def _vital(
    ax: Axes, data: SessionData, s: Summary, kind: str, *, colour: str, label: str, base: float | None
) -> None:
    ts, means, los, his = _series(data, kind)
    x = [_rel(s, t) for t in ts]
    ax.fill_between(x, los, his, color=colour, alpha=0.25, lw=0, label="min–max per minute")
    ax.plot(x, means, color=colour, lw=1.5, label="mean per minute")
    if base is not None:
        ax.axhline(base, color=colour, ls=":", lw=1, label=f"baseline {base:g}")
    ax.set_ylabel(label)
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, frameon=False)


def _alarm_rows(ax: Axes, s: Summary) -> None:
    conditions = sorted({a.condition for a in s.alarms})
    rows = {c: i for i, c in enumerate(conditions)}
    for a in s.alarms:
        y = rows[a.condition]
        end = a.cleared_s if a.cleared_s is not None else s.end_s
        x0, x1 = _rel(s, a.raised_s), _rel(s, end)
        ax.plot([x0, max(x1, x0 + 1.0)], [y, y], color=PRIORITY_COLOURS.get(a.priority, "grey"), lw=9,
                solid_capstyle="butt")  # fmt: skip
        if a.acknowledged_s is not None:
            ax.plot(
                [_rel(s, a.acknowledged_s)], [y], marker="D", color=ACK_COLOUR, mec="white", ms=6, ls="none"
            )
    ax.set_yticks(range(len(conditions)), conditions, fontsize=8)
    ax.set_ylim(-0.7, max(len(conditions), 1) - 0.3)
    ax.set_ylabel("alarms")


def render_plot(data: SessionData, s: Summary, path: Path) -> None:
    """Write the session plot as a PNG (SpO2, pulse, NIBP, alarm timeline; phases shaded)."""
    fig = Figure(figsize=(11, 9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 1, sharex=True, gridspec_kw={"height_ratios": [3, 3, 3, 1.6]})
    spo2, pulse, bp, alarms = axes
    for ax in axes:
        _shade(ax, s)
    _vital(spo2, data, s, "spo2", colour="#1f77b4", label="SpO2 (%)", base=s.baseline["spo2"])
    lo = min([v for m in data.minutes if (v := m.stats.get("spo2", {}).get("min")) is not None] + [85.0])
    spo2.set_ylim(max(50.0, lo - 2), 101)
    spo2.axhline(90, color=PRIORITY_COLOURS["high"], lw=0.8, ls="--", alpha=0.6)
    _vital(
        pulse, data, s, "pulse_rate", colour="#9467bd", label="pulse (/min)", base=s.baseline["pulse_rate"]
    )
    valid = [r for r in data.nibp if r.valid and r.systolic is not None and r.diastolic is not None]
    x = [_rel(s, r.t_s) for r in valid]
    sys_v = [float(r.systolic or 0) for r in valid]
    dia_v = [float(r.diastolic or 0) for r in valid]
    bp.vlines(x, dia_v, sys_v, color="#555555", lw=1)
    bp.plot(x, sys_v, "v", color="#d62728", ms=7, label="systolic")
    bp.plot(x, dia_v, "^", color="#1f77b4", ms=7, label="diastolic")
    for key, colour in (("systolic", "#d62728"), ("diastolic", "#1f77b4")):
        if s.baseline[key] is not None:
            bp.axhline(float(s.baseline[key] or 0), color=colour, ls=":", lw=1)
    bp.axhline(180, color=PRIORITY_COLOURS["high"], lw=0.8, ls="--", alpha=0.6)
    bp.set_ylabel("NIBP (mmHg)")
    bp.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, frameon=False)
    _alarm_rows(alarms, s)
    _nurse_marks(list(axes), s)
    ref = "infusion start" if s.infusion_s is not None else "session start"
    alarms.set_xlabel(f"minutes from {ref}")
    legend: list[Artist] = [Patch(color=c, label=p) for p, c in PHASE_COLOURS.items()]
    legend += [Line2D([], [], color=c, lw=4, label=f"{p.upper()} alarm") for p, c in PRIORITY_COLOURS.items()]
    legend += [Line2D([], [], marker="D", color=ACK_COLOUR, ls="none", label="acknowledged")]
    legend += [Line2D([], [], color="#2ca02c", ls="--", label="discharge ready")]
    legend += [Line2D([], [], color=NURSE_COLOUR, ls=":", label="nurse observation")]
    fig.legend(handles=legend, loc="outside lower center", ncol=8, fontsize=8, frameon=False)
    fig.suptitle(f"Session {s.session_id} ({s.started:%Y-%m-%d}), bed {s.bed}", fontsize=12)
    fig.savefig(path, format="png")


def _num(value: float | None, unit: str = "") -> str:
    return "–" if value is None else f"{value:g}{unit}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    sec = round(seconds)
    return f"{sec // 60} min {sec % 60:02d} s"


def _table(rows: list[list[str]], head: list[str] | None = None) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _alarm_row(s: Summary, a: AlarmLife) -> list[str]:
    return [
        a.condition,
        a.priority.upper(),
        a.category,
        _clock(s, a.raised_s),
        _clock(s, a.acknowledged_s),
        _duration(a.response_s) if a.response_s is not None else "not acknowledged",
        _clock(s, a.cleared_s),
    ]


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60em;margin:1em auto;color:#222;font-size:14px}
h1{font-size:1.3em}h2{font-size:1.05em;margin:1em 0 .3em}
table{border-collapse:collapse;margin-bottom:.5em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}
th{background:#f3f3f3}.note{color:#666;font-size:.9em}img{max-width:100%}
@media print{img{max-height:45vh}}
"""


def render_html(s: Summary, png_name: str | None) -> str:
    """The one-page summary as HTML (self-contained apart from the PNG beside it)."""
    durations = [
        [p, _duration(sum(b - a for q, a, b in s.phases if q == p))]
        for p in ("baseline", "infusion", "recovery")
    ]
    durations.append(["whole session", _duration(s.end_s)])
    baseline = [
        ["blood pressure", f"{_num(s.baseline['systolic'])}/{_num(s.baseline['diastolic'])} mmHg"],
        ["SpO2", _num(s.baseline["spo2"], " %")],
        ["pulse", _num(s.baseline["pulse_rate"], " /min")],
    ]
    peaks = []
    for name, label, unit in (
        ("max_systolic", "highest systolic", " mmHg"),
        ("max_diastolic", "highest diastolic", " mmHg"),
        ("min_systolic", "lowest systolic", " mmHg"),
        ("min_spo2", "lowest SpO2", " %"),
        ("max_pulse", "highest pulse", " /min"),
        ("min_pulse", "lowest pulse", " /min"),
    ):
        peak = s.peaks.get(name)
        peaks.append([label, _num(peak[0] if peak else None, unit), _clock(s, peak[1] if peak else None)])
    beyond = [
        [label, _duration(s.beyond_s.get(key, 0.0))]
        for key, label in (
            ("spo2_below_90", "SpO2 < 90 %"),
            ("pulse_rate_above_120", "pulse > 120 /min"),
            ("pulse_rate_below_50", "pulse < 50 /min"),
            ("sbp_180_or_more", "systolic ≥ 180 mmHg"),
            ("dbp_110_or_more", "diastolic ≥ 110 mmHg"),
        )
    ]
    alarm_head = ["condition", "priority", "category", "raised", "acknowledged", "response", "cleared"]
    alarms = _table([_alarm_row(s, a) for a in s.alarms], alarm_head) if s.alarms else "<p>No alarms.</p>"
    ready = _clock(s, s.discharge_ready_s)
    if s.discharge_ready_s is not None and s.recovery_s is not None:
        ready += f" ({_duration(s.discharge_ready_s - s.recovery_s)} after pump stop)"
    ref = "the infusion start" if s.infusion_s is not None else "the session start (no infusion recorded)"
    steps = [
        [
            _clock(s, t),
            kind.removeprefix("nurse_").replace("_", " "),
            _describe_step(kind, d),
            str(d.get("by", "")),
        ]
        for t, kind, d in s.nurse
    ]
    start = next((d for _, k, d in s.nurse if k == "start_infusion"), {})
    dose = [
        ["dose", _num(s.dose_mg_per_kg, " mg/kg") if s.dose_mg_per_kg is not None else "not entered"],
        ["total dose", _num(start.get("total_mg"), " mg") if "total_mg" in start else "not entered"],
        [
            "planned infusion",
            _num(s.planned_minutes, " min") if s.planned_minutes is not None else "not entered",
        ],
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Session {html.escape(s.session_id)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Session {html.escape(s.session_id)}</h1>",
        f'<p class="note">Bed {html.escape(s.bed)}, started {s.started:%Y-%m-%d %H:%M} UTC; '
        f"{'ended' if s.complete else 'not ended (record still open)'}. Times are min:s from {ref}. "
        "Secondary monitoring record; the bedside monitor is the primary alarm.</p>",
        f'<img src="{html.escape(png_name)}" alt="session plot">' if png_name else "",
        "<h2>Durations</h2>",
        _table(durations),
        _table(dose),
        "<h2>Baseline</h2>",
        _table(baseline),
        "<h2>Peaks (from infusion start)</h2>",
        _table(peaks, ["", "value", "at"]),
        "<h2>Time beyond limits (from infusion start)</h2>",
        _table(beyond),
        f"<p class='note'>{s.nibp_readings} NIBP readings.</p>",
        "<h2>Alarms</h2>",
        alarms,
        "<h2>Nurse: steps, prompts and observations</h2>",
        _table(steps, ["at", "what", "detail", "by"]) if steps else "<p>None entered.</p>",
        "<h2>Discharge ready</h2>",
        f"<p>{html.escape(ready)}</p>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_report(data: SessionData, out_dir: Path) -> tuple[Path, Path]:
    """Write ``{session_id}.png`` and ``{session_id}.html`` into ``out_dir``; their paths."""
    s = summarise(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{s.session_id}.png"
    page = out_dir / f"{s.session_id}.html"
    render_plot(data, s, png)
    page.write_text(render_html(s, png.name), encoding="utf-8")
    return png, page
