"""Serve a device simulator on a pseudo-terminal or a TCP port, in (scaled) real time.

The simulators are sans-I/O; this is their only I/O edge. One asyncio task runs the clock:

.. code-block:: text

    scenario time = start_at + (loop.time() − t0) × speed        (t0 = launch, not first client)
    loop:  write sim.poll(now)  →  sleep until sim.next_deadline() (wall, capped at 0.1 s)
    host bytes (add_reader on the pty master / the TCP stream) → sim.receive(data, now) → wake

The clock starts when the endpoint starts, not when a reader connects: a real monitor does not
wait for its cable. Bytes due while nobody is connected are dropped and counted
(``bytes_dropped``), as is anything a reader too slow to keep up would overflow; writes never
block the loop.

Transports:

- **pty** (:func:`serve_pty`): ``os.openpty()``, the slave set raw, our slave fd closed so the
  master sees ``POLLHUP`` while no one has the slave open (checked every tick: that is how
  "a reader is connected" is known). When the reader goes, what it left unread is flushed, so
  the next reader starts with fresh lines. The URL is the slave path (``/dev/pts/N``); open it with
  pyserial like a real port. ``link=`` keeps a symlink pointing at the current slave, so a
  reopened endpoint (new ``/dev/pts/M``) stays reachable under one configured name.
- **TCP** (:func:`serve_tcp`): ``asyncio.start_server`` on 127.0.0.1, one client at a time (a
  second is closed at once, like a serial port already in use); URL ``socket://127.0.0.1:PORT``
  for ``serial.serial_for_url``.
- **TCP client** (:func:`connect_tcp`): the simulator connects *to* a host, as a networked HL7
  monitor connects to the hospital's (or VitalWatch's) MLLP listener; it reconnects after a
  refused or lost connection (0.2 s, doubling up to 2 s) and, like such a monitor, keeps what it
  had to send meanwhile (up to ``TCP_MAX_BUFFERED``, then drops and counts). URL ``mllp://HOST:PORT``.

``await endpoint.close()`` pulls the cable (pty master closed and the path gone, or TCP server
and client closed) while the clock keeps running; ``await endpoint.reopen()`` plugs it back.
The endpoint finishes at ``until`` (scenario seconds, e.g. the scenario's duration) or after
``duration`` wall seconds, whichever comes first; ``await endpoint.wait_finished()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import termios
import tty
from collections.abc import AsyncIterator
from pathlib import Path

from vitalwatch.simulators.base import DeviceSimulator

__all__ = [
    "Endpoint",
    "PtyEndpoint",
    "TcpClientEndpoint",
    "TcpEndpoint",
    "connect_tcp",
    "serve_pty",
    "serve_tcp",
]

MAX_WAIT = 0.1  # wall seconds between ticks at most: host commands answered, readers noticed promptly
READ_CHUNK = 4096
TCP_MAX_BUFFERED = 64 * 1024  # a TCP reader this far behind is treated like a pty with a full buffer


class Endpoint:
    """A running simulator endpoint: the clock task plus one transport (see subclasses)."""

    url: str

    def __init__(
        self,
        sim: DeviceSimulator,
        *,
        speed: float = 1.0,
        start_at: float = 0.0,
        until: float | None = None,
        duration: float | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.sim = sim
        self.speed = float(speed)
        self.start_at = float(start_at)
        self.until = until
        self.duration = duration
        self.bytes_sent = 0
        self.bytes_dropped = 0
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._wake = asyncio.Event()
        self._finished = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def scenario_time(self) -> float:
        """Scenario seconds now."""
        return self.start_at + (self._loop.time() - self._t0) * self.speed

    @property
    def connected(self) -> bool:
        """Whether a reader is attached right now."""
        return False

    async def wait_finished(self) -> None:
        """Return once ``until`` or ``duration`` has been reached."""
        await self._finished.wait()

    async def close(self) -> None:
        """Pull the cable: the transport goes away, the clock keeps running."""

    async def reopen(self) -> None:
        """Plug the cable back in."""

    def _start(self) -> None:
        self._t0 = self._loop.time()
        self._task = asyncio.create_task(self._run(), name=f"simulator[{self.sim.device}]")

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _received(self, data: bytes) -> None:
        self.sim.receive(data, self.scenario_time())
        self._wake.set()

    def _emit(self, data: bytes) -> None:
        """Hand bytes to the transport (subclasses); count what could not be delivered."""
        self.bytes_dropped += len(data)

    def _tick(self) -> None:
        """Transport housekeeping once per loop (the pty notices readers coming and going)."""

    async def _run(self) -> None:
        wall_end = None if self.duration is None else self._t0 + self.duration
        while True:
            self._tick()
            now = self.scenario_time()
            done = (self.until is not None and now >= self.until) or (
                wall_end is not None and self._loop.time() >= wall_end
            )
            data = self.sim.poll(now)
            if data:
                self._emit(data)
            if done:
                self._finished.set()
                return
            wait = MAX_WAIT
            deadline = self.sim.next_deadline()
            if deadline is not None:
                wait = min(wait, max(0.0, (deadline - now) / self.speed))
            if self.until is not None:
                wait = min(wait, max(0.0, (self.until - now) / self.speed))
            if wall_end is not None:
                wait = min(wait, max(0.0, wall_end - self._loop.time()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for: it can swallow a cancel on 3.11
                    await self._wake.wait()


class PtyEndpoint(Endpoint):
    """The simulator on a pseudo-terminal; ``url``/``path`` is the slave (changes on reopen)."""

    def __init__(
        self,
        sim: DeviceSimulator,
        *,
        speed: float = 1.0,
        start_at: float = 0.0,
        until: float | None = None,
        duration: float | None = None,
        link: str | Path | None = None,
    ) -> None:
        super().__init__(sim, speed=speed, start_at=start_at, until=until, duration=duration)
        self.link = Path(link) if link is not None else None
        self._master: int | None = None
        self._reader_on = False
        self.path = ""
        self.url = ""

    @property
    def connected(self) -> bool:
        return self._reader_on

    def _open(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no CR/LF translation, no echo: the bytes go through as a cable carries them
        self.path = os.ttyname(slave)
        os.close(slave)  # while no one else holds the slave, the master reports POLLHUP
        os.set_blocking(master, False)
        self._master = master
        self.url = self.path
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.path)
            tmp.replace(self.link)  # atomic: a reader never sees the link missing during a reopen
            self.url = str(self.link)

    def _close_master(self) -> None:
        self._detach()
        if self._master is not None:
            os.close(self._master)
            self._master = None
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def _attach(self) -> None:
        assert self._master is not None
        self._loop.add_reader(self._master, self._on_readable)
        self._reader_on = True

    def _detach(self) -> None:
        if self._reader_on and self._master is not None:
            self._loop.remove_reader(self._master)
            self._flush_stale()
        self._reader_on = False

    def _flush_stale(self) -> None:
        """Discard what the last reader left unread; the next one must not get old lines.

        The kernel keeps a slave's unread input across close and reopen, so a reader plugging
        back in would otherwise get a burst of seconds-old readings. Only the slave side can
        flush it (``TCOFLUSH`` on the master does not reach data already in the slave's queue).
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return
        try:
            termios.tcflush(fd, termios.TCIFLUSH)
        except termios.error:
            pass
        finally:
            os.close(fd)

    def _tick(self) -> None:
        if self._master is None:
            return
        poller = select.poll()
        poller.register(self._master, select.POLLHUP)
        hung_up = any(ev & select.POLLHUP for _, ev in poller.poll(0))
        if hung_up and self._reader_on:
            self._detach()
        elif not hung_up and not self._reader_on:
            self._attach()

    def _on_readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: the last reader closed the slave
            self._detach()
            return
        if data:
            self._received(data)

    def _emit(self, data: bytes) -> None:
        if self._master is None or not self._reader_on:
            self.bytes_dropped += len(data)
            return
        try:
            n = os.write(self._master, data)
        except BlockingIOError:
            n = 0  # the reader's buffer is full: a device does not wait, the bytes are lost
        except OSError:
            self._detach()
            n = 0
        self.bytes_sent += n
        self.bytes_dropped += len(data) - n

    async def close(self) -> None:
        """Pull the cable: the master closes, readers get EOF/EIO, the path (and link) vanish."""
        self._close_master()

    async def reopen(self) -> None:
        """A fresh pty (a new ``/dev/pts/N``; the ``link`` follows it)."""
        if self._master is None:
            self._open()
            self._wake.set()


class TcpEndpoint(Endpoint):
    """The simulator on 127.0.0.1:``port`` (0 picks a free port); one client at a time."""

    def __init__(
        self,
        sim: DeviceSimulator,
        *,
        speed: float = 1.0,
        start_at: float = 0.0,
        until: float | None = None,
        duration: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(sim, speed=speed, start_at=start_at, until=until, duration=duration)
        self.host = host
        self.port = port
        self.url = ""
        self._server: asyncio.Server | None = None
        self._client: asyncio.StreamWriter | None = None
        self._handlers: set[asyncio.Task[object]] = set()

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]  # reopen binds the same port again
        self.url = f"socket://{self.host}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._client is not None:  # the port is in use: refuse the second client
            writer.close()
            return
        if task is not None:
            self._handlers.add(task)
        self._client = writer
        try:
            while data := await reader.read(READ_CHUNK):
                self._received(data)
        except (ConnectionError, OSError):
            pass
        finally:
            if self._client is writer:
                self._client = None
            writer.close()
            if task is not None:
                self._handlers.discard(task)

    def _emit(self, data: bytes) -> None:
        client = self._client
        backlog = 0 if client is None else client.transport.get_write_buffer_size()
        if client is None or client.is_closing() or backlog > TCP_MAX_BUFFERED:
            self.bytes_dropped += len(data)
            return
        client.write(data)
        self.bytes_sent += len(data)

    async def close(self) -> None:
        """Pull the cable: stop listening and drop the client."""
        if self._server is not None:
            self._server.close()
        if self._client is not None:
            self._client.close()
        handlers = list(self._handlers)
        if handlers:
            await asyncio.wait(handlers, timeout=1.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def reopen(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            await self._open()


class TcpClientEndpoint(Endpoint):
    """The simulator as a TCP client of ``host:port`` (a networked monitor); reconnects on its own."""

    RETRY_MIN_S = 0.2
    RETRY_MAX_S = 2.0

    def __init__(
        self,
        sim: DeviceSimulator,
        *,
        host: str,
        port: int,
        speed: float = 1.0,
        start_at: float = 0.0,
        until: float | None = None,
        duration: float | None = None,
    ) -> None:
        super().__init__(sim, speed=speed, start_at=start_at, until=until, duration=duration)
        self.host = host
        self.port = port
        self.url = f"mllp://{host}:{port}"
        self.connections = 0  # successful connects, for tests and the summary
        self._writer: asyncio.StreamWriter | None = None
        self._connector: asyncio.Task[None] | None = None
        self._unsent = bytearray()  # what the monitor queued while not connected (bounded)

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    def _open(self) -> None:
        self._connector = asyncio.create_task(self._connect_loop(), name=f"simulator-client[{self.url}]")

    async def _connect_loop(self) -> None:
        delay = self.RETRY_MIN_S
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(self.RETRY_MAX_S, delay * 2)
                continue
            delay = self.RETRY_MIN_S
            self._writer = writer
            self.connections += 1
            self._flush_unsent(writer)
            self._wake.set()
            try:
                while data := await reader.read(READ_CHUNK):
                    self._received(data)
            except (ConnectionError, OSError):
                pass
            finally:
                self._writer = None
                writer.close()
            await asyncio.sleep(delay)

    def _emit(self, data: bytes) -> None:
        """Send, or keep until connected: a networked monitor queues messages for its host.

        Kept bytes are bounded (``TCP_MAX_BUFFERED``); beyond that they are dropped and counted.
        """
        writer = self._writer
        if writer is None or writer.is_closing():
            if len(self._unsent) + len(data) > TCP_MAX_BUFFERED:
                self.bytes_dropped += len(data)
            else:
                self._unsent += data
            return
        if writer.transport.get_write_buffer_size() > TCP_MAX_BUFFERED:
            self.bytes_dropped += len(data)
            return
        writer.write(data)
        self.bytes_sent += len(data)

    def _flush_unsent(self, writer: asyncio.StreamWriter) -> None:
        if self._unsent:
            writer.write(bytes(self._unsent))
            self.bytes_sent += len(self._unsent)
            self._unsent.clear()

    async def close(self) -> None:
        """Pull the cable: disconnect and stop reconnecting."""
        connector, self._connector = self._connector, None
        if connector is not None:
            connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connector
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def reopen(self) -> None:
        """Plug the cable back in: connect again."""
        if self._connector is None:
            self._open()


@contextlib.asynccontextmanager
async def serve_pty(
    sim: DeviceSimulator,
    *,
    speed: float = 1.0,
    start_at: float = 0.0,
    until: float | None = None,
    duration: float | None = None,
    link: str | Path | None = None,
) -> AsyncIterator[PtyEndpoint]:
    """Serve ``sim`` on a new pty for the body of the ``async with``; yields the running endpoint."""
    ep = PtyEndpoint(sim, link=link, speed=speed, start_at=start_at, until=until, duration=duration)
    ep._open()
    ep._start()
    try:
        yield ep
    finally:
        await ep._stop()
        ep._close_master()


@contextlib.asynccontextmanager
async def serve_tcp(
    sim: DeviceSimulator,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    speed: float = 1.0,
    start_at: float = 0.0,
    until: float | None = None,
    duration: float | None = None,
) -> AsyncIterator[TcpEndpoint]:
    """Serve ``sim`` on a TCP port for the body of the ``async with``; yields the running endpoint."""
    ep = TcpEndpoint(
        sim, host=host, port=port, speed=speed, start_at=start_at, until=until, duration=duration
    )
    await ep._open()
    async with _running(ep):
        yield ep


@contextlib.asynccontextmanager
async def connect_tcp(
    sim: DeviceSimulator,
    *,
    host: str,
    port: int,
    speed: float = 1.0,
    start_at: float = 0.0,
    until: float | None = None,
    duration: float | None = None,
) -> AsyncIterator[TcpClientEndpoint]:
    """Run ``sim`` as a TCP client of ``host:port`` for the body of the ``async with``."""
    ep = TcpClientEndpoint(
        sim, host=host, port=port, speed=speed, start_at=start_at, until=until, duration=duration
    )
    ep._open()
    async with _running(ep):
        yield ep


@contextlib.asynccontextmanager
async def _running(ep: Endpoint) -> AsyncIterator[None]:
    """Run an opened endpoint's clock for the body; then stop it and pull its cable."""
    ep._start()
    try:
        yield
    finally:
        await ep._stop()
        await ep.close()
