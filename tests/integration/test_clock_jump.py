"""A wall-clock step (NTP correction, a wrong RTC at boot) neither fires nor delays any alarm timer.

The daemon runs on a simulated Rad-8 while the test steps the wall clock (``time.time``) forward
an hour and then back two. Timers run on the monotonic clock, so the desaturation alert comes
exactly when it would have, and no silence, overdue or link alarm is invented by the jumps. Both
are observed where a nurse would see them: on the alerts topic, by a real subscriber.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.helpers import wait_until
from vitalwatch.config import parse_config
from vitalwatch.engine.outputs import AlertState
from vitalwatch.ops.daemon import Daemon
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto

pytestmark = pytest.mark.mqtt

SPEED = 4.0


async def raised_after(
    jumps: list[float], mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[float, list[dict[str, Any]]]:
    """Seconds (monotonic) from the phase change to spo2_low reaching a nurse station, with the given
    wall-clock steps applied 2 s into the session; and every alert the station received."""
    real_time = time.time
    offset = 0.0
    monkeypatch.setattr(time, "time", lambda: real_time() + offset)

    def step(seconds: float) -> None:
        nonlocal offset
        offset += seconds

    loop = asyncio.get_running_loop()
    received: list[tuple[float, dict[str, Any]]] = []  # (monotonic arrival, alert payload)

    async def listen(station: aiomqtt.Client) -> None:
        async for message in station.messages:
            received.append((loop.time(), json.loads(bytes(message.payload))))  # type: ignore[arg-type]

    def spo2_low_raised() -> list[float]:
        return [at for at, a in received if a["condition"] == "spo2_low" and a["state"] == AlertState.RAISED]

    async with (
        serve_pty(make_simulator("masimo", get_scenario("desaturation")), speed=SPEED) as endpoint,
        aiomqtt.Client("127.0.0.1", mosquitto.port) as station,
    ):
        await station.subscribe("vitalwatch/v1/clinic-clock/chair-1/alerts", qos=1)
        listener = asyncio.create_task(listen(station))
        config = parse_config(
            {
                "site": "clinic-clock",
                "mqtt": {"port": mosquitto.port},
                "state": {"directory": str(tmp_path)},
                "alarms": {"table": "default", "rules": {"spo2_low_high": {"sustain_s": 2.0}}},
                "beds": [
                    {
                        "id": "chair-1",
                        "devices": [{"id": "oximeter", "driver": "masimo", "url": endpoint.url}],
                    }
                ],
            }
        )
        daemon = Daemon(config)
        session = daemon.beds["chair-1"]
        runner = asyncio.create_task(daemon.run())
        start = loop.time()
        session.set_phase("infusion", start)
        steps = [loop.call_later(2.0 + 0.05 * i, step, jump) for i, jump in enumerate(jumps)]
        try:
            await wait_until(lambda: bool(spo2_low_raised()), 60, "spo2_low raised at the station")
            return spo2_low_raised()[0] - start, [a for _, a in received]
        finally:
            for handle in steps:
                handle.cancel()
            runner.cancel()
            listener.cancel()
            await asyncio.gather(runner, listener, return_exceptions=True)


@pytest.fixture
def state_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """One state directory per run, so the second run does not resume the first one's session."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    return tmp_path / "a", tmp_path / "b"


@pytest.mark.asyncio
async def test_wall_clock_steps_do_not_move_alarm_timers(
    mosquitto: Mosquitto, state_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    steady, _ = await raised_after([], mosquitto, state_dirs[0], monkeypatch)
    jumped, alerts = await raised_after([3600.0, -7200.0], mosquitto, state_dirs[1], monkeypatch)
    # The same simulated patient crosses the limit at the same monotonic moment in both runs;
    # allow for the 1 Hz device rate and scheduling jitter, nothing near the hour of the step.
    assert abs(jumped - steady) < 1.5
    invented = {a["condition"] for a in alerts} & {
        "link_lost",
        "signal_lost",
        "nibp_overdue",
        "infusion_overrun",
    }
    assert not invented
