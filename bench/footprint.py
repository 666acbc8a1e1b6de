"""Footprint: start-to-READY time, RSS and CPU share with 8 simulated devices, memory over a soak.

Why: the daemon shares a Raspberry Pi with the OS and a broker; it must start fast after a
watchdog restart, stay small and idle at real device rates, and not grow over a day.

Set-up (loopback only): 4 beds x 2 devices on ptys served by the real simulators
(:mod:`vitalwatch.simulators.endpoint`) in this process: Masimo + SunTech, Nonin + SunTech,
Nellcor + Accutorr, Contec + SunTech (the Contec streams 60 packets/s at 115,200 baud, Nonin 75
frames/s, so this is not an idle load). The daemon is ``vitalwatch run`` as shipped, outbox on
disk, default alarm table, Mosquitto on loopback.

1. **Start to READY**: ``START_RUNS`` starts; the time from just before ``Popen`` to the
   ``READY=1`` datagram on a ``NOTIFY_SOCKET`` we bind (sd_notify), or, when the daemon sends
   none, to the timestamp of its ``daemon.ready`` log line. Median and max.
2. **Real rates**: the ``normal`` scenario in real time for ``REAL_S`` seconds (``BENCH_REAL_S``;
   the issue asks for 10 min, the bench default is shorter to stay within its time budget and
   says so). RSS at the end (VmRSS) and the CPU share of one core (utime+stime over wall time,
   after a 10 s warm-up). Then ``LIGHT_S`` seconds with 1 Hz oximeters in place of the Contec
   and the Nonin, to show what the waveform-rate devices' wake-ups cost.
   With a CPU limit available (:class:`bench.common.CpuLimit`, ``BENCH_CPU_QUOTA`` of a core,
   25 % by default), the same run again with the daemon inside the limit, and its CPU share
   as a share of that constrained core (and start to READY inside it); without one, the
   benchmark says so and measures unconstrained only.
3. **Accelerated soak**: the ``session`` scenario (alarms, probe-off, artifacts, phase changes)
   at ``SOAK_SPEED`` x real time for ``SOAK_S`` seconds, i.e. one hour of device traffic. NIBP
   modules are polled by the daemon on its own clock, so they are not accelerated. RSS is
   sampled every second; growth = median RSS of the last 10 s minus median RSS of 20-30 s.

Run: ``python -m bench footprint``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import CpuLimit, DaemonProcess, mono, report, row, start_broker, write_config

DEVICES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("bed-1", (("oximeter", "masimo"), ("nibp", "suntech"))),
    ("bed-2", (("oximeter", "nonin"), ("nibp", "suntech"))),
    ("bed-3", (("oximeter", "nellcor"), ("nibp", "accutorr"))),
    ("bed-4", (("oximeter", "contec"), ("nibp", "suntech"))),
)
# The same beds with 1 Hz oximeters instead of the Contec (60 packets/s) and the Nonin (75
# frames/s): shows how much of the CPU share is the waveform-rate devices' wake-ups.
LIGHT_DEVICES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("bed-1", (("oximeter", "masimo"), ("nibp", "suntech"))),
    ("bed-2", (("oximeter", "nellcor"), ("nibp", "suntech"))),
    ("bed-3", (("oximeter", "nellcor"), ("nibp", "accutorr"))),
    ("bed-4", (("oximeter", "masimo"), ("nibp", "suntech"))),
)
LIGHT_S = 45.0
START_RUNS = 5
REAL_S = float(os.environ.get("BENCH_REAL_S", "90"))
SOAK_SPEED = 30.0
SOAK_S = float(os.environ.get("BENCH_SOAK_S", "120"))
WARMUP_S = 10.0
# The Pi's own budget: the same 8 devices with the daemon limited to this share of one core
# (``BENCH_CPU_QUOTA``); its CPU share is reported as a share of that constrained core.
CPU_QUOTA = float(os.environ.get("BENCH_CPU_QUOTA", "0.25"))
LIMITED_START_RUNS = 3


def _ready_time(work: Path, config: Path, i: int, limit: CpuLimit | None = None) -> tuple[float, str]:
    """Seconds from Popen to READY (sd_notify if sent, else the daemon.ready log line)."""
    sock_path = work / f"notify-{i}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.05)
    wall0 = time.time()
    daemon = DaemonProcess.start(
        config, work / f"start-{i}.log", env={"NOTIFY_SOCKET": str(sock_path)}, limit=limit
    )
    try:
        deadline = daemon.started + 20
        while mono() < deadline:
            try:
                msg = sock.recv(4096)
            except TimeoutError:
                msg = b""
            if b"READY=1" in msg.split(b"\n"):
                return mono() - daemon.started, "sd_notify"
            ready = [e for e in daemon.events() if e.get("event") == "daemon.ready"]
            if ready and mono() - daemon.started > 2.0:
                stamp = datetime.fromisoformat(ready[0]["timestamp"].replace("Z", "+00:00")).timestamp()
                return stamp - wall0, "log"
        raise TimeoutError("daemon never became ready")
    finally:
        daemon.stop()
        sock.close()


async def _serve_and_sample(
    work: Path,
    name: str,
    scenario: str,
    *,
    speed: float,
    seconds: float,
    broker_port: int,
    devices: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = DEVICES,
    limit: CpuLimit | None = None,
) -> dict[str, Any]:
    """Serve the 8 devices, run the daemon for ``seconds``, sample RSS and CPU every second."""
    from contextlib import AsyncExitStack

    from vitalwatch.simulators import make_simulator
    from vitalwatch.simulators.endpoint import serve_pty
    from vitalwatch.simulators.scenarios import get_scenario

    async with AsyncExitStack() as stack:
        beds: dict[str, list[tuple[str, str, str]]] = {}
        for bed, bed_devices in devices:
            for dev_id, driver in bed_devices:
                story = get_scenario(scenario, seed=len(beds))
                ep = await stack.enter_async_context(serve_pty(make_simulator(driver, story), speed=speed))
                beds.setdefault(bed, []).append((dev_id, driver, ep.url))
        cfg = write_config(
            work / f"{name}.toml", broker_port=broker_port, state_dir=work / f"state-{name}", beds=beds
        )
        daemon = DaemonProcess.start(cfg, work / f"{name}.log", limit=limit)
        try:
            for _ in range(2000):
                if any(e.get("event") == "daemon.ready" for e in daemon.events()):
                    break
                await asyncio.sleep(0.01)
            t0 = mono()
            throttled_at: dict[str, dict[str, float]] = {}
            samples: list[tuple[float, int, float]] = []  # (s since start, rss kB, cpu s)
            while (elapsed := mono() - t0) < seconds:
                samples.append((elapsed, daemon.rss_kb(), daemon.cpu_s()))
                if limit is not None and elapsed >= WARMUP_S and not throttled_at:
                    throttled_at["from"] = limit.throttled()
                await asyncio.sleep(1.0)
            if limit is not None:
                throttled_at["to"] = limit.throttled()
            samples.append((mono() - t0, daemon.rss_kb(), daemon.cpu_s()))
            if daemon.proc.poll() is not None:
                raise RuntimeError(f"daemon died; see {daemon.log_path}")
        finally:
            daemon.stop()
    warm = [s for s in samples if s[0] >= WARMUP_S]
    cpu_share = (warm[-1][2] - warm[0][2]) / (warm[-1][0] - warm[0][0])
    early = [s[1] for s in samples if 20 <= s[0] < 30] or [samples[0][1]]
    late = [s[1] for s in samples if s[0] >= samples[-1][0] - 10]
    return {
        "seconds": round(samples[-1][0], 1),
        "rss_end_kb": samples[-1][1],
        "rss_max_kb": max(s[1] for s in samples),
        "cpu_share": cpu_share,
        "growth_kb": statistics.median(late) - statistics.median(early),
        "rss_series_kb": [(round(t), r) for t, r, _ in samples],
        # Throttling of the CPU limit over the measured window (after the warm-up).
        "throttled": {
            k: v - throttled_at.get("from", {}).get(k, 0) for k, v in throttled_at.get("to", {}).items()
        },
    }


def main() -> None:
    """Measure; print the table (text and JSON); write results/footprint.json."""
    limit = CpuLimit.create(CPU_QUOTA)
    with tempfile.TemporaryDirectory(prefix="vw-footprint-") as tmp:
        work = Path(tmp)
        broker = start_broker(work)
        try:
            beds = {"bed-1": [("oximeter", "masimo", "/dev/null-not-a-tty")]}
            cfg = write_config(work / "start.toml", broker_port=broker.port, state_dir=work / "s0", beds=beds)
            starts = [_ready_time(work, cfg, i) for i in range(START_RUNS)]
            real = asyncio.run(
                _serve_and_sample(work, "real", "normal", speed=1.0, seconds=REAL_S, broker_port=broker.port)
            )
            limited: dict[str, Any] | None = None
            limited_starts: list[tuple[float, str]] = []
            if limit.available:
                limited_starts = [
                    _ready_time(work, cfg, START_RUNS + i, limit) for i in range(LIMITED_START_RUNS)
                ]
                limited = asyncio.run(
                    _serve_and_sample(
                        work,
                        "limited",
                        "normal",
                        speed=1.0,
                        seconds=REAL_S,
                        broker_port=broker.port,
                        limit=limit,
                    )
                )
            light = asyncio.run(
                _serve_and_sample(
                    work,
                    "light",
                    "normal",
                    speed=1.0,
                    seconds=LIGHT_S,
                    broker_port=broker.port,
                    devices=LIGHT_DEVICES,
                )
            )
            soak = asyncio.run(
                _serve_and_sample(
                    work, "soak", "session", speed=SOAK_SPEED, seconds=SOAK_S, broker_port=broker.port
                )
            )
        finally:
            broker.stop()
            limit.close()
    ready = [s for s, _ in starts]
    how = starts[0][1]
    rss_mb = real["rss_end_kb"] / 1024
    cpu_pct = real["cpu_share"] * 100
    growth_mb = soak["growth_kb"] / 1024
    ready_med = statistics.median(ready)
    soak_h = SOAK_S * SOAK_SPEED / 3600
    rows = [
        row(
            f"start to READY, median of {START_RUNS} ({how})",
            round(ready_med, 3),
            "s",
            "<= 1",
            ready_med <= 1,
        ),
        row("start to READY, max", round(max(ready), 3), "s"),
        row(f"RSS after {real['seconds']:.0f} s, 8 devices", round(rss_mb, 1), "MB", "<= 64", rss_mb <= 64),
        row("CPU share of one core, 8 devices real rate", round(cpu_pct, 2), "%", "<= 2", cpu_pct <= 2),
        row("CPU share, 1 Hz oximeters for Contec/Nonin", round(light["cpu_share"] * 100, 2), "%"),
        row(
            f"soak: {soak_h:.1f} h traffic, RSS growth",
            round(growth_mb, 2),
            "MB",
            "<= 2",
            abs(growth_mb) <= 2,
        ),
        row("soak: RSS at end", round(soak["rss_end_kb"] / 1024, 1), "MB"),
    ]
    quota = f"{CPU_QUOTA:.0%} of a core"
    if limited is not None:
        limited_pct = limited["cpu_share"] / CPU_QUOTA * 100
        limited_ready = statistics.median(s for s, _ in limited_starts)
        rows += [
            row(f"limited to {quota}: start to READY, median", round(limited_ready, 3), "s"),
            row(
                f"limited to {quota}: CPU share of the constrained core, 8 devices",
                round(limited_pct, 2),
                "%",
                "<= 5",
                limited_pct <= 5,
            ),
            row(f"limited to {quota}: RSS, 8 devices", round(limited["rss_end_kb"] / 1024, 1), "MB"),
            row(
                f"limited to {quota}: throttled periods", limited["throttled"]["throttled_periods"], "periods"
            ),
        ]
    else:
        print(f"CPU limit NOT set ({limit.how}): the footprint was measured unconstrained only")
    report(
        "footprint",
        rows,
        {
            "start_s": ready,
            "ready_signal": how,
            "real": real,
            "light": light,
            "soak": soak,
            "cpu_limit": {"quota": CPU_QUOTA, "set": limit.available, "how": limit.how},
            "limited": limited,
            "limited_start_s": [s for s, _ in limited_starts],
        },
    )


if __name__ == "__main__":
    main()
