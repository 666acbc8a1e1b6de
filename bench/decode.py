"""Decode throughput of every registered driver, as a multiple of its device's serial line rate.

Why: one Raspberry Pi serves several chairs, and ``vitalwatch replay`` pushes hours of captures
through the same drivers. A driver that decodes at least 1000x faster than its device can send
(``SerialSettings.bytes_per_second()``) costs under 0.1 % of a core per device, so the target is
a ratio >= 1000.

Input per driver, first that works:

1. simulated: the family's simulator on the ``normal`` scenario for 10 minutes, wired to a live
   driver so request/response devices get their commands (recorded once, outside the timing);
2. samples: the files in ``tests/vectors/`` for that family;
3. skip, printing why (driver module not importable yet, or no input at all).

Either input is repeated back to back to at least 64 KiB so the clock's grain does not matter.

Each run feeds a fresh driver in 64-byte chunks (about what a serial read returns) with virtual
time advancing at the device's own byte rate (simulated input) or the line rate (samples), then
``feed_eof()``; the median of 5 runs is reported.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from vitalwatch.drivers import DRIVERS, driver_class
from vitalwatch.drivers.base import Driver, MeasurementStarter
from vitalwatch.drivers.events import DecodeProblem, Observation

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
RESULTS = Path(__file__).resolve().parent / "results"

CHUNK = 64
RUNS = 5
SIM_SECONDS = 600.0
SIM_STEP = 0.25  # scenario seconds between simulator polls while recording
NIBP_INTERVAL = 60.0  # start a cuff cycle this often while recording an NIBP simulator
MIN_SAMPLE_BYTES = 64 * 1024
TARGET_RATIO = 1000.0

# Sample fallback: (path under tests/vectors, how to read it).
# "raw" = bytes as stored; "hex" = hex byte pairs per line, '#' comments dropped; "mllp" = an HL7
# message wrapped in an MLLP block (the files hold bare messages).
SAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "masimo": (
        ("masimo/rad8_ascii1_capture_yahnatan.txt", "raw"),
        ("masimo/rad8_trend_sample_output_manual.txt", "raw"),
        ("masimo/radical5_example_mdpnp.bin", "raw"),
        ("masimo/radical7_example_mdpnp.bin", "raw"),
    ),
    "nonin": (("nonin/oem3_format2_frames_pufferfish_tests.hex", "hex"),),
    "nellcor": (("nellcor/npb29x_realtime_printout_manual.txt", "raw"),),
    "contec": (("contec_berrymed/cms50dplus_v7_realtime_stream_headrotor.bin", "raw"),),
    "suntech": (("nibp/suntech_advantage_vectors_ak-git.hex", "hex"),),
    "accutorr": (("nibp/accutorr3_patient_data_example_manual.txt", "raw"),),
    "hl7": (
        ("hl7/comen_nc_monitor_pcd01.hl7", "mllp"),
        ("hl7/linkwatch_pcd01_nibp.txt", "mllp"),
        ("hl7/mindray_vs900_demo_pcd01.txt", "mllp"),
    ),
}


@dataclass(frozen=True, slots=True)
class Row:
    """One driver's result (also the JSON record)."""

    driver: str
    source: str
    bytes: int
    observations: int
    problems: int
    median_s: float
    bytes_per_s: float
    observations_per_s: float
    line_bytes_per_s: float
    ratio: float


def _read_sample(path: Path, how: str) -> bytes:
    data = path.read_bytes()
    if how == "raw":
        return data
    if how == "mllp":
        return b"\x0b" + data + b"\x1c\x0d"
    out = bytearray()
    for line in data.decode("ascii", "replace").splitlines():
        for token in line.partition("#")[0].split():
            if len(token) == 2:
                try:
                    out += bytes.fromhex(token)
                except ValueError:
                    continue
    return bytes(out)


def sample_input(name: str) -> bytes | None:
    """The family's sample files, repeated so the timing is not dominated by the clock's grain."""
    files = SAMPLES.get(name)
    if not files:
        return None
    once = b"".join(_read_sample(VECTORS / rel, how) for rel, how in files)
    return _at_least(once, MIN_SAMPLE_BYTES) if once else None


def _at_least(data: bytes, size: int) -> bytes:
    """``data`` repeated back to back until it is at least ``size`` bytes (whole copies only)."""
    return data * max(1, -(-size // len(data)))


# Bytes per second each simulator really sent while recording (set by simulated_input).
_SIM_RATE: dict[str, float] = {}


def simulated_input(name: str) -> tuple[bytes | None, str]:
    """10 min of the ``normal`` scenario from the family's simulator, or (None, why not)."""
    try:
        from vitalwatch.simulators import simulator_class
        from vitalwatch.simulators.scenarios import get_scenario

        sim_cls = simulator_class(name)
        scenario = get_scenario("normal", seed=0)
    except (ImportError, KeyError, AttributeError) as exc:
        return None, f"no simulator ({type(exc).__name__}: {exc})"
    try:
        sim = sim_cls(scenario, seed=0)  # type: ignore[call-arg]
        driver = driver_class(name)()
        out = bytearray()
        t = 0.0
        next_cuff = 0.0
        while t <= SIM_SECONDS:
            if isinstance(driver, MeasurementStarter) and t >= next_cuff:
                driver.start_measurement()
                next_cuff += NIBP_INTERVAL
            deadline = driver.next_deadline()
            if deadline is not None and deadline <= t:
                driver.on_timer(t)
            host = driver.data_to_send()
            if host:
                sim.receive(host, t)
            chunk = sim.poll(t)
            out += chunk
            driver.feed(chunk, t)
            t += SIM_STEP
    except Exception as exc:  # a half-written simulator must not stop the other families
        return None, f"simulator failed ({type(exc).__name__}: {exc})"
    if not out:
        return None, "simulator emitted no bytes"
    _SIM_RATE[name] = len(out) / SIM_SECONDS
    # Ten minutes of a slow NIBP module is a couple of kB: repeat the session so the timing is
    # not dominated by the clock's grain (back-to-back sessions are still valid device bytes).
    return _at_least(bytes(out), MIN_SAMPLE_BYTES), ""


def _one_run(cls: type[Driver], chunks: list[tuple[bytes, float]]) -> tuple[float, int, int]:
    driver = cls()
    n_obs = n_prob = 0
    start = time.perf_counter()
    for chunk, now in chunks:
        for event in driver.feed(chunk, now):
            if isinstance(event, Observation):
                n_obs += 1
            elif isinstance(event, DecodeProblem):
                n_prob += 1
    for event in driver.feed_eof():
        if isinstance(event, Observation):
            n_obs += 1
        elif isinstance(event, DecodeProblem):
            n_prob += 1
    return time.perf_counter() - start, n_obs, n_prob


def measure(
    name: str, cls: type[Driver], data: bytes, source: str, *, device_rate: float | None = None
) -> Row:
    """Median of RUNS decodes of ``data`` in CHUNK-byte pieces.

    Virtual time advances at ``device_rate`` bytes/s (what the simulator really sent per second)
    when known, else at the line rate: drivers that rate-limit by time (Nonin reports once per
    second of ``now``) then report as often as they would on the wire.
    """
    line_rate = cls.serial.bytes_per_second()
    clock_rate = device_rate or line_rate
    chunks = [(data[i : i + CHUNK], i / clock_rate) for i in range(0, len(data), CHUNK)]
    runs = [_one_run(cls, chunks) for _ in range(RUNS)]
    median = statistics.median(r[0] for r in runs)
    _, n_obs, n_prob = runs[0]
    bytes_per_s = len(data) / median if median > 0 else float("inf")
    return Row(
        driver=name,
        source=source,
        bytes=len(data),
        observations=n_obs,
        problems=n_prob,
        median_s=median,
        bytes_per_s=bytes_per_s,
        observations_per_s=n_obs / median if median > 0 else float("inf"),
        line_bytes_per_s=line_rate,
        ratio=bytes_per_s / line_rate,
    )


def _print_table(rows: list[Row]) -> None:
    header = (
        f"{'driver':<12} {'source':<9} {'bytes':>9} {'obs':>7} {'probl':>6} {'median s':>9} "
        f"{'bytes/s':>11} {'obs/s':>10} {'line B/s':>8} {'ratio':>9}  target"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        verdict = "ok" if r.ratio >= TARGET_RATIO else "BELOW"
        print(
            f"{r.driver:<12} {r.source:<9} {r.bytes:>9} {r.observations:>7} {r.problems:>6} "
            f"{r.median_s:>9.4f} {r.bytes_per_s:>11.0f} {r.observations_per_s:>10.0f} "
            f"{r.line_bytes_per_s:>8.0f} {r.ratio:>8.0f}x  {verdict}"
        )


def main() -> None:
    """Benchmark every registered driver; print a table; write ``results/decode.json``."""
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    for name in sorted(DRIVERS):
        try:
            cls = driver_class(name)
        except ImportError as exc:
            skipped[name] = f"driver does not import ({exc})"
            print(f"skip {name}: {skipped[name]}")
            continue
        data, why = simulated_input(name)
        source = "simulated"
        device_rate = _SIM_RATE.get(name)
        if data is None:
            data = sample_input(name)
            source = "samples"
            if data is None:
                skipped[name] = f"{why}; no sample files"
                print(f"skip {name}: {skipped[name]}")
                continue
            print(f"{name}: using sample files ({why})")
        rows.append(
            measure(name, cls, data, source, device_rate=device_rate if source == "simulated" else None)
        )
    print()
    _print_table(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "decode",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "chunk_bytes": CHUNK,
        "runs": RUNS,
        "target_ratio": TARGET_RATIO,
        "rows": [asdict(r) for r in rows],
        "skipped": skipped,
    }
    out = RESULTS / "decode.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")
