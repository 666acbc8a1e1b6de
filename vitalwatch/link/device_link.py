"""The device link: keeps one monitor's port open, pumps bytes through its driver, reconnects.

Knows nothing of any protocol. Everything it learns goes to a :class:`LinkListener`
(the bed session): decoded events and link up or down. Raw bytes are not news for the
listener: a line on the wrong baud rate carries bytes all day and no data, so only decoded
events keep the silent-link timer quiet. A port that vanishes is retried forever with capped,
jittered backoff, because a clinic engineer re-plugging an adapter should never need to
restart the daemon.

One fault stays with its device: the driver runs inside a :class:`DriverGuard` (an exception
becomes a problem, the ``driver_fault`` alarm and a fresh driver after a backoff), and an
unexpected exception in the link itself ends only this port session, reported the same way,
before the port is opened again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Protocol

import structlog
from structlog.contextvars import bound_contextvars

from vitalwatch.config import DeviceConfig
from vitalwatch.drivers import Event, driver_class, make_driver, sends_waveform_rate
from vitalwatch.errors import DeviceError
from vitalwatch.link.guarded import GuardedDevice
from vitalwatch.link.serial_port import SerialPort
from vitalwatch.wake_grid import first_multiple_from, next_multiple

__all__ = ["DeviceLink", "LinkListener", "LinkTap", "backoff_delay"]

log = structlog.get_logger("vitalwatch.link.device_link")

# Longest wait between reconnect attempts; short enough that a re-plugged adapter is
# back within half a minute.
MAX_BACKOFF_S = 30.0
# Wake up at least this often even when the driver has no timer, so a stop request or a
# queued command is never stuck behind a silent port. At multiples of it on the loop clock
# (vitalwatch.wake_grid), so every link's idle wake-up falls in one loop turn with the others'.
IDLE_WAKE_S = 0.5
# Raw chunks kept per device for a debug dump after a decode problem (a few frames' worth).
RAW_CHUNKS_KEPT = 8
# After a read, the port is not read again before the next multiple of this on the loop clock;
# what arrives meanwhile is read in one go then, by the timer itself. A waveform-rate monitor
# (Nonin 75 frames/s, Contec 60 packets/s) then costs at most 40 reads a second instead of one
# per frame, the daemon's main CPU cost on a Pi, and since every port's next read falls on the
# same multiples, all streaming ports are read in one loop turn (one wake-up for all, not one per
# port). A USB-serial adapter's own latency timer (16 ms on FTDI chips) already batches bytes like
# this; the price is at most this much on an alarm whose deciding byte arrives inside the pause,
# against alarm delays of 5 s and more. A monitor sending once a second is read at once, as before
# (the timer finds nothing and the port is watched again).
READ_PAUSE_S = 0.025
# The pause after a read by the timer that found bytes already waiting: the port streams, and is
# read at most 20 times a second. Halves the reads of a busy port again; the price is at most
# 50 ms on an alarm whose deciding byte arrives inside the pause, and a monitor that sends a line
# now and then is never in this state (its timer finds nothing and it is watched again).
STREAM_READ_PAUSE_S = 0.05
# The same pause for a family that streams by design (vitalwatch.drivers.sends_waveform_rate:
# the Nonin's 75 frames/s, the Contec's 60 packets/s): read at most 8 times a second. Each read
# is a loop wake-up with a fixed cost, the daemon's main CPU cost on a Pi; at 20 reads a second
# these two ports were about a fifth of the daemon's CPU at real device rates (docs/performance.md,
# footprint). The price, on those families only, is at most 125 ms on an alarm whose deciding byte
# arrives inside the pause, against their own value updates (a Nonin packet of SpO2 and pulse every
# 1/3 s, averaged over several beats) and alarm delays of 5 s and more. Not for every busy port: a
# monitor sending lines faster than this for a while (a burst, or the latency benchmark's alarms)
# would stay in the long pause and have every line wait in it. A multiple of READ_PAUSE_S, so these
# reads share its instants, and a divisor of the ticker's 0.25 s, so the ticks share theirs.
WAVEFORM_READ_PAUSE_S = 0.125
# A driver's own deadline (a NIBP poll, a keep-alive, a response timeout) is taken at the first
# multiple of this on the loop clock at or after it, so eight links' timers and the waveform
# reads wake the loop together instead of each at its own instant. At most this much late, on
# protocol timers of half a second and more (the timers that decide an alarm are the engine's).
DRIVER_TIMER_GRID_S = WAVEFORM_READ_PAUSE_S


def next_read_at(now: float, *, streaming: bool = False, stream_pause: float = STREAM_READ_PAUSE_S) -> float:
    """When a port read at ``now`` (loop time) is read again: the next multiple of the pause
    (``stream_pause`` once the port streams), shared by every port, so the streaming ones are
    read in the same loop turn."""
    return next_multiple(now, stream_pause if streaming else READ_PAUSE_S)


def backoff_delay(attempt: int, rng: random.Random, cap: float = MAX_BACKOFF_S) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, 0.5 * 2**attempt)]."""
    return rng.uniform(0.0, min(cap, 0.5 * 2.0**attempt))


class LinkListener(Protocol):
    """What the link reports to (the bed session implements it)."""

    def on_events(self, device: str, events: list[Event], now: float) -> None: ...

    def on_link(self, device: str, up: bool, now: float, reason: str) -> None: ...


class LinkTap(Protocol):
    """Sees every input a driver gets, in order (the run recorder implements it)."""

    def raw(self, device: str, data: bytes, now: float) -> None: ...

    def timer(self, device: str, now: float) -> None: ...


class DeviceLink(GuardedDevice):
    """One configured device: open, pump, reconnect; the current driver is reachable for commands."""

    def __init__(
        self,
        config: DeviceConfig,
        listener: LinkListener,
        *,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        tap: LinkTap | None = None,
    ) -> None:
        # make_driver is looked up when the guard builds a driver (tests stand a fake in for it).
        super().__init__(
            config, listener, lambda: make_driver(config.driver, **dict(config.options)), clock=clock
        )
        self._rng = rng or random.Random()
        self.tap = tap
        self._wake = asyncio.Event()
        self.connected = False
        # The last raw chunks, for the debug-level dump that goes with a decode problem.
        self._recent: deque[bytes] = deque(maxlen=RAW_CHUNKS_KEPT)

    def poke(self) -> None:
        """Wake the pump so bytes a command queued in the driver go out at once."""
        self._wake.set()

    async def run(self) -> None:
        """Run until cancelled."""
        with bound_contextvars(device=self.config.id, port=self.config.url):
            attempt = 0
            reported_down = False
            while True:
                try:
                    port = await SerialPort.open(
                        self.config.url, self.config.serial, device_id=self.config.id
                    )
                except DeviceError as exc:
                    if not reported_down:
                        log.warning("device.open_failed", error=str(exc))
                        self._listener.on_link(self.config.id, False, self.now(), "cannot open port")
                        reported_down = True
                else:
                    attempt = 0
                    reported_down = False
                    try:
                        await self._session(port)
                    except DeviceError as exc:
                        log.warning("device.disconnected", error=str(exc))
                    except Exception as exc:  # a bug here or downstream: this device only
                        self.report_fault(exc, "link")
                        attempt = 1  # reopen after a short backoff, not in a tight loop
                    finally:
                        await port.close()
                        self._finish_session()
                    reported_down = True
                delay = backoff_delay(attempt, self._rng)
                attempt += 1
                await asyncio.sleep(delay)

    def _finish_session(self) -> None:
        """The port closed: the driver's leftovers, then link down (a failure here is reported)."""
        now = self.now()
        try:
            events = self.guard.feed_eof()
            if events:
                self._deliver(events, now)
            if self.connected:
                self.connected = False
                self._listener.on_link(self.config.id, False, now, "port closed")
        except Exception as exc:
            self.connected = False
            self.report_fault(exc, "close")

    def _logged_problem(self, reason: str) -> None:
        """At debug level only: the last raw bytes as hex, with patient segments scrubbed.

        An engineer chasing line noise needs the bytes; the driver's ``scrub`` (HL7 blanks PID,
        PV1, NK1 ...) keeps patient identifiers out of even a debug log.
        """
        if not log.is_enabled_for(logging.DEBUG):
            return
        raw = b"".join(self._recent)
        # The class, not the instance: after a fault there is no instance, and the bytes that
        # caused it must be scrubbed all the same.
        scrub = getattr(driver_class(self.config.driver), "scrub", None)
        if callable(scrub):
            raw = scrub(raw)
        log.debug("device.decode_problem.raw", reason=reason, recent_hex=raw.hex())

    async def _session(self, port: SerialPort) -> None:
        """Pump one open port until it fails (DeviceError) or the task is cancelled.

        Bytes are handled in the loop's reader callback, synchronously, as soon as the port is
        readable: no task, future or timer is created per read, which at a few hundred reads a
        second was most of the daemon's idle CPU. This coroutine only wakes for the driver's
        timers, queued writes and commands (``poke``), and at least every ``IDLE_WAKE_S``.
        """
        driver = self.guard
        self.connected = True
        log.info("device.connected", driver=self.config.driver)
        # The driver is built before the bed hears "link up", so a reading the engine asked for
        # while this cuff's port was closed can start it now; its start events follow the link.
        started = driver.start(self.now())
        self._listener.on_link(self.config.id, True, self.now(), "port open")
        self._deliver(started, self.now())
        loop = asyncio.get_running_loop()
        fd = port.fileno()
        # What went wrong in the reader callback (a lost port, or a bug downstream), re-raised
        # here so it ends the session exactly as an exception in this coroutine would.
        failed: list[Exception] = []
        # When the coroutine below wakes up anyway: in self.now() time, and in loop time.
        wake_at = [0.0, 0.0]

        now_fn = self._clock or loop.time
        stream_pause = (
            WAVEFORM_READ_PAUSE_S if sends_waveform_rate(self.config.driver) else STREAM_READ_PAUSE_S
        )

        def on_readable() -> None:
            """The port is readable (a watched port) or its read pause has ended (the timer)."""
            timer = rearm[0] is not None
            rearm[0] = None
            try:
                data = port.read_if_ready() if timer else port.read_nowait()
                if not data:
                    if timer and not failed:  # nothing came during the pause: watch the port again
                        loop.add_reader(fd, on_readable)
                    return
                now = now_fn()
                self._recent.append(data)
                if self.tap is not None:
                    self.tap.raw(self.config.id, data, now)
                self._deliver(driver.feed(data, now), now)
                out = driver.data_to_send()
                if out:
                    port.write(out)
                deadline = driver.next_deadline()
            except Exception as exc:  # handed to the coroutine below, which re-raises it
                loop.remove_reader(fd)
                failed.append(exc)
                self._wake.set()
                return
            if port.has_pending_writes or (
                deadline is not None
                and deadline < wake_at[0]
                # due now (a fault to report), or earlier than the planned wake covers
                and (
                    deadline <= now
                    or first_multiple_from(loop.time() + (deadline - now), DRIVER_TIMER_GRID_S)
                    < wake_at[1] - 1e-6
                )
            ):
                self._wake.set()
            if not timer:
                loop.remove_reader(fd)
            # The timer reads the port itself: a steady stream is never watched again, so it
            # costs no epoll registration and no extra loop turn per read. Bytes already waiting
            # when the pause ended: the port streams, and pauses longer.
            rearm[0] = loop.call_at(
                next_read_at(loop.time(), streaming=timer, stream_pause=stream_pause), on_readable
            )

        rearm: list[asyncio.TimerHandle | None] = [None]
        loop.add_reader(fd, on_readable)
        try:
            while not failed:
                now = self.now()
                deadline = driver.next_deadline()
                if deadline is not None and deadline <= now:
                    if self.tap is not None:
                        self.tap.timer(self.config.id, now)
                    self._deliver(driver.on_timer(now), now)
                    deadline = driver.next_deadline()
                out = driver.data_to_send()
                if out or port.has_pending_writes:
                    port.write(out)
                loop_now = loop.time()
                wake = next_multiple(loop_now, IDLE_WAKE_S)
                if deadline is not None:
                    wake = min(wake, first_multiple_from(loop_now + (deadline - now), DRIVER_TIMER_GRID_S))
                wait = max(0.0, wake - loop_now)
                if port.has_pending_writes:
                    wait = min(wait, 0.05)
                wake_at[0], wake_at[1] = now + wait, loop_now + wait
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(loop_now + wait):  # on the multiple itself
                        await self._wake.wait()
        finally:
            if rearm[0] is not None:
                rearm[0].cancel()
            loop.remove_reader(fd)
        raise failed[0]
