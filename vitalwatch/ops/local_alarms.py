"""Technical alarms signalled at the gateway itself, for when the normal alert path is what broke."""

from __future__ import annotations

import asyncio
import os

import structlog

from vitalwatch.ops.metrics import (
    BROKER_UNREACHABLE,
    BROKER_UNREACHABLE_ALARMS,
    PERSISTENCE_DEGRADED,
    PERSISTENCE_FAILURES,
)

__all__ = ["LOCAL_COMMAND_TIMEOUT_S", "LocalAlarms"]

log = structlog.get_logger("vitalwatch.ops.daemon")

# A local alarm command that has not finished by then is left behind (and logged): a hung
# buzzer script must not pile up processes.
LOCAL_COMMAND_TIMEOUT_S = 10.0


class LocalAlarms:
    """Technical alarms signalled at the gateway itself: log event, metric, local command.

    For when the normal alert path is the thing that is broken (broker unreachable) or at risk
    (persistence degraded): the command can sound a buzzer or light an LED on the Pi.
    """

    def __init__(self, command: tuple[str, ...] | None) -> None:
        self._command = command
        self.active: set[tuple[str, str]] = set()
        self.history: list[tuple[str, str, bool]] = []  # (alarm, bed, raised) for tests and status
        self._tasks: set[asyncio.Task[None]] = set()

    def set(self, alarm: str, bed: str, raised: bool) -> None:
        key = (alarm, bed)
        if raised == (key in self.active):
            return
        (self.active.add if raised else self.active.discard)(key)
        self.history.append((alarm, bed, raised))
        if alarm == "broker_unreachable":
            BROKER_UNREACHABLE.labels(bed).set(1 if raised else 0)
            if raised:
                BROKER_UNREACHABLE_ALARMS.labels(bed).inc()
        elif alarm == "persistence_degraded":
            PERSISTENCE_DEGRADED.set(1 if raised else 0)
            if raised:
                PERSISTENCE_FAILURES.inc()
        log.log(
            40 if raised else 20, "local_alarm." + ("raised" if raised else "cleared"), alarm=alarm, bed=bed
        )
        if self._command:
            task = asyncio.get_running_loop().create_task(self._run(alarm, bed, raised))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, alarm: str, bed: str, raised: bool) -> None:
        assert self._command
        env = {
            **os.environ,
            "VITALWATCH_ALARM": alarm,
            "VITALWATCH_ALARM_STATE": "raised" if raised else "cleared",
            "VITALWATCH_BED": bed,
        }
        try:
            proc = await asyncio.create_subprocess_exec(*self._command, env=env)
        except OSError as exc:
            log.error("local_alarm.command_failed", alarm=alarm, error=str(exc))
            return
        try:
            async with asyncio.timeout(LOCAL_COMMAND_TIMEOUT_S):
                code = await proc.wait()
        except TimeoutError:
            log.error("local_alarm.command_timeout", alarm=alarm)
            return
        if code != 0:
            log.error("local_alarm.command_failed", alarm=alarm, exit_code=code)
