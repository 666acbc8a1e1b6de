"""Replay in virtual time through the real bed session: CSV rows, simulator scenarios, recordings.

Every replay builds a :class:`~vitalwatch.bed.BedSession` exactly as the daemon does, only
with :class:`ReplayLink` in place of a serial port: a link that holds the device's current
driver and accepts commands, with no I/O. So validity, NIBP dispatch (start the first
commandable cuff, else prompt the nurse) and the order of engine calls are the live code's,
and live and replay cannot drift. Inputs and output lines: :mod:`vitalwatch.engine.replay`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import structlog

from vitalwatch.bed import BedSession
from vitalwatch.config import BedConfig, DeviceConfig
from vitalwatch.drivers import Driver, Event, SerialSettings, make_driver
from vitalwatch.drivers.events import DeviceStatus, Observation
from vitalwatch.drivers.vocabulary import KINDS
from vitalwatch.engine.outputs import NursePrompt, Output
from vitalwatch.engine.replay import SCENARIO_DRIVER_OPTIONS, Row, device_for_kind
from vitalwatch.engine.roles import role_for_driver
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import AlarmTable
from vitalwatch.link.device_link import LinkListener
from vitalwatch.link.driver_guard import DriverGuard
from vitalwatch.simulators.base import Scenario

__all__ = ["ReplayBed", "ReplayLink", "replay_rows", "run_scenario"]


class ReplayLink:
    """A device link without a port: the driver (in the live link's fault guard), bytes in, commands out.

    Calls the bed session in the live link's order: link up, then what the driver says at its
    start; a closing driver's leftovers, then link down. ``peer`` receives what the driver sends
    (a simulator answering a cuff command); without one the bytes are dropped, as a recording
    already holds the device's answers. The guard lasts the whole run, as the live one does.
    """

    def __init__(
        self,
        config: DeviceConfig,
        listener: LinkListener,
        *,
        clock: Callable[[], float],
        peer: Callable[[bytes, float], None] | None = None,
    ) -> None:
        self.config = config
        self._listener = listener
        self._clock = clock
        self._peer = peer
        name, options = config.driver, dict(config.options)
        self._guard = DriverGuard(lambda: make_driver(name, **options)) if name else None
        self._started: list[Event] = []  # the driver's start events, until the link-up is reported
        self.connected = False

    @property
    def driver(self) -> Driver | None:
        return self._guard.driver if self._guard is not None else None

    def open(self, now: float, *, report: bool = True) -> None:
        """The port opened and the driver started (a fresh instance, as at every open); ``report``
        tells the bed session at once, else :meth:`report_up` does (once every port is open)."""
        self.connected = True
        self._started = self._guard.start(now) if self._guard is not None else []
        if report:
            self.report_up(now)

    def report_up(self, now: float) -> None:
        """Link up for the session, then what the driver said at its start (the live order)."""
        self._listener.on_link(self.config.id, True, now, "replay")
        started, self._started = self._started, []
        self._deliver(started, now)

    def close(self, now: float) -> None:
        """The port closed: the driver's last events, then the link down."""
        if self.connected and self._guard is not None:
            self._deliver(self._guard.feed_eof(), now)
        self.connected = False
        self._listener.on_link(self.config.id, False, now, "replay")

    def feed(self, data: bytes, now: float) -> None:
        """Bytes from the device, as the daemon's reader callback hands them to the driver.

        :meth:`_deliver` and :meth:`_send` written out: this runs for every read of a replay.
        """
        guard = self._guard
        if guard is not None:
            events = guard.feed(data, now)
            if events:
                self._listener.on_events(self.config.id, events, now)
            sent = guard.data_to_send()
            if sent and self._peer is not None:
                self._peer(sent, now)

    def timer(self, now: float) -> None:
        """The driver's timer fired."""
        if self._guard is not None:
            self._deliver(self._guard.on_timer(now), now)
            self._send(now)

    def due(self, now: float) -> bool:
        """Whether the driver's deadline has come (asked of every device at every replay step)."""
        guard = self._guard
        if guard is None:
            return False
        deadline = guard.next_deadline()
        return deadline is not None and deadline <= now

    def poke(self) -> None:
        """A command was queued in the driver: send it now."""
        self._send(self._clock())

    def _send(self, now: float) -> None:
        data = self._guard.data_to_send() if self._guard is not None else b""
        if data and self._peer is not None:
            self._peer(data, now)

    def _deliver(self, events: list[Event], now: float) -> None:
        if events:
            self._listener.on_events(self.config.id, events, now)


class ReplayBed:
    """A bed session on replay links and a virtual clock; ``outputs`` collects what it emitted."""

    def __init__(
        self,
        engine: BedEngine,
        devices: Mapping[str, tuple[str, str, Mapping[str, Any]]],
        *,
        peers: Mapping[str, Callable[[bytes, float], None]] | None = None,
    ) -> None:
        """``devices``: id -> (driver name or "", role, driver options)."""
        self.now = 0.0
        self.outputs: list[Output] = []
        config = BedConfig(
            id=engine.bed,
            devices=tuple(
                DeviceConfig(
                    id=name, driver=driver, url="replay", role=role, serial=SerialSettings(), options=options
                )
                for name, (driver, role, options) in devices.items()
            ),
        )
        self.links: dict[str, ReplayLink] = {}

        def link(dev: DeviceConfig, listener: LinkListener) -> ReplayLink:
            made = ReplayLink(dev, listener, clock=lambda: self.now, peer=(peers or {}).get(dev.id))
            self.links[dev.id] = made
            return made

        # Silent: the bed session's log events would mix with the JSON lines a replay prints.
        quiet = structlog.wrap_logger(structlog.ReturnLogger(), processors=[])
        self.session = BedSession(config, engine, links=link, observers=[self.outputs.append], logger=quiet)

    def drain(self) -> list[Output]:
        """The outputs since the last drain."""
        out, self.outputs[:] = list(self.outputs), []
        return out


def replay_rows(
    table: AlarmTable,
    bed: str,
    devices: Mapping[str, str],
    rows: Sequence[Row],
    *,
    tick_s: float = 1.0,
    evaluate_all: bool = False,
) -> Iterator[Output]:
    """Drive a fresh bed with parsed CSV rows; ticks every ``tick_s`` of virtual time between rows.

    A CSV names no drivers, so no cuff can be started and every NIBP request would also prompt
    the nurse; those prompts are left out of the output, which shows the engine's request.
    ``evaluate_all``: the engine's reference strategy (:class:`BedEngine`), for the identity test.
    """
    engine = BedEngine(table, bed=bed, devices=devices, evaluate_all=evaluate_all)
    replay = ReplayBed(engine, {d: ("", r, {}) for d, r in devices.items()})
    session = replay.session
    down: set[str] = set()
    # A CSV lists edges, as a driver reports them: what the bed was told is on, and what the
    # device's current connection reported on (a fresh driver after a link up knows nothing of
    # the statuses from before, so it reports one still on again: the engine's confirmation).
    statuses: dict[str, set[str]] = {d: set() for d in devices}
    reported: dict[str, set[str]] = {d: set() for d in devices}
    clock: float | None = None

    def emitted() -> Iterator[Output]:
        yield from (out for out in replay.drain() if not isinstance(out, NursePrompt))

    def advance(to: float) -> Iterator[Output]:
        nonlocal clock
        t = to if clock is None else clock
        while True:
            replay.now = t
            for device in devices:
                if device not in down:  # a CSV has no bytes: every device that is up sends some
                    session.engine.bytes_seen(device, t)
            session.tick(t)
            yield from emitted()
            clock = t
            if t >= to:
                return
            t = min(to, math.floor(t / tick_s + 1e-9) * tick_s + tick_s)

    for row in rows:
        yield from advance(row.t)
        t = row.t
        match row.event:
            case "phase":
                session.set_phase(row.name, t)
            case "obs":
                device = device_for_kind(row.name, devices)
                assert device is not None
                value = float(row.value) if row.value else None
                session.on_events(device, [Observation(row.name, value, KINDS[row.name].unit)], t)
            case "status":
                device, have, fresh = row.value, statuses[row.value], reported[row.value]
                if row.name == "ok":
                    codes, on = sorted(have), False
                elif row.name.startswith("-"):
                    codes, on = [row.name[1:]], False
                else:
                    codes, on = [row.name], True
                for code in codes:
                    if (code not in fresh) if on else (code in have):
                        for known in (have, fresh):
                            (known.add if on else known.discard)(code)
                        session.on_events(device, [DeviceStatus(code, on)], t)
            case "link":
                up = row.value == "up"
                (down.discard if up else down.add)(row.name)
                if up:
                    reported[row.name].clear()
                session.on_link(row.name, up, t, "csv")
            case "ack":
                session.acknowledge(row.name, row.value, t)
        yield from emitted()


def run_scenario(
    scenario: Scenario,
    drivers: Sequence[str],
    *,
    table: AlarmTable,
    seed: int = 0,
    bed: str = "bed-1",
    step_s: float = 0.25,
    driver_options: Mapping[str, Mapping[str, Any]] | None = None,
    evaluate_all: bool = False,
) -> Iterator[Output]:
    """Simulated device bytes -> drivers -> bed session in virtual time (a 100-minute session in seconds).

    ``drivers`` are driver/simulator names (e.g. ``("masimo", "suntech")``); each becomes a device
    of the same id with :func:`~vitalwatch.engine.roles.role_for_driver`. Phase commands come from
    ``scenario.phases``. ``evaluate_all``: the engine's reference strategy, for the identity test.
    """
    from vitalwatch.simulators import make_simulator

    options = {**SCENARIO_DRIVER_OPTIONS, **(driver_options or {})}
    sims = {name: make_simulator(name, scenario, seed=seed) for name in drivers}
    roles = {name: role_for_driver(name) for name in drivers}
    engine = BedEngine(table, bed=bed, devices=roles, evaluate_all=evaluate_all)
    replay = ReplayBed(
        engine,
        {name: (name, role_for_driver(name), dict(options.get(name, {}))) for name in drivers},
        peers={name: sim.receive for name, sim in sims.items()},
    )
    session, links = replay.session, replay.links
    phases = list(scenario.phases)
    steps = math.ceil(scenario.duration / step_s)
    # in the order given; bound methods, as the loop below calls them for every device at every step
    devices = [(sims[name].poll, links[name].feed, links[name].due, links[name].timer) for name in drivers]
    for link in links.values():  # every port opens at 0 ...
        link.open(0.0, report=False)
    for i in range(steps + 1):
        t = replay.now = round(i * step_s, 6)
        while phases and phases[0][0] <= t:
            _, phase = phases.pop(0)
            session.set_phase(phase, t)
        if i == 0:  # ... and the session hears of them after the scenario's first phase command
            for link in links.values():
                link.report_up(t)
        for poll, feed, due, timer in devices:
            data = poll(t)
            if data:
                feed(data, t)
            if due(t):
                timer(t)
        session.tick(t)
        if replay.outputs:
            yield from replay.drain()
