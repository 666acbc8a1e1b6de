"""WATCHDOG=1 goes to systemd only while the loop and every device task are healthy (issue 7 §1)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vitalwatch.config import parse_config
from vitalwatch.ops.daemon import Daemon
from vitalwatch.ops.health import Thresholds
from vitalwatch.ops.housekeeping import Housekeeping
from vitalwatch.ops.sdnotify import Notifier
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto

pytestmark = pytest.mark.mqtt


async def receive_until(
    sock: socket.socket, done: Callable[[list[str]], bool], limit_s: float, what: str
) -> list[str]:
    """Datagrams in arrival order, up to and including the one after which ``done`` holds."""
    loop = asyncio.get_running_loop()
    got: list[str] = []
    try:
        async with asyncio.timeout(limit_s):
            while not done(got):
                got.append((await loop.sock_recv(sock, 4096)).decode())
    except TimeoutError:
        raise AssertionError(f"timed out after {limit_s:g} s waiting for {what}; got {got}") from None
    return got


def rounds(n: int) -> Callable[[list[str]], bool]:
    """Done after ``n`` health rounds: every round ends with its STATUS datagram."""
    return lambda got: sum("STATUS=" in d for d in got) >= n


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
            healthy = await receive_until(
                sock,
                lambda got: sum("WATCHDOG=1" in d for d in got) >= 3 and "STATUS=" in got[-1],
                10,
                "three pinging rounds",
            )
            assert any("READY=1" in d for d in healthy)

            # A blocked event loop: nothing can be sent while it is blocked, and the lag it leaves
            # behind is a fault, so the first round after it withholds the ping too.
            time.sleep(2.5)  # noqa: ASYNC251 -- the subject: the loop blocked on purpose for 2.5 s
            after_block = await receive_until(sock, rounds(1), 5, "the first round after the block")
            assert not any("WATCHDOG=1" in d for d in after_block), after_block
            assert "loop" in after_block[-1], after_block

            # A dead device task is a fault a restart can fix: the pings stop and STATUS says why.
            # The round that notices may follow one that still pinged; the three after it must not.
            daemon.tasks["device[chair-1/oximeter]"].cancel()
            await receive_until(
                sock, lambda got: bool(got) and "oximeter" in got[-1], 5, "a STATUS naming the dead device"
            )
            dead = await receive_until(sock, rounds(3), 10, "three more health rounds")
            assert not any("WATCHDOG=1" in d for d in dead), dead
            assert all("oximeter" in d for d in dead if "STATUS=" in d), dead
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            sock.close()


@pytest.mark.asyncio
async def test_a_monitor_that_never_sends_is_a_local_alarm_not_a_restart_loop(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Baseline, a configured monitor that never sent a byte: the pings go on, device_silent is raised."""
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    quiet = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never sends
    port = quiet.sockets[0].getsockname()[1]
    config = parse_config(
        {
            "site": "clinic-wd",
            "mqtt": {"port": mosquitto.port},
            "state": {"directory": str(tmp_path)},
            "beds": [
                {
                    "id": "chair-1",
                    "devices": [{"id": "oximeter", "driver": "masimo", "url": f"socket://127.0.0.1:{port}"}],
                }
            ],
        }
    )
    daemon = Daemon(config)
    limits = Thresholds(startup_grace_s=0.5, silence_alarm_overdue_s=1.5, require_clock_sync=False)
    hk = Housekeeping(daemon, notifier=Notifier({"NOTIFY_SOCKET": str(path)}), thresholds=limits)
    runner = asyncio.create_task(daemon.run(hk))
    try:
        await receive_until(
            sock, lambda got: bool(got) and "device.silence_unalarmed" in got[-1], 10, "the unalarmed silence"
        )
        assert ("device_silent", "chair-1") in daemon.local_alarms.active
        later = await receive_until(sock, rounds(3), 10, "three rounds after it")
        assert 3 <= sum("WATCHDOG=1" in d for d in later), later  # no restart for what a restart cannot cure
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        quiet.close()
        await quiet.wait_closed()
        sock.close()
