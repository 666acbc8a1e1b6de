"""Messages per second through the MLLP listener with N networked monitors connected at once.

Why: the listener is the one place every networked monitor's messages pass through (framing,
routing by PV1-3, the bed's HL7 driver, an ACK each). A real monitor sends one message a second
and waits for its ACK; this measures how far above that one gateway is.

Setup: one listener on loopback, N routes (locations ``CHAIR^^1..N``, a bed session that only
counts what it gets), N asyncio clients in the same process and event loop, each sending
``MESSAGES_PER_CLIENT`` PCD-01 messages from the HL7 simulator (SpO2, pulse, perfusion index,
respiratory rate: about 1 KB each) **one at a time, waiting for each ACK**, as a monitor does.
Rate = all messages / wall time from the first send to the last ACK. Median of ``RUNS`` runs.
The clients share the process (and the machine's 2 cores), so the figure is a floor for the
listener alone.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from vitalwatch.config import DeviceConfig
from vitalwatch.drivers.base import SerialSettings
from vitalwatch.drivers.events import Event
from vitalwatch.drivers.mllp import MllpDeframer
from vitalwatch.link.mllp_listener import MllpHub, MllpListener
from vitalwatch.simulators.base import PatientState
from vitalwatch.simulators.hl7 import Hl7Simulator

RUNS = 5
CLIENTS = (1, 4, 16)
MESSAGES_PER_CLIENT = 300
RESULTS = Path(__file__).resolve().parent / "results" / "mllp_listener.json"


@dataclass(frozen=True, slots=True)
class _Steady:
    name: str = "bench"
    duration: float = 3600.0
    phases: tuple[tuple[float, str], ...] = ()

    def state_at(self, t: float) -> PatientState:
        return PatientState(spo2=97, pulse_rate=72, perfusion_index=2.4, systolic=122, diastolic=78, mean=92)


class _CountingBed:
    """A bed session that only counts (the engine has its own benchmarks)."""

    def __init__(self) -> None:
        self.events = 0

    def on_bytes(self, device: str, now: float) -> None:
        pass

    def on_events(self, device: str, events: list[Event], now: float) -> None:
        self.events += len(events)

    def on_link(self, device: str, up: bool, now: float, reason: str) -> None:
        pass


def _blocks(n: int, seed: int) -> list[bytes]:
    """``n`` MLLP-framed vitals messages of simulated monitor ``seed`` (location ``CHAIR^^seed``)."""
    sim = Hl7Simulator(_Steady(), seed=seed, location=f"CHAIR^^{seed}", resp_rate=True,
                       wait_for_ack=False, queue_limit=n + 10, nibp_interval_s=1e9)  # fmt: skip
    stream = sim.poll(float(n - 1))
    framed = []
    start = 0
    while (end := stream.find(b"\x1c\r", start)) >= 0:
        framed.append(stream[start : end + 2])
        start = end + 2
    return framed[:n]


async def _client(port: int, blocks: list[bytes]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    deframer = MllpDeframer()
    try:
        for block in blocks:
            writer.write(block)
            await writer.drain()
            acked = False
            while not acked:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the listener closed the connection")
                acked = any(isinstance(a, bytes) for a in deframer.feed(data))
    finally:
        writer.close()


async def _run(clients: int) -> tuple[float, int]:
    hub = MllpHub()
    beds = [_CountingBed() for _ in range(clients)]
    routes = [
        hub.link(
            DeviceConfig(id="monitor", driver="hl7", url="mllp://127.0.0.1:0", role="multi",
                         serial=SerialSettings(), location=f"CHAIR^^{n}"),
            bed,
        )
        for n, bed in enumerate(beds, start=1)
    ]  # fmt: skip
    listener: MllpListener = next(iter(hub.listeners.values()))
    tasks = [asyncio.create_task(r.run()) for r in routes]
    try:
        while listener.bound_port is None:  # noqa: ASYNC110 - the route tasks bind it
            await asyncio.sleep(0.01)
        port = listener.bound_port
        work = [_blocks(MESSAGES_PER_CLIENT, n) for n in range(1, clients + 1)]
        start = time.perf_counter()
        await asyncio.gather(*(_client(port, blocks) for blocks in work))
        elapsed = time.perf_counter() - start
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    accepted = sum(r.accepted for r in routes)
    assert accepted == clients * MESSAGES_PER_CLIENT, (accepted, clients)
    return elapsed, accepted


def main() -> None:
    """Print the table and write bench/results/mllp_listener.json."""
    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(30)
    )  # no per-connection info lines
    rows = []
    print(f"{'clients':>7} {'messages':>9} {'median s':>9} {'messages/s':>11} {'per client/s':>13}")
    for clients in CLIENTS:
        runs = [asyncio.run(_run(clients)) for _ in range(RUNS)]
        elapsed = statistics.median(r[0] for r in runs)
        total = runs[0][1]
        rate = total / elapsed
        rows.append(
            {"clients": clients, "messages": total, "median_s": elapsed, "messages_per_s": rate, "runs": RUNS}
        )
        print(f"{clients:>7} {total:>9} {elapsed:>9.3f} {rate:>11.0f} {rate / clients:>13.0f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
