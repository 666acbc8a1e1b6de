"""The registry page as HTML: the figures of :mod:`vitalwatch.registry.figures` in tables and plots.

One document, no script: a form to choose the clinic (or the region, or every clinic side by
side) and the months, a table per month, a table of alarms per session by condition and
priority, and inline SVG plots (:mod:`vitalwatch.registry.charts`). The numbers in the tables
are the JSON endpoint's (``/summary.json`` with the same query), rounded for reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import urlencode

from vitalwatch.registry.charts import Series, bar_chart, line_chart, range_chart, stacked_chart
from vitalwatch.registry.figures import THRESHOLDS, MonthFigures, Scope

__all__ = ["PRIORITY_COLORS", "render_page", "scope_query"]

# IEC 60601-1-8 priority colours, as on the nurse station and the session report.
PRIORITY_COLORS = {"high": "#d50000", "medium": "#ffb300", "low": "#00b8d4"}
PRIORITIES = ("high", "medium", "low")
SHARE_SERIES = (
    ("BP ≥ 180/110", "#6a1b9a", "bp"),
    ("SpO2 < 90 %", "#1565c0", "spo2"),
    ("pulse < 50", "#2e7d32", "pulse"),
)


def scope_query(scope: Scope) -> str:
    """The query string that selects ``scope`` (for links and the JSON endpoint)."""
    params: dict[str, str] = {}
    if scope.site is not None:
        params["site"] = scope.site
    elif scope.by_site:
        params["by"] = "site"
    if scope.since is not None:
        params["since"] = scope.since
    if scope.until is not None:
        params["until"] = scope.until
    return urlencode(params)


def _share(row: MonthFigures, part: int, known: int) -> str:
    share = row.share(part, known)
    return "–" if share is None else f"{100 * share:.1f} % ({part}/{known})"


def _dose(row: MonthFigures) -> str:
    if row.dose_min is None or row.dose_max is None:
        return "–"
    return f"{row.dose_min:.2f}–{row.dose_max:.2f}"


def _median(row: MonthFigures) -> str:
    m = row.discharge_median_min
    return "–" if m is None else f"{m:.1f} min ({row.discharge_known})"


def _months_table(rows: Sequence[MonthFigures], per_site: bool) -> str:
    head = "<th>Clinic</th>" if per_site else ""
    out = [
        '<table id="months"><thead><tr>', head,
        "<th>Month</th><th>Sessions</th><th>Dose range (mg/kg)</th><th>BP ≥ 180/110</th>"
        "<th>SpO2 &lt; 90 %</th><th>Pulse &lt; 50 /min</th><th>Median pump stop → discharge-ready</th>"
        "<th>Alarms per session</th></tr></thead><tbody>",
    ]  # fmt: skip
    for r in rows:
        cells = [
            ("sessions", str(r.sessions)),
            ("dose", _dose(r)),
            ("bp", _share(r, r.bp_high, r.bp_known)),
            ("spo2", _share(r, r.desaturation, r.spo2_known)),
            ("pulse", _share(r, r.bradycardia, r.pulse_known)),
            ("discharge", _median(r)),
            ("alarms", f"{r.alarm_occurrences / r.sessions:.2f}"),
        ]
        site = f'<td data-col="site">{escape(r.site)}</td>' if per_site else ""
        out.append(
            f'<tr data-site="{escape(r.site)}" data-month="{escape(r.month)}">{site}'
            f'<td data-col="month">{escape(r.month)}</td>'
            + "".join(f'<td data-col="{c}">{escape(v)}</td>' for c, v in cells)
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _alarms_table(rows: Sequence[MonthFigures]) -> str:
    out = [
        '<table id="alarms"><thead><tr>', "<th>Month</th><th>Condition</th>",
        *(f'<th class="p-{p}">{p.upper()}</th>' for p in PRIORITIES),
        "</tr></thead><tbody>",
    ]  # fmt: skip
    for r in rows:
        rates = r.alarms_per_session()
        for condition in sorted(rates):
            by = rates[condition]
            cells = "".join(
                f'<td data-col="{p}">{by[p]:.3f}</td>' if p in by else f'<td data-col="{p}"></td>'
                for p in PRIORITIES
            )
            others = {p: v for p, v in by.items() if p not in PRIORITIES}
            note = (
                " (" + ", ".join(f"{escape(p)} {v:.3f}" for p, v in sorted(others.items())) + ")"
                if others
                else ""
            )
            out.append(
                f'<tr data-site="{escape(r.site)}" data-month="{escape(r.month)}"'
                f' data-condition="{escape(condition)}"><td data-col="month">{escape(r.month)}</td>'
                f'<td data-col="condition">{escape(condition)}{note}</td>{cells}</tr>'
            )
    out.append("</tbody></table>")
    return "".join(out)


def _plots(rows: Sequence[MonthFigures]) -> str:
    months = [r.month for r in rows]
    shares = {
        "bp": [r.share(r.bp_high, r.bp_known) for r in rows],
        "spo2": [r.share(r.desaturation, r.spo2_known) for r in rows],
        "pulse": [r.share(r.bradycardia, r.pulse_known) for r in rows],
    }
    by_priority = [
        Series(p.upper(), PRIORITY_COLORS[p],
               [sum(by.get(p, 0) for by in r.alarms.values()) / r.sessions for r in rows])
        for p in PRIORITIES
    ]  # fmt: skip
    charts = [
        bar_chart("plot-sessions", "Sessions per month", months, [r.sessions for r in rows],
                  unit="sessions", color="#455a64"),
        range_chart("plot-dose", "Dose range", months, [r.dose_min for r in rows],
                    [r.dose_max for r in rows], unit="mg/kg", color="#5d4037"),
        line_chart("plot-shares", "Share of sessions", months,
                   [Series(label, color, [None if v is None else 100 * v for v in shares[key]])
                    for label, color, key in SHARE_SERIES], unit="%"),
        bar_chart("plot-discharge", "Median pump stop → discharge-ready", months,
                  [r.discharge_median_min for r in rows], unit="min", color="#2e7d32"),
        stacked_chart("plot-alarms", "Alarms per session by priority", months, by_priority,
                      unit="per session"),
    ]  # fmt: skip
    return '<section id="plots">' + "".join(f"<figure>{c}</figure>" for c in charts) + "</section>"


def _form(scope: Scope, sites: Sequence[str]) -> str:
    def option(value: str, label: str, chosen: bool) -> str:
        sel = " selected" if chosen else ""
        return f'<option value="{escape(value)}"{sel}>{escape(label)}</option>'

    options = [
        option("", "All clinics together", scope.site is None and not scope.by_site),
        option("*", "Every clinic, side by side", scope.by_site),
        *(option(s, s, s == scope.site) for s in sites),
    ]
    return (
        '<form method="get" action="/" class="scope"><label>Clinic <select name="site">'
        + "".join(options)
        + '</select></label><label>From <input name="since" placeholder="YYYY-MM" size="8"'
        f' pattern="[0-9]{{4}}-[0-9]{{2}}" value="{escape(scope.since or "")}"></label>'
        '<label>To <input name="until" placeholder="YYYY-MM" size="8" pattern="[0-9]{4}-[0-9]{2}"'
        f' value="{escape(scope.until or "")}"></label><button type="submit">Show</button></form>'
    )


def render_page(scope: Scope, rows: Sequence[MonthFigures], sites: Sequence[str]) -> str:
    """The whole page for ``scope`` (``rows`` from :func:`vitalwatch.registry.figures.figures`)."""
    if scope.site is not None:
        what = f"Clinic {scope.site}"
    elif scope.by_site:
        what = "Every clinic, side by side"
    else:
        what = f"All clinics together ({len(sites)})"
    total = sum(r.sessions for r in rows)
    if not rows:
        body = '<p class="empty">No session records for this choice.</p>'
    elif scope.by_site:
        # A region's every clinic and month is a long table already; the alarm detail per
        # condition is in each clinic's view and in the JSON endpoint.
        body = (
            '<p class="note">Choose one clinic for its plots and its alarms by condition and priority.</p>'
            + _months_table(rows, True)
        )
    else:
        body = (
            _plots(rows)
            + "<h2>Per month</h2>"
            + _months_table(rows, False)
            + "<h2>Alarms per session by condition and priority</h2>"
            + _alarms_table(rows)
        )
    t = THRESHOLDS
    query = scope_query(scope)
    json_link = "/summary.json" + (f"?{query}" if query else "")
    head = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>VitalWatch registry – {escape(what)}</title>"
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/registry.css"></head>\n'
    )
    about = [
        "One session is one de-identified session record as its clinic's gateway sent it; months are"
        " the month the session started (UTC).",
        "Dose range: lowest and highest dose entered by the nurse (sessions without a dose are left out).",
        "Shares count the sessions that had the measurement (n/N: sessions over the threshold / sessions"
        " measured), judged on the record's peaks from the infusion start: highest systolic"
        f" ≥ {t['systolic']:g} mmHg or highest diastolic ≥ {t['diastolic']:g} mmHg; lowest SpO2"
        f" &lt; {t['spo2']:g} %; lowest pulse rate &lt; {t['pulse']:g} /min.",
        "Median pump stop → discharge-ready: over the sessions that became discharge-ready (their number"
        " in brackets).",
        "Alarms per session: alarm occurrences by the highest priority each reached, divided by the"
        " month's sessions.",
    ]
    return (
        head
        + f"<body><header><h1>VitalWatch session registry</h1>{_form(scope, sites)}</header>\n"
        + f'<main><h2 id="scope">{escape(what)}: <span id="total">{total}</span> sessions</h2>{body}\n'
        + '<section class="about"><h2>What the figures mean</h2><ul>'
        + "".join(f"<li>{item}</li>" for item in about)
        + f'</ul><p>The same numbers as JSON: <a id="json" href="{escape(json_link)}">'
        + f"{escape(json_link)}</a></p></section></main>\n</body></html>\n"
    )
