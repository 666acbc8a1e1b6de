"""Open nurse prompts outlive the daemon: ``vitalwatch run`` killed with SIGKILL asks again after the
restart for what is still needed, under the same prompt id, and never for what a reading met.

Two chairs on one daemon process and a real Mosquitto: chair-1's only device is an oximeter on a
port that does not exist (no cuff the daemon can start, no reading ever), so the nurse's "take BP
now" opens a prompt that nothing but the nurse can close; chair-2 is a simulated ACCUTORR that
measures by itself every 10 s (wall), so its prompt is met by a reading. A real subscriber holds
the site's retained ``prompts`` documents across the kill.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.helpers import start_daemon_process, wait_until, write_daemon_toml
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.asyncio]

SITE = "clinic-restart"
KEPT = "chair-1"  # no device answers: its prompt stays open until the nurse marks it done
MET = "chair-2"  # an ACCUTORR measuring every 10 s: its prompt is closed by a reading
NURSE = "RN Kim"


def when(utc: str) -> datetime:
    return datetime.fromisoformat(utc.replace("Z", "+00:00"))


class Station:
    """Every prompts document and command result of the site, in arrival order."""

    def __init__(self) -> None:
        self.prompts: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []

    async def follow(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            doc = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
            (self.results if str(msg.topic).endswith("/cmd/result") else self.prompts).append(doc)

    def latest(self, bed: str, *, after: datetime | None = None) -> dict[str, Any] | None:
        """The newest prompts document of ``bed`` (sent after ``after``, if given)."""
        docs = [d for d in self.prompts if d["bed"] == bed and (after is None or when(d["sent_utc"]) > after)]
        return docs[-1] if docs else None

    def ids(self, bed: str, *, after: datetime | None = None) -> list[str] | None:
        """The open prompt ids of the newest document (None: no document yet)."""
        doc = self.latest(bed, after=after)
        return None if doc is None else [p["prompt_id"] for p in doc["prompts"]]

    def closed(self, bed: str, prompt_id: str, *, after: datetime | None = None) -> bool:
        """A document (sent after ``after``) came, and ``prompt_id`` is not open in it."""
        ids = self.ids(bed, after=after)
        return ids is not None and prompt_id not in ids

    async def send(self, client: aiomqtt.Client, bed: str, cmd: dict[str, Any]) -> dict[str, Any]:
        await client.publish(f"vitalwatch/v1/{SITE}/{bed}/cmd", json.dumps(cmd), qos=1)
        rid = cmd["request_id"]
        await wait_until(lambda: any(r["request_id"] == rid for r in self.results), 10, f"result of {rid}")
        return next(r for r in self.results if r["request_id"] == rid)


async def kill(proc: asyncio.subprocess.Process) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()


async def test_open_prompts_come_back_after_sigkill_and_met_ones_do_not(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    # The ACCUTORR measures every 2 scenario minutes at 12x: a new reading every 10 s of wall time.
    monitor = make_simulator("accutorr", get_scenario("normal"), nibp_interval_min=2.0)
    async with serve_pty(monitor, speed=12.0) as accutorr:
        config = write_daemon_toml(
            tmp_path / "vw.toml",
            {
                "site": SITE,
                "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "heartbeat_s": 1.0, "keepalive_s": 5},
                "state": {"directory": str(tmp_path / "state")},
                "beds": [
                    {
                        "id": KEPT,
                        "devices": [{"id": "oximeter", "driver": "masimo", "url": "/nonexistent/tty"}],
                    },
                    {"id": MET, "devices": [{"id": "monitor", "driver": "accutorr", "url": accutorr.url}]},
                ],
            },
        )
        log = tmp_path / "daemon.log"
        station = Station()
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="station") as client:
            await client.subscribe(f"vitalwatch/v1/{SITE}/+/prompts", qos=1)
            await client.subscribe(f"vitalwatch/v1/{SITE}/+/cmd/result", qos=1)
            follower = asyncio.create_task(station.follow(client))
            proc = await start_daemon_process(config, log=log)
            try:
                # Both beds publish their (empty) prompts at start: the daemon is up.
                await wait_until(lambda: None not in (station.latest(KEPT), station.latest(MET)), 20, "start")
                first = await station.send(client, KEPT, {"request_id": "r1", "command": "nibp", "by": NURSE})
                assert "prompted" == first["detail"]["nibp"], first
                kept_id = first["detail"]["prompt_id"]
                met = await station.send(client, MET, {"request_id": "r2", "command": "nibp", "by": NURSE})
                assert "prompted" == met["detail"]["nibp"], met
                met_id = met["detail"]["prompt_id"]
                await wait_until(lambda: kept_id in (station.ids(KEPT) or []), 10, "chair-1's prompt")
                opened = next(p for p in station.latest(KEPT)["prompts"] if p["prompt_id"] == kept_id)  # type: ignore[index]
                # chair-2's own monitor measures: its prompt is met and closed by the reading.
                await wait_until(lambda: station.closed(MET, met_id), 30, "chair-2's reading")

                await kill(proc)
                killed = datetime.now(UTC)
                proc = await start_daemon_process(config, log=log)
                # The new process publishes the restored prompts itself (not the broker's old copy).
                await wait_until(
                    lambda: None not in (station.ids(KEPT, after=killed), station.ids(MET, after=killed)),
                    20,
                    "both beds' prompts republished",
                )
                restored = station.latest(KEPT, after=killed)
                assert restored is not None
                assert [kept_id] == [p["prompt_id"] for p in restored["prompts"]], restored
                again = restored["prompts"][0]
                assert (opened["kind"], opened["reason"], opened["text"], opened["then"]) == (
                    again["kind"], again["reason"], again["text"], again["then"],
                )  # fmt: skip
                assert abs((when(again["opened_utc"]) - when(opened["opened_utc"])).total_seconds()) < 0.05
                assert station.closed(MET, met_id, after=killed), station.latest(MET, after=killed)

                # The restored prompt is done like any other, and ids go on from the journalled counter.
                done = await station.send(
                    client,
                    KEPT,
                    {"request_id": "r3", "command": "prompt_done", "prompt_id": kept_id, "by": NURSE},
                )
                assert done["ok"], done
                await wait_until(lambda: station.closed(KEPT, kept_id), 10, "done")
                newer = await station.send(client, KEPT, {"request_id": "r4", "command": "nibp", "by": NURSE})
                newer_id = newer["detail"]["prompt_id"]
                assert newer_id not in (kept_id, met_id), newer
                await wait_until(lambda: newer_id in (station.ids(KEPT) or []), 10, "the newer prompt")

                # A second kill: the prompt marked done stays done, the newer one comes back.
                await kill(proc)
                killed = datetime.now(UTC)
                proc = await start_daemon_process(config, log=log)
                await wait_until(lambda: station.ids(KEPT, after=killed) is not None, 20, "republished again")
                assert [newer_id] == station.ids(KEPT, after=killed), station.latest(KEPT, after=killed)
            finally:
                if proc.returncode is None:
                    await kill(proc)
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
    assert "Traceback" not in log.read_text(errors="replace")
