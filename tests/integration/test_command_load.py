"""Hostile command traffic over a real Mosquitto: retained commands and floods never reach the alarm path.

A retained command is stored by the broker and delivered again on every connect: it is refused
with a result, never applied. A flood of commands on one bed is refused by that bed's rate limit
while another bed's HIGH alert is journalled before it is published and arrives promptly.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.fakes.alerts import transition
from tests.helpers import cuffless_daemon_config, running_daemon, wait_until
from vitalwatch.delivery.store import DB_NAME
from vitalwatch.ops.daemon import Daemon
from vitalwatch.ops.metrics import COMMANDS
from vitalwatch.testing import Mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.asyncio]

SITE = "test-site"
PREFIX = f"vitalwatch/v1/{SITE}"
# The HIGH alert's time from the engine's hand-off to a station, under the flood. Unloaded it is
# a few milliseconds; the publisher sends an alert whose journal commit is late after 2 s
# (PERSIST_WAIT_S), so a bound below that also shows the commit was not skipped.
LATENCY_BOUND_S = 1.5


def daemon_with(mosquitto: Mosquitto, tmp_path: Path, beds: list[str]) -> AbstractAsyncContextManager[Daemon]:
    return running_daemon(cuffless_daemon_config(mosquitto.port, tmp_path / "state", site=SITE, beds=beds))


async def test_a_retained_command_is_refused_and_not_applied(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A retained 'phase ended' waiting on the broker: the daemon answers 'retained' and stays in baseline."""
    topic = f"{PREFIX}/chair-1/cmd"
    command = {"request_id": "ret-1", "command": "phase", "phase": "ended", "by": "RN Kim"}
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.subscribe(f"{topic}/result", qos=1)
        await client.publish(topic, json.dumps(command), qos=1, retain=True)
        try:
            async with daemon_with(mosquitto, tmp_path, ["chair-1"]) as daemon:
                async with asyncio.timeout(10):
                    async for msg in client.messages:
                        result = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                        break
                assert (False, "retained", "ret-1") == (
                    result["ok"],
                    result["error"]["code"],
                    result["request_id"],
                )
                assert "baseline" == daemon.beds["chair-1"].engine.phase
        finally:
            await client.publish(topic, b"", qos=1, retain=True)  # clear it for the next test


async def test_a_command_flood_on_one_bed_does_not_delay_another_beds_high_alert(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """3,000 commands at chair-1 while chair-2 raises a HIGH: journalled before published, on time."""
    flood_n = 3000
    received: dict[str, float] = {}
    journalled_at_receipt: dict[str, bool] = {}
    results: list[dict[str, Any]] = []
    async with daemon_with(mosquitto, tmp_path, ["chair-1", "chair-2"]) as daemon:
        await wait_until(lambda: all(p.connected for p in daemon.publishers.values()), 10, "connected")
        db = tmp_path / "state" / DB_NAME

        def in_journal(alert_id: str) -> bool:
            conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
            try:
                return (
                    conn.execute("SELECT 1 FROM outbox WHERE alert_id=?", (alert_id,)).fetchone() is not None
                )
            finally:
                conn.close()

        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as station:
            await station.subscribe(f"{PREFIX}/chair-2/alerts", qos=1)
            await station.subscribe(f"{PREFIX}/chair-1/cmd/result", qos=1)

            async def listen() -> None:
                async for msg in station.messages:
                    doc = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                    if str(msg.topic).endswith("/alerts"):
                        received[doc["alert_id"]] = time.monotonic()
                        journalled_at_receipt[doc["alert_id"]] = in_journal(doc["alert_id"])
                    else:
                        results.append(doc)

            listener = asyncio.create_task(listen())
            limited_before = COMMANDS.labels("chair-1", "rate_limited")._value.get()
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", mosquitto.port, max_queued_outgoing_messages=0
                ) as flood:
                    sent_high: dict[str, float] = {}
                    for n in range(flood_n):
                        body = {"request_id": f"f-{n}", "command": "ack", "alert_id": "*", "by": "flood"}
                        await flood.publish(f"{PREFIX}/chair-1/cmd", json.dumps(body), qos=0)
                        if n in (500, 1500, 2500):  # a HIGH on the other bed, mid-flood
                            alert_id = f"load-high-{n}"
                            daemon.beds["chair-2"].dispatch([transition(alert_id, 10**6 + n, bed="chair-2")])
                            sent_high[alert_id] = time.monotonic()
                        if n % 100 == 0:
                            await asyncio.sleep(0)  # let the loop breathe as a network would
                    await wait_until(lambda: set(sent_high) <= set(received), 20, "the HIGH alerts")
                    # nearly every command is answered (QoS 0 may lose a few on the way in)
                    await wait_until(lambda: len(results) >= flood_n * 0.9, 60, "the flood's results")
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
        latencies = {a: received[a] - t for a, t in sent_high.items()}
        assert all(journalled_at_receipt[a] for a in sent_high), journalled_at_receipt
        assert max(latencies.values()) < LATENCY_BOUND_S, latencies
        limited = [r for r in results if not r["ok"] and r["error"]["code"] == "rate_limited"]
        applied = [r for r in results if r["ok"]]
        assert len(limited) + len(applied) == len(results)  # nothing else went wrong
        assert len(limited) > flood_n * 0.8 and 0 < len(applied) < 200, (len(limited), len(applied))
        assert COMMANDS.labels("chair-1", "rate_limited")._value.get() - limited_before >= len(limited)
