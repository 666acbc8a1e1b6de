"""The nurse station opened in the middle of a session shows the trend and the latest values at once.

The state directory holds a session record of the last 12 minutes of chair-1 (as a daemon that was
restarted would have left it: SpO2 and pulse every 2 s, one blood pressure 5 min ago); the daemon
starts on it with a simulated Rad-8, so live data flows too. Once the gateway's retained trend
carries both, headless chromium opens the page: within a second or two of connecting the tile must
show minutes of trend line (live data alone could not: the page was not open) and the stored blood
pressure, greyed with its age, and drawn as a bar on the BP plot. Set VITALWATCH_SCREENSHOTS=docs/img
to refresh docs/img/station-trend.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.helpers import wait_until
from tests.integration.station_browser import daemon_config, drive, open_station
from vitalwatch.delivery.store import DB_NAME, Store
from vitalwatch.drivers.events import Observation
from vitalwatch.ops.daemon import Daemon
from vitalwatch.record.sessionlog import SESSIONS_DB_NAME, SessionDb, SessionLog
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.browser]

SITE, BED = "clinic-trend", "chair-1"
RECORDED_S = 720.0  # 12 min of record, ending 30 s before the daemon starts


def write_record(state: Path) -> None:
    """What a daemon stopped 30 s ago left: an open session with 12 min of minutes and one BP."""
    Store(state / DB_NAME).close()  # an alert journal beside it, as the daemon keeps (no "journal lost")
    db = SessionDb(state / SESSIONS_DB_NAME)
    mono = time.monotonic()

    def wall(t: float) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=t - time.monotonic())

    log = SessionLog(db, BED, wall=wall)
    start = mono - RECORDED_S - 30
    for i in range(0, int(RECORDED_S), 2):
        log.observation("oximeter", Observation("spo2", 95.0 + (i // 60) % 4, "%"), start + i, True)
        log.observation("oximeter", Observation("pulse_rate", 70.0 + (i // 120), "/min"), start + i, True)
        if i == RECORDED_S + 30 - 300:  # a blood pressure 5 min before the daemon starts
            for kind, value in (("nibp_systolic", 121.0), ("nibp_diastolic", 78.0), ("nibp_mean", 92.0)):
                log.observation("cuff", Observation(kind, value, "mm[Hg]"), start + i, True)
    log.close(mono - 30)
    db.close()


async def watch_trend(port: int, docs: list[dict[str, Any]], ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="trend-watcher") as client:
        await client.subscribe(f"vitalwatch/v1/{SITE}/{BED}/trend", qos=1)
        ready.set()
        async for message in client.messages:
            body = bytes(message.payload)  # type: ignore[arg-type]
            if body:
                docs.append(json.loads(body))


def live_and_seeded(docs: list[dict[str, Any]]) -> bool:
    """A trend document with minutes of line from the record and a live SpO2 from the monitor."""
    return any(
        len(d["series"].get("spo2", [])) >= 12 and d["latest"].get("spo2", {}).get("device") == "oximeter"
        for d in docs
    )


@pytest.mark.asyncio
async def test_station_opened_mid_session_shows_trend_and_latest_values_at_once(
    browser_setup: str, ws_mosquitto: tuple[Mosquitto, int], screenshot_dir: Path, tmp_path: Path
) -> None:
    broker, ws_port = ws_mosquitto
    state = tmp_path / "state"
    state.mkdir()
    write_record(state)
    docs: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        endpoint = await stack.enter_async_context(
            serve_pty(make_simulator("masimo", get_scenario("normal")), speed=1.0)
        )
        config = daemon_config(
            SITE, broker.port, state, alarms={"table": "default"},
            beds=[{"id": BED, "devices": [{"id": "oximeter", "driver": "masimo", "url": endpoint.url}]}],
        )  # fmt: skip
        station = await open_station(stack, SITE, ws_port)
        ready = asyncio.Event()
        watcher = asyncio.create_task(watch_trend(broker.port, docs, ready))
        await asyncio.wait_for(ready.wait(), 10)
        runner = asyncio.create_task(Daemon(config).run())
        try:
            await wait_until(lambda: live_and_seeded(docs), 15, "the retained trend of record and monitor")
            code, events, stderr = await drive(
                {
                    "url": f"http://127.0.0.1:{station.port}/", "bed": BED, "nurse": "RN-Kim",
                    "chromium": browser_setup, "screenshots": str(screenshot_dir),
                    "failureShot": str(tmp_path / "failure.png"), "points": 9, "withinMs": 3000,
                },
                script="trend.mjs",
                timeout_s=40,
            )  # fmt: skip
        finally:
            for task in (runner, watcher):
                task.cancel()
            await asyncio.gather(runner, watcher, return_exceptions=True)

    assert 0 == code and "failed" not in events, (events, stderr[-2000:])
    assert "console-error" not in events and "page-error" not in events, events
    opened = events["opened"]
    assert opened["after_ms"] < 3000  # at once: from the retained document, not from vitals to come
    # One point per recorded minute over the page's 10 min, then the live ones: only the record has them.
    assert opened["points"] >= 9 and opened["span_s"] >= 8 * 60, opened
    assert opened["blue_pixels"] > 50, opened  # the SpO2 line is on the canvas
    assert 90 <= int(opened["spo2"]) <= 100 and 40 <= int(opened["pulse"]) <= 140, opened
    # The blood pressure exists only in the record: shown at once, 5 min old, greyed and struck through.
    assert "121/78" == opened["nibp"] and opened["nibp_stale"], opened
    assert re.fullmatch("[56] min ago", opened["nibp_age"]), opened
    assert opened["nibp_colour"] != opened["spo2_colour"], opened
    assert "ok" == opened["state"] or opened["state"].startswith("alarm-"), opened
    # The same reading drawn on the BP plot as one bar from 78 to 121 mmHg (scale 40-220 between 6 px
    # from the top and 6 px from the bottom, line 3 px wide), about 5 min before the plot's right edge.
    assert 1 == opened["bp_readings"] and opened["bp_pixels"] > 20, opened
    top, bottom = 6, opened["bp_height"] - 6

    def y_of(mmhg: float) -> float:
        return bottom - (mmhg - 40) / 180 * (bottom - top)

    assert abs(opened["bp_top"] - (y_of(121) - 1.5)) <= 1.5, opened
    assert abs(opened["bp_bottom"] - (y_of(78) + 1.5)) <= 1.5, opened
    assert opened["bp_width"] <= 12 and opened["bp_x"] < opened["plot_right"] - 40, opened
