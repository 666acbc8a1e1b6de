"""Throughput: the most readings/s one daemon process sustains on one core with alarm p99 < 50 ms.

Why: a Raspberry Pi 4 is several times slower than this machine; at least 5000 readings/s per
core here leaves it room for a full infusion room. A "reading" is one observation out of a
driver, each of which goes through the engine and becomes a vital payload: a Rad-8 ASCII line
carries five (SpO2, pulse rate, perfusion index, and SpCO and SpMet as "no value").

Set-up (loopback only): the daemon (``vitalwatch run``, as shipped, outbox on disk) is pinned to
core 0 with ``taskset -c 0``; Mosquitto, the subscriber process and this writer are pinned to
core 1, so the daemon has one core to itself. ``BEDS`` beds with one Masimo pty each. For each
offered rate, for ``STEP_S`` seconds, every 10 ms the writer writes the due lines to every pty
(normal values) and every ``PROBE_S`` it writes one crossing line to bed 0, stamped like the
latency benchmark; the normal line after it clears the alarm. A rate is *sustained* when the
writer kept to the schedule (writes block once the daemon stops reading, so falling behind
shows), every probe raised an alert, and the probes' p99 stayed below 50 ms. The daemon's CPU
use over the step (``/proc/PID/stat``) is reported beside it.

Beds per core = sustained readings/s over one bed at real rates: a Masimo oximeter (one line a
second, 5/s), a Nonin (SpO2 and pulse each second, 2/s) and a SunTech NIBP (3 values every
5 min, 0.01/s).

Run: ``python -m bench throughput``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PREFIX,
    SITE,
    DaemonProcess,
    Pty,
    Subscriber,
    masimo_line,
    mono,
    report,
    row,
    start_broker,
    summary_ms,
    write_config,
    zero_delay_alarms,
)

BEDS = 8
RATES = (2500, 5000, 7500, 10000, 12500, 15000, 20000, 25000)  # offered readings/s
STEP_S = 6.0
TICK_S = 0.010
PROBE_S = 0.100
P99_LIMIT_MS = 50.0
TARGET = 5000
BED_READINGS_PER_S = 5.0 + 2.0 + 3 / 300  # masimo + nonin + suntech at their real rates


def _readings_per_line() -> int:
    """Observations the Masimo driver makes of one benchmark line (5 for a Rad-8 line)."""
    from vitalwatch.drivers import make_driver

    return len(make_driver("masimo").feed(masimo_line(97, 72, 0), 0.0))


READINGS_PER_LINE = _readings_per_line()


def _step(
    rate: int, ptys: list[Pty], daemon: DaemonProcess, second: int
) -> tuple[dict[str, Any], list[float]]:
    """Offer ``rate`` readings/s for STEP_S; returns the step's row and the probe write times."""
    normal = masimo_line(97, 72, second)
    crossing = masimo_line(84, 72, second)
    lines_per_tick = rate / READINGS_PER_LINE * TICK_S / len(ptys)
    owed = 0.0
    probes: list[float] = []
    lines = 0
    cpu0, t0 = daemon.cpu_s(), mono()
    next_tick, next_probe = t0, t0 + PROBE_S
    end = t0 + STEP_S
    late = 0.0
    while (now := mono()) < end:
        if now < next_tick:
            time.sleep(next_tick - now)
        late = max(late, mono() - next_tick)
        next_tick += TICK_S
        owed += lines_per_tick
        k = int(owed)
        owed -= k
        if k:
            block = normal * k
            for pty in ptys:
                pty.write(block)
            lines += k * len(ptys)
        if mono() >= next_probe:
            next_probe += PROBE_S
            t = mono()
            ptys[0].write(crossing)
            probes.append(t)
            ptys[0].write(normal)  # clears it, so the next probe raises again
            lines += 2
    wall = mono() - t0
    cpu = daemon.cpu_s() - cpu0
    achieved = lines * READINGS_PER_LINE / wall
    return (
        {
            "offered": rate,
            "achieved": round(achieved),
            "daemon_cpu_share": round(cpu / wall, 3),
            "writer_max_late_ms": round(late * 1000, 1),
        },
        probes,
    )


def run(work: Path, *, nodelay: bool) -> dict[str, Any]:
    """Ramp the offered rate until a step is not sustained."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    broker = start_broker(work, cpu=1)
    ptys = [Pty.open() for _ in range(BEDS)]
    topic = f"{PREFIX}/{SITE}/bed-0/alerts"
    sub = Subscriber.start(broker.port, [topic], work / "received.json", cpu=1)
    cfg = write_config(
        work / "vw.toml",
        broker_port=broker.port,
        state_dir=work / "state",
        beds={f"bed-{i}": [("oximeter", "masimo", p.path)] for i, p in enumerate(ptys)},
        alarms=zero_delay_alarms(),
    )
    daemon = DaemonProcess.start(cfg, work / "daemon.log", cpu=0, nodelay=nodelay)
    steps: list[dict[str, Any]] = []
    try:
        daemon.wait_for("daemon.ready")
        daemon.wait_for("device.connected", count=BEDS)
        time.sleep(1.0)
        for i, rate in enumerate(RATES):
            info, probes = _step(rate, ptys, daemon, i)
            time.sleep(1.0)  # let the last probes arrive
            sub, got = _restart_subscriber(sub, broker.port, topic, work)
            lat = [r - w for w, r in zip(probes, got, strict=False)]
            info["probes"] = len(probes)
            info["raised"] = len(got)
            info.update({k: v for k, v in summary_ms(lat).items() if k in ("p50_ms", "p99_ms", "max_ms")})
            info["sustained"] = bool(
                info["raised"] == len(probes)
                and info["achieved"] >= 0.97 * rate
                and info["p99_ms"] < P99_LIMIT_MS
            )
            steps.append(info)
            print(info)
            if not info["sustained"]:
                break
    finally:
        sub.proc.kill()
        daemon.stop()
        broker.stop()
        for p in ptys:
            p.close()
    return {"steps": steps}


def _restart_subscriber(sub: Subscriber, port: int, topic: str, work: Path) -> tuple[Subscriber, list[float]]:
    """Collect what the subscriber got during the step and start a fresh one for the next."""
    got = [t for t, _topic, body in sub.finish() if body and json.loads(body).get("state") == "raised"]
    return Subscriber.start(port, [topic], work / "received.json", cpu=1), got


def main() -> None:
    """Ramp the daemon as shipped and with TCP_NODELAY; print the table; write results/throughput.json."""
    rows = []
    all_steps: dict[str, list[dict[str, Any]]] = {}
    for variant, nodelay in (("shipped", False), ("nodelay", True)):
        print(f"-- daemon {variant}")
        with tempfile.TemporaryDirectory(prefix="vw-throughput-") as tmp:
            steps = run(Path(tmp), nodelay=nodelay)["steps"]
        all_steps[variant] = steps
        best = max((s["achieved"] for s in steps if s["sustained"]), default=0)
        cpu_us = statistics.median(
            s["daemon_cpu_share"] / s["achieved"] * 1e6 for s in steps if s["achieved"]
        )
        rows += [
            row(f"{variant}: max sustained readings/s", best, "readings/s", f">= {TARGET}", best >= TARGET),
            row(f"{variant}: beds (3 devices) per core", round(best / BED_READINGS_PER_S), "beds"),
            row(f"{variant}: daemon CPU per reading", round(cpu_us, 1), "us"),
            row(
                f"{variant}: first rate not sustained",
                steps[-1]["offered"] if not steps[-1]["sustained"] else 0,
                "readings/s",
            ),
        ]
    report("throughput", rows, {"steps": all_steps, "beds": BEDS, "step_s": STEP_S})


if __name__ == "__main__":
    main()
