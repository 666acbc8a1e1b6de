"""A full daemon run logs no patient data and no credentials (issue 7 §5).

The HL7 simulator sends a PID segment with a (fake) patient identifier and name, the way real
monitors do; the broker password sits in a password file. Every log line of a desaturation
scenario, at debug level, is scanned for them.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from tests.helpers import wait_until
from vitalwatch.config import parse_config
from vitalwatch.ops.daemon import Daemon
from vitalwatch.ops.logconfig import configure_logging
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto

pytestmark = pytest.mark.mqtt

PATIENT_DATA = ("SIM-0001", "SIMULATED", "PATIENT")
PASSWORD = "correct-horse-battery-staple"


@pytest.mark.asyncio
async def test_debug_logs_of_a_full_scenario_carry_no_patient_data_or_secrets(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORD + "\n")
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    sim = make_simulator("hl7", get_scenario("desaturation"), nibp_interval_s=30.0)
    async with serve_pty(sim, speed=4.0) as endpoint:
        config = parse_config(
            {
                "site": "clinic-log",
                "mqtt": {"port": mosquitto.port, "username": "gw", "password_file": str(secret)},
                "state": {"directory": str(tmp_path)},
                "alarms": {"table": "default", "rules": {"spo2_low_high": {"sustain_s": 2.0}}},
                "beds": [
                    {"id": "chair-1", "devices": [{"id": "monitor", "driver": "hl7", "url": endpoint.url}]}
                ],
            }
        )
        daemon = Daemon(config)
        runner = asyncio.create_task(daemon.run())
        loop = asyncio.get_running_loop()
        daemon.beds["chair-1"].set_phase("infusion", loop.time())
        try:
            await wait_until(
                lambda: any(
                    '"alert.transition"' in line and '"spo2_low"' in line
                    for line in stream.getvalue().splitlines()
                ),
                45,
                "the spo2_low transition in the log",
                poll_s=0.2,
            )
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) > 10
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert any(r.get("event") == "alert.transition" for r in records)
    text = stream.getvalue()
    for forbidden in (*PATIENT_DATA, PASSWORD):
        assert forbidden not in text, f"{forbidden!r} leaked into the logs"
        # Raw frames are logged as hex at debug level: the hex of patient data must not appear either.
        assert forbidden.encode().hex() not in text.lower(), f"{forbidden!r} leaked into the logs as hex"
