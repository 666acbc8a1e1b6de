"""``vitalwatch simulate``: play a scenario on a simulated monitor over a pty or TCP port.

Why: the daemon, the demo and a field engineer all need a monitor that speaks the real bytes
without the hardware. The first stdout line says where to connect, so scripts can read it::

    $ vitalwatch simulate --device masimo --scenario desaturation
    serving masimo on /dev/pts/5
    $ vitalwatch simulate --device masimo --scenario normal --tcp 7001 --speed 10
    serving masimo on socket://127.0.0.1:7001

A networked HL7 monitor is a client instead: ``--connect mllp://HOST:PORT`` connects to an MLLP
listener (the daemon's ``url = "mllp://..."`` devices), ``--monitors N`` runs N of them at once
(seeds SEED..SEED+N-1, so N different EUI-64s; ``{n}`` in ``--option location=...`` becomes
1..N). One line per monitor says who it is, so a test or an engineer can write the routes::

    $ vitalwatch simulate --device hl7 --scenario normal --connect mllp://127.0.0.1:2575 \\
          --monitors 2 --option 'location=ICU^^{n}' --option resp_rate=true
    connecting hl7 to mllp://127.0.0.1:2575 eui64=... location=ICU^^1
    connecting hl7 to mllp://127.0.0.1:2575 eui64=... location=ICU^^2

The scenario clock starts at launch (``--speed`` scales it; ``--start-at`` skips ahead).
It exits 0 when the scenario ends, after ``--duration`` wall seconds, or on SIGINT/SIGTERM;
2 with one stderr line for an unknown device or scenario or a bad option. A summary (bytes
sent and dropped while no one was reading) goes to stderr at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import signal
import sys
from typing import Any

from vitalwatch.cli.decode import parse_options
from vitalwatch.link.mllp_routing import parse_mllp_url
from vitalwatch.simulators import SIMULATORS, make_simulator, simulator_class
from vitalwatch.simulators.base import DeviceSimulator
from vitalwatch.simulators.endpoint import Endpoint, connect_tcp, serve_pty, serve_tcp
from vitalwatch.simulators.scenarios import SCENARIO_NAMES, get_scenario

__all__ = ["register", "run"]

EXIT_OK = 0
EXIT_USAGE = 2

# Simulator options that are the device waiting for the host (keep-alive, ACK), in scenario
# seconds. The host on the other end is a real daemon on the wall clock, so at ``--speed S`` these
# are stretched by S: otherwise a Contec at --speed 20 would give up on keep-alives after 0.25 s
# of wall time and stop streaming, and the HL7 monitor would resend before the ACK could arrive.
HOST_WAITS: dict[str, tuple[str, ...]] = {
    "contec": ("keepalive_timeout",),
    "hl7": ("ack_timeout_s",),
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate`` to the ``vitalwatch`` command line."""
    parser = subparsers.add_parser(
        "simulate",
        help="serve a simulated monitor on a pty or TCP port",
        description="Play a patient scenario on a simulated device, speaking the device's real bytes.",
    )
    parser.add_argument("--device", required=True, metavar="NAME", help=f"({', '.join(sorted(SIMULATORS))})")
    parser.add_argument("--scenario", required=True, metavar="NAME", help=f"({', '.join(SCENARIO_NAMES)})")
    parser.add_argument("--speed", type=float, default=1.0, help="scenario seconds per wall second")
    parser.add_argument("--tcp", type=int, metavar="PORT", help="serve on 127.0.0.1:PORT instead of a pty")
    parser.add_argument("--seed", type=int, default=0, help="scenario and simulator seed")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S wall seconds")
    parser.add_argument("--start-at", type=float, default=0.0, metavar="T", help="start at scenario second T")
    parser.add_argument("--link", metavar="PATH", help="pty only: keep a symlink PATH to the slave")
    parser.add_argument(
        "--connect",
        metavar="URL",
        help="hl7 only: connect to an MLLP listener (mllp://HOST:PORT) as a networked monitor",
    )
    parser.add_argument(
        "--monitors", type=int, default=1, metavar="N", help="with --connect: N monitors at once (default 1)"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="simulator constructor option (repeatable); VALUE is read as int, float, true/false or text",
    )
    parser.set_defaults(func=run)


def _error(message: str) -> int:
    print(f"vitalwatch simulate: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    """Build the scenario and simulator, then serve until the end; returns the exit code."""
    if args.speed <= 0:
        return _error("--speed must be positive")
    try:
        options = parse_options(args.option)
        scenario = get_scenario(args.scenario, args.seed)
    except KeyError as exc:
        return _error(str(exc.args[0]) if exc.args else f"unknown scenario {args.scenario!r}")
    except ValueError as exc:
        return _error(str(exc))
    if args.connect is not None:
        return _run_clients(args, options)
    if args.monitors != 1:
        return _error("--monitors needs --connect")
    try:
        options = _stretch_host_waits(args.device, options, args.speed)
        sim = make_simulator(args.device, scenario, seed=args.seed, **options)
    except KeyError as exc:
        return _error(str(exc.args[0]) if exc.args else f"unknown device {args.device!r}")
    except ImportError as exc:
        return _error(f"simulator {args.device!r} is not available in this build ({exc})")
    except (TypeError, ValueError) as exc:
        return _error(f"bad option for simulator {args.device!r}: {exc}")
    try:
        asyncio.run(_serve(sim, args, until=scenario.duration))
    except OSError as exc:
        return _error(f"cannot serve: {exc.strerror or exc}")
    return EXIT_OK


def _run_clients(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """``--connect``: N simulated networked HL7 monitors, each its own seed and TCP connection."""
    if args.device != "hl7":
        return _error("--connect is for --device hl7 (a networked monitor speaks HL7 over MLLP)")
    if args.tcp is not None or args.link is not None:
        return _error("--connect cannot be combined with --tcp or --link")
    if not 1 <= args.monitors <= 256:
        return _error("--monitors must be 1-256")
    if args.monitors > 1 and "eui64" in options:
        return _error("--option eui64 names one monitor; leave it out with --monitors (seeds choose)")
    try:
        host, port = parse_mllp_url(args.connect)
    except ValueError as exc:
        return _error(f"--connect {exc}")
    sims: list[DeviceSimulator] = []
    until = 0.0
    try:
        options = _stretch_host_waits(args.device, options, args.speed)
        for n in range(1, args.monitors + 1):
            mine = dict(options)
            if isinstance(mine.get("location"), str):
                mine["location"] = mine["location"].replace("{n}", str(n))
            scenario = get_scenario(args.scenario, args.seed + n - 1)
            until = scenario.duration
            sims.append(make_simulator(args.device, scenario, seed=args.seed + n - 1, **mine))
    except (TypeError, ValueError) as exc:
        return _error(f"bad option for simulator {args.device!r}: {exc}")
    asyncio.run(_connect(sims, args, host, port, until=until))
    return EXIT_OK


async def _connect(
    sims: list[DeviceSimulator], args: argparse.Namespace, host: str, port: int, *, until: float
) -> None:
    """Run every monitor until the scenario ends, ``--duration`` passes, or a signal."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        endpoints = []
        for sim in sims:
            ep = await stack.enter_async_context(
                connect_tcp(
                    sim,
                    host=host,
                    port=port,
                    speed=args.speed,
                    start_at=args.start_at,
                    until=until,
                    duration=args.duration,
                )
            )
            endpoints.append(ep)
            who = f"eui64={getattr(sim, 'device_id', '?')} location={getattr(sim, 'location', '?')}"
            print(f"connecting {sim.device} to {ep.url} {who}", flush=True)
        await _until_finished_or_stopped(endpoints[0], stop)
        for n, ep in enumerate(endpoints, start=1):
            acked = getattr(ep.sim, "acked", 0)
            print(
                f"simulate: monitor {n} t={ep.scenario_time():.1f}s connections={ep.connections} "
                f"bytes_sent={ep.bytes_sent} bytes_dropped={ep.bytes_dropped} acked={acked}",
                file=sys.stderr,
            )


def _stretch_host_waits(device: str, options: dict[str, Any], speed: float) -> dict[str, Any]:
    """``options`` with the device's host-wait timeouts scaled by ``speed`` (see HOST_WAITS).

    A value given with ``--option`` is taken as scenario seconds and left alone.
    """
    waits = HOST_WAITS.get(device, ())
    if not waits or speed == 1.0:
        return options
    parameters = inspect.signature(simulator_class(device)).parameters
    stretched = dict(options)
    for name in waits:
        default = parameters[name].default if name in parameters else None
        if name not in stretched and isinstance(default, int | float):
            stretched[name] = default * speed
    return stretched


async def _serve(sim: DeviceSimulator, args: argparse.Namespace, *, until: float) -> None:
    """Serve until the scenario ends, ``--duration`` passes, or a signal asks us to stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    common: dict[str, Any] = {
        "speed": args.speed,
        "start_at": args.start_at,
        "until": until,
        "duration": args.duration,
    }
    server: contextlib.AbstractAsyncContextManager[Endpoint]
    if args.tcp is not None:
        server = serve_tcp(sim, port=args.tcp, **common)
    else:
        server = serve_pty(sim, link=args.link, **common)
    async with server as endpoint:
        print(f"serving {sim.device} on {endpoint.url}", flush=True)
        await _until_finished_or_stopped(endpoint, stop)
        print(
            f"simulate: t={endpoint.scenario_time():.1f}s bytes_sent={endpoint.bytes_sent} "
            f"bytes_dropped={endpoint.bytes_dropped}",
            file=sys.stderr,
        )


async def _until_finished_or_stopped(endpoint: Endpoint, stop: asyncio.Event) -> None:
    """Wait until the endpoint's scenario or duration ends, or a signal sets ``stop``."""
    finished = asyncio.create_task(endpoint.wait_finished(), name="simulate.finished")
    stopped = asyncio.create_task(stop.wait(), name="simulate.signal")
    await asyncio.wait({finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in (finished, stopped):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
