"""`vitalwatch simulate --connect`: several simulated networked monitors as TCP clients of a real listener."""

from __future__ import annotations

import asyncio
import re
import sys

import pytest

from tests.helpers import wait_until
from vitalwatch.config import DeviceConfig
from vitalwatch.drivers.base import SerialSettings
from vitalwatch.drivers.events import Event, Observation
from vitalwatch.link.mllp_listener import MllpHub


class Bed:
    """A recording bed session (LinkListener)."""

    def __init__(self) -> None:
        self.kinds: set[str] = set()

    def on_bytes(self, device: str, now: float) -> None:
        pass

    def on_events(self, device: str, events: list[Event], now: float) -> None:
        self.kinds |= {e.kind for e in events if isinstance(e, Observation)}

    def on_link(self, device: str, up: bool, now: float, reason: str) -> None:
        pass


async def simulate(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vitalwatch", "simulate", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_three_monitors_connect_at_once_each_with_its_own_eui64_and_location() -> None:
    hub = MllpHub()
    beds = [Bed() for _ in range(3)]
    routes = [
        hub.link(
            DeviceConfig(
                id="monitor", driver="hl7", url="mllp://127.0.0.1:0", role="multi", serial=SerialSettings(),
                location=f"CHAIR^^{n}",
            ),
            bed,
        )
        for n, bed in enumerate(beds, start=1)
    ]  # fmt: skip
    tasks = [asyncio.create_task(r.run()) for r in routes]
    listener = next(iter(hub.listeners.values()))
    try:
        await wait_until(lambda: listener.bound_port is not None, 10.0, "the listener to bind")
        code, out, err = await simulate(
            "--device", "hl7", "--scenario", "normal", "--connect", f"mllp://127.0.0.1:{listener.bound_port}",
            "--monitors", "3", "--option", "location=CHAIR^^{n}", "--option", "resp_rate=true",
            "--speed", "5", "--duration", "3",
        )  # fmt: skip
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    euis = {re.search(r"eui64=([0-9A-F]{16})", line).group(1) for line in lines}  # type: ignore[union-attr]
    assert len(euis) == 3
    assert [line.rsplit("location=", 1)[1] for line in lines] == ["CHAIR^^1", "CHAIR^^2", "CHAIR^^3"]
    assert all(r.accepted > 0 for r in routes), ([r.accepted for r in routes], err)
    assert all({"spo2", "resp_rate"} <= bed.kinds for bed in beds), [b.kinds for b in beds]
    assert err.count("acked=") == 3


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "masimo", "--connect", "mllp://127.0.0.1:2575"], "--connect is for --device hl7"),
        (["--device", "hl7", "--connect", "tcp://127.0.0.1:2575"], "--connect must start with mllp://"),
        (["--device", "hl7", "--monitors", "2"], "--monitors needs --connect"),
    ],
)
async def test_bad_connect_options_are_one_line_and_exit_2(argv: list[str], message: str) -> None:
    code, _, err = await simulate("--scenario", "normal", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
