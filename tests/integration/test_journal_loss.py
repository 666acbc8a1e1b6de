"""A lost or damaged alert journal is found at start, kept, alarmed, and the session recovered.

Real parts: the daemon in process with its real SQLite files, a simulated Masimo on a pty, a
second monitor on a pty that never sends (its ``link_lost`` gives the alerts), and a real
Mosquitto with a subscriber that sees both runs. Between the runs the journal is made empty,
overwritten with garbage, truncated, or deleted; the session record is left as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.helpers import SiteMessages, running_daemon, wait_until
from vitalwatch.config import Config, parse_config
from vitalwatch.continuity.journal_loss import ID_EPOCH
from vitalwatch.delivery.store import DB_NAME
from vitalwatch.ops.daemon import Daemon
from vitalwatch.record.sessionlog import SESSIONS_DB_NAME
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto

pytestmark = pytest.mark.mqtt

SITE = "clinic-journal"
BED = "chair-1"


def config_for(broker: Mosquitto, state: Path, oxi: str, silent: str) -> Config:
    return parse_config(
        {
            "site": SITE,
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "heartbeat_s": 0.5},
            "state": {"directory": str(state)},
            "metrics": {"enabled": False},
            "alarms": {"table": "default", "rules": {"link_lost": {"after_s": 2}}},
            "beds": [
                {
                    "id": BED,
                    "devices": [
                        {"id": "oximeter", "driver": "masimo", "url": oxi},
                        {"id": "spare", "driver": "masimo", "url": silent},
                    ],
                }
            ],
        }
    )


@contextlib.contextmanager
def silent_pty() -> Any:
    """A pty whose other end never writes: a configured monitor that sends nothing."""
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


class Station(SiteMessages):
    """The bed's alert and status messages across both daemon runs."""

    def __init__(self) -> None:
        super().__init__(SITE)

    def raised(self, condition: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a["condition"] == condition and a["state"] == "raised"]


def damage(path: Path, how: str) -> None:
    """What an SD card, a full disk or a careless engineer does to the journal."""
    assert path.exists() and path.stat().st_size > 0
    for side in ("-wal", "-shm"):
        path.with_name(path.name + side).unlink(missing_ok=True)
    if how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(random.Random(7).randbytes(8192))
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif how == "missing":
        path.unlink()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["empty", "garbage", "truncated", "missing"])
async def test_lost_journal_is_alarmed_kept_and_the_session_recovered_from_the_record(
    mosquitto: Mosquitto, tmp_path: Path, how: str
) -> None:
    state = tmp_path / "state"
    journal = state / DB_NAME
    station = Station()
    async with (
        serve_pty(make_simulator("masimo", get_scenario("normal")), speed=1.0) as oxi,
        aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="station") as client,
    ):
        await client.subscribe(f"vitalwatch/v1/{SITE}/{BED}/alerts", qos=1)
        await client.subscribe(f"vitalwatch/v1/{SITE}/{BED}/status", qos=1)
        listener = asyncio.create_task(station.run(client))
        loop = asyncio.get_running_loop()
        try:
            with silent_pty() as silent:
                config = config_for(mosquitto, state, oxi.url, silent)
                # Run 1: a session in recovery with an active HIGH link_lost on the spare monitor.
                async with running_daemon(Daemon(config)) as first:
                    bed = first.beds[BED]
                    await wait_until(lambda: "oximeter" in bed.last_valid, 20, "an SpO2 reading in baseline")
                    bed.set_phase("infusion", loop.time())
                    await wait_until(lambda: station.raised("link_lost"), 20, "link_lost of the spare")
                    bed.set_phase("recovery", loop.time())
                    recovery_started = loop.time()
                    await wait_until(lambda: any(s["phase"] == "recovery" for s in station.statuses), 10)
                    assert first.journal_loss is None
                before = list(station.alerts)
                assert before and not any("journal_lost" in s["technical"] for s in station.statuses)
                record = sqlite3.connect(state / SESSIONS_DB_NAME)
                bl_spo2 = record.execute("SELECT bl_spo2 FROM sessions").fetchone()[0]
                record.close()
                assert bl_spo2 is not None

                damage(journal, how)
                stopped_at = loop.time()
                second = Daemon(config)
                # Found before anything was opened, kept, and alarmed.
                assert second.journal_loss is not None
                assert ("journal_lost", "*") in second.local_alarms.active
                kept = [p for p in state.glob(f"{DB_NAME}.lost-*") if not p.name.endswith(("-wal", "-shm"))]
                if how == "missing":
                    assert [] == kept and second.journal_loss.moved_to is None
                else:
                    assert [second.journal_loss.moved_to] == kept and kept[0].suffix != ".sqlite3"
                # The session goes on: phase, its start and the baseline from the record.
                engine = second.runtimes[BED].engine
                assert "recovery" == engine.phase
                assert engine.phase_start is not None
                elapsed = loop.time() - engine.phase_start
                assert loop.time() - recovery_started - 2.0 <= elapsed <= loop.time() - recovery_started + 2.0
                assert bl_spo2 == pytest.approx(engine.baseline.spo2)
                seen = len(station.alerts)
                async with running_daemon(second):
                    await wait_until(
                        lambda: any("journal_lost" in s["technical"] and s["phase"] == "recovery"
                                    for s in station.statuses),
                        15,
                        "journal_lost and the recovered phase in the status payload",
                    )  # fmt: skip
                    # The spare is still silent: link_lost comes again, under a new alert id.
                    await wait_until(lambda: len(station.raised("link_lost")) >= 2, 20)
                after = station.alerts[seen:]
                assert loop.time() > stopped_at
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    pairs = [(a["alert_id"], a["seq"]) for a in station.alerts]
    assert len(pairs) == len(set(pairs)), "a subscriber saw an (alert_id, seq) pair twice"
    # Every alert after the loss: a new alert id (a new counter epoch), seq above run 1's.
    old_ids = {a["alert_id"] for a in before}
    assert after and all(a["alert_id"] not in old_ids for a in after)
    assert min(a["seq"] for a in after) > max(a["seq"] for a in before)
    assert all(int(a["alert_id"].rsplit("-", 1)[1]) > ID_EPOCH for a in after)
