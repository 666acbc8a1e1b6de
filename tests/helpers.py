"""Helpers every test layer shares: waiting on a condition, and feeding bytes to a decoder three ways.

Waiting: a test that sleeps a fixed time and then asserts is either slow (the sleep is long) or
flaky (the machine is slower than the sleep); one that asserts a *negative* after a sleep passes
by default when the machine is slow. :func:`wait_until` polls the condition instead and fails
naming the condition and the time it was given, so a timeout says what never happened.

Feeding: a decoder must give the same events whether a stream arrives whole, one byte per read,
or in random-sized reads (the serial port decides, not the device). :func:`feed_whole`,
:func:`feed_bytewise` and :func:`feed_chunks` drive a sans-I/O driver those ways; :func:`pieces`
is the one splitter underneath, for decoders with another interface (the MLLP deframer).
Model: h11's ``tr()`` byte-at-a-time helper and websockets' ``assertFrameData``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitalwatch.drivers.base import Driver
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event, Observation

if TYPE_CHECKING:  # the daemon helpers below import it when used: drivers' tests stay light
    from vitalwatch.config import Config
    from vitalwatch.ops.daemon import Daemon

__all__ = [
    "ALLOWED_THREAD_NAMES",
    "MODES",
    "SiteMessages",
    "describe",
    "drive",
    "feed",
    "feed_bytewise",
    "feed_chunks",
    "feed_whole",
    "leak_report",
    "leaked_tasks",
    "leaked_threads",
    "observations",
    "only_events",
    "pieces",
    "problems",
    "start_daemon_process",
    "statuses",
    "wait_until",
    "wait_until_sync",
    "write_daemon_toml",
]

POLL_S = 0.02  # how often a condition is looked at: short next to any timeout a test gives


# ------------------------------------------------------------------ waiting on a condition


def describe(condition: Callable[..., object]) -> str:
    """A readable name for ``condition``: its source line for a lambda, else its qualified name."""
    name = getattr(condition, "__qualname__", repr(condition))
    if "<lambda>" not in name:
        return name
    try:
        source = inspect.getsource(condition).strip()
    except (OSError, TypeError):
        return name
    return source if len(source) <= 200 else source[:197] + "..."


def _timed_out(condition: Callable[..., object], limit_s: float, what: str | None) -> AssertionError:
    return AssertionError(f"timed out after {limit_s:g} s waiting for {what or describe(condition)}")


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    limit_s: float = 10.0,
    what: str | None = None,
    *,
    poll_s: float = POLL_S,
) -> None:
    """Return as soon as ``condition()`` is true; fail after ``limit_s`` naming ``what``.

    ``condition`` may be a coroutine function (for a check that itself awaits, e.g. a scrape
    run in a thread). It is looked at once more at the deadline, so a slow poll never fails a
    condition that did become true.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s

    async def holds() -> bool:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    while not await holds():
        if loop.time() >= deadline:
            if await holds():
                return
            raise _timed_out(condition, limit_s, what)
        await asyncio.sleep(poll_s)


def wait_until_sync(
    condition: Callable[[], bool], limit_s: float = 10.0, what: str | None = None, *, poll_s: float = POLL_S
) -> None:
    """:func:`wait_until` for code without an event loop (threads, subprocesses)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() >= deadline:
            if condition():
                return
            raise _timed_out(condition, limit_s, what)
        time.sleep(poll_s)


# ------------------------------------------------------------------ feeding a decoder

DriverFactory = Callable[[], Driver]
MODES = ("whole", "bytewise", "chunks")  # for tests parametrised over the three ways


def pieces(data: bytes, mode: str = "chunks", *, seed: int = 0, max_chunk: int = 64) -> Iterator[bytes]:
    """``data`` cut the ``mode`` way: ``whole``, ``bytewise``, or random ``chunks`` of 1..max_chunk
    bytes (fixed seed, so a failure reproduces). Nothing is yielded for empty data."""
    if mode == "whole":
        if data:
            yield data
        return
    if mode == "bytewise":
        for i in range(len(data)):
            yield data[i : i + 1]
        return
    if mode != "chunks":
        raise ValueError(f"unknown feeding mode {mode!r}; one of {MODES}")
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.randint(1, max_chunk)
        yield data[i : i + n]
        i += n


def drive(
    factory: DriverFactory,
    parts: Iterable[bytes],
    *,
    timers: bool = False,
    byte_s: float = 1.0,
    eof: bool = True,
) -> list[Event]:
    """Feed ``parts`` in order to a fresh driver; its events in order, EOF last unless ``eof`` is false.

    The time given with a part is its byte offset times ``byte_s``; ``timers`` also calls
    ``on_timer`` after every part (drivers that poll or time out between reads).
    """
    driver = factory()
    events: list[Event] = []
    offset = 0
    for part in parts:
        now = offset * byte_s
        events += driver.feed(part, now)
        if timers:
            events += driver.on_timer(now)
        offset += len(part)
    return events + (driver.feed_eof() if eof else [])


def feed(factory: DriverFactory, data: bytes, mode: str, *, seed: int = 0, eof: bool = True) -> list[Event]:
    """Feed ``data`` cut the ``mode`` way (see :func:`pieces`): for tests parametrised over :data:`MODES`."""
    return drive(factory, pieces(data, mode, seed=seed), eof=eof)


def feed_whole(factory: DriverFactory, data: bytes, *, eof: bool = True) -> list[Event]:
    """Feed everything in one call."""
    return drive(factory, pieces(data, "whole"), eof=eof)


def feed_bytewise(factory: DriverFactory, data: bytes, *, eof: bool = True) -> list[Event]:
    """Feed one byte per call: every buffer boundary is exercised."""
    return drive(factory, pieces(data, "bytewise"), eof=eof)


def feed_chunks(
    factory: DriverFactory, data: bytes, *, seed: int = 0, max_chunk: int = 64, **how: Any
) -> list[Event]:
    """Feed random-sized chunks (fixed seed, so failures reproduce); ``how`` as for :func:`drive`."""
    return drive(factory, pieces(data, "chunks", seed=seed, max_chunk=max_chunk), **how)


def observations(events: list[Event]) -> list[Observation]:
    return [e for e in events if isinstance(e, Observation)]


def statuses(events: list[Event]) -> list[DeviceStatus]:
    return [e for e in events if isinstance(e, DeviceStatus)]


def problems(events: list[Event]) -> list[DecodeProblem]:
    return [e for e in events if isinstance(e, DecodeProblem)]


def only_events(events: list[object]) -> bool:
    """True when every item is one of the three event types (the fuzz invariant)."""
    return all(isinstance(e, Observation | DeviceStatus | DecodeProblem) for e in events)


# ------------------------------------------------------------------ leaked threads and tasks

# Threads that are process-wide by design and may outlive the test that started them. Each entry
# says why; anything else a test leaves running is a leak (a paho loop never stopped, a store
# never closed, a daemon never cancelled) that would go on acting in the tests after it.
ALLOWED_THREAD_NAMES: dict[str, str] = {
    # prometheus_client.start_http_server: one metrics endpoint per process, no way to stop it
    # (the daemon starts it when [metrics] is configured; the operations test does so in a subprocess).
    "serve_forever": "prometheus metrics HTTP server",
}


def _allowed(thread: threading.Thread) -> bool:
    return any(part in thread.name for part in ALLOWED_THREAD_NAMES)


def leaked_threads(before: set[threading.Thread], grace_s: float = 2.0) -> list[threading.Thread]:
    """Threads alive now that were not alive in ``before`` (and are not allowed process-wide).

    A thread that is on its way out (a paho loop told to stop, an executor shutting down) gets
    ``grace_s`` to finish: the wait ends as soon as none is left, so a clean test pays nothing.
    """

    def extra() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in before and t.is_alive() and not _allowed(t)]

    with contextlib.suppress(AssertionError):
        wait_until_sync(lambda: not extra(), grace_s, "leaked threads to finish")
    return extra()


def leaked_tasks(loop: asyncio.AbstractEventLoop, grace_s: float = 2.0) -> list[asyncio.Task[object]]:
    """Tasks of ``loop`` (not running: the test and its fixtures are done) that are not done.

    A task cancelled but not awaited is still pending until the loop runs again: the loop is run
    for up to ``grace_s`` so such tasks can finish; a task still pending after that was left running.
    """
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=grace_s))
    return [t for t in pending if not t.done()]


def leak_report(threads: list[threading.Thread], tasks: list[asyncio.Task[object]]) -> str:
    """One line per leaked thread or task, naming what it runs."""
    lines = [f"thread {t.name!r} (daemon={t.daemon})" for t in threads]
    lines += [f"task {t.get_name()!r} running {t.get_coro()!r}" for t in tasks]
    return "left running after the test: " + "; ".join(lines)


# --- a daemon for command tests -------------------------------------------------------------------


def cuffless_daemon_config(port: int, state: Path, *, site: str, beds: Sequence[str]) -> Config:
    """Beds with one oximeter each on a port that does not exist: no data and no cuff the daemon can
    start, so readiness items are open and "take a BP" opens a prompt. For tests of the commands."""
    from vitalwatch.config import parse_config

    return parse_config(
        {
            "site": site,
            "mqtt": {"port": port, "heartbeat_s": 0.5, "publish_timeout_s": 1.0},
            "logging": {"level": "warning"},
            "state": {"directory": str(state)},
            "beds": [
                {"id": bed, "devices": [{"id": "oximeter", "driver": "masimo", "url": "/nonexistent/tty"}]}
                for bed in beds
            ],
        }
    )


def write_daemon_toml(path: Path, data: dict[str, Any]) -> Path:
    """A ``vitalwatch run`` configuration file from ``site``, ``mqtt``, ``state`` and ``beds`` of
    ``data`` (the default alarm table, JSON logs), for a daemon run as its own process."""

    def value(v: Any) -> str:
        return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")

    lines = [f"site = {value(data['site'])}", "[mqtt]"]
    lines += [f"{k} = {value(v)}" for k, v in data["mqtt"].items()]
    lines += ["[state]", f"directory = {value(data['state']['directory'])}", "[logging]", 'format = "json"']
    lines += ["[alarms]", 'table = "default"']
    for bed in data["beds"]:
        lines += ["[[beds]]", f"id = {value(bed['id'])}"]
        for dev in bed["devices"]:
            lines += ["[[beds.devices]]"] + [f"{k} = {value(v)}" for k, v in dev.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_daemon_process(config: Path, *, log: Path | None = None) -> asyncio.subprocess.Process:
    """``vitalwatch run --config CONFIG`` as a child process (a test can SIGKILL it); its output
    is piped, or written to ``log`` for a run too long to leave a pipe unread."""
    out: Any = asyncio.subprocess.PIPE if log is None else log.open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vitalwatch", "run", "--config", str(config), stdout=out, stderr=out
        )
    finally:
        if log is not None:
            out.close()  # the child has its own descriptor


@contextlib.asynccontextmanager
async def running_daemon(config: Config | Daemon) -> AsyncIterator[Daemon]:
    """The daemon running in this event loop until the block ends (then cancelled and awaited).

    Pass a ``Daemon`` already built to look at what it did at start before it runs."""
    from vitalwatch.ops.daemon import Daemon

    daemon = config if isinstance(config, Daemon) else Daemon(config)
    task = asyncio.create_task(daemon.run())
    try:
        yield daemon
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ------------------------------------------------------------------ a station's view of the broker


class SiteMessages:
    """Every alert and status message of a site, as a nurse station receives them (empty ones skipped)."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.alerts: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []

    async def run(self, client: Any) -> None:
        """Collect from ``client`` (an aiomqtt client subscribed to the site's alerts and status)."""
        async for message in client.messages:
            body = bytes(message.payload)
            if not body:
                continue
            doc = json.loads(body)
            if message.topic.matches(f"vitalwatch/v1/{self.site}/+/alerts"):
                self.alerts.append(doc)
            elif message.topic.matches(f"vitalwatch/v1/{self.site}/+/status"):
                self.statuses.append(doc)


async def http_request(port: int, raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send ``raw`` (a whole HTTP request, as a client might mangle it) to a loopback web server;
    its status line, headers and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return lines[0], dict(line.split(": ", 1) for line in lines[1:]), body
