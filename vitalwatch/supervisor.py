"""The daemon: one TaskGroup with a link per device, a publisher and a ticker per bed.

SIGTERM (systemd) or SIGINT cancels the group; each ``async with`` closes its port or client
on the way out and each publisher says ``offline`` before it goes. Nothing here decides
anything clinical: that is the engine's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import UTC, datetime
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars

from vitalwatch.bed import BedSession, Engine
from vitalwatch.config import BedConfig, Config
from vitalwatch.drivers import Observation
from vitalwatch.link import DeviceLink
from vitalwatch.payloads import WallClock, status_payload, vital_payload
from vitalwatch.publisher import BedPublisher

__all__ = ["Daemon", "make_engine", "run_daemon"]

log = structlog.get_logger("vitalwatch.supervisor")

# How often the engine's timers run (sustain, renotify, overdue, silent link). Alarm
# delays are whole seconds; a quarter second keeps the added latency well below that.
TICK_S = 0.25


def make_engine(config: Config, bed: BedConfig) -> Engine:
    """The clinical engine for one bed, with its device roles."""
    try:
        from vitalwatch.engine.session import BedEngine
    except ModuleNotFoundError:  # TEMPORARY: until the clinical engine lands
        from vitalwatch.alarm_seed import SeedEngine

        return SeedEngine(bed=bed.id)
    engine: Engine = BedEngine(config.alarms, bed=bed.id, devices={d.id: d.role for d in bed.devices})
    return engine


class Daemon:
    """Everything `vitalwatch run` starts, reachable for tests and `vitalwatch demo`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        loop = asyncio.get_running_loop()
        self.wall = WallClock(loop.time(), datetime.now(UTC))
        self.beds: dict[str, BedSession] = {}
        self.publishers: dict[str, BedPublisher] = {}
        for bed_cfg in config.beds:
            session = BedSession(bed_cfg, make_engine(config, bed_cfg), vital_payload=self._vital)
            publisher = BedPublisher(
                config.mqtt,
                site=config.site,
                bed=bed_cfg.id,
                wall=self.wall,
                status=self._status_fn(session),
            )
            session.sink = publisher
            for dev in bed_cfg.devices:
                session.links[dev.id] = DeviceLink(dev, session)
            self.beds[bed_cfg.id] = session
            self.publishers[bed_cfg.id] = publisher

    def _vital(self, device: str, obs: Observation, now: float, valid: bool) -> dict[str, Any]:
        return vital_payload(
            kind=obs.kind,
            value=obs.value,
            unit=obs.unit,
            quality="valid" if valid else "invalid",
            measured_at=self.wall.utc(now),
            device=device,
        )

    def _status_fn(self, session: BedSession) -> Any:
        def status(state: str, heartbeat: int) -> dict[str, Any]:
            return status_payload(
                state=state,
                site=self.config.site,
                bed=session.bed,
                phase=session.engine.phase,
                links=session.link_states(),
                heartbeat=heartbeat,
                sent_at=datetime.now(UTC),
            )

        return status

    async def _ticker(self, session: BedSession) -> None:
        loop = asyncio.get_running_loop()
        while True:
            session.tick(loop.time())
            await asyncio.sleep(TICK_S)

    async def run(self) -> None:
        """Run every task until cancelled."""
        async with asyncio.TaskGroup() as group:
            for bed_id, session in self.beds.items():
                with bound_contextvars(bed=bed_id):
                    group.create_task(self.publishers[bed_id].run(), name=f"publisher[{bed_id}]")
                    group.create_task(self._ticker(session), name=f"ticker[{bed_id}]")
                    for dev_id, link in session.links.items():
                        group.create_task(link.run(), name=f"device[{bed_id}/{dev_id}]")
            log.info("daemon.ready", beds=len(self.beds), site=self.config.site)


async def run_daemon(config: Config, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then shut down cleanly."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    daemon = Daemon(config)
    main = asyncio.create_task(daemon.run(), name="daemon")
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("daemon.stopping")
        main.cancel()
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    log.info("daemon.stopped")
