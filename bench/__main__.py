"""``python -m bench [NAME ...]``: run the registered benchmarks (all of them by default).

Adding a benchmark is adding a module with ``main() -> None`` to :data:`BENCHMARKS`; nothing
else registers itself, so what runs is exactly what is listed here.
"""

from __future__ import annotations

import importlib
import sys

# Module names, run in this order.
BENCHMARKS: tuple[str, ...] = (
    "bench.decode",
    "bench.hl7",
    "bench.mllp_listener",
    "bench.alarm_quality",
    "bench.alarm_sweep",
    "bench.replay_speed",
    "bench.engine_identity",
    "bench.latency",
    "bench.throughput",
    "bench.footprint",
    "bench.sd_budget",
    "bench.snapshot_budget",
    "bench.journal_budget",
    "bench.pcd04",
    "bench.registry",
    "bench.bridge",
)


def main(argv: list[str]) -> int:
    """Run the benchmarks named in ``argv`` (short names like ``decode``), or all.

    Options after the names (``alarm_quality --sessions 300``) go to the named benchmark; with
    options, exactly one benchmark must be named, so no option lands on a benchmark it was not
    meant for.
    """
    dash = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:dash], argv[dash:]
    if options and len(names) != 1:
        print("options need exactly one benchmark name before them", file=sys.stderr)
        return 2
    wanted = set(names)
    unknown = wanted - {name.rpartition(".")[2] for name in BENCHMARKS}
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    for name in BENCHMARKS:
        if wanted and name.rpartition(".")[2] not in wanted:
            continue
        print(f"== {name}")
        sys.argv = [name, *options]  # without options each module's arguments take their defaults
        importlib.import_module(name).main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
