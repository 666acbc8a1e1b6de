"""HL7 messages decoded per second: our driver (MLLP + parse + observations + ACK) vs ``hl7.parse``.

Why: the driver wraps python-hl7's ``hl7.parse`` with MLLP deframing, segment-end normalisation,
escape decoding, unit checks and an ACK per message. This measures what that costs on top of the
parser alone (the ratio), and how far above the serial line's message rate we are: a 9600 baud
line carries about 1.6 of these ~600-byte messages per second.

Input: 10 minutes of the HL7 simulator (1 s SpO2/pulse/PI messages, NIBP every 60 s) plus the
ORU^R01 samples from ``tests/vectors/hl7`` (Mindray, Comen, northern, LinkWatch), 50 copies each.
Timing: median of 5 runs. The driver is fed the MLLP stream in 4 KiB chunks; the baseline calls
``hl7.parse`` on each message's text (already CR-normalised, so it does strictly less work).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import hl7

from vitalwatch.drivers.events import Observation
from vitalwatch.drivers.hl7 import Hl7Driver
from vitalwatch.drivers.mllp import MllpDeframer, encode_block
from vitalwatch.simulators.base import PatientState
from vitalwatch.simulators.hl7 import Hl7Simulator

RUNS = 5
CHUNK = 4096
SIM_SECONDS = 600.0
SAMPLE_COPIES = 50
ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors" / "hl7"
RESULTS = Path(__file__).resolve().parent / "results" / "hl7.json"
SAMPLES = (
    "mindray_vs900_demo_pcd01.txt",
    "comen_nc_monitor_pcd01.hl7",
    "northern_monitor_pcd01_invalid_values.txt",
    "linkwatch_pcd01_nibp.txt",
)


@dataclass(frozen=True, slots=True)
class _Steady:
    """A steady patient, so the bench does not depend on the scenario library."""

    name: str = "bench"
    duration: float = SIM_SECONDS
    phases: tuple[tuple[float, str], ...] = ()

    def state_at(self, t: float) -> PatientState:
        return PatientState(spo2=97, pulse_rate=72, perfusion_index=2.4, systolic=122, diastolic=78, mean=92)


def messages() -> list[bytes]:
    """Message payloads (no framing): simulator output plus the real samples."""
    sim = Hl7Simulator(_Steady(), nibp_interval_s=60.0, wait_for_ack=False, queue_limit=1024)
    out = [m for m in MllpDeframer().feed(sim.poll(SIM_SECONDS)) if isinstance(m, bytes)]
    for name in SAMPLES:
        out += [(VECTORS / name).read_bytes()] * SAMPLE_COPIES
    return out


def _driver_run(stream: bytes) -> tuple[float, int]:
    driver = Hl7Driver()
    n_obs = 0
    start = time.perf_counter()
    for i in range(0, len(stream), CHUNK):
        for event in driver.feed(stream[i : i + CHUNK], 0.0):
            if isinstance(event, Observation):
                n_obs += 1
        driver.data_to_send()
    elapsed = time.perf_counter() - start
    return elapsed, n_obs


def _parse_run(texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        hl7.parse(text)
    return time.perf_counter() - start


def main() -> None:
    """Print the table and write bench/results/hl7.json."""
    payloads = messages()
    stream = b"".join(encode_block(p) for p in payloads)
    texts = [p.decode("utf-8").replace("\r\n", "\r").replace("\n", "\r").strip() for p in payloads]
    driver_runs = [_driver_run(stream) for _ in range(RUNS)]
    parse_runs = [_parse_run(texts) for _ in range(RUNS)]
    driver_s = statistics.median(r[0] for r in driver_runs)
    parse_s = statistics.median(parse_runs)
    n = len(payloads)
    result = {
        "messages": n,
        "bytes": len(stream),
        "observations": driver_runs[0][1],
        "runs": RUNS,
        "driver_median_s": driver_s,
        "driver_messages_per_s": n / driver_s,
        "hl7_parse_median_s": parse_s,
        "hl7_parse_messages_per_s": n / parse_s,
        "driver_vs_parse_ratio": (n / driver_s) / (n / parse_s),
        "line_messages_per_s_9600": 960.0 / (len(stream) / n),
    }
    print(f"{'what':<28} {'messages/s':>12} {'median s':>10}")
    print(f"{'driver (MLLP+parse+obs+ACK)':<28} {result['driver_messages_per_s']:>12.0f} {driver_s:>10.4f}")
    print(f"{'hl7.parse alone':<28} {result['hl7_parse_messages_per_s']:>12.0f} {parse_s:>10.4f}")
    print(
        f"{n} messages, {len(stream)} bytes, {result['observations']} observations; "
        f"driver/parse speed ratio {result['driver_vs_parse_ratio']:.2f}; "
        f"a 9600 baud line carries {result['line_messages_per_s_9600']:.1f} messages/s"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
