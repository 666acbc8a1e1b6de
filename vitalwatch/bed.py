"""One chair: its device links, its alarm engine, and where the engine's outputs go.

The bed session is the glue between the I/O edges and the pure engine (decoded events and
link up/down go into the engine with the monotonic time they happened), and the one owner of
two bed rules: which values are valid (it asks :meth:`BedEngine.is_valid`, the rule the alarms
use, and says so to the vitals topic and the session record) and what an NIBP request does
(:meth:`BedSession.request_nibp`: start the first commandable cuff, else prompt the nurse).

Everything is wired in the constructor: the links (built by a factory, because a link reports
to its session), the engine, the sink (the publisher), the observers of every output (session
journal, session record), the input taps (the recording journal) and the engine watchers (the
snapshot writer). The daemon passes serial-port links; replay passes links that only hold a
driver (:mod:`vitalwatch.continuity.replay`), so live and replay run this same code. It does
no I/O itself.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import structlog

from vitalwatch.config import BedConfig, DeviceConfig
from vitalwatch.drivers import Driver, Event, MeasurementStarter, Observation, driver_class
from vitalwatch.engine.outputs import (
    AlertTransition,
    NibpRequest,
    NursePrompt,
    Output,
    PhaseChanged,
    StatusChanged,
)
from vitalwatch.engine.roles import measures_nibp
from vitalwatch.engine.session import BedEngine
from vitalwatch.link.device_link import LinkListener

__all__ = [
    "BedSession",
    "EngineWatcher",
    "InputTap",
    "LinkFactory",
    "OutputSink",
    "SessionLink",
    "VitalPayload",
]

# A vital payload, or a function that builds it: the publisher keeps only the latest value per
# kind, so building (and encoding) every observation's payload would be wasted work.
VitalPayload = dict[str, Any] | Callable[[], dict[str, Any]]

log = structlog.get_logger("vitalwatch.bed")


# How long an engine's request for a reading waits for a startable cuff that is not linked yet
# before the nurse is asked to take it by hand: a cuff reconnects within seconds (the link's
# backoff is capped at 30 s), and a prompt for a reading the cuff then takes is noise.
NIBP_DEFER_S = 30.0


class SessionLink(Protocol):
    """What the bed session uses of a device's link (serial, network or replay): its config, its
    current driver, whether it is up, a nudge (:class:`vitalwatch.link.contract.Link` is more)."""

    @property
    def config(self) -> DeviceConfig: ...

    @property
    def driver(self) -> Driver | None: ...

    @property
    def connected(self) -> bool: ...

    def poke(self) -> None:
        """Send what a command just queued in the driver now, not at the next wake-up."""


L = TypeVar("L", bound=SessionLink)
LinkFactory = Callable[[DeviceConfig, LinkListener], L]


class OutputSink(Protocol):
    """Where alert transitions and telemetry go (the publisher)."""

    def alert(self, transition: AlertTransition) -> None: ...

    def vital(self, kind: str, payload: VitalPayload) -> None:
        """The latest value of ``kind``; ``payload`` may be a function called only if it is sent."""


class InputTap(Protocol):
    """Sees every input that does not come from device bytes, before the engine does (recording)."""

    def link(self, device: str, up: bool, now: float) -> None: ...

    def phase(self, phase: str, now: float) -> None: ...

    def age_band(self, band: str, now: float) -> None:
        """The session's age band was set (it changes the start gate and the table's limits)."""

    def ack(self, alert_id: str, by: str, now: float) -> None: ...

    def tick(self, now: float) -> None: ...

    def paused(self, gap_s: float, now: float) -> None:
        """The gateway itself did not run for ``gap_s`` up to ``now`` (:meth:`BedSession.gateway_paused`)."""


class EngineWatcher(Protocol):
    """Told after every engine call what came out (the snapshot writer decides when to write)."""

    def engine_fed(self, outputs: list[Output], now: float, *, tick: bool) -> None: ...


VitalBuilder = Callable[[str, Observation, float, bool], dict[str, Any]]
Recorder = Callable[[str, Observation, float, bool], None]


class BedSession(Generic[L]):
    """Feeds one bed's engine and dispatches what it returns; ``L`` is the kind of link it holds."""

    def __init__(
        self,
        config: BedConfig,
        engine: BedEngine,
        *,
        links: LinkFactory[L],
        sink: OutputSink | None = None,
        vital_payload: VitalBuilder | None = None,
        observers: Sequence[Callable[[Output], None]] = (),
        recorder: Recorder | None = None,
        taps: Sequence[InputTap] = (),
        watchers: Sequence[EngineWatcher] = (),
        prompt: Callable[[str, float], object] | None = None,
        before_input: Callable[[float], None] | None = None,
        logger: Any = None,
    ) -> None:
        self.config = config
        # The daemon logs what the bed does; replay passes a silent logger (its stdout is JSON).
        self._log = logger if logger is not None else log
        self.engine = engine
        self.sink = sink
        # Called with every output (session journal, session record): before it is dispatched,
        # except that an alert transition reaches the sink (its journal commit) first.
        self.observers = tuple(observers)
        self._vital_payload = vital_payload
        # The session record (vitalwatch.record.sessionlog) sees every observation and its validity.
        self.recorder = recorder
        self._taps = tuple(taps)
        self._watchers = tuple(watchers)
        # Told the reason of every NIBP request no device can carry out (the prompts topic).
        self._prompt = prompt
        # An engine request for a reading while the cuff that could take it is not linked yet
        # (at start-up, or while it reconnects): (reason, when). Started when the cuff's link
        # comes up; a nurse prompt if it has not within NIBP_DEFER_S.
        self._deferred_nibp: tuple[str, float] | None = None
        # Called with the time of every input before the engine sees it: the daemon's stall
        # check (vitalwatch.ops.stall), which calls gateway_paused on every bed after a stall.
        self._before_input = before_input
        self.outputs: list[Output] = []  # kept for tests and `vitalwatch status`; trimmed
        # For health and metrics: when each device last gave a valid reading (monotonic s), and
        # how many alert transitions of each state this bed produced.
        self.last_valid: dict[str, float] = {}
        self.transition_counts: dict[str, int] = {}
        self.links: dict[str, L] = {dev.id: links(dev, self) for dev in config.devices}

    @property
    def bed(self) -> str:
        return self.config.id

    @property
    def phase(self) -> str:
        """The session phase (the engine's), for the command handler's state machine."""
        return self.engine.phase

    def link_states(self) -> dict[str, bool]:
        return {name: link.connected for name, link in self.links.items()}

    # -- LinkListener ------------------------------------------------------------------
    def on_events(self, device: str, events: list[Event], now: float) -> None:
        self._arrived(now)
        engine = self.engine
        for event in events:
            if isinstance(event, Observation):
                valid = engine.is_valid(device, event, now)
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
            self._fed(engine.observe(device, event, now), now)

    def on_link(self, device: str, up: bool, now: float, reason: str) -> None:
        task = asyncio.current_task() if _loop_running() else None
        if not up and task is not None and task.cancelling():
            # The daemon is stopping and closed the port itself: not a lost link, and raising
            # link_lost now would journal a HIGH alarm that the next start shows as active.
            self._log.info("device.link_closed_on_stop", device=device)
            return
        self._arrived(now)
        self._log.info("device.link", device=device, up=up, reason=reason)
        for tap in self._taps:
            tap.link(device, up, now)
        self._fed(self.engine.link(device, up, now), now)
        if up and self._deferred_nibp is not None and self.request_nibp(self._deferred_nibp[0], now):
            self._deferred_nibp = None

    # -- commands and timers -----------------------------------------------------------
    def tick(self, now: float) -> None:
        self._arrived(now)
        for tap in self._taps:
            tap.tick(now)
        self._fed(self.engine.tick(now), now, tick=True)
        if self._deferred_nibp is not None and now - self._deferred_nibp[1] >= NIBP_DEFER_S:
            reason, _ = self._deferred_nibp
            self._deferred_nibp = None
            self._prompt_nurse(reason, now)

    def set_phase(self, phase: str, now: float) -> None:
        """A phase command (``pause``/``resume`` too); ValueError, with nothing recorded, when refused."""
        self.engine.check_phase(phase)
        self._arrived(now)
        for tap in self._taps:
            tap.phase(phase, now)
        self._fed(self.engine.set_phase(phase, now), now)

    def set_age_band(self, band: str, now: float) -> None:
        """The session's age band (``adult`` or ``older_adult``; never a date of birth)."""
        self._arrived(now)
        for tap in self._taps:
            tap.age_band(band, now)
        self._fed(self.engine.set_age_band(band, now), now)

    def acknowledge(self, alert_id: str, by: str, now: float) -> None:
        self._arrived(now)
        for tap in self._taps:
            tap.ack(alert_id, by, now)
        self._fed(self.engine.acknowledge(alert_id, by, now), now)

    def gateway_paused(self, gap_s: float, now: float) -> None:
        """The gateway did not run for ``gap_s`` up to ``now``: the engine must not count it as
        device silence. Recorded (a replay applies it at the same place) and handed to the engine."""
        for tap in self._taps:
            tap.paused(gap_s, now)
        self.engine.gateway_paused(gap_s, now)

    def _arrived(self, now: float) -> None:
        if self._before_input is not None:
            self._before_input(now)

    def is_active(self, alert_id: str) -> bool:
        """Whether ``alert_id`` is an active alarm of this bed (a nurse may only ack those)."""
        return any(tr.alert_id == alert_id for tr in self.engine.active_alarms())

    def active_ids(self) -> list[str]:
        """The bed's active alarms, for the result of an ``ack "*"``."""
        return [tr.alert_id for tr in self.engine.active_alarms()]

    def request_nibp(self, reason: str, now: float) -> bool:
        """Start a cuff cycle on the first NIBP device that can be commanded; False if none can.

        The one NIBP dispatch: an engine ``NibpRequest`` and a nurse's ``nibp`` command both
        come here, live and in replay.
        """
        for link in self.links.values():
            driver: object = link.driver  # any driver class may add the capability
            if measures_nibp(link.config.role) and isinstance(driver, MeasurementStarter):
                driver.start_measurement()
                link.poke()
                self._log.info("nibp.requested", device=link.config.id, reason=reason)
                return True
        return False

    def _fed(self, outputs: list[Output], now: float, *, tick: bool = False) -> None:
        if outputs:
            self.dispatch(outputs)
        for watcher in self._watchers:
            watcher.engine_fed(outputs, now, tick=tick)

    def dispatch(self, outputs: list[Output]) -> None:
        for out in outputs:
            if self.sink is not None and isinstance(out, AlertTransition):
                # The sink first: it submits the alert's FULL commit to the writer thread, so
                # the fsync runs while the observers, the log line and the rest of the device's
                # bytes are handled, not after them (alarm latency, docs/performance.md).
                self.sink.alert(out)
            self._emit(out)
            match out:
                case AlertTransition():
                    state = out.state.value
                    self.transition_counts[state] = self.transition_counts.get(state, 0) + 1
                    self._log.info(
                        "alert.transition",
                        alert_id=out.alert_id,
                        seq=out.seq,
                        state=out.state.value,
                        priority=out.priority.value,
                        condition=out.condition,
                    )
                case NibpRequest():
                    if self.request_nibp(out.reason, out.t):
                        self._deferred_nibp = None
                    elif self._startable_cuff_down():
                        # A newer request says why now; the wait counts from the first one.
                        since = self._deferred_nibp[1] if self._deferred_nibp is not None else out.t
                        self._deferred_nibp = (out.reason, since)
                        self._log.info("nibp.deferred", reason=out.reason, until_s=NIBP_DEFER_S)
                    else:
                        self._prompt_nurse(out.reason, out.t)
                case PhaseChanged():
                    self._log.info("session.phase", phase=out.phase, previous=out.previous)
                case StatusChanged():
                    self._log.info("session.status", code=out.code, active=out.active)
                case NursePrompt():
                    self._log.info("nurse.prompt", text=out.text)

    def _prompt_nurse(self, reason: str, now: float) -> None:
        text = f"Please take a blood pressure: {reason}"
        self._emit(NursePrompt(t=now, bed=self.bed, text=text))
        self._log.info("nurse.prompt", text=text)
        if self._prompt is not None:
            self._prompt(reason, now)

    def _startable_cuff_down(self) -> bool:
        """A cuff the daemon could start is configured but not linked (or has no driver) right now."""
        for link in self.links.values():
            cfg = link.config
            if not measures_nibp(cfg.role) or (link.connected and link.driver is not None):
                continue
            try:
                if issubclass(driver_class(cfg.driver), MeasurementStarter):
                    return True
            except KeyError:
                continue
        return False

    def _emit(self, out: Output) -> None:
        self.outputs.append(out)
        if len(self.outputs) > 1000:  # bounded, wherever an output comes from
            del self.outputs[:-500]
        for observer in self.observers:
            observer(out)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
