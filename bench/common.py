"""Shared parts of the daemon benchmarks: ptys, a broker, a daemon process, a subscriber process.

Why one module: the latency, throughput and footprint benchmarks all run the real daemon
(``python -m vitalwatch run``) as a separate process against a real Mosquitto on loopback and
feed it from pseudo-terminals, and they must do it the same way so their numbers compare.

Clocks: every timestamp that is compared across processes is ``clock_gettime(CLOCK_MONOTONIC)``
(:func:`mono`), which is one system-wide clock on Linux, so a write time taken in the writer
process and a receive time taken in the subscriber process are on the same time line.

The subscriber is this module run as a script (``python -m bench.common subscribe ...``): a
plain paho client in its own process that stamps each message on arrival and writes them all
to a JSON file when it gets SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import tty
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SITE = "bench"
PREFIX = "vitalwatch/v1"
_MASIMO_CLOCK = datetime(2024, 3, 4, 9, 0, 0)


def mono() -> float:
    """CLOCK_MONOTONIC seconds: one clock for every process on this machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of durations given in seconds, in milliseconds."""
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


# ---------------------------------------------------------------------------------------- ptys
@dataclass
class Pty:
    """A pseudo-terminal whose master we write (the simulated device) and whose slave the daemon opens."""

    master: int
    slave: int  # kept open so writes never fail while the daemon (re)opens the slave
    path: str

    @classmethod
    def open(cls) -> Pty:
        master, slave = os.openpty()
        tty.setraw(slave)  # bytes go through as a cable carries them
        return cls(master, slave, os.ttyname(slave))

    def write(self, data: bytes) -> int:
        """Write all of ``data`` (blocking master); returns bytes written."""
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]
        return len(data)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def masimo_line(spo2: int, pulse: int, second: int = 0) -> bytes:
    """One Rad-8 ASCII 1 line from the driver's own encoder (SpO2, pulse, PI; SpCO/SpMet dashes)."""
    from datetime import timedelta

    from vitalwatch.drivers.masimo import encode_line

    line: bytes = encode_line(
        when=_MASIMO_CLOCK + timedelta(seconds=second % 86400),
        spo2=spo2,
        pulse_rate=pulse,
        perfusion_index=3.6,
    )
    return line


# ---------------------------------------------------------------------------------------- config
def zero_delay_alarms() -> dict[str, Any]:
    """[alarms] overrides: only spo2_low_high, zero sustain, in every phase, not latching.

    Zero condition delay makes the alarm the direct consequence of one line; not latching and
    every other rule off means each crossing after a recovery line raises a new alert_id.
    """
    from vitalwatch.engine.table import load_alarm_table

    ids = [r.id for r in load_alarm_table(None).rules]
    rules: dict[str, Any] = {i: {"enabled": False} for i in ids if i != "spo2_low_high"}
    rules["spo2_low_high"] = {"sustain_s": 0, "phases": ["baseline", "infusion", "recovery"]}
    return {"table": "default", "latching": {"high": False}, "rules": rules}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _toml_table(name: str, data: Mapping[str, Any], out: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    out.append(f"[{name}]")
    out += [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
    for k, v in data.items():
        if isinstance(v, Mapping):
            _toml_table(f"{name}.{k}", v, out)


def write_config(
    path: Path,
    *,
    broker_port: int,
    state_dir: Path,
    beds: Mapping[str, Sequence[tuple[str, str, str]]],
    alarms: Mapping[str, Any] | None = None,
    log_level: str = "info",
) -> Path:
    """A daemon TOML: ``beds`` maps bed id -> [(device id, driver, url)]."""
    out = [f"site = {_toml_value(SITE)}"]
    _toml_table(
        "mqtt",
        {"host": "127.0.0.1", "port": broker_port, "heartbeat_s": 5.0, "keepalive_s": 30},
        out,
    )
    _toml_table("state", {"directory": str(state_dir)}, out)
    _toml_table("logging", {"level": log_level, "format": "json"}, out)
    _toml_table("alarms", alarms or {"table": "default"}, out)
    for bed, devices in beds.items():
        out += ["[[beds]]", f"id = {_toml_value(bed)}"]
        for dev_id, driver, url in devices:
            out += ["[[beds.devices]]", f"id = {_toml_value(dev_id)}"]
            out += [f"driver = {_toml_value(driver)}", f"url = {_toml_value(url)}"]
    path.write_text("\n".join(out) + "\n")
    return path


# ---------------------------------------------------------------------------------------- CPU limit
CPU_PERIOD_US = 100_000  # what systemd's CPUQuota= uses


@dataclass
class CpuLimit:
    """A CPU quota (a share of one core) for a daemon, as ``systemd-run -p CPUQuota=`` sets it.

    Why: a Raspberry Pi 4 core is several times slower than this machine's, so the benchmarks
    also run the daemon with only part of a core. The limit is a cgroup of its own: cgroup v2
    (``cpu.max``) where the unified hierarchy has the cpu controller, else cgroup v1
    (``cpu.cfs_quota_us``), created here and removed by :meth:`close`. When neither can be
    created (no permission, no controller), :attr:`available` is False and :attr:`how` says
    why: the caller reports that and measures unconstrained only.

    A quota is not a slower core: the daemon runs at full speed until it has used its share of
    the 100 ms period, then waits for the next period. Below the quota it is never throttled;
    :meth:`throttled` says whether it was.
    """

    quota: float  # share of one core, e.g. 0.25
    how: str  # how the limit was set, or why it could not be
    directory: Path | None = None
    version: int = 0  # 1 or 2; 0 when not available

    @property
    def available(self) -> bool:
        return self.directory is not None

    @classmethod
    def create(cls, quota: float, name: str = "vitalwatch-bench") -> CpuLimit:
        """Make a cgroup limited to ``quota`` of one core (or say why not)."""
        name = f"{name}-{os.getpid()}"
        quota_us = max(1000, round(quota * CPU_PERIOD_US))
        reasons = []
        for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
            controllers = root / "cgroup.controllers"
            if not controllers.is_file():
                continue
            if "cpu" not in controllers.read_text().split():
                reasons.append(f"cgroup v2 at {root} has no cpu controller")
                continue
            try:
                (root / "cgroup.subtree_control").write_text("+cpu")
                d = root / name
                d.mkdir(exist_ok=True)
                (d / "cpu.max").write_text(f"{quota_us} {CPU_PERIOD_US}")
            except OSError as exc:
                reasons.append(f"cgroup v2 at {root}: {exc.strerror or exc}")
                continue
            return cls(quota, f"cgroup v2 {d}/cpu.max = {quota_us} {CPU_PERIOD_US}", d, 2)
        for root in (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/cpu,cpuacct")):
            if not (root / "cpu.cfs_quota_us").is_file():
                continue
            try:
                d = root / name
                d.mkdir(exist_ok=True)
                (d / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                (d / "cpu.cfs_quota_us").write_text(str(quota_us))
            except OSError as exc:
                reasons.append(f"cgroup v1 at {root}: {exc.strerror or exc}")
                continue
            return cls(quota, f"cgroup v1 {d}/cpu.cfs_quota_us = {quota_us} per {CPU_PERIOD_US} us", d, 1)
        return cls(quota, "; ".join(reasons) or "no cgroup cpu controller found under /sys/fs/cgroup")

    def enter(self) -> None:
        """Move the calling process into the limit (a ``preexec_fn``: runs in the child)."""
        if self.directory is not None:
            (self.directory / "cgroup.procs").write_text(str(os.getpid()))

    def throttled(self) -> dict[str, float]:
        """The cgroup's throttling counters (periods, throttled periods, throttled seconds)."""
        if self.directory is None:
            return {}
        stat = {}
        for line in (self.directory / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            stat[key] = int(value)
        throttled_s = stat.get("throttled_usec", 0) / 1e6 or stat.get("throttled_time", 0) / 1e9
        return {
            "periods": stat.get("nr_periods", 0),
            "throttled_periods": stat.get("nr_throttled", 0),
            "throttled_s": round(throttled_s, 3),
        }

    def close(self) -> None:
        """Remove the cgroup (its processes must have exited)."""
        if self.directory is not None:
            with contextlib.suppress(OSError):
                self.directory.rmdir()


# ---------------------------------------------------------------------------------------- daemon
@dataclass
class DaemonProcess:
    """``python -m vitalwatch run`` as a child process, its JSON log in a file."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float  # mono() just before Popen

    @classmethod
    def start(
        cls,
        config: Path,
        log_path: Path,
        *,
        cpu: int | None = None,
        env: Mapping[str, str] | None = None,
        launcher: str | None = None,
        limit: CpuLimit | None = None,
    ) -> DaemonProcess:
        """Start the daemon.

        ``launcher``: a module run instead of ``vitalwatch`` that installs something first and
        then runs the daemon (``bench.stagetrace``); ``limit``: start it inside that CPU limit.
        """
        cmd = [sys.executable, "-m", "vitalwatch", "run", "--config", str(config)]
        if launcher is not None:
            cmd = [sys.executable, "-m", launcher, "--config", str(config)]
        if cpu is not None and hasattr(os, "sched_setaffinity"):
            cmd = ["taskset", "-c", str(cpu), *cmd]
        log = log_path.open("wb")
        started = mono()
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            preexec_fn=limit.enter if limit is not None else None,  # noqa: PLW1509
        )
        log.close()
        return cls(proc, log_path, started)

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found

    def wait_for(self, event: str, count: int = 1, timeout: float = 30.0) -> float:
        """Wait until ``event`` has been logged ``count`` times; returns mono() when seen."""
        deadline = mono() + timeout
        while mono() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited ({self.proc.returncode}); see {self.log_path}")
            if sum(1 for e in self.events() if e.get("event") == event) >= count:
                return mono()
            time.sleep(0.01)
        raise TimeoutError(f"daemon did not log {event} x{count} within {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rss_kb(self) -> int:
        """Resident set size of the daemon (the Python process, not taskset, which execs it)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


# ---------------------------------------------------------------------------------------- subscriber
@dataclass
class Subscriber:
    """The independent MQTT subscriber process; :meth:`finish` returns what it received."""

    proc: subprocess.Popen[bytes]
    out: Path

    @classmethod
    def start(
        cls, broker_port: int, topics: Sequence[str], out: Path, *, cpu: int | None = None
    ) -> Subscriber:
        ready = out.with_suffix(".ready")
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "bench.common", "subscribe", str(broker_port), str(out), *topics]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        proc = subprocess.Popen(cmd, cwd=ROOT)
        deadline = mono() + 20
        while not ready.exists():
            if proc.poll() is not None or mono() > deadline:
                raise RuntimeError("subscriber did not start")
            time.sleep(0.01)
        return cls(proc, out)

    def finish(self) -> list[tuple[float, str, bytes]]:
        """Stop the process; (receive time, topic, payload) in arrival order."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=15)
        rows = json.loads(self.out.read_text())
        return [(t, topic, bytes.fromhex(body)) for t, topic, body in rows]


def _subscribe_main(port: int, out: Path, topics: list[str]) -> None:
    """Stamp every message with CLOCK_MONOTONIC on arrival; dump them on SIGTERM."""
    import paho.mqtt.client as mqtt

    got: list[tuple[float, str, bytes]] = []

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        got.append((mono(), msg.topic, msg.payload))

    def on_connect(c: Any, _u: Any, _f: Any, _rc: Any, _p: Any = None) -> None:
        c.subscribe([(t, 1) for t in topics])

    def on_subscribe(*_a: Any) -> None:
        out.with_suffix(".ready").write_text("ok")

    version = mqtt.CallbackAPIVersion.VERSION2  # type: ignore[attr-defined]
    client = mqtt.Client(version, client_id=f"bench-sub-{os.getpid()}")
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_forever()
    out.write_text(json.dumps([(t, topic, body.hex()) for t, topic, body in got]))


# ---------------------------------------------------------------------------------------- reporting
def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import platform

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def report(name: str, rows: list[dict[str, Any]], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Print ``rows`` (metric, value, unit, target, met) as text and JSON; write results/NAME.json."""
    doc = {"benchmark": name, "machine": machine(), "rows": rows, **(extra or {})}
    width = max(len(r["metric"]) for r in rows) if rows else 10
    print(f"{'metric':<{width}}  {'value':>12} {'unit':<10} {'target':<14} met")
    for r in rows:
        met = "" if r.get("met") is None else ("yes" if r["met"] else "NO")
        print(f"{r['metric']:<{width}}  {r['value']:>12} {r['unit']:<10} {r.get('target', ''):<14} {met}")
    print(json.dumps({"benchmark": name, "rows": rows}))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def row(metric: str, value: float, unit: str, target: str = "", met: bool | None = None) -> dict[str, Any]:
    return {"metric": metric, "value": value, "unit": unit, "target": target, "met": met}


def start_broker(workdir: Path, *, cpu: int | None = None) -> Any:
    """A real Mosquitto on a free loopback port (optionally pinned to ``cpu``)."""
    from vitalwatch.testing import Mosquitto

    broker = Mosquitto(workdir)
    broker.start()
    if cpu is not None and broker.process is not None:
        os.sched_setaffinity(broker.process.pid, {cpu})
    return broker


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "subscribe":
        _subscribe_main(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
    else:
        print("usage: python -m bench.common subscribe PORT OUT TOPIC...", file=sys.stderr)
        sys.exit(2)
