"""`vitalwatch run` as systemd and an engineer see it: READY/WATCHDOG/STOPPING, metrics, status, recording.

One real daemon process against a simulated Rad-8 on a pty and a real Mosquitto. The nurse sets the
phase with an MQTT command; the desaturation raises an alert; the run is recorded, and replaying the
recording through fresh drivers and engine gives exactly the alerts the nurse received.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.helpers import wait_until
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.testing import Mosquitto, free_port

pytestmark = pytest.mark.mqtt

SITE = "clinic-ops"
BED = "chair-2"


def write_config(path: Path, *, broker: int, device: str, state: Path, metrics_port: int) -> Path:
    path.write_text(
        f"""
site = "{SITE}"
[mqtt]
host = "127.0.0.1"
port = {broker}
heartbeat_s = 1.0
keepalive_s = 5
[state]
directory = "{state}"
[logging]
format = "json"
[metrics]
enabled = true
port = {metrics_port}
[alarms]
table = "default"
[alarms.rules.spo2_low_high]
sustain_s = 2.0
[[beds]]
id = "{BED}"
[[beds.devices]]
id = "oximeter"
driver = "masimo"
url = "{device}"
"""
    )
    return path


async def notifications(sock: socket.socket, want: str, within_s: float) -> list[str]:
    """Datagrams received on our NOTIFY_SOCKET until one contains ``want``."""
    loop = asyncio.get_running_loop()
    got: list[str] = []
    async with asyncio.timeout(within_s):
        while not any(want in g for g in got):
            got.append((await loop.sock_recv(sock, 4096)).decode())
    return got


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{want}}} in metrics")


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vitalwatch",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_daemon_under_systemd_protocol_metrics_status_and_recording(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    metrics_port = free_port()
    record = tmp_path / "recording"
    log = tmp_path / "daemon.log"
    live: list[dict[str, Any]] = []
    async with serve_pty(make_simulator("masimo", get_scenario("desaturation")), speed=4.0) as endpoint:
        config = write_config(
            tmp_path / "vw.toml",
            broker=mosquitto.port,
            device=endpoint.url,
            state=tmp_path,
            metrics_port=metrics_port,
        )
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"}
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="station") as station:
            await station.subscribe(f"vitalwatch/v1/{SITE}/{BED}/alerts", qos=1)
            await station.subscribe(f"vitalwatch/v1/{SITE}/{BED}/cmd/result", qos=1)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vitalwatch", "run", "--config", str(config), "--record", str(record),
                env=env, stdout=log.open("wb"), stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            try:
                ready = await notifications(notify, "READY=1", 20)
                assert any("STATUS=1 beds, 1 devices" in n for n in ready)
                await notifications(notify, "WATCHDOG=1", 10)  # health assessed, loop responsive

                command = {
                    "request_id": "ops-1",
                    "command": "phase",
                    "phase": "infusion",
                    "by": "RN-Test",
                    "override_reason": "test: no baseline wait",
                }
                await station.publish(f"vitalwatch/v1/{SITE}/{BED}/cmd", json.dumps(command), qos=1)
                async with asyncio.timeout(60):
                    async for message in station.messages:
                        payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                        if str(message.topic).endswith("/cmd/result"):
                            assert payload["ok"] is True and payload["request_id"] == "ops-1"
                            continue
                        live.append(payload)
                        if payload["condition"] == "spo2_low" and payload["state"] == "raised":
                            break

                # Metrics are refreshed once a second on the event loop; give the alarm a refresh.
                async def high_alarm_exported() -> bool:
                    nonlocal text
                    text = await asyncio.to_thread(scrape, metrics_port)
                    return metric(text, "vitalwatch_alarms_active", bed=BED, priority="high") >= 1.0

                text = ""
                await wait_until(high_alarm_exported, 10, "the high alarm in the metrics", poll_s=0.2)
                assert metric(text, "vitalwatch_readings_total", bed=BED, device="oximeter") > 10
                assert metric(text, "vitalwatch_device_link_up", bed=BED, device="oximeter") == 1.0
                assert metric(text, "vitalwatch_alarms_active", bed=BED, priority="high") >= 1.0
                assert metric(text, "vitalwatch_mqtt_connected", bed=BED) == 1.0
                assert "vitalwatch_event_loop_lag_seconds" in text
                assert "vitalwatch_clock_synchronized" in text
                assert 'vitalwatch_publish_ack_latency_seconds_count{bed="chair-2"}' in text

                code, out, err = await run_cli("status", "--socket", str(tmp_path / "status.sock"))
                assert code in (0, 1), err  # 1 is allowed: a container's clock may be unsynchronised
                assert BED in out and "oximeter" in out
                code, out, _ = await run_cli("status", "--socket", str(tmp_path / "status.sock"), "--json")
                snapshot = json.loads(out)["snapshot"]
                (bed,) = snapshot["beds"]
                assert bed["phase"] == "infusion" and bed["devices"][0]["link_up"] is True
                assert bed["active_alarms"].get("high", 0) >= 1

                proc.send_signal(signal.SIGTERM)
                await notifications(notify, "STOPPING=1", 15)
                assert await asyncio.wait_for(proc.wait(), 15) == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                notify.close()
    code, out, err = await run_cli("status", "--socket", str(tmp_path / "status.sock"))
    assert code == 2 and "cannot ask the daemon" in err

    code, out, err = await run_cli("replay", "--config", str(config), "--recording", str(record))
    assert code == 0, err
    replayed = [json.loads(line) for line in out.splitlines()]
    replayed_alerts = [r for r in replayed if r["type"] == "alert"]
    fields = ("alert_id", "seq", "state", "priority", "condition", "value", "limit", "phase", "message")
    live_keys = [tuple(a[f] for f in fields) for a in live]
    replay_keys = [tuple(a[f] for f in fields) for a in replayed_alerts]
    assert live_keys, "the live run raised no alert"
    # Everything the nurse received is reproduced, in order; the replay may go on past the point
    # where the test stopped listening (the daemon kept running until SIGTERM).
    assert live_keys == replay_keys[: len(live_keys)]

    # The live run also kept its de-identified session record: the end-of-session report works on it.
    code, out, err = await run_cli(
        "report", "--bed", BED, "--out", str(tmp_path / "report"), "--db", str(tmp_path / "sessions.sqlite3")
    )
    assert code == 0, err
    pngs = list((tmp_path / "report").glob("*.png"))
    assert pngs and pngs[0].stat().st_size > 10_000
    html = next((tmp_path / "report").glob("*.html")).read_text()
    assert "spo2_low" in html or "SpO2" in html
