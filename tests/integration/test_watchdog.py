"""WATCHDOG=1 goes to systemd only while the loop and every device task are healthy (issue 7 §1)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from vitalwatch.config import parse_config
from vitalwatch.ops.daemon import Daemon
from vitalwatch.ops.housekeeping import Housekeeping
from vitalwatch.ops.sdnotify import Notifier
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto

pytestmark = pytest.mark.mqtt


async def drain(sock: socket.socket, seconds: float) -> list[str]:
    """Every datagram that arrives within ``seconds``."""
    loop = asyncio.get_running_loop()
    got: list[str] = []
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        try:
            async with asyncio.timeout(left):
                got.append((await loop.sock_recv(sock, 4096)).decode())
        except TimeoutError:
            break
    return got


@pytest.mark.asyncio
async def test_watchdog_is_withheld_when_the_loop_blocks_or_a_device_task_dies(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # systemd would want a ping every 0.5 s
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    async with serve_pty(make_simulator("masimo", get_scenario("normal")), speed=1.0) as endpoint:
        config = parse_config(
            {
                "site": "clinic-wd",
                "mqtt": {"port": mosquitto.port},
                "state": {"directory": str(tmp_path)},
                "beds": [
                    {
                        "id": "chair-1",
                        "devices": [{"id": "oximeter", "driver": "masimo", "url": endpoint.url}],
                    }
                ],
            }
        )
        daemon = Daemon(config)
        hk = Housekeeping(daemon, notifier=Notifier({"NOTIFY_SOCKET": str(path)}))
        runner = asyncio.create_task(daemon.run(hk))
        try:
            healthy = await drain(sock, 3.0)
            assert any("READY=1" in d for d in healthy)
            assert sum("WATCHDOG=1" in d for d in healthy) >= 3

            # A blocked event loop: nothing can be sent while it is blocked, and the lag it leaves
            # behind is a fault, so the first round after it withholds the ping too.
            time.sleep(2.5)  # noqa: ASYNC251 -- blocking the loop on purpose is the test
            after_block = await drain(sock, 0.6)
            assert not any("WATCHDOG=1" in d for d in after_block[:1])
            assert any("loop" in d for d in after_block), after_block

            # A dead device task is a fault a restart can fix: the pings stop and STATUS says why.
            daemon.tasks["device[chair-1/oximeter]"].cancel()
            await asyncio.sleep(1.2)
            dead = await drain(sock, 2.0)
            assert dead and not any("WATCHDOG=1" in d for d in dead)
            assert any("STATUS=" in d and "oximeter" in d for d in dead), dead
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            sock.close()
