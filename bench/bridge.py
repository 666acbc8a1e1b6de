"""Bridge throughput: alerts of 1,000 simulated beds through two clinic brokers to the central one.

Why: a region's alerts reach the central broker only through each clinic's Mosquitto bridge (TLS,
QoS 1, persistent session; ``config/mosquitto/bridge.conf.example``). This runs the shipped
configuration (vitalwatch.testing.start_bridged_region: three real Mosquittos on loopback), 500
beds per clinic published by a few gateway connections at a set total rate (``--rate``, default
1,000 alerts/s: every bed raising a transition each second, far above any real ward), and a
central subscriber (QoS 1) that stamps each alert on arrival. It reports alerts/s arriving at the
central broker, how many were lost, the latency from publish (at the clinic) to arrival (at the
central subscriber), p50/p99, and which broker logged dropping messages for which client (a
client slower than the flow fills its queue, ``max_queued_messages``, and Mosquitto drops).

Everything runs in this process and on this machine (three brokers, the publishers, the
subscriber): the figures are a floor for what the brokers carry, not a ceiling.

Run: ``python -m bench.bridge`` (20,000 alerts) or ``python -m bench.bridge --full`` (100,000).
Writes bench/results/bridge.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

from bench.common import percentile
from vitalwatch.config import MqttConfig, TlsConfig
from vitalwatch.delivery.broker import tls_context
from vitalwatch.testing import BridgedRegion, start_bridged_region

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SITES = ("clinic-a", "clinic-b")
BEDS_PER_CLINIC = 500
CONNECTIONS_PER_CLINIC = 10
WINDOW = 50  # QoS 1 publishes in flight per connection
QUIET_S = 5.0
PASSWORDS = {"bench-gw": "bench-pw"}
CLINIC_ACL = "user bench-gw\ntopic write vitalwatch/v1/+/+/alerts\n"
# A real alert's size and shape (docs/mqtt.md); "t" carries the publish time for the latency.
TEMPLATE = {
    "schema": "vitalwatch.alert/1",
    "state": "raised",
    "priority": "high",
    "category": "physiological",
    "condition": "spo2_low",
    "parameter": {"name": "spo2", "mdc": 150456},
    "value": 86.0,
    "unit": "%",
    "limit": 90.0,
    "phase": "infusion",
    "phase_minutes": 12.6,
    "onset_utc": "2026-03-01T10:15:02.331Z",
    "event_utc": "2026-03-01T10:15:17.331Z",
    "sent_utc": "2026-03-01T10:15:17.402Z",
    "clock_synced": True,
    "escalation_level": 0,
    "acknowledged_by": None,
    "acknowledged_utc": None,
    "rule": "spo2_low_high",
    "device": "oximeter",
    "message": "SpO2 86 % below 90 % for 15 s",
}


def central_client(region: BridgedRegion) -> aiomqtt.Client:
    certs = region.region_certs
    tls = TlsConfig(
        ca_file=certs / "ca.crt",
        cert_file=certs / "station-region.crt",
        key_file=certs / "station-region.key",
    )
    return aiomqtt.Client(
        "localhost", region.central_mtls, tls_context=tls_context(MqttConfig(tls=tls)), timeout=30
    )


async def publisher(region: BridgedRegion, site: str, conn: int, count: int, rate: float) -> None:
    """``count`` alerts for this connection's beds, ``rate`` per second, evenly spaced."""
    beds = [f"bed-{b:03d}" for b in range(conn, BEDS_PER_CLINIC, CONNECTIONS_PER_CLINIC)]
    window = asyncio.Semaphore(WINDOW)
    async with aiomqtt.Client(
        "127.0.0.1", region.clinics[site].port, username="bench-gw", password="bench-pw", timeout=60
    ) as gw:
        gw.pending_calls_threshold = WINDOW + 10  # aiomqtt warns above this many pending calls

        async def one(i: int) -> None:
            bed = beds[i % len(beds)]
            body = {**TEMPLATE, "alert_id": f"{site}-{bed}-{i}", "seq": i, "site": site, "bed": bed}
            async with window:
                body["t"] = time.perf_counter()
                await gw.publish(f"vitalwatch/v1/{site}/{bed}/alerts", json.dumps(body).encode(), qos=1)

        start = time.perf_counter()
        pending: list[asyncio.Task[None]] = []
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(i)))
        await asyncio.gather(*pending)


async def measure(region: BridgedRegion, total: int, rate: float) -> dict[str, Any]:
    connections = len(SITES) * CONNECTIONS_PER_CLINIC
    per_connection = total // connections
    total = per_connection * len(SITES) * CONNECTIONS_PER_CLINIC
    latencies: list[float] = []
    seen: set[tuple[str, int]] = set()
    async with central_client(region) as central:
        # Both bridges up: their retained link state on the central broker says "1".
        await central.subscribe("vitalwatch/v1/+/_bridge/state", qos=1)
        up: set[str] = set()
        async for message in central.messages:
            if bytes(message.payload) == b"1":  # type: ignore[arg-type]
                up.add(str(message.topic))
            if len(up) == len(SITES):
                break
        await central.subscribe("vitalwatch/v1/+/+/alerts", qos=1)
        t0 = time.perf_counter()
        sending = asyncio.gather(
            *(
                publisher(region, s, c, per_connection, rate / connections)
                for s in SITES
                for c in range(CONNECTIONS_PER_CLINIC)
            )
        )
        last = time.perf_counter()

        async def receive() -> None:
            nonlocal last
            async for message in central.messages:
                last = time.perf_counter()
                body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                key = (body["alert_id"], body["seq"])
                if key not in seen:
                    seen.add(key)
                    latencies.append(last - body["t"])
                if len(seen) == total:
                    return

        receiving = asyncio.create_task(receive())
        await sending
        # Done when all arrived, or nothing more came for QUIET_S (the rest was dropped on the way).
        while not receiving.done():
            quiet_for = time.perf_counter() - last
            if quiet_for >= QUIET_S:
                break
            await asyncio.wait({receiving}, timeout=QUIET_S - quiet_for)
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
        elapsed = last - t0
    ms = [v * 1000 for v in latencies]
    return {
        "alerts": total,
        "beds": BEDS_PER_CLINIC * len(SITES),
        "gateway_connections": connections,
        "offered_per_s": rate,
        "arrived": len(seen),
        "lost": total - len(seen),
        "alerts_per_s_at_central": round(len(seen) / elapsed),
        "latency_p50_ms": round(percentile(ms, 50), 1),
        "latency_p99_ms": round(percentile(ms, 99), 1),
        "latency_max_ms": round(max(ms), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__)
    parser.add_argument("--full", action="store_true", help="100,000 alerts instead of 20,000")
    parser.add_argument("--rate", type=float, default=1000.0, help="alerts/s offered by all beds (1000)")
    args = parser.parse_args(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        region = start_bridged_region(
            Path(tmp),
            repo=ROOT,
            sites=SITES,
            passwords=PASSWORDS,
            region_clients=("station-region",),
            clinic_acl=CLINIC_ACL,
        )
        try:
            result = asyncio.run(measure(region, 100_000 if args.full else 20_000, args.rate))
        finally:
            region.stop()
        # Mosquitto logs when a client's queue (max_queued_messages) overflows and it drops.
        brokers = {"central": region.central, **region.clinics}
        result["dropping_logged"] = {
            name: sorted(
                {
                    line.split("for client ")[-1].strip().rstrip(".")
                    for line in (b.workdir / "mosquitto.log").read_text(errors="replace").splitlines()
                    if "dropped" in line or "dropping" in line
                }
            )
            for name, b in brokers.items()
        }
    print(json.dumps(result))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bridge.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
