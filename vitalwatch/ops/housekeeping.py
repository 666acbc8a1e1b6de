"""The daemon looking after itself: watchdog pings, health, metrics, the status socket, the clock.

None of this is on the alarm path. It reads the running daemon's state once a second (the
hot path only keeps plain counters and timestamps) and:

- pings the systemd watchdog only while :func:`vitalwatch.ops.health.assess` finds no fault, and
  measures event-loop lag on the way (a blocked loop misses its ping, so systemd restarts it);
- exposes Prometheus metrics through a collector that reads that state at scrape time;
- answers ``vitalwatch status`` on a Unix socket with a JSON snapshot;
- refreshes "is the wall clock synchronised?" so alerts carry an honest ``clock_synced``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vitalwatch import strict_json
from vitalwatch.engine.roles import streams
from vitalwatch.ops.clocksync import ClockSync
from vitalwatch.ops.health import (
    SILENCE_LOCAL_ALARM,
    BedState,
    DaemonSnapshot,
    DeviceState,
    Health,
    Thresholds,
    assess,
)
from vitalwatch.ops.sdnotify import Notifier, watchdog_interval
from vitalwatch.wake_grid import next_multiple, sleep_until

if TYPE_CHECKING:
    from vitalwatch.ops.daemon import Daemon

__all__ = ["DaemonCollector", "Housekeeping", "snapshot_of"]

log = structlog.get_logger("vitalwatch.ops.housekeeping")

# How often health is assessed when systemd asked for no watchdog (status socket, metrics).
DEFAULT_PERIOD_S = 1.0
CLOCK_REFRESH_S = 60.0
SILENCE_CONDITIONS = frozenset({"link_lost", "signal_lost"})


def snapshot_of(daemon: Daemon, *, now: float, loop_lag_s: float, clock_synced: bool) -> DaemonSnapshot:
    """Copy what health and ``vitalwatch status`` need out of the running daemon."""
    beds: list[BedState] = []
    for bed_id, session in daemon.beds.items():
        active = session.engine.active_alarms()
        by_priority: dict[str, int] = {}
        for tr in active:
            by_priority[tr.priority.value] = by_priority.get(tr.priority.value, 0) + 1
        silent = {tr.device for tr in active if tr.condition in SILENCE_CONDITIONS}
        devices = []
        for dev_id, link in session.links.items():
            task = daemon.tasks.get(f"device[{bed_id}/{dev_id}]")
            last = session.last_valid.get(dev_id)
            devices.append(
                DeviceState(
                    id=dev_id,
                    task_running=task is not None and not task.done(),
                    link_up=link.connected,
                    last_reading_age_s=None if last is None else max(0.0, now - last),
                    silence_alarm=dev_id in silent or None in silent,
                    streams=streams(link.config.role),
                )
            )
        beds.append(
            BedState(id=bed_id, phase=session.engine.phase, devices=tuple(devices), active_alarms=by_priority)
        )
    publishers = list(daemon.publishers.values())
    oldest = [now - entry.queued_at for p in publishers for entry in p.pending_entries()]
    return DaemonSnapshot(
        uptime_s=now - daemon.started_at,
        loop_lag_s=loop_lag_s,
        beds=tuple(beds),
        broker_connected=bool(publishers) and all(p.connected for p in publishers),
        broker_alarm=any(alarm == "broker_unreachable" for alarm, _ in daemon.local_alarms.active),
        publisher_running=all(
            (task := daemon.tasks.get(f"publisher[{bed}]")) is not None and not task.done()
            for bed in daemon.publishers
        ),
        outbox_depth=sum(p.pending for p in publishers),
        outbox_oldest_age_s=max(oldest, default=0.0),
        clock_synced=clock_synced,
    )


@dataclass(frozen=True, slots=True)
class MetricsState:
    """What the collector exposes, computed on the event loop (scrapes run in another thread)."""

    devices: tuple[
        tuple[str, str, int, int, bool, float | None, int], ...
    ] = ()  # bed, dev, reads, problems, up, age, driver faults
    active: tuple[tuple[str, str, int], ...] = ()  # bed, priority, count
    transitions: tuple[tuple[str, str, int], ...] = ()  # bed, state, count
    connected: tuple[tuple[str, bool], ...] = ()
    loop_lag_s: float = 0.0
    clock_synced: bool = False


def metrics_state_of(daemon: Daemon, *, now: float, loop_lag_s: float) -> MetricsState:
    devices, active, transitions, connected = [], [], [], []
    for bed_id, session in daemon.beds.items():
        for dev_id, link in session.links.items():
            last = session.last_valid.get(dev_id)
            age = None if last is None else max(0.0, now - last)
            devices.append(
                (bed_id, dev_id, link.readings, link.decode_problems, link.connected, age, link.driver_faults)
            )
        counts = {"high": 0, "medium": 0, "low": 0, "info": 0}
        for tr in session.engine.active_alarms():
            counts[tr.priority.value] = counts.get(tr.priority.value, 0) + 1
        active += [(bed_id, priority, n) for priority, n in counts.items()]
        transitions += [(bed_id, state, n) for state, n in session.transition_counts.items()]
        publisher = daemon.publishers.get(bed_id)
        connected.append((bed_id, publisher is not None and publisher.connected))
    return MetricsState(
        tuple(devices),
        tuple(active),
        tuple(transitions),
        tuple(connected),
        loop_lag_s,
        daemon.wall.clock_synced,
    )


class DaemonCollector(Collector):
    """Prometheus metrics from the daemon's latest :class:`MetricsState` (read-only, thread-safe)."""

    def __init__(self, housekeeping: Housekeeping) -> None:
        self._hk = housekeeping

    def collect(self) -> Iterator[Metric]:
        state = self._hk.metrics_state
        bed_dev = ["bed", "device"]
        readings = CounterMetricFamily("vitalwatch_readings", "Decoded events per device", labels=bed_dev)
        problems = CounterMetricFamily("vitalwatch_decode_problems", "Undecodable byte runs", labels=bed_dev)
        faults = CounterMetricFamily(
            "vitalwatch_driver_faults", "Unexpected driver or link exceptions (restarted)", labels=bed_dev
        )
        link = GaugeMetricFamily(
            "vitalwatch_device_link_up", "1 while the device's port is open", labels=bed_dev
        )
        age = GaugeMetricFamily(
            "vitalwatch_last_reading_age_seconds",
            "Seconds since the device's last valid reading",
            labels=bed_dev,
        )
        for bed_id, dev_id, reads, bad, up, last_age, fault_count in state.devices:
            readings.add_metric([bed_id, dev_id], reads)
            problems.add_metric([bed_id, dev_id], bad)
            faults.add_metric([bed_id, dev_id], fault_count)
            link.add_metric([bed_id, dev_id], 1.0 if up else 0.0)
            if last_age is not None:
                age.add_metric([bed_id, dev_id], last_age)
        active = GaugeMetricFamily(
            "vitalwatch_alarms_active", "Active alarms by priority", labels=["bed", "priority"]
        )
        for bed_id, priority, n in state.active:
            active.add_metric([bed_id, priority], n)
        transitions = CounterMetricFamily(
            "vitalwatch_alert_transitions", "Alert transitions by state", labels=["bed", "state"]
        )
        for bed_id, tr_state, n in state.transitions:
            transitions.add_metric([bed_id, tr_state], n)
        connected = GaugeMetricFamily(
            "vitalwatch_mqtt_connected", "1 while connected to the broker", labels=["bed"]
        )
        for bed_id, up in state.connected:
            connected.add_metric([bed_id], 1.0 if up else 0.0)
        lag = GaugeMetricFamily("vitalwatch_event_loop_lag_seconds", "Latest measured event-loop lag")
        lag.add_metric([], state.loop_lag_s)
        clock = GaugeMetricFamily("vitalwatch_clock_synchronized", "1 while the wall clock is synchronised")
        clock.add_metric([], 1.0 if state.clock_synced else 0.0)
        yield from (readings, problems, faults, link, age, active, transitions, connected, lag, clock)


class Housekeeping:
    """Runs the daemon's self-care tasks; built and started by the supervisor."""

    def __init__(
        self,
        daemon: Daemon,
        *,
        notifier: Notifier | None = None,
        clock: ClockSync | None = None,
        status_socket: Path | None = None,
        thresholds: Thresholds | None = None,
    ) -> None:
        self.daemon = daemon
        self.thresholds = thresholds or Thresholds()
        self.notifier = notifier or Notifier()
        self.clock = clock or ClockSync()
        self.status_socket = status_socket
        self.loop_lag_s = 0.0
        self.health: Health | None = None
        self.metrics_state = MetricsState()
        self._server: asyncio.AbstractServer | None = None

    def mono_now(self) -> float:
        return asyncio.get_running_loop().time()

    def snapshot(self) -> DaemonSnapshot:
        return snapshot_of(
            self.daemon,
            now=self.mono_now(),
            loop_lag_s=self.loop_lag_s,
            clock_synced=self.daemon.wall.clock_synced,
        )

    def ready(self) -> None:
        """READY=1: configuration valid, database open, device tasks created."""
        beds = len(self.daemon.beds)
        devices = sum(len(s.links) for s in self.daemon.beds.values())
        self.notifier.ready(f"{beds} beds, {devices} devices")

    async def run(self) -> None:
        """Health/watchdog loop, clock refresh and status socket, until cancelled."""
        async with contextlib.AsyncExitStack() as stack:
            if self.status_socket is not None:
                await stack.enter_async_context(self._serve_status(self.status_socket))
            # A task group, not gather: gather returns at its first cancelled child while the other
            # is still unwinding, which leaves it running after the daemon has stopped.
            async with asyncio.TaskGroup() as group:
                group.create_task(self._health_loop(), name="health")
                group.create_task(self._clock_loop(), name="clock")

    async def _health_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = watchdog_interval() or DEFAULT_PERIOD_S
        period = min(period, DEFAULT_PERIOD_S * 5)
        while True:
            # On the multiples of the period (vitalwatch.wake_grid), with the daemon's other wake-ups.
            due = next_multiple(loop.time(), period)
            await sleep_until(due)
            self.loop_lag_s = max(0.0, loop.time() - due)
            self.metrics_state = metrics_state_of(self.daemon, now=loop.time(), loop_lag_s=self.loop_lag_s)
            health = assess(self.snapshot(), self.thresholds)
            self.health = health
            self._alarm_unalarmed_silence(health)
            if health.watchdog_ok:
                self.notifier.watchdog()
            else:
                log.error("watchdog.withheld", reasons=list(health.reasons))
            self.notifier.status("ok" if health.healthy else health.reasons[0])

    def _alarm_unalarmed_silence(self, health: Health) -> None:
        """A device silent without its engine alarm gets the local ``device_silent`` alarm, per bed."""
        silent_beds = {
            problem.subject.partition("/")[0]
            for problem in health.problems
            if problem.code == "device.silence_unalarmed"
        }
        for bed in self.daemon.beds:
            self.daemon.local_alarms.set(SILENCE_LOCAL_ALARM, bed, bed in silent_beds)

    async def _clock_loop(self) -> None:
        while True:
            synced = await self.clock.refresh()
            if synced != self.daemon.wall.clock_synced:
                log.info("clock.sync_changed", synced=synced, source=self.clock.source)
            self.daemon.wall.clock_synced = synced
            await asyncio.sleep(CLOCK_REFRESH_S)

    @contextlib.asynccontextmanager
    async def _serve_status(self, path: Path) -> Any:
        """A Unix socket that writes one JSON snapshot (and its health) to each client."""
        with contextlib.suppress(OSError):
            os.unlink(path)  # a socket file left by a killed daemon

        async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            snap = self.snapshot()
            health = assess(snap, self.thresholds)
            body = {"snapshot": snap.to_dict(), "healthy": health.healthy, "reasons": list(health.reasons)}
            if self.daemon.receipts is not None:  # unreceipted items: not a bedside health problem
                body["receipts"] = self.daemon.receipts.status()
            writer.write(strict_json.dumps(body, what="status_socket").encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

        try:
            server = await asyncio.start_unix_server(answer, path=str(path))
            os.chmod(path, 0o660)  # the service user and its group (an engineer in it) may ask
        except OSError as exc:  # a read-only or full state directory: monitoring goes on without it
            log.warning("status.socket_unavailable", path=str(path), error=str(exc))
            yield None
            return
        try:
            yield server
        finally:
            server.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
