"""The registry page in a real browser: its tables say the known answers and its plots are drawn.

A registry database (SQLite) with hand-built session records for six months of one clinic and
one month of another, so every figure is known by construction; the page's own web server; and
headless Debian chromium driven by tests/integration/browser/registry.mjs, which reports the
tables as text and every plot mark as drawn (its box on screen). The JSON endpoint is read
beside it and must say the same numbers.

Set VITALWATCH_SCREENSHOTS=docs/img to refresh docs/img/registry-clinic.png.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.station_browser import drive
from vitalwatch.record.export import SCHEMA
from vitalwatch.registry.database import open_registry
from vitalwatch.registry.web import serve_registry_page
from vitalwatch.registry.wire import RecordMessage

pytestmark = [pytest.mark.browser]

MONTHS = [f"2026-0{k}" for k in range(1, 7)]


def month_records(k: int) -> list[RecordMessage]:
    """Month ``k`` (1..6) of clinic-a: 2 + k sessions, session j (0-based) with dose 0.50 + 0.05 j,
    BP 185/95 for the first k // 2 sessions (else 140/85), SpO2 88 % in session 0 of odd months,
    pulse 45 in session 0 of month 6, discharge-ready 10 j min after pump stop, a HIGH spo2_low
    with each desaturation and a LOW signal_lost in every even session."""
    out = []
    for j in range(2 + k):
        desat = k % 2 == 1 and j == 0
        alarms: dict[str, dict[str, int]] = {}
        if desat:
            alarms["spo2_low"] = {"high": 1}
        if j % 2 == 0:
            alarms["signal_lost"] = {"low": 1}
        row = {
            "schema": SCHEMA, "record_id": f"a{k}-{j}", "dose_mg_per_kg": round(0.5 + 0.05 * j, 2),
            "max_systolic": 185 if j < k // 2 else 140, "max_diastolic": 95 if j < k // 2 else 85,
            "min_spo2": 88 if desat else 95, "min_pulse": 45 if (k == 6 and j == 0) else 62,
            "discharge_ready_after_recovery_min": 10.0 * j, "alarms": alarms,
        }  # fmt: skip
        out.append(RecordMessage(row["record_id"], "clinic-a", f"chair-{j % 3 + 1}", MONTHS[k - 1], row))
    return out


def expected_row(k: int) -> dict[str, str]:
    n = 2 + k
    bp, desat, brady = k // 2, k % 2, int(k == 6)
    occurrences = desat + (n + 1) // 2
    return {
        "month": MONTHS[k - 1],
        "sessions": str(n),
        "dose": f"0.50–{0.5 + 0.05 * (n - 1):.2f}",
        "bp": f"{100 * bp / n:.1f} % ({bp}/{n})",
        "spo2": f"{100 * desat / n:.1f} % ({desat}/{n})",
        "pulse": f"{100 * brady / n:.1f} % ({brady}/{n})",
        "discharge": f"{10 * (n - 1) / 2:.1f} min ({n})",
        "alarms": f"{occurrences / n:.2f}",
    }


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        doc: dict[str, Any] = json.loads(response.read())
        return doc


@pytest.mark.asyncio
async def test_the_registry_page_shows_the_known_figures_and_draws_them(
    browser_setup: str, screenshot_dir: Path, tmp_path: Path
) -> None:
    url = str(tmp_path / "registry.sqlite3")
    db = open_registry(url)
    db.migrate()
    other = RecordMessage("b1", "clinic-b", "chair-1", "2026-03", {"schema": SCHEMA, "record_id": "b1"})
    db.add_batch([r for k in range(1, 7) for r in month_records(k)] + [other])
    try:
        async with serve_registry_page(url, port=0) as page:
            base = f"http://127.0.0.1:{page.port}/"
            code, events, stderr = await drive({
                "chromium": browser_setup, "screenshots": str(screenshot_dir), "width": 1280, "height": 1000,
                "failureShot": str(tmp_path / "failure.png"),
                "pages": [{"name": "clinic", "url": f"{base}?site=clinic-a", "shot": True},
                          {"name": "region", "url": base}],
            }, script="registry.mjs", timeout_s=60)  # fmt: skip
            doc = await asyncio.to_thread(get_json, f"{base}summary.json?site=clinic-a")
    finally:
        db.close()
    assert 0 == code, f"{events.get('failed')} {stderr[-2000:]}"
    assert not [e for e in events if e in ("console-error", "page-error")], events
    clinic = events["page-clinic"]
    assert 200 == clinic["status"] and "default-src 'none'" in clinic["csp"]  # no script at all
    assert "script-src" not in clinic["csp"]
    assert "Clinic clinic-a: 33 sessions" == clinic["scope"]

    # The table: every month's figures as known by construction.
    shown = [{k: row[k] for k in expected_row(1)} for row in clinic["months"]]
    assert [expected_row(k) for k in range(1, 7)] == shown
    alarms = {(r["month"], r["condition"]): (r["high"], r["medium"], r["low"]) for r in clinic["alarms"]}
    assert ("0.333", "", "") == alarms[("2026-01", "spo2_low")]  # 1 of 3 sessions
    assert ("", "", "0.500") == alarms[("2026-02", "signal_lost")]  # sessions 0 and 2 of 4
    assert ("2026-02", "spo2_low") not in alarms  # no desaturation in even months

    # The JSON endpoint says the same numbers.
    rows = {r["month"]: r for r in doc["rows"]}
    assert [str(2 + k) for k in range(1, 7)] == [str(rows[m]["sessions"]) for m in MONTHS]
    assert {"sessions": 3, "known": 8, "share": 0.375} == rows["2026-06"]["bp_180_110"]
    assert 35.0 == rows["2026-06"]["discharge_ready_median_min"]
    assert {"high": {"occurrences": 1, "per_session": 0.2}} == rows["2026-03"]["alarms"]["spo2_low"]

    # The plots: drawn on screen, one mark per month, sized by the numbers.
    plots = {p["id"]: p for p in clinic["plots"]}
    assert {"plot-sessions", "plot-dose", "plot-shares", "plot-discharge", "plot-alarms"} == set(plots)
    for p in plots.values():
        assert p["width"] > 200 and p["height"] > 80, p["id"]
        assert all(m["visible"] for m in p["marks"] if m["value"] not in ("0", "0-0")), p["id"]
    bars = {m["month"]: m for m in plots["plot-sessions"]["marks"]}
    assert MONTHS == sorted(bars) and ["3", "8"] == [bars["2026-01"]["value"], bars["2026-06"]["value"]]
    assert bars["2026-06"]["height"] == pytest.approx(bars["2026-01"]["height"] * 8 / 3, rel=0.03)
    assert 6 == len(plots["plot-dose"]["marks"])
    points = [m for m in plots["plot-shares"]["marks"] if m["series"] == "BP ≥ 180/110"]
    assert ["0", "25", "20", "33.3333", "28.5714", "37.5"] == [m["value"] for m in points]  # % of sessions
    assert 3 == plots["plot-shares"]["lines"]
    stacked = [m for m in plots["plot-alarms"]["marks"] if m["month"] == "2026-01"]
    assert {("HIGH", "0.333333"), ("LOW", "0.666667")} == {(m["series"], m["value"]) for m in stacked}

    region = events["page-region"]
    assert "All clinics together (2): 34 sessions" == region["scope"]
    march = next(r for r in region["months"] if r["month"] == "2026-03")
    assert "6" == march["sessions"]  # 5 of clinic-a and clinic-b's one
    assert "20.0 % (1/5)" == march["spo2"]  # clinic-b's record has no SpO2: not counted either way
