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

An alert goes to disk before the rest of its input is handled. The alert's FULL journal commit
runs on the writer thread, which needs the interpreter between its SQLite calls; while the loop
goes on with the rest of the device's bytes (the other observations of the line, the session
record, the log line), the commit waits for the loop. So a device input or a tick that raised
an alert stops right after the alert's submit and continues once the commit is on disk (after
the publisher has sent it) or after :data:`ALERT_COMMIT_WAIT_S` at the latest; what arrives
for this bed meanwhile waits behind it, in order. Before it hands the loop back, the bed blocks
for at most :data:`ALERT_COMMIT_BLOCK_S` until the writer thread is done, so the commit's SQLite
steps do not take turns with the loop's Python; waits that run out (a slow disk) may cost at
most :data:`COMMIT_BLOCK_BUDGET_S` in any :data:`COMMIT_BLOCK_WINDOW_S`.

The engine sees exactly the same inputs, in the same order and with the same times, so the
outputs are the same; only when they are handled moves, by about a millisecond. Every other
input (a link change, a command, a phase) first finishes what is waiting and then runs at once,
so a command sees the state it expects. Replay has no journal, so nothing ever waits there.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import Any, Generic, Protocol, TypeVar

import structlog

from vitalwatch.config import BedConfig, DeviceConfig
from vitalwatch.delivery.commit import Commit
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
from vitalwatch.link.driver_guard import fault_site

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

# The longest a bed's further input waits for an alert's journal commit (module docstring).
# The commit takes about a millisecond on an SSD and a few on an SD card; a stalled disk must
# not stall the bed's monitoring for longer than this, whatever the publisher then does.
ALERT_COMMIT_WAIT_S = 0.05
# Before it goes back to the event loop, the held input blocks for at most this long until the
# writer thread is done with the commit. Blocking releases the interpreter: the writer's SQLite
# steps then run back to back instead of taking turns with the loop's Python (each turn a thread
# switch), which halves the commit's time on the alarm path (docs/performance.md). The loop is
# stopped for at most this long, once per alert.
ALERT_COMMIT_BLOCK_S = 0.002
# Waits that run out (a disk slower than the wait: an SD card, a stalled disk) are charged to a
# budget per bed of this much in any COMMIT_BLOCK_WINDOW_S, refilled evenly (0.2 % of the loop):
# after ten of them the bed stops blocking until it refills, so a slow disk never costs the loop
# more, and a few slow commits among fast ones change nothing. A wait that ends with the commit
# is not charged: the loop would otherwise have spent that time holding the interpreter the
# writer needed, and the alert would have waited for both.
COMMIT_BLOCK_BUDGET_S = 0.02
COMMIT_BLOCK_WINDOW_S = 10.0

# An input being handled: each item is the journal commit of an alert it just raised, at which
# the rest of the input may wait (BedSession._drive).
Steps = Generator[Commit, None, None]


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

    def alert(self, transition: AlertTransition) -> Commit | None:
        """Journal and queue ``transition``; its journal commit (None: nothing is journalled)."""

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
        # An input that stopped at an alert's commit (with its logging context), the inputs that
        # came meanwhile, and what ends the wait (the commit's callback or the bound's timer).
        self._held: tuple[Steps, contextvars.Context] | None = None
        self._held_on: Commit | None = None
        self._waiting: deque[tuple[Steps, contextvars.Context]] = deque()
        self._wait_timer: asyncio.TimerHandle | None = None
        self._driving = False
        self._block_budget = COMMIT_BLOCK_BUDGET_S  # seconds the loop may still block, as of _budget_at
        self._budget_at = float("-inf")

    @property
    def bed(self) -> str:
        return self.config.id

    @property
    def phase(self) -> str:
        """The session phase (the engine's), for the command handler's state machine."""
        self.catch_up()
        return self.engine.phase

    def link_states(self) -> dict[str, bool]:
        return {name: link.connected for name, link in self.links.items()}

    # -- LinkListener ------------------------------------------------------------------
    def on_events(self, device: str, events: list[Event], now: float) -> None:
        self._in_order(self._events(device, events, now))

    def _events(self, device: str, events: list[Event], now: float) -> Steps:
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
            outputs = engine.observe(device, event, now)
            if outputs:
                yield from self._dispatched(outputs)
            for watcher in self._watchers:
                watcher.engine_fed(outputs, now, tick=False)

    def on_link(self, device: str, up: bool, now: float, reason: str) -> None:
        task = asyncio.current_task() if _loop_running() else None
        if not up and task is not None and task.cancelling():
            # The daemon is stopping and closed the port itself: not a lost link, and raising
            # link_lost now would journal a HIGH alarm that the next start shows as active.
            self._log.info("device.link_closed_on_stop", device=device)
            return
        self.catch_up()
        self._arrived(now)
        self._log.info("device.link", device=device, up=up, reason=reason)
        for tap in self._taps:
            tap.link(device, up, now)
        self._fed(self.engine.link(device, up, now), now)
        if up and self._deferred_nibp is not None and self.request_nibp(self._deferred_nibp[0], now):
            self._deferred_nibp = None

    # -- commands and timers -----------------------------------------------------------
    def tick(self, now: float) -> None:
        self._in_order(self._tick(now))

    def _tick(self, now: float) -> Steps:
        self._arrived(now)
        for tap in self._taps:
            tap.tick(now)
        outputs = self.engine.tick(now)
        if outputs:
            yield from self._dispatched(outputs)
        for watcher in self._watchers:
            watcher.engine_fed(outputs, now, tick=True)
        if self._deferred_nibp is not None and now - self._deferred_nibp[1] >= NIBP_DEFER_S:
            reason, _ = self._deferred_nibp
            self._deferred_nibp = None
            self._prompt_nurse(reason, now)

    def set_phase(self, phase: str, now: float) -> None:
        """A phase command (``pause``/``resume`` too); ValueError, with nothing recorded, when refused."""
        self.catch_up()
        self.engine.check_phase(phase)
        self._arrived(now)
        for tap in self._taps:
            tap.phase(phase, now)
        self._fed(self.engine.set_phase(phase, now), now)

    def set_age_band(self, band: str, now: float) -> None:
        """The session's age band (``adult`` or ``older_adult``; never a date of birth)."""
        self.catch_up()
        self._arrived(now)
        for tap in self._taps:
            tap.age_band(band, now)
        self._fed(self.engine.set_age_band(band, now), now)

    def acknowledge(self, alert_id: str, by: str, now: float) -> None:
        self.catch_up()
        self._arrived(now)
        for tap in self._taps:
            tap.ack(alert_id, by, now)
        self._fed(self.engine.acknowledge(alert_id, by, now), now)

    def gateway_paused(self, gap_s: float, now: float) -> None:
        """The gateway did not run for ``gap_s`` up to ``now``: the engine must not count it as
        device silence. Recorded (a replay applies it at the same place) and handed to the engine.

        Called from inside an input too (the stall check runs as each input arrives): then it
        applies right there, where the replay applies it."""
        self.catch_up()
        for tap in self._taps:
            tap.paused(gap_s, now)
        self.engine.gateway_paused(gap_s, now)

    def _arrived(self, now: float) -> None:
        if self._before_input is not None:
            self._before_input(now)

    def is_active(self, alert_id: str) -> bool:
        """Whether ``alert_id`` is an active alarm of this bed (a nurse may only ack those)."""
        self.catch_up()
        return any(tr.alert_id == alert_id for tr in self.engine.active_alarms())

    def active_ids(self) -> list[str]:
        """The bed's active alarms, for the result of an ``ack "*"``."""
        self.catch_up()
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

    def _fed(self, outputs: list[Output], now: float) -> None:
        """Outputs of an input that does not wait (module docstring): dispatched at once."""
        if outputs:
            self.dispatch(outputs)
        for watcher in self._watchers:
            watcher.engine_fed(outputs, now, tick=False)

    def dispatch(self, outputs: list[Output]) -> None:
        """Hand ``outputs`` on now, after what is waiting (tests and tools inject outputs here)."""
        self.catch_up()
        for _ in self._dispatched(outputs):
            pass

    def _dispatched(self, outputs: list[Output]) -> Steps:
        for out in outputs:
            if self.sink is not None and isinstance(out, AlertTransition):
                # The sink first: it submits the alert's FULL commit to the writer thread; the
                # input may stop here until it is on disk (module docstring).
                commit = self.sink.alert(out)
                if commit is not None:
                    yield commit
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

    # -- inputs in order, waiting for an alert's commit ----------------------------------
    def then(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` after every input taken so far: now, or once the waiting ones are handled
        (the daemon's ticker does the session record's timers this way, in order)."""
        self._in_order(_call(fn))

    def catch_up(self) -> None:
        """Finish every input that is waiting now, without waiting for the disk."""
        if self._driving or self._held is None:
            return
        self._end_wait()
        self._resume(wait=False)

    def _in_order(self, steps: Steps) -> None:
        if self._held is not None or self._waiting:
            self._waiting.append((steps, contextvars.copy_context()))
            return
        self._drive(steps)

    def _drive(self, steps: Steps, *, wait: bool = True) -> bool:
        """Run ``steps``; True when it stopped at an alert's commit (it is then held).

        An input handled inside another one (the stall check's pause, as it arrives) never
        stops: only the outermost input may wait.
        """
        nested, self._driving = self._driving, True
        try:
            for commit in steps:
                if wait and not nested and not commit.done() and _loop_running():
                    self._hold(steps, commit)
                    return True
        finally:
            self._driving = nested
        return False

    def _hold(self, steps: Steps, commit: Commit) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        refill = (now - self._budget_at) * COMMIT_BLOCK_BUDGET_S / COMMIT_BLOCK_WINDOW_S
        self._block_budget = min(COMMIT_BLOCK_BUDGET_S, self._block_budget + refill)
        self._budget_at = now
        if self._block_budget >= ALERT_COMMIT_BLOCK_S:  # room for one more wait that runs out
            if commit.wait_written(ALERT_COMMIT_BLOCK_S):
                commit.settle_written()  # the publisher's send, already woken, finds it settled
            else:
                self._block_budget -= ALERT_COMMIT_BLOCK_S
                if self._block_budget < ALERT_COMMIT_BLOCK_S:
                    self._log.info("bed.commit_block_spent", budget_ms=COMMIT_BLOCK_BUDGET_S * 1000)
        self._held, self._held_on = (steps, contextvars.copy_context()), commit
        self._wait_timer = loop.call_later(ALERT_COMMIT_WAIT_S, self._wait_over)
        commit.add_done_callback(functools.partial(self._committed, commit))

    def _committed(self, commit: Commit) -> None:
        # Scheduled, not run here: the publisher's send, woken by the same commit, goes first.
        if commit is self._held_on:
            asyncio.get_running_loop().call_soon(self._wait_over)

    def _wait_over(self) -> None:
        if self._held is None:
            return
        self._end_wait()
        self._resume(wait=True)

    def _end_wait(self) -> None:
        self._held_on = None
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None

    def _resume(self, *, wait: bool) -> None:
        """Continue the held input, then the ones that came meanwhile, until one waits again.

        Outside its caller's stack: an exception costs that one input (logged by type and
        place, never its text) and the inputs behind it still run.
        """
        held, self._held = self._held, None
        while held is not None:
            steps, context = held
            try:
                if context.run(self._drive, steps, wait=wait):
                    return  # waits again, on a commit of its own
            except Exception as exc:  # contained to this input
                self._log.error("bed.input_failed", error_type=type(exc).__name__, where=fault_site(exc))
            held = self._waiting.popleft() if self._waiting else None

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


def _call(fn: Callable[[], object]) -> Steps:
    """``fn`` as an input that never waits (:meth:`BedSession.then`)."""
    fn()
    yield from ()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
