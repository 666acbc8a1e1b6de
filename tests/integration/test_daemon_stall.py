"""A stall of the daemon itself is its own local alarm, never a monitor's ``link_lost``.

Real processes throughout: ``vitalwatch run`` as a subprocess, three ``vitalwatch simulate``
Masimo monitors on real ptys (two on one bed, one on another), a real Mosquitto and an MQTT
subscriber. The daemon is stopped (SIGSTOP) for longer than the link timeout and continued:
the status payload carries ``daemon_stalled`` and no ``link_lost`` is ever published. The
control: a monitor process stopped the same way really goes silent, and its bed gets
``link_lost`` for that monitor only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from tests.helpers import SiteMessages, wait_until
from vitalwatch.testing import Mosquitto

pytestmark = pytest.mark.mqtt

SITE = "clinic-stall"
LINK_TIMEOUT_S = 3  # link_lost after 3 s of silence (the table allows 2..600)
STOP_S = 8.0  # longer than the link timeout, and than the stall threshold


def write_config(path: Path, broker: Mosquitto, state: Path, ptys: dict[str, str]) -> Path:
    beds = {"chair-1": ["oxi-a", "oxi-b"], "chair-2": ["oxi-c"]}
    lines = [
        f'site = "{SITE}"',
        "[mqtt]",
        'host = "127.0.0.1"',
        f"port = {broker.port}",
        "heartbeat_s = 0.5",
        "keepalive_s = 60",  # the broker must not drop the stopped daemon (that is another test)
        "[state]",
        f'directory = "{state}"',
        "[logging]",
        'format = "json"',
        "[metrics]",
        "enabled = false",
        "[alarms]",
        'table = "default"',
        "[alarms.rules.link_lost]",
        f"after_s = {LINK_TIMEOUT_S}",
    ]
    for bed, devices in beds.items():
        lines += ["[[beds]]", f'id = "{bed}"']
        for dev in devices:
            lines += ["[[beds.devices]]", f'id = "{dev}"', 'driver = "masimo"', f'url = "{ptys[dev]}"']
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.asynccontextmanager
async def monitor(name: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A simulated Masimo in its own process on a pty; yields the process and the pty path."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vitalwatch", "simulate", "--device", "masimo", "--scenario", "normal",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("serving masimo on "), (name, line)
        yield proc, line.split(" on ", 1)[1].strip()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        await proc.wait()


class Subscriber(SiteMessages):
    """The station's messages, and what this test asks of them."""

    def __init__(self) -> None:
        super().__init__(SITE)

    def link_lost(self) -> list[tuple[str, str | None, str]]:
        return [(a["bed"], a.get("device"), a["state"]) for a in self.alerts if a["condition"] == "link_lost"]

    def all_links_up(self) -> bool:
        latest = {s["bed"]: s for s in self.statuses}
        return set(latest) == {"chair-1", "chair-2"} and all(
            set(s["links"].values()) == {"up"} for s in latest.values()
        )

    def all_in_infusion(self) -> bool:
        latest = {s["bed"]: s for s in self.statuses}
        return len(latest) == 2 and all(s["phase"] == "infusion" for s in latest.values())

    def technical(self, alarm: str) -> bool:
        return any(alarm in s["technical"] for s in self.statuses)


async def stop_for(proc: asyncio.subprocess.Process, seconds: float) -> None:
    """SIGSTOP ``proc`` for ``seconds`` (the fault injected, not a wait for a condition), then SIGCONT."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(proc.pid, signal.SIGCONT)


@pytest.mark.asyncio
async def test_stopped_daemon_raises_daemon_stalled_and_no_link_lost_but_a_stopped_monitor_does(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with (
        monitor("oxi-a") as (_, pty_a),
        monitor("oxi-b") as (_, pty_b),
        monitor("oxi-c") as (proc_c, pty_c),
    ):
        config = write_config(
            tmp_path / "vw.toml",
            mosquitto,
            tmp_path / "state",
            {"oxi-a": pty_a, "oxi-b": pty_b, "oxi-c": pty_c},
        )
        sub = Subscriber()
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="station") as client:
            await client.subscribe(f"vitalwatch/v1/{SITE}/+/alerts", qos=1)
            await client.subscribe(f"vitalwatch/v1/{SITE}/+/status", qos=1)
            listener = asyncio.create_task(sub.run(client))
            log_path = tmp_path / "daemon.log"
            with log_path.open("wb") as log_file:  # a file: a full pipe would stall the daemon itself
                daemon = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "vitalwatch", "run", "--config", str(config),
                    stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
            try:
                await wait_until(sub.all_links_up, 30, "every link up in the status")
                # link_lost is judged in the infusion and recovery phases, not in baseline.
                for n, bed in enumerate(("chair-1", "chair-2")):
                    command = {
                        "request_id": f"st-{n}",
                        "command": "phase",
                        "phase": "infusion",
                        "by": "RN Kim",
                        "override_reason": "test rig: no cuff for a baseline",
                    }
                    await client.publish(f"vitalwatch/v1/{SITE}/{bed}/cmd", json.dumps(command), qos=1)
                await wait_until(sub.all_in_infusion, 15, "both beds in the infusion phase")
                # Running normally for longer than the link timeout: nothing is lost.
                seen = len(sub.statuses)
                await wait_until(lambda: len(sub.statuses) >= seen + 2 * LINK_TIMEOUT_S / 0.5, 30)
                assert [] == sub.link_lost()
                assert not sub.technical("daemon_stalled")

                await stop_for(daemon, STOP_S)
                await wait_until(lambda: sub.technical("daemon_stalled"), 15, "daemon_stalled in a status")
                # Run on for well past the link timeout after the stall: still no link_lost.
                seen = len(sub.statuses)
                await wait_until(lambda: len(sub.statuses) >= seen + 4 * LINK_TIMEOUT_S / 0.5, 30)
                assert [] == sub.link_lost(), "the daemon's own stall was blamed on a monitor"

                # Control: a monitor that really stops is silent after the daemon reads on.
                await stop_for(proc_c, STOP_S)
                await wait_until(lambda: ("chair-2", "oxi-c", "raised") in sub.link_lost(), 15)
                await wait_until(lambda: ("chair-2", "oxi-c", "cleared") in sub.link_lost(), 15)
                assert {("chair-2", "oxi-c")} == {(bed, dev) for bed, dev, _ in sub.link_lost()}
            finally:
                if daemon.returncode is None:
                    daemon.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(daemon.wait(), 15)
                    except TimeoutError:
                        daemon.kill()
                        await daemon.wait()
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
    output = log_path.read_text()
    log = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    stalls = [e for e in log if e.get("event") == "daemon.stalled"]
    assert len(stalls) == 1, stalls
    assert STOP_S - 1 <= stalls[0]["gap_s"] <= STOP_S + 5
    assert any(e.get("event") == "local_alarm.raised" and e.get("alarm") == "daemon_stalled" for e in log)
    assert "Traceback" not in output
