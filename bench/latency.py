"""End-to-end alarm latency: last byte of a limit-crossing line on a pty -> alert at an MQTT subscriber.

What runs, all separate processes on this machine (loopback only), one pty per path:

.. code-block:: text

    this process (writer) --pty--> vitalwatch run, outbox on disk           --+
                          --pty--> vitalwatch run, outbox on tmpfs          --+
                          --pty--> vitalwatch run + stage tracer (disk)     --+--> Mosquitto --> subscriber
                          --pty--> vitalwatch run in a CPU limit (disk)     --+     (stamps arrival)
                          --pty--> floor: read pty, FULL commit, publish    --+
                          --pty--> floor: read pty, publish (no journal)    --+

The writer writes a whole Masimo line in one ``write()`` and stamps CLOCK_MONOTONIC just
before it; the subscriber process stamps CLOCK_MONOTONIC when paho hands it the message. Same
clock, so the difference is the latency. The alarm table has zero condition delay (only
``spo2_low_high``, sustain 0 s, in every phase, not latching): each crossing line raises a new
alert and the recovery line after it clears it; only ``raised`` transitions are counted.

The paths are fed in turn (every path's crossing, then every path's recovery line), 10-13 ms
apart, so they see the same machine at the same moments and the ratios are side by side. One
pty per path because two readers of one pty would race for its bytes.

The floors are the least a program can do. ``floor_journal`` keeps the daemon's promise - the
alert is on disk before it is sent: read the pty, find ``SPO2=``, commit one SQLite row with
``synchronous=FULL`` (WAL, 1 KiB pages, the same disk) inline, publish QoS 1 with aiomqtt on a
falling edge below 90 - no engine, no logging, no second thread. The target is the daemon's
p50 against it. ``floor`` is the same without the commit (the broker round trip alone).

The tmpfs daemon (``/dev/shm``, where fsync returns at once) shows what the outbox's FULL
commit adds. The traced daemon (``bench.stagetrace``) reports the time between stages inside
the daemon and its garbage-collector pauses; its own latency carries the tracer's cost. The
CPU-limited daemon runs inside :class:`bench.common.CpuLimit` (``BENCH_CPU_QUOTA``, 25 % of a
core by default), a Raspberry Pi's budget; when no limit can be set here the benchmark says so
and leaves that path out. ``BENCH_LATENCY_PATHS=daemon,daemon_traced`` runs some daemon paths
only (the floors always run).

Run: ``python -m bench latency``; ``python -m bench.latency floor PTY PORT TOPIC [JOURNAL_DIR]``
is a floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PREFIX,
    ROOT,
    SITE,
    CpuLimit,
    DaemonProcess,
    Pty,
    Subscriber,
    masimo_line,
    mono,
    percentile,
    report,
    row,
    start_broker,
    summary_ms,
    write_config,
    zero_delay_alarms,
)
from bench.stagetrace import load as load_trace
from bench.stagetrace import segments

ALARMS = int(os.environ.get("BENCH_LATENCY_ALARMS", "1000"))
WARMUP = 20
GAP_S = 0.010  # between writes; plus up to JITTER_S so nothing locks onto the daemon's 0.25 s tick
JITTER_S = 0.003
PNG = ROOT / "docs" / "img" / "alarm-latency.png"


# ------------------------------------------------------------------------------------ the floor
async def _floor(pty_path: str, port: int, topic: str, journal: str | None = None) -> None:
    """Read the pty, publish QoS 1 on a falling edge below 90; with ``journal``, commit first.

    The journalled floor is the least a program can do that keeps the daemon's promise: one
    SQLite row committed with ``synchronous=FULL`` in WAL mode (the WAL fsynced, 1 KiB pages,
    as the daemon's outbox) on the same disk, inline on the loop, then the publish.
    """
    import sqlite3

    import aiomqtt

    db = None
    if journal is not None:
        db = sqlite3.connect(Path(journal) / "floor.sqlite3", isolation_level=None)
        db.execute("PRAGMA page_size=1024")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
    fd = os.open(pty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes] = asyncio.Queue()
    buf = bytearray()

    def readable() -> None:
        buf.extend(os.read(fd, 4096))
        while (i := buf.find(b"\n")) >= 0:
            lines.put_nowait(bytes(buf[: i + 1]))
            del buf[: i + 1]

    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-floor-{os.getpid()}") as client:
        loop.add_reader(fd, readable)
        low = False
        while True:
            line = await lines.get()
            at = line.find(b"SPO2=")
            if at < 0 or not line[at + 5 : at + 8].isdigit():
                continue
            value = int(line[at + 5 : at + 8])
            if value < 90 and not low:
                if db is not None:
                    db.execute("BEGIN IMMEDIATE")
                    db.execute("INSERT INTO outbox(payload) VALUES (?)", (str(value),))
                    db.execute("COMMIT")
                await client.publish(topic, b"%d" % value, qos=1)
            low = value < 90


# ------------------------------------------------------------------------------------ the run
def _commit_cost_ms(directory: Path, n: int = 200) -> dict[str, float]:
    """Median and p99 of one outbox alert commit (synchronous=FULL) on ``directory``'s disk."""
    from vitalwatch.delivery.store import DB_NAME, Store

    async def go() -> list[float]:
        store = Store(directory / DB_NAME)
        payload = {"schema": "vitalwatch.alert/1", "message": "SpO2 86 % below 90 %", "value": 86}
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            await store.record(
                "probe", alert_id=f"p-{i}", seq=i, rank=3, clears=False, payload=payload, transition={}
            )
            times.append(time.perf_counter() - t0)
        store.close()
        return times

    times = asyncio.run(go())
    return summary_ms(times)


CPU_QUOTA = float(os.environ.get("BENCH_CPU_QUOTA", "0.25"))  # the Pi-like limit: a quarter core

# Daemon paths: name -> (outbox on tmpfs instead of disk, launcher module, under the CPU limit).
DAEMONS: dict[str, tuple[bool, str | None, bool]] = {
    "daemon": (False, None, False),
    "daemon_tmpfs": (True, None, False),
    "daemon_traced": (False, "bench.stagetrace", False),
    "daemon_cpu": (False, None, True),
}
# Floor paths: name -> journalled (an inline FULL commit before the publish).
FLOORS = {"floor": False, "floor_journal": True}
LABELS = {
    "floor": "floor: pty -> aiomqtt, no journal",
    "floor_journal": "floor: pty -> FULL commit -> aiomqtt",
    "daemon": "daemon (outbox on disk)",
    "daemon_tmpfs": "daemon (outbox on tmpfs)",
    "daemon_traced": "daemon with the stage tracer (disk)",
    "daemon_cpu": f"daemon limited to {CPU_QUOTA:.0%} of a core (disk)",
}


def _floor_proc(pty_path: str, port: int, topic: str, journal: Path | None) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "bench.latency", "floor", pty_path, str(port), topic]
    if journal is not None:
        journal.mkdir(parents=True, exist_ok=True)
        args.append(str(journal))
    return subprocess.Popen(args, cwd=ROOT)


def run(work: Path) -> dict[str, Any]:
    """Start everything, write WARMUP + ALARMS crossings per path, return the latencies (s)."""
    broker = start_broker(work)
    shm = Path(tempfile.mkdtemp(prefix="vw-bench-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    limit = CpuLimit.create(CPU_QUOTA)
    daemon_names = [n for n, (_, _, limited) in DAEMONS.items() if limit.available or not limited]
    if only := os.environ.get("BENCH_LATENCY_PATHS"):  # a quicker run of some daemon paths
        daemon_names = [n for n in daemon_names if n in only.split(",")]
    names = [*daemon_names, *FLOORS]
    ptys = {name: Pty.open() for name in names}
    daemons: dict[str, DaemonProcess] = {}
    floors: list[subprocess.Popen[bytes]] = []
    sub: Subscriber | None = None
    trace_path = work / "stagetrace.json"
    throttled: dict[str, float] = {}
    throttled_before: dict[str, float] = {}
    alarms_from = 0.0
    try:
        topics = [f"{PREFIX}/{SITE}/bed-{name}/alerts" for name in daemon_names]
        topics += [f"{PREFIX}/{SITE}/{name}/alerts" for name in FLOORS]
        sub = Subscriber.start(broker.port, topics, work / "received.json")
        for name in daemon_names:
            tmpfs, launcher, limited = DAEMONS[name]
            cfg = write_config(
                work / f"{name}.toml",
                broker_port=broker.port,
                state_dir=shm / name if tmpfs else work / f"state-{name}",
                beds={f"bed-{name}": [("oximeter", "masimo", ptys[name].path)]},
                alarms=zero_delay_alarms(),
            )
            daemons[name] = DaemonProcess.start(
                cfg,
                work / f"{name}.log",
                launcher=launcher,
                env={"VW_STAGE_TRACE": str(trace_path)} if launcher else None,
                limit=limit if limited else None,
            )
        for name, journalled in FLOORS.items():
            topic = f"{PREFIX}/{SITE}/{name}/alerts"
            journal = work / name if journalled else None
            floors.append(_floor_proc(ptys[name].path, broker.port, topic, journal))
        for d in daemons.values():
            d.wait_for("daemon.ready")
            d.wait_for("device.connected")
        time.sleep(1.0)  # the floors connect; the daemons publish their first status
        throttled_before = limit.throttled()  # start-up is throttled: count only the alarms
        alarms_from = mono()

        writes: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
        rng = random.Random(8)
        for i in range(WARMUP + ALARMS):
            value = 80 + i % 9
            for spo2 in (value, 97):
                for name in names:
                    line = masimo_line(spo2, 72, i)
                    t = mono()
                    ptys[name].write(line)
                    if spo2 < 90:
                        writes[name].append((t, spo2))
                    time.sleep(GAP_S + rng.random() * JITTER_S)
        time.sleep(1.0)
        received = sub.finish()
        sub = None
    finally:
        for floor in floors:
            floor.terminate()
            floor.wait(timeout=10)
        if sub is not None:
            sub.proc.kill()
        for d in daemons.values():
            d.stop()
        throttled = {k: v - throttled_before.get(k, 0) for k, v in limit.throttled().items()}
        limit.close()
        broker.stop()
        for p in ptys.values():
            p.close()

    raised: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
    keys: dict[str, list[tuple[str, int]]] = {name: [] for name in names}
    for t, topic, body in received:
        path = topic.split("/")[3].removeprefix("bed-")
        if path in FLOORS:
            raised[path].append((t, int(body)))
            continue
        payload = json.loads(body)
        if payload["state"] == "raised":
            raised[path].append((t, int(payload["value"])))
            keys[path].append((payload["alert_id"], payload["seq"]))
    latencies: dict[str, list[float]] = {}
    for name in names:
        w, r = writes[name], raised[name]
        if len(w) != len(r) or any(wv != rv for (_, wv), (_, rv) in zip(w, r, strict=True)):
            raise RuntimeError(
                f"{name}: {len(w)} crossings written, {len(r)} raises received (or out of order)"
            )
        latencies[name] = [rt - wt for (wt, _), (rt, _) in zip(w[WARMUP:], r[WARMUP:], strict=True)]
    traced = "daemon_traced" if "daemon_traced" in names else None
    stages = _stage_segments(
        load_trace(trace_path) if traced and trace_path.exists() else {},
        writes[traced][WARMUP:] if traced else [],
        raised[traced][WARMUP:] if traced else [],
        keys[traced][WARMUP:] if traced else [],
    )
    gc_pauses = _gc_summary(trace_path.with_suffix(".gc.json"), alarms_from)
    commit = _commit_cost_ms(work / "state-daemon")
    commit_tmpfs = _commit_cost_ms(shm)
    shutil.rmtree(shm, ignore_errors=True)
    return {
        "latencies": latencies,
        "commit_disk": commit,
        "commit_tmpfs": commit_tmpfs,
        "stages": stages,
        "gc": gc_pauses,
        "cpu_limit": {"quota": CPU_QUOTA, "set": limit.available, "how": limit.how, **throttled},
    }


def _gc_summary(path: Path, since: float) -> dict[str, dict[str, float]]:
    """The traced daemon's garbage-collector pauses per generation after ``since`` (the alarms
    began; CLOCK_MONOTONIC): count, median and max (ms)."""
    if not path.exists():
        return {}
    by_gen: dict[str, list[float]] = {}
    for gen, seconds, when in json.loads(path.read_text()):
        if when >= since:
            by_gen.setdefault(f"gen{gen}", []).append(seconds * 1000)
    return {
        g: {"count": len(v), "p50_ms": round(statistics.median(v), 3), "max_ms": round(max(v), 3)}
        for g, v in sorted(by_gen.items())
    }


def _stage_segments(
    trace: dict[tuple[str, int], dict[str, float]],
    writes: list[tuple[float, int]],
    received: list[tuple[float, int]],
    keys: list[tuple[str, int]],
) -> dict[str, dict[str, float]]:
    """Per segment of the traced daemon's path: median and p99 over the alarms, in ms."""
    per: dict[str, list[float]] = {}
    for (wt, _), (rt, _), key in zip(writes, received, keys, strict=True):
        stamps = trace.get(key)
        if stamps is None:
            continue
        for name, seconds in segments({**stamps, "written": wt, "received": rt}).items():
            per.setdefault(name, []).append(seconds)
    return {name: summary_ms(v) for name, v in per.items()}


def plot(latencies: dict[str, list[float]], path: Path) -> bool:
    """Histogram of the three latency distributions (False when matplotlib is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no histogram (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    top = max(max(v) for v in latencies.values()) * 1000
    bins = [i * 0.1 for i in range(int(min(top, 15) / 0.1) + 2)]
    for name in [n for n in LABELS if n in latencies and n != "daemon_traced"]:
        ms = [min(v * 1000, bins[-1]) for v in latencies[name]]
        p50, p99 = statistics.median(latencies[name]) * 1000, percentile(latencies[name], 99) * 1000
        ax.hist(ms, bins=bins, alpha=0.55, label=f"{LABELS[name]}: p50 {p50:.2f}, p99 {p99:.1f} ms")
    ax.set_xlabel("latency, last byte written -> alert received (ms; last bin includes the tail)")
    ax.set_ylabel("alarms (log scale)")
    ax.set_yscale("log")
    ax.set_title(f"End-to-end alarm latency, {len(latencies['floor'])} alarms per path")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def main() -> None:
    """Measure, print the table (text and JSON), write results/latency.json and the histogram."""
    with tempfile.TemporaryDirectory(prefix="vw-latency-") as tmp:
        res = run(Path(tmp))
    lat = res["latencies"]
    s = {name: summary_ms(v) for name, v in lat.items()}
    floor = s["floor_journal"]["p50_ms"]
    rows = []
    for name in FLOORS:
        rows += [row(f"{name} p50", s[name]["p50_ms"], "ms"), row(f"{name} p99", s[name]["p99_ms"], "ms")]
    rows.append(row("floor_journal p50 / floor p50", round(floor / s["floor"]["p50_ms"], 2), "x"))
    for name in lat:
        if name in FLOORS:
            continue
        ratio = round(s[name]["p50_ms"] / floor, 2)
        p99_target = {"daemon": 5.0, "daemon_cpu": 20.0}.get(name)
        rows += [
            row(f"{name} p50", s[name]["p50_ms"], "ms"),
            row(
                f"{name} p99",
                s[name]["p99_ms"],
                "ms",
                f"<= {p99_target:g}" if p99_target else "",
                s[name]["p99_ms"] <= p99_target if p99_target else None,
            ),
            row(f"{name} max", s[name]["max_ms"], "ms"),
            row(
                f"{name} p50 / floor_journal p50",
                ratio,
                "x",
                "<= 2" if name == "daemon" else "",
                ratio <= 2 if name == "daemon" else None,
            ),
        ]
    if "daemon_cpu" not in lat and res["cpu_limit"]["set"]:
        print("CPU-limited path not run (BENCH_LATENCY_PATHS left it out)")
    elif "daemon_cpu" not in lat:
        print(f"CPU limit NOT set ({res['cpu_limit']['how']}): measured unconstrained only")
    else:
        limit = res["cpu_limit"]
        rows.append(
            row("daemon_cpu: periods throttled during the alarms", limit["throttled_periods"], "periods")
        )
    rows += [
        row("outbox alert commit (FULL, disk) p50", res["commit_disk"]["p50_ms"], "ms"),
        row("outbox alert commit (FULL, disk) p99", res["commit_disk"]["p99_ms"], "ms"),
        row("outbox alert commit (tmpfs) p50", res["commit_tmpfs"]["p50_ms"], "ms"),
    ]
    rows += [row(f"stage: {name} p50", v["p50_ms"], "ms") for name, v in res["stages"].items()]
    for gen, g in res["gc"].items():
        rows.append(row(f"traced daemon GC {gen}: {g['count']} pauses, max", g["max_ms"], "ms"))
    plotted = plot(lat, PNG)
    report(
        "latency",
        rows,
        {
            "alarms_per_path": len(lat["floor"]),
            "labels": LABELS,
            "summaries_ms": s,
            "commit_disk_ms": res["commit_disk"],
            "commit_tmpfs_ms": res["commit_tmpfs"],
            "stages_ms": res["stages"],
            "gc_pauses": res["gc"],
            "cpu_limit": res["cpu_limit"],
            "histogram": str(PNG.relative_to(ROOT)) if plotted else None,
            "raw_latencies_s": {k: [round(x, 6) for x in v] for k, v in lat.items()},
        },
    )


def replot() -> None:
    """Redraw the histogram from results/latency.json (no new measurement)."""
    from bench.common import RESULTS

    doc = json.loads((RESULTS / "latency.json").read_text())
    plot(doc["raw_latencies_s"], PNG)


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "replot":
        replot()
    elif len(sys.argv) in (5, 6) and sys.argv[1] == "floor":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_floor(sys.argv[2], int(sys.argv[3]), sys.argv[4], *sys.argv[5:]))
    else:
        main()
