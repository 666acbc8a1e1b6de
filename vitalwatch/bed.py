"""One chair: its device links, its alarm engine, and where the engine's outputs go.

The bed session is the glue between the I/O edges and the pure engine. It implements the
link listener (decoded events and link up/down go into the engine with the monotonic time they
happened), turns engine actions into device commands (a confirmation NIBP reading), and
hands alert transitions to the publisher. It does no I/O itself.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from vitalwatch.config import BedConfig
from vitalwatch.drivers import Event, MeasurementStarter, Observation
from vitalwatch.drivers.events import DeviceStatus
from vitalwatch.drivers.vocabulary import UNRELIABLE_STATUSES
from vitalwatch.engine.outputs import (
    AlertTransition,
    NibpRequest,
    NursePrompt,
    Output,
    PhaseChanged,
    StatusChanged,
)
from vitalwatch.engine.roles import measures_nibp
from vitalwatch.link.contract import Link

__all__ = ["BedSession", "Engine", "OutputSink", "VitalPayload"]

# A vital payload, or a function that builds it: the publisher keeps only the latest value per
# kind, so building (and encoding) every observation's payload would be wasted work.
VitalPayload = dict[str, Any] | Callable[[], dict[str, Any]]

log = structlog.get_logger("vitalwatch.bed")


class Engine(Protocol):
    """The pure alarm engine as the bed session drives it (vitalwatch.engine.session.BedEngine)."""

    @property
    def phase(self) -> str: ...

    def observe(self, device: str, event: Event, now: float) -> list[Output]: ...

    def bytes_seen(self, device: str, now: float) -> None: ...

    def link(self, device: str, up: bool, now: float) -> list[Output]: ...

    def set_phase(self, phase: str, now: float) -> list[Output]: ...

    def acknowledge(self, alert_id: str, by: str, now: float) -> list[Output]: ...

    def tick(self, now: float) -> list[Output]: ...

    def active_alarms(self) -> list[AlertTransition]: ...


class OutputSink(Protocol):
    """Where alert transitions and telemetry go (the publisher)."""

    def alert(self, transition: AlertTransition) -> None: ...

    def vital(self, kind: str, payload: VitalPayload) -> None:
        """The latest value of ``kind``; ``payload`` may be a function called only if it is sent."""


class BedSession:
    """Feeds one bed's engine and dispatches what it returns."""

    def __init__(
        self,
        config: BedConfig,
        engine: Engine,
        *,
        sink: OutputSink | None = None,
        vital_payload: Callable[[str, Observation, float, bool], dict[str, Any]] | None = None,
        observers: list[Callable[[Output], None]] | None = None,
        recorder: Callable[[str, Observation, float, bool], None] | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.sink = sink
        # Called with every output before it is dispatched (the session journal listens here).
        self.observers: list[Callable[[Output], None]] = list(observers or [])
        self._vital_payload = vital_payload
        # The session record (vitalwatch.record.sessionlog) sees every observation and its validity.
        self.recorder = recorder
        self.links: dict[str, Link] = {}  # serial DeviceLink or network MllpRoute
        self.outputs: list[Output] = []  # kept for tests and `vitalwatch status`; trimmed
        self._unreliable: dict[str, set[str]] = {}
        # For health and metrics: when each device last gave a valid reading (monotonic s), and
        # how many alert transitions of each state this bed produced.
        self.last_valid: dict[str, float] = {}
        self.transition_counts: dict[str, int] = {}

    @property
    def bed(self) -> str:
        return self.config.id

    def link_states(self) -> dict[str, bool]:
        return {name: link.connected for name, link in self.links.items()}

    # -- LinkListener ------------------------------------------------------------------
    def on_events(self, device: str, events: list[Event], now: float) -> None:
        for event in events:
            if isinstance(event, DeviceStatus) and event.code in UNRELIABLE_STATUSES:
                codes = self._unreliable.setdefault(device, set())
                (codes.add if event.active else codes.discard)(event.code)
            if isinstance(event, Observation):
                valid = event.value is not None and not self._unreliable.get(device)
                if valid:
                    self.last_valid[device] = now
                if self.sink is not None and self._vital_payload is not None:
                    # Lazy: only the latest payload per kind is ever built (12 % of the CPU
                    # under load when every observation's was; docs/performance.md).
                    self.sink.vital(
                        event.kind, functools.partial(self._vital_payload, device, event, now, valid)
                    )
                if self.recorder is not None:
                    self.recorder(device, event, now, valid)
            self.dispatch(self.engine.observe(device, event, now))

    def on_link(self, device: str, up: bool, now: float, reason: str) -> None:
        task = asyncio.current_task()
        if not up and task is not None and task.cancelling():
            # The daemon is stopping and closed the port itself: not a lost link, and raising
            # link_lost now would journal a HIGH alarm that the next start shows as active.
            log.info("device.link_closed_on_stop", device=device)
            return
        if not up:
            self._unreliable.pop(device, None)
        log.info("device.link", device=device, up=up, reason=reason)
        self.dispatch(self.engine.link(device, up, now))

    # -- commands and timers -----------------------------------------------------------
    def tick(self, now: float) -> None:
        self.dispatch(self.engine.tick(now))

    def set_phase(self, phase: str, now: float) -> None:
        self.dispatch(self.engine.set_phase(phase, now))

    def acknowledge(self, alert_id: str, by: str, now: float) -> None:
        self.dispatch(self.engine.acknowledge(alert_id, by, now))

    def is_active(self, alert_id: str) -> bool:
        """Whether ``alert_id`` is an active alarm of this bed (a nurse may only ack those)."""
        return any(tr.alert_id == alert_id for tr in self.engine.active_alarms())

    def request_nibp(self, reason: str, now: float) -> bool:
        """Start a cuff cycle on the first NIBP device that can be commanded; False if none can."""
        for link in self.links.values():
            driver: object = link.driver  # any driver class may add the capability
            if measures_nibp(link.config.role) and isinstance(driver, MeasurementStarter):
                driver.start_measurement()
                link.poke()
                log.info("nibp.requested", device=link.config.id, reason=reason)
                return True
        return False

    def dispatch(self, outputs: list[Output]) -> None:
        for out in outputs:
            self.outputs.append(out)
            for observer in self.observers:
                observer(out)
            match out:
                case AlertTransition():
                    state = out.state.value
                    self.transition_counts[state] = self.transition_counts.get(state, 0) + 1
                    log.info(
                        "alert.transition",
                        alert_id=out.alert_id,
                        seq=out.seq,
                        state=out.state.value,
                        priority=out.priority.value,
                        condition=out.condition,
                    )
                    if self.sink is not None:
                        self.sink.alert(out)
                case NibpRequest():
                    if not self.request_nibp(out.reason, out.t):
                        prompt = NursePrompt(
                            t=out.t, bed=out.bed, text=f"Please take a blood pressure: {out.reason}"
                        )
                        self.outputs.append(prompt)
                        log.info("nurse.prompt", text=prompt.text)
                case PhaseChanged():
                    log.info("session.phase", phase=out.phase, previous=out.previous)
                case StatusChanged():
                    log.info("session.status", code=out.code, active=out.active)
                case NursePrompt():
                    log.info("nurse.prompt", text=out.text)
        if len(self.outputs) > 1000:
            del self.outputs[:-500]
