"""The demo: simulated monitors on pseudo-terminals, a broker, the daemon, and a nurse's view.

Everything runs in one process so ``make demo`` needs nothing but the Python packages: an
embedded amqtt broker stands in for Mosquitto unless ``--broker`` names a real one. The
subscriber is an ordinary MQTT client, so what it prints is exactly what a nurse's phone
would receive.

By default a scripted nurse runs a whole chairside session over MQTT on two simulated chairs
with shortened timings (:mod:`vitalwatch.demo_session`); without it (``--no-session``) one chair
with a Rad-8 follows the scenario's own phase times, entered directly into the bed session.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from vitalwatch.config import Config, parse_config
from vitalwatch.demo_session import (
    SESSION_BED,
    DemoTimings,
    SessionStepFailed,
    run_session,
    session_beds,
    session_simulators,
)
from vitalwatch.ops.daemon import Daemon
from vitalwatch.record.sessionlog import SESSIONS_DB_NAME
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.alarm_manager import AlarmManagerDouble, Report
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario
from vitalwatch.station.embedded_ws import amqtt_ws_listener, demo_station
from vitalwatch.station.tail_view import TailOptions, tail
from vitalwatch.testing import free_port

__all__ = ["DemoError", "demo_config", "run_demo"]

SITE = "demo-clinic"
BED = SESSION_BED  # the chair whose session the demo runs (and whose report it suggests)
NO_SESSION_DURATION_S = 240.0


def parse_broker(url: str) -> tuple[str, int]:
    """``mqtt://HOST:PORT`` -> (host, port); ValueError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"--broker must look like mqtt://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port or 1883


def _port_free(port: int) -> bool:
    """The station's well-known port, unless something else already listens there."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def demo_config(
    host: str,
    port: int,
    device_urls: dict[str, str],
    state_dir: Path,
    *,
    alarm_manager_port: int | None = None,
    timings: DemoTimings | None = None,
) -> Config:
    """The daemon's configuration for the demo: with ``timings`` the session's two chairs
    (:func:`vitalwatch.demo_session.session_beds`) and the demo's shortened timings, else one
    chair with one Masimo Rad-8 (``device_urls["oximeter"]``) and the default alarm table;
    with ``alarm_manager_port``, IHE PCD-04 reports to an alarm manager on loopback."""
    if timings is None:
        beds = [
            {"id": BED, "devices": [{"id": "oximeter", "driver": "masimo", "url": device_urls["oximeter"]}]}
        ]
    else:
        beds = session_beds(device_urls)
    data: dict[str, object] = {
        "site": SITE,
        "mqtt": {"host": host, "port": port, "heartbeat_s": 5.0 if timings is None else 2.0},
        "logging": {"level": "warning"},
        "state": {"directory": str(state_dir)},
        "beds": beds,
    }
    if timings is not None:
        data["alarms"] = timings.alarms()
    if alarm_manager_port is not None:
        data["alert_reporters"] = [
            {"id": "demo-am", "host": "127.0.0.1", "port": alarm_manager_port, "point_of_care": "DEMO"}
        ]
    return parse_config(data)


def pcd04_line(report: Report) -> str:
    """One ORU^R40 the alarm-manager double accepted, as read back by python-hl7."""
    return (
        f"alarm manager <- ORU^R40 {report.alert_id} #{report.counter}"
        f" {report.facet('MDC_ATTR_EVENT_PHASE')}/{report.facet('MDC_ATTR_ALARM_STATE')}"
        f" {report.facet('MDC_ATTR_ALARM_PRIORITY')} {report.facet('MDC_ATTR_ALERT_TYPE')}"
        f" {report.field('OBX1.F5.R1.C4')} at {report.field('PV1.F3.R1.C3')}: {report.field('OBX1.F5.R1.C9')}"
    )


@contextlib.asynccontextmanager
async def embedded_broker(port: int, ws_port: int) -> AsyncIterator[None]:
    """An amqtt broker on loopback for the demo only (tests use a real Mosquitto)."""
    from amqtt.broker import Broker

    broker = Broker(
        {
            "listeners": {
                "default": {"type": "tcp", "bind": f"127.0.0.1:{port}"},
                "ws": amqtt_ws_listener(ws_port),  # the nurse station page speaks MQTT over WebSockets
            },
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    try:
        yield
    finally:
        await broker.shutdown()


async def nurse_view(host: str, port: int, out: TextIO, ready: asyncio.Event) -> None:
    """Print the active alarms, then every alert transition as a nurse reads it.

    The same subscriber as ``vitalwatch tail``: it de-duplicates the outbox's resends and, if the
    broker goes away, says so and picks up again when it is back.
    """
    await tail(TailOptions(host=host, port=port, site=SITE), out, ready=ready)


def check_broker_reachable(host: str, port: int, timeout: float = 3.0) -> None:
    """A clear error before anything starts, instead of a traceback from the first MQTT client."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise DemoError(f"cannot reach the broker at mqtt://{host}:{port}: {exc.strerror or exc}") from None


class DemoError(Exception):
    """The demo cannot start (an unreachable broker ...); the message says why, for one line."""


_DEVICE_NAMES = {"masimo": "Masimo Rad-8", "suntech": "SunTech NIBP cuff", "accutorr": "Datascope ACCUTORR"}


async def _supervise(
    tasks: list[asyncio.Task[Any]], duration: float | None, out: TextIO, *, stop_after_script: bool
) -> int:
    """Wait for ``duration`` (or, with ``stop_after_script``, for the last task, the script, to
    finish); 1 when a task failed. A failed script is its one line, anything else its repr."""
    script = tasks[-1]
    waiting = set(tasks)
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    while waiting:
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        done, waiting = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            break  # the duration is over
        for task in done:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                why = str(failure) if isinstance(failure, DemoError) else repr(failure)
                print(f"demo: {task.get_name()} failed: {why}", file=out, flush=True)
                return 1
        if script in done and stop_after_script:
            break
    return 0


async def _follow_phases(daemon: Daemon, phases: tuple[tuple[float, str], ...], speed: float) -> None:
    """Enter the scenario's phase changes as a nurse would, at scenario time."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    session = daemon.beds[BED]
    for at, phase in phases:
        await asyncio.sleep(max(0.0, start + at / speed - loop.time()))
        if phase != session.engine.phase:
            session.set_phase(phase, loop.time())
            print(f"-- nurse sets phase: {phase}", flush=True)


async def _session_then_stop(host: str, port: int, out: TextIO, timings: DemoTimings) -> None:
    """The scripted session; a refused or unanswered step is one line, then the demo fails."""
    print(timings.notice(), file=out, flush=True)
    try:
        await run_session(host, port, site=SITE, out=out, timings=timings)
    except SessionStepFailed as exc:
        raise DemoError(f"the scripted session stopped: {exc}") from None
    print("== the scripted session is complete", file=out, flush=True)


async def run_demo(
    *,
    duration: float | None,
    speed: float,
    broker: str | None,
    scenario: str = "desaturation",
    station_port: int = 8080,
    out: TextIO = sys.stdout,
    state_dir: Path | None = None,
    alarm_manager: bool = False,
    session: DemoTimings | None = None,
) -> int:
    """Run the whole chain; the state directory is kept afterwards.

    With ``session`` a scripted nurse runs one whole session over MQTT, and the demo ends when
    it is complete, or after ``duration`` wall seconds when that is given (then the station
    page stays up after the session, or the session is cut short). Without ``session`` the
    scenario's phases are entered at scenario time for ``duration`` seconds (default 240). The
    state directory is kept so an engineer can try ``vitalwatch status``, ``report`` and
    ``export`` on the session the demo just ran (a new ``vitalwatch-demo-*`` folder under the
    temporary directory unless ``state_dir`` names one). Returns 1 if a part of the chain
    failed. ``alarm_manager``: an alarm-manager double in-process receives every alert as IHE
    PCD-04 too and prints it.
    """
    try:
        story = get_scenario(scenario)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    station_port = station_port if _port_free(station_port) else 0
    host, port = parse_broker(broker) if broker else ("127.0.0.1", free_port())
    if broker:
        check_broker_reachable(host, port)
    sims = session_simulators(story) if session is not None else {"oximeter": make_simulator("masimo", story)}
    if state_dir is None:
        state_dir = Path(tempfile.mkdtemp(prefix="vitalwatch-demo-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"state directory {state_dir} (kept after the demo; while it runs:"
        f" vitalwatch status --socket {state_dir / 'status.sock'})",
        file=out,
        flush=True,
    )
    code = 0
    try:
        async with contextlib.AsyncExitStack() as stack:
            if broker is None:
                ws_port = free_port()
                await stack.enter_async_context(embedded_broker(port, ws_port))
                print(
                    f"embedded MQTT broker on mqtt://{host}:{port} (WebSockets on {ws_port})",
                    file=out,
                    flush=True,
                )
                ws_url = f"ws://127.0.0.1:{ws_port}/"
                try:
                    await stack.enter_async_context(
                        demo_station(site=SITE, ws_url=ws_url, out=out, port=station_port)
                    )
                except OSError:  # taken since it was found free (another demo starting): any port
                    await stack.enter_async_context(demo_station(site=SITE, ws_url=ws_url, out=out, port=0))
            urls: dict[str, str] = {}
            for device, sim in sims.items():
                endpoint = await stack.enter_async_context(serve_pty(sim, speed=speed))
                urls[device] = endpoint.url
                print(
                    f"simulated {_DEVICE_NAMES[sim.device]} ({device}) on {endpoint.url}",
                    file=out,
                    flush=True,
                )
            print(f"scenario {scenario} on {BED}", file=out, flush=True)
            manager_port = None
            if alarm_manager:
                double = AlarmManagerDouble(on_report=lambda r: print(pcd04_line(r), file=out, flush=True))
                await stack.enter_async_context(double)
                manager_port = double.port
                print(
                    f"alarm-manager double (IHE PCD-04, MLLP) on 127.0.0.1:{manager_port}",
                    file=out,
                    flush=True,
                )
            config = demo_config(
                host, port, urls, state_dir, alarm_manager_port=manager_port, timings=session
            )
            daemon = Daemon(config)
            ready = asyncio.Event()
            tasks = [
                asyncio.create_task(nurse_view(host, port, out, ready), name="nurse-view"),
            ]
            try:
                await asyncio.wait_for(ready.wait(), 10)
                tasks.append(asyncio.create_task(daemon.run(), name="daemon"))
                if session is not None:
                    script = _session_then_stop(host, port, out, session)
                    until = (
                        "when the scripted session is complete"
                        if duration is None
                        else f"after {duration:g} s"
                    )
                else:
                    script = _follow_phases(daemon, story.phases, speed)
                    duration = NO_SESSION_DURATION_S if duration is None else duration
                    until = f"after {duration:g} s"
                tasks.append(asyncio.create_task(script, name="session" if session else "phases"))
                print(
                    f"daemon running; alerts for site {SITE} follow (demo ends {until})", file=out, flush=True
                )
                code = await _supervise(tasks, duration, out, stop_after_script=duration is None)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        db = state_dir / SESSIONS_DB_NAME
        print(
            f"demo finished; its state is in {state_dir}:\n"
            f"  vitalwatch report --db {db} --bed {BED} --out {state_dir / 'report'}\n"
            f"  vitalwatch export --db {db} --since 2000-01-01 --out -",
            file=out,
            flush=True,
        )
    return code
