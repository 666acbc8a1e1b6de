"""Long fuzz of every driver, plus the precise timing of the pathological inputs (``make fuzz``).

Why: ``tests/drivers/test_fuzz.py`` runs 300 fixed seeds per driver inside ``make test``; this runs
many more (fresh seeds from a start value, for a time budget per driver) with the same generator
(:func:`vitalwatch.drivers.testing.fuzz_driver`) and the same invariant: only events come out,
nothing raises, every observation value is None or inside its plausible range. A failure prints
the driver and seed, and ``--driver NAME --start SEED --seconds 0`` replays exactly that seed.

``--pathological`` also times the inputs that used to be super-linear (HL7 OBX-5 of n digits and a
letter, the largest allowed HL7 message made of delimiters, a Masimo dash fill) at growing sizes:
the time per byte must stay flat. This is the precise measurement behind the coarse 2 s guard in
``tests/drivers/test_linear_parsing.py``.

Usage: ``python -m bench.fuzz_drivers [--seconds S] [--start SEED] [--driver NAME ...] [--pathological]``
(``make fuzz`` runs it with ``FUZZ_SECONDS`` per driver; it is not part of ``python -m bench``).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from vitalwatch.drivers import DRIVERS
from vitalwatch.drivers.hl7 import DEFAULT_MAX_MESSAGE_BYTES, Hl7Driver
from vitalwatch.drivers.masimo import MasimoDriver
from vitalwatch.drivers.mllp import encode_block
from vitalwatch.drivers.testing import fuzz_driver, fuzz_violations

HEAD = "MSH|^~\\&|MON|ICU|VW|H|20240101120000||ORU^R01^ORU_R01|1|P|2.6\rOBR|1|||x|||20240101120000\r"


def fuzz(name: str, start: int, seconds: float) -> tuple[int, list[str]]:
    """Seeds from ``start`` until ``seconds`` have passed (at least one); (seeds run, failures)."""
    failures: list[str] = []
    deadline = time.monotonic() + seconds
    seed = start
    while True:
        try:
            problems = fuzz_violations(list(fuzz_driver(name, seed)))
        except Exception:  # the invariant is "never raises": report it with the seed
            problems = ["raised:\n" + traceback.format_exc()]
        failures += [f"{name} seed {seed}: {p}" for p in problems]
        seed += 1
        if time.monotonic() >= deadline:
            return seed - start, failures


def _time_hl7(value: str) -> float:
    driver = Hl7Driver(max_block_bytes=len(value) + 4096)
    block = encode_block((HEAD + f"OBX|1|NM|150456^X^MDC|1|{value}|%|||||R\r").encode("latin-1"))
    start = time.perf_counter()
    driver.feed(block, 0.0)
    return time.perf_counter() - start


def _time_masimo(token: str) -> float:
    line = f"02/22/16 22:47:45 SPO2={token}% BPM=097 EXC=800\r\n".encode()
    driver = MasimoDriver(max_line_bytes=len(line) + 1)
    start = time.perf_counter()
    driver.feed(line, 0.0)
    return time.perf_counter() - start


def pathological() -> None:
    """Time per input byte at growing sizes: flat means linear."""
    cases = {
        "hl7 OBX-5 digits+letter": lambda n: _time_hl7("1" * n + "x"),
        "hl7 OBX-5 all '^'": lambda n: _time_hl7("^" * n),
        "masimo dash fill": lambda n: _time_masimo("-" * n + "x"),
    }
    print(f"  (HL7 default message bound: {DEFAULT_MAX_MESSAGE_BYTES} bytes)")
    for label, run in cases.items():
        cells = []
        for n in (4_000, 16_000, 64_000):
            took = min(run(n) for _ in range(3))
            cells.append(f"{n // 1000:>3}k: {took * 1e3:7.2f} ms ({took / n * 1e9:6.0f} ns/B)")
        print(f"  {label:26s} " + "  ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_drivers", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget per driver (default 20)")
    parser.add_argument("--start", type=int, default=1_000, help="first seed (make test uses 0-299)")
    parser.add_argument("--driver", action="append", choices=sorted(DRIVERS), help="only this driver")
    parser.add_argument("--pathological", action="store_true", help="also time the hostile inputs")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    failures: list[str] = []
    for name in args.driver or sorted(DRIVERS):
        count, found = fuzz(name, args.start, args.seconds)
        failures += found
        verdict = "ok" if not found else f"{len(found)} FAILED"
        print(f"  {name:12s} {count:7d} seeds from {args.start}: {verdict}")
    if args.pathological:
        pathological()
    for failure in failures[:20]:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
