"""PCD-04 delivery latency beside the MQTT path, in one run: alert transition -> alarm manager's ACK.

What runs (loopback only): a real Mosquitto process; in this process the daemon (its journal on
disk in a temporary directory, ``synchronous=FULL`` as in production), an MQTT subscriber (the
nurse station) and the alarm-manager double (simulators/alarm_manager.py, which parses every
message with python-hl7 before it answers ``AA``).

Each alert transition is handed to the bed session as the engine hands it (``dispatch``), stamped
with ``time.monotonic()`` just before. From that one stamp:

- **PCD-04**: until the double accepts the ORU^R40 and writes its ACK (same step), and until the
  reporter has read that ACK (the report is then marked delivered);
- **MQTT**: until the subscriber has the alert (through Mosquitto).

Both leave from the same journal commit, so the two are side by side on the same transitions.
``ALERTS`` alerts, raised then cleared, ``PAUSE_S`` apart (one transition at a time, as a ward
produces them, not a burst). Everything shares one event loop, so the numbers include the
double's and the subscriber's work; they are an upper bound on the daemon's own share.

Run: ``python -m bench pcd04``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

from bench.common import PREFIX, report, row, start_broker, summary_ms
from vitalwatch.config import parse_config
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Priority
from vitalwatch.ops.daemon import Daemon
from vitalwatch.simulators.alarm_manager import AlarmManagerDouble, Report

SITE, BED = "bench-site", "chair-1"
ALERTS = 150
PAUSE_S = 0.02


def _transition(i: int, seq: int, state: AlertState, t: float) -> AlertTransition:
    return AlertTransition(
        t=t,
        bed=BED,
        alert_id=f"{BED}-bench-{i:04d}",
        seq=seq,
        state=state,
        priority=Priority.HIGH,
        category=Category.PHYSIOLOGICAL,
        condition="spo2_low",
        parameter="spo2",
        value=84.0,
        unit="%",
        limit=90.0,
        phase="infusion",
        phase_elapsed_s=60.0,
        onset_t=t,
        message="SpO2 84 % below 90 %",
    )


async def _run(work: Path, broker_port: int) -> dict[str, list[float]]:
    sent: dict[tuple[str, int], float] = {}  # (alert_id, n-th transition) -> dispatch stamp
    at_double: dict[tuple[str, int], float] = {}
    at_station: dict[tuple[str, int], float] = {}

    def accepted(r: Report) -> None:
        at_double[r.key] = time.monotonic()

    async with AlarmManagerDouble(on_report=accepted) as manager:
        config = parse_config(
            {
                "site": SITE,
                "mqtt": {"host": "127.0.0.1", "port": broker_port},
                "logging": {"level": "warning"},
                "state": {"directory": str(work / "state")},
                "beds": [
                    {"id": BED, "devices": [{"id": "ox", "driver": "masimo", "url": "/nonexistent/bench"}]}
                ],
                "alert_reporters": [{"id": "bench", "host": "127.0.0.1", "port": manager.port}],
            }
        )
        daemon = Daemon(config)
        reporter = daemon.reporters.reporters["bench"]
        acked: dict[tuple[str, int], float] = {}
        delivered_before = 0

        async with aiomqtt.Client("127.0.0.1", broker_port) as station:
            await station.subscribe(f"{PREFIX}/{SITE}/{BED}/alerts", qos=1)

            async def listen() -> None:
                async for message in station.messages:
                    assert isinstance(message.payload, bytes)
                    doc = json.loads(message.payload)
                    n = 0 if doc["state"] == "raised" else 1
                    at_station.setdefault((doc["alert_id"], n), time.monotonic())

            listener = asyncio.create_task(listen())
            running = asyncio.create_task(daemon.run())
            try:
                while not (daemon.publishers[BED].connected and reporter.connected):  # noqa: ASYNC110 -- other tasks' state
                    await asyncio.sleep(0.05)
                session = daemon.beds[BED]
                seq = 1_000_000
                for i in range(ALERTS):
                    for n, state in enumerate((AlertState.RAISED, AlertState.CLEARED)):
                        tr = _transition(i, seq, state, asyncio.get_running_loop().time())
                        sent[(tr.alert_id, n)] = time.monotonic()
                        session.dispatch([tr])
                        seq += 1
                        # The reporter's ACK: when its delivered count moves past this one.
                        while reporter.delivered == delivered_before:  # noqa: ASYNC110 -- the reporter task's count
                            await asyncio.sleep(0.0005)
                        acked[(tr.alert_id, n)] = time.monotonic()
                        delivered_before = reporter.delivered
                        await asyncio.sleep(PAUSE_S)
                deadline = time.monotonic() + 30
                while len(at_station) < len(sent) and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            finally:
                running.cancel()
                listener.cancel()
                await asyncio.gather(running, listener, return_exceptions=True)
        assert manager.duplicates == 0 and len(manager.accepted) == len(sent)

    return {
        "pcd04_double_ack": [at_double[k] - sent[k] for k in sent if k in at_double],
        "pcd04_ack_read": [acked[k] - sent[k] for k in sent if k in acked],
        "mqtt_subscriber": [at_station[k] - sent[k] for k in sent if k in at_station],
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="vw-bench-pcd04-") as tmp:
        work = Path(tmp)
        broker = start_broker(work)
        try:
            latencies = asyncio.run(_run(work, broker.port))
        finally:
            broker.stop()
    summaries: dict[str, Any] = {name: summary_ms(values) for name, values in latencies.items()}
    rows = []
    for name, label in (
        ("pcd04_double_ack", "transition -> alarm manager ACK (PCD-04)"),
        ("pcd04_ack_read", "transition -> ACK read by the reporter"),
        ("mqtt_subscriber", "transition -> MQTT subscriber"),
    ):
        s = summaries[name]
        rows.append(row(f"{label} p50", s["p50_ms"], "ms"))
        rows.append(row(f"{label} p99", s["p99_ms"], "ms"))
    report("pcd04", rows, {"summaries": summaries, "alerts": ALERTS, "pause_s": PAUSE_S})


if __name__ == "__main__":
    main()
