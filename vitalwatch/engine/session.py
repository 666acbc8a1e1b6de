"""One bed's session: phases, baseline, rule evaluation, and the alarm lifecycle, clock passed in.

.. code-block:: text

    observe(device, event, now) ─┐
    bytes_seen / link(...)       ├─▶ advance timers to now ─▶ apply input ─▶ evaluate the rules
    set_phase / acknowledge      │                                          on the agenda ─▶ findings
    tick(now) ───────────────────┘                                                           │
                  [AlertTransition, NibpRequest, PhaseChanged, StatusChanged] ◀── AlarmBook ◀┘

Pure and deterministic: no I/O, no clock reads. ``now`` is monotonic seconds; a ``now``
earlier than one already seen is treated as the latest seen (a virtual clock never runs
back). The session starts in phase ``baseline`` at the first call.

Validity is :mod:`vitalwatch.engine.validity` (one rule, which the bed session also asks
through :meth:`BedEngine.is_valid` for the vitals topic and the session record). Physiological
rules never see an invalid value; they see time pass without valid signal, which pauses their
timers.

Only the rules on the :class:`~vitalwatch.engine.agenda.Agenda` run: those whose inputs changed,
those that found something last time, and those whose deadline
(:func:`~vitalwatch.engine.wakeup.wake_at`) has come; every other rule would find nothing. The
outputs are exactly those of evaluating every rule at every call (``evaluate_all``, the reference
strategy, kept for the identity test).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event, Observation
from vitalwatch.engine.agenda import Agenda
from vitalwatch.engine.baseline import Baseline, BaselineCollector
from vitalwatch.engine.book_state import book_from_state, book_to_state
from vitalwatch.engine.device_statuses import FAULT_STATUS, DeviceStatuses
from vitalwatch.engine.discharge import (
    Criterion,
    discharge_checklist,
    discharge_status,
    pulse_within,
    spo2_within,
)
from vitalwatch.engine.lifecycle import AlarmBook, Finding, OccurrenceKey
from vitalwatch.engine.outputs import AlertTransition, NibpRequest, Output, PhaseChanged, StatusChanged
from vitalwatch.engine.pause_clock import PauseClock
from vitalwatch.engine.roles import ROLES, measures_nibp, measures_oximetry
from vitalwatch.engine.rule_state import EPS, NibpRuleState, SustainState, sustained_limit
from vitalwatch.engine.rules import (
    FINDERS,
    BedView,
    baseline_request_reason,
    confirm_request_reason,
    due_request_reason,
    due_window_met,
    gate_check,
    nibp_check,
    nibp_finding,
    overdue_findings,
    peak_missed,
    sustained_finding,
)
from vitalwatch.engine.signals import NibpAssembler, NibpReading, ReadingLog, Sample, Signal, fmt
from vitalwatch.engine.snapshot import VERSION, StateReader, rule_digest
from vitalwatch.engine.table import RULE_TYPES, AlarmTable, Rule, compare
from vitalwatch.engine.validity import NIBP_KINDS, OXI_KINDS, part_of, unreliable
from vitalwatch.engine.vocabulary import AGE_BANDS, PHASE_COMMANDS, PHASES
from vitalwatch.engine.wakeup import deaf, wake_at

__all__ = ["BedEngine"]


def _shortest_timer(table: AlarmTable) -> float:
    """The shortest positive re-notify, escalation, acknowledgement silence or baseline request
    spacing of ``table``; ``0.0`` when the spacing is 0 (an instant may then ask twice)."""
    if table.baseline.nibp_spacing_s <= 0:
        return 0.0
    timers = [*table.renotify_s.values(), *table.escalate_s.values(), table.ack_silence_s]
    return min([t for t in timers if t > 0] + [table.baseline.nibp_spacing_s])


# Decode problems that say nothing about the line: the driver guard's own (a driver exception).
_NOT_LINE_NOISE = ("driver_fault:", "skipped_while_restarting")
_NO_STATUS: frozenset[str] = frozenset()
# A baseline cuff reading asked for and not come is asked for again after this long at the
# soonest (a cuff cycle takes 30-60 s); the table's spacing applies when it is longer.
BASELINE_RETRY_S = 60.0
# What _running_rules worked out for a signal: its sample, the limits, the phase, and the rules.
_Running = tuple[Sample | None, dict[str, float | None], str, list[tuple[Rule, bool]]]
# What _discharge worked its last key out from: the key, the SpO2 and pulse, the frozen baseline.
_DischargeSeen = tuple[tuple[Any, ...], float | None, float | None, Baseline | None]


def _same(a: float | None, b: float | None) -> bool:
    """Whether two baseline values are the same number: equal with the same sign (a limit worked
    out from -0.0 is not one from 0.0), or the very same object (a NaN)."""
    if a is b:
        return True
    return a is not None and b is not None and a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


class BedEngine:
    """The session and alarm engine of one bed (see the module docstring for the data flow)."""

    def __init__(
        self,
        table: AlarmTable,
        bed: str,
        devices: Mapping[str, str],
        id_factory: Callable[[], str] | None = None,
        *,
        older_adult: bool = False,
        evaluate_all: bool = False,
    ) -> None:
        for device, role in devices.items():
            if role not in ROLES:
                raise ValueError(f"device {device!r}: role must be one of {', '.join(ROLES)}, got {role!r}")
        self.table = table
        self.bed = bed
        self._roles = dict(devices)
        self._older_adult = older_adult  # start gate uses systolic_above_65
        self._evaluate_all = evaluate_all
        self._agenda = Agenda(table.rules, "baseline", evaluate_all=evaluate_all)
        self._index = {rule.id: i for i, rule in enumerate(table.rules)}
        self._of_type = {t: table.rules_of(t) for t in RULE_TYPES}
        self._sustained_of: dict[str | None, list[Rule]] = {}  # parameter -> its sustained rules
        for rule in self._of_type["sustained"]:
            self._sustained_of.setdefault(rule.parameter, []).append(rule)
        self._baseline_key: tuple[float | None, ...] | None = None
        self._readings_seen = 0  # NIBP readings completed so far (the discharge check's input)
        self._discharge_key: tuple[Any, ...] | None = None
        self._discharge_seen: _DischargeSeen | None = None
        self._confirm_at = -math.inf  # no confirmation reading can be due before this
        # The baseline SpO2 and pulse that _limit_cache was worked out for (None: not yet); the
        # limits are a function of those two values alone (sustained_limit)
        self._limits_for: tuple[float | None, float | None] | None = None
        self._limits_frozen: Baseline | None = None  # the frozen baseline they are known to hold for
        self._limit_cache: dict[str, float | None] = {}
        # signal -> (sample, limits, phase, its running sustained rules): _running_rules
        self._running: dict[str, _Running] = {}
        # parameter -> (value, limits, phase) of its last valid sample when that left every
        # sustained rule of the parameter in range and reset (_on_sample)
        self._quiet: dict[str, tuple[float, dict[str, float | None], str]] = {}
        self._held_findings: dict[int, list[Finding]] = {}  # a held rule's last findings (agenda)
        self._count = 0
        self._book = AlarmBook(table, bed, id_factory or self._next_id, self._describe_now)
        self._started = False
        self._now = 0.0
        self._phase = "baseline"
        self._phase_start = 0.0
        self.phase_starts: dict[str, float] = {}
        self._signals = {p: Signal(p, table.sample_hold_s) for p in OXI_KINDS}
        self._spo2, self._pulse = self._signals["spo2"], self._signals["pulse_rate"]
        self._statuses = DeviceStatuses(devices)  # on per device; carried over a fresh connection
        self._last_bytes: dict[str, float] = {}
        self._port_down: set[str] = set()
        self._assembler = NibpAssembler()
        self._nibp = ReadingLog()
        self._collector = BaselineCollector(table.baseline)
        self._frozen: Baseline | None = None
        self._sustain = {r.id: SustainState() for r in table.rules_of("sustained")}
        self._nibp_rules = {r.id: NibpRuleState() for r in table.rules if r.type in ("nibp", "nibp_gate")}
        self._due_requested: set[str] = set()
        self._discharge_ready = False
        self._baseline_requested: float | None = None
        self._clock = PauseClock()  # the current phase's pauses (a paused infusion)
        self._last_valid: dict[str, float] = {}  # device -> its latest valid value (armed devices)
        self._problems: dict[str, tuple[float, float]] = {}  # device -> first, last decode problem
        self._garbled: set[str] = set()
        self._pump_stop: float | None = None  # when the infusion ended
        self._pump_stop_elapsed: float | None = None  # its clock then (paused time excluded)
        # The engine time of the last evaluation when nothing changed since (None otherwise): an
        # evaluation again at that instant would find what it found and emit nothing (see
        # _settled), so a tick there, or an observation no rule reads, skips it.
        self._settled_at: float | None = None
        self._entered_at: float | None = None  # the instant _enter last brought the session to
        self._shortest_timer = _shortest_timer(table)
        self._reads: dict[str, frozenset[str]] = {}  # device -> the observation kinds the engine uses
        self._has_cuff = any(measures_nibp(role) for role in self._roles.values())

    # ------------------------------------------------------------------ public API
    @property
    def phase(self) -> str:
        """The current phase: baseline, infusion, recovery or ended."""
        return self._phase

    @property
    def devices(self) -> dict[str, str]:
        """The configured devices, id -> role."""
        return dict(self._roles)

    @property
    def baseline(self) -> Baseline:
        """The baseline in force (live during the baseline phase, frozen afterwards)."""
        return self._frozen if self._frozen is not None else self._collector.estimate()

    def observe(self, device: str, event: Event, now: float) -> list[Output]:
        """A driver event from ``device`` (a decoded one also proves the link carries data)."""
        if not isinstance(event, Observation):
            return self._observe_other(device, event, now)
        # Most calls: one value of a device read. Its kind is one the engine reads from this
        # device's role (an SpO2, a pulse, a part of a BP reading) or one no rule reads.
        kind = event.kind
        reads = self._reads.get(device)
        if reads is None:
            reads = self._kinds_read(device)
        if kind not in reads and self._settled(now) and self._last_bytes.get(device) == self._now:
            # A value no rule reads (perfusion index, cuff pressure) at the instant just
            # evaluated, from a device already heard at it: only its data mark is news.
            self._statuses.data(device, self._now)
            return []
        out = self._enter(now)
        now = self._now
        self._last_bytes[device] = now
        self._statuses.data(device, now)
        if kind in reads:
            if kind in OXI_KINDS:  # read from this device: its role measures oximetry
                value = event.value
                valid = value is not None and not self._unreliable(device, "oxi")
                if valid:
                    self._note_valid(device, now)
                self._on_sample(kind, Sample(now, value, valid, device))
            else:  # an NIBP kind, read from this device: its role measures NIBP
                unreliable = self._unreliable(device, "nibp")
                for done in self._assembler.add(device, kind, event.value, unreliable, now):
                    out.extend(self._on_reading(*done))
        if out:
            out.extend(self._evaluate(now))
            return out
        return self._evaluate(now)

    def _observe_other(self, device: str, event: Event, now: float) -> list[Output]:
        """:meth:`observe` for a device status or a decode problem."""
        out = self._enter(now)
        now = self._now
        if not isinstance(event, DecodeProblem):  # undecodable bytes (wrong baud rate) are not data
            self._last_bytes[device] = now
            if not (isinstance(event, DeviceStatus) and event.code == FAULT_STATUS):  # not the link's own
                self._statuses.data(device, now)
        match event:
            case DeviceStatus(code=code, active=active):
                self._statuses.report(device, code, active)
                self._agenda.touch("status")
                if active and self._unreliable(device, "oxi"):
                    self._invalidate(device, now)
            case DecodeProblem(reason=reason) if not reason.startswith(_NOT_LINE_NOISE):
                self._decode_problem(device, now)
            case DecodeProblem():
                pass  # the decoder's own fault (driver_fault), not garbled bytes
        return out + self._evaluate(now)

    def is_valid(self, device: str, observation: Observation, now: float | None = None) -> bool:
        """Whether ``observation`` from ``device`` is a usable value, under the statuses in force at
        ``now`` (default: the latest time the engine was given).

        The bed session asks this before it hands the observation to :meth:`observe` at the same
        ``now``, so the vitals topic and the session record call valid exactly what the rules use
        (a status carried over a reconnect may end at that very call).
        """
        if observation.value is None:
            return False
        if device not in self._garbled and not self._statuses.on.get(device):
            return True  # no status on for the device: nothing to spoil it (most calls)
        at = self._now if now is None else max(now, self._now)
        return not self._unreliable(device, part_of(observation.kind), at)

    def bytes_seen(self, device: str, now: float) -> None:
        """Bytes arrived from ``device`` (even undecodable ones): its link is alive."""
        if not self._started:
            self._start(now)
        self._settled_at = None
        self._last_bytes[device] = max(now, self._last_bytes.get(device, now))

    def gateway_paused(self, gap_s: float, now: float) -> None:
        """The gateway itself did not run for ``gap_s`` up to ``now``: that gap is not device silence.

        A stopped or starved process reads every device's buffered bytes late, one device after
        the other; counted as silence, the first device read would make every other device's
        ``link_lost`` fire for a gap the monitors did not cause. Each device's last data moves
        forward by the gap (never past ``now``), so silence counts only while the gateway ran.
        Nothing to snapshot: a restored engine counts every device as just connected.
        """
        if not math.isfinite(gap_s) or gap_s < 0:
            raise ValueError(f"gap_s must be a finite number >= 0, got {gap_s!r}")
        for device, seen in self._last_bytes.items():
            self._last_bytes[device] = min(max(now, seen), seen + gap_s)
        self._settled_at = None
        self._agenda.touch("port")

    def link(self, device: str, up: bool, now: float) -> list[Output]:
        """The port of ``device`` opened (``up``: a fresh connection, whose driver knows none of
        the statuses from before; see :mod:`vitalwatch.engine.device_statuses`) or vanished."""
        out = self._enter(now)
        if up:
            self._port_down.discard(device)
            self._statuses.fresh_start(device)
        else:
            self._port_down.add(device)
        self._agenda.touch("port")
        return out + self._evaluate(self._now)

    def set_phase(self, phase: str, now: float) -> list[Output]:
        """Move the session to ``phase`` (a nurse's command); ValueError for an unknown phase.

        ``pause`` and ``resume`` (the same command) pause and resume the infusion: see :meth:`pause`.
        """
        self.check_phase(phase)
        if phase == "pause":
            return self.pause(now)
        if phase == "resume":
            return self.resume(now)
        out = self._enter(now)
        now = self._now
        if phase == self._phase:
            return out + self._evaluate(now)
        previous = self._phase
        if previous == "baseline":
            self._frozen = self._collector.estimate()
        if phase == "baseline":  # a new session: the last patient's baseline is not this one's
            self._frozen = None
            self._collector = BaselineCollector(self.table.baseline)
        if previous == "infusion":  # the pump stopped: the peak window is judged on its clock
            self._pump_stop, self._pump_stop_elapsed = now, self._clock.running(self._phase_start, now)
        if phase == "infusion":
            self._pump_stop = self._pump_stop_elapsed = None
        was_paused = self._clock.paused
        self._clock.reset()
        self._phase, self._phase_start = phase, now
        self.phase_starts[phase] = now
        self._due_requested.clear()
        self._agenda.touch_all(self._phase)
        self._baseline_key = None
        self._confirm_at = -math.inf
        for rule in self.table.rules:
            if phase not in rule.phases:
                if rule.id in self._sustain:
                    self._sustain[rule.id].reset()
                if rule.id in self._nibp_rules:
                    self._nibp_rules[rule.id].reset()
        changed = PhaseChanged(t=now, bed=self.bed, phase=phase, previous=previous)
        if phase == "ended":
            # The alarms end first and then the session, so that the session record (which closes
            # at the phase change) holds every clear.
            out.extend(self._book.clear_all(now, self._ctx(now)))
            out.extend(self._book.orphans.clear_all(now, phase))
        out.append(changed)
        if was_paused:
            out.append(self._pause_status(False, now))
        out.extend(self._evaluate(now))
        return out

    def check_phase(self, phase: str) -> None:
        """ValueError when :meth:`set_phase` would refuse ``phase`` now (unknown, or a pause or
        resume outside the infusion), so a caller can refuse a command before recording it."""
        if phase not in PHASE_COMMANDS:
            raise ValueError(f"unknown phase {phase!r} (phases: {', '.join(PHASE_COMMANDS)})")
        if phase in ("pause", "resume") and self._phase != "infusion":
            raise ValueError(f"{phase}: only an infusion can be paused or resumed (phase is {self._phase})")

    # ------------------------------------------------------------------ infusion pause
    @property
    def paused(self) -> bool:
        """Whether the infusion is paused (the phase stays ``infusion``)."""
        return self._clock.paused

    def phase_elapsed(self, now: float) -> float | None:
        """Seconds into the current phase at ``now``, paused time not counted; None before the start."""
        if not self._started:
            return None
        return self._clock.running(self._phase_start, max(now, self._now))

    def pause(self, now: float) -> list[Output]:
        """The nurse paused the infusion: its clock stops, the phase and every alarm stay.

        The infusion clock drives ``infusion_overrun``, the NIBP peak window and the NIBP
        schedule (``nibp_overdue``); alarms, re-notification and escalation keep running on the
        real clock. ValueError outside the infusion; pausing a paused infusion changes nothing.
        """
        self.check_phase("pause")
        out = self._enter(now)
        if self._clock.pause(self._now):
            self._agenda.touch_all(self._phase)
            out.append(self._pause_status(True, self._now))
        return out + self._evaluate(self._now)

    def resume(self, now: float) -> list[Output]:
        """The nurse resumed a paused infusion: its clock runs again from where it stopped.

        ValueError outside the infusion; resuming a running infusion changes nothing.
        """
        self.check_phase("resume")
        out = self._enter(now)
        if self._clock.resume(self._now):
            self._agenda.touch_all(self._phase)
            out.append(self._pause_status(False, self._now))
        return out + self._evaluate(self._now)

    def _pause_status(self, paused: bool, now: float) -> StatusChanged:
        minutes = round(self._clock.running(self._phase_start, now) / 60.0, 1)
        return StatusChanged(
            t=now, bed=self.bed, code="infusion_paused", active=paused, detail={"infusion_minutes": minutes}
        )

    # ------------------------------------------------------------------ age band
    @property
    def age_band(self) -> str:
        """``older_adult`` (>= 65 years: the start gate's SBP limit is higher) or ``adult``."""
        return "older_adult" if self._older_adult else "adult"

    def set_age_band(self, band: str, now: float) -> list[Output]:
        """The session's age band (never a date of birth); the start gate is judged again."""
        if band not in AGE_BANDS:
            raise ValueError(f"unknown age band {band!r} (age bands: {', '.join(AGE_BANDS)})")
        out = self._enter(now)
        self._older_adult = band == "older_adult"
        for rule in self._of_type["nibp_gate"]:
            if self._phase in rule.phases:
                self._gate_reading(rule)
        self._agenda.touch_all(self._phase)
        return out + self._evaluate(self._now)

    def acknowledge(self, alert_id: str, by: str, now: float) -> list[Output]:
        """A nurse acknowledged ``alert_id`` (``"*"``: every active alarm of the bed)."""
        out = self._enter(now)
        out.extend(self._book.acknowledge(alert_id, by, self._now, self._ctx(self._now)))
        out.extend(self._evaluate(self._now))
        if self._book.orphans:
            out.extend(self._book.orphans.acknowledge(alert_id, by, now, self._phase))
            self._settled_at = None  # an orphan's ack is read when its alarm is found again
        return out

    def tick(self, now: float) -> list[Output]:
        """Run the timers: sustained delays, re-notify, escalation, overdue, link silence."""
        if self._settled(now):
            out: list[Output] = []  # the instant was just evaluated and nothing came since
        else:
            out = self._enter(now)
            out.extend(self._evaluate(self._now))
        if self._book.orphans:
            out.extend(self._book.orphans.expire(now, self._phase))
            self._settled_at = None  # an expired orphan is no longer there to be found again
        return out

    def discharge_checklist(self, now: float) -> list[Criterion]:
        """Every discharge criterion, met or missing, as of ``now`` ([] outside recovery)."""
        return discharge_checklist(self.table.discharge, **self._discharge_inputs(max(now, self._now)))

    # ------------------------------------------------------------------ continuity
    @property
    def seq(self) -> int:
        """The seq of this bed's latest alert transition (0 before the first)."""
        return self._book.seq

    @property
    def phase_start(self) -> float | None:
        """When the current phase began (engine time); None until the session started."""
        return self._phase_start if self._started else None

    def seed(self, *, seq: int, phase_elapsed_s: float | None = None, now: float | None = None) -> None:
        """Continue an earlier process's session: seq numbering after ``seq``, and the phase clock.

        ``phase_elapsed_s`` (with ``now``) says how long the current phase has been running, so
        the phase, overdue and overrun clocks count from the real start, not from the restart.
        """
        self._book.seed_seq(seq)
        self._settled_at = None
        if phase_elapsed_s is not None:
            if now is None:
                raise ValueError("seed: phase_elapsed_s needs now")
            if not self._started:
                self._start(now)
            self._phase_start = now - phase_elapsed_s
            self.phase_starts[self._phase] = self._phase_start
            self._agenda.touch_all(self._phase)

    def adopt(self, alarms: Sequence[AlertTransition], *, now: float, grace_s: float) -> None:
        """Alarms a station still shows from an earlier process: continue them when found again.

        See :mod:`vitalwatch.engine.adoption` (same alert_id, a journalled ack applied again;
        cleared after ``grace_s`` unless latched).
        """
        self._book.adopt(alarms, now=now, grace_s=grace_s)
        self._settled_at = None

    @property
    def orphans(self) -> list[AlertTransition]:
        """Adopted alarms not found again yet."""
        return self._book.orphans.latest()

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The whole session state as strict JSON data, for :meth:`restore` after a restart.

        Records ``taken_at``: the latest time any call gave the engine, or ``now`` (the caller's
        clock at the snapshot) when later. Format: :mod:`vitalwatch.engine.snapshot`.
        """
        rules: dict[str, Any] = {}
        for rule in self.table.rules:
            if rule.id in self._sustain:
                state, kind = self._sustain[rule.id].snapshot(), "sustained"
            elif rule.id in self._nibp_rules:
                state, kind = self._nibp_rules[rule.id].snapshot(), "nibp"
            else:
                continue
            rules[rule.id] = {"digest": rule_digest(rule), "type": kind, "state": state}
        return {
            "version": VERSION,
            "taken_at": max([self._now, *self._last_bytes.values(), *([now] if now is not None else [])]),
            "now": self._now,
            "bed": self.bed,
            "devices": dict(self._roles),
            "older_adult": self._older_adult,
            "id_counter": self._count,
            "started": self._started,
            "phase": self._phase,
            "phase_start": self._phase_start,
            "phase_starts": dict(self.phase_starts),
            "signals": {p: sig.snapshot() for p, sig in self._signals.items()},
            "nibp_pending": self._assembler.snapshot(),
            "nibp_readings": self._nibp.snapshot(),
            "baseline": self._collector.snapshot(),
            "frozen_baseline": self._frozen.to_state() if self._frozen is not None else None,
            "rules": rules,
            "port_down": sorted(self._port_down),
            "due_requested": sorted(self._due_requested),
            "discharge_ready": self._discharge_ready,
            "baseline_requested": self._baseline_requested,
            "alarms": book_to_state(self._book),
            "pauses": self._clock.snapshot(),
            "last_valid": dict(self._last_valid),
            "pump_stop": self._pump_stop,
            "pump_stop_elapsed": self._pump_stop_elapsed,
        }

    @classmethod
    def restore(
        cls,
        table: AlarmTable,
        state: Mapping[str, Any],
        id_factory: Callable[[], str] | None = None,
        *,
        now: float,
        elapsed_outage_s: float = 0.0,
    ) -> BedEngine:
        """Continue a session from :meth:`snapshot` in a new process whose clock reads ``now``.

        Every stored time moves by ``now - elapsed_outage_s - taken_at``: with the default the
        outage is not counted; pass the wall-clock gap to count it in the phase, overdue,
        re-notify and escalation clocks (valid-signal timers pause over it). Devices
        count as just connected. ValueError, naming the field, for another version or a missing
        or invalid field. Details: :mod:`vitalwatch.engine.snapshot`.
        """
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite number, got {now!r}")
        if not math.isfinite(elapsed_outage_s) or elapsed_outage_s < 0:
            raise ValueError(f"elapsed_outage_s must be a finite number >= 0, got {elapsed_outage_s!r}")
        top = StateReader(state, "", 0.0)
        version = top.raw("version")
        if version != VERSION:
            raise ValueError(
                f"engine snapshot: version: this engine reads version {VERSION}, got {version!r}"
            )
        r = StateReader(state, "", now - elapsed_outage_s - top.when("taken_at"))
        devices = r.text_map("devices")
        for device, role in devices.items():
            if role not in ROLES:
                raise ValueError(
                    f"engine snapshot: devices.{device}: expected one of {', '.join(ROLES)}, got {role!r}"
                )
        engine = cls(table, r.text("bed"), devices, id_factory, older_adult=r.flag("older_adult"))
        engine._load(r, now)
        return engine

    def _load(self, r: StateReader, now: float) -> None:
        """The rest of :meth:`restore`: every part of the session from its snapshot form."""
        self._count = r.integer("id_counter")
        self._started = r.flag("started")
        self._now = r.when("now")
        self._phase = r.text("phase", PHASES)
        self._phase_start = r.when("phase_start")
        self.phase_starts = r.when_map("phase_starts")
        for phase in self.phase_starts:
            if phase not in PHASES:
                raise ValueError(f"engine snapshot: phase_starts.{phase}: not a phase ({', '.join(PHASES)})")
        signals = r.child("signals")
        for p, sig in self._signals.items():
            sig.restore_state(signals.child(p))
        self._assembler.restore_state(r, "nibp_pending")
        self._nibp.restore_state(r, "nibp_readings")
        self._collector.restore_state(r.child("baseline"))
        frozen = r.opt_child("frozen_baseline")
        self._frozen = Baseline.from_state(frozen) if frozen is not None else None
        self._load_rules(r)
        self._port_down = set(r.texts("port_down"))
        self._due_requested = set(r.texts("due_requested"))
        self._discharge_ready = r.flag("discharge_ready")
        self._baseline_requested = r.opt_when("baseline_requested")
        book_from_state(self._book, r.child("alarms"))
        # Added later (absent in an older snapshot): the infusion's pauses, the armed devices and
        # the pump stop. Decode-problem runs are not kept: the daemon starts fresh drivers.
        if r.has("pauses"):
            self._clock.restore_state(r.child("pauses"))
        if r.has("last_valid"):
            self._last_valid = r.when_map("last_valid")
        if r.has("pump_stop"):
            self._pump_stop = r.opt_when("pump_stop")
            stopped = r.raw("pump_stop_elapsed")
            self._pump_stop_elapsed = None if stopped is None else r.seconds("pump_stop_elapsed")
        if self._started:
            # Just connected: the daemon reopens every port and its drivers report afresh.
            self._last_bytes = dict.fromkeys(self._roles, now)
        self._agenda.touch_all(self._phase)

    def _load_rules(self, r: StateReader) -> None:
        """Rule states by id; one whose definition changed (digest) or vanished is left fresh."""
        digests = {rule.id: rule_digest(rule) for rule in self.table.rules}
        for rule_id, c in r.child_map("rules").items():
            digest = c.text("digest")
            kind = c.text("type", ("sustained", "nibp"))
            st: SustainState | NibpRuleState = SustainState() if kind == "sustained" else NibpRuleState()
            st.restore_state(c.child("state"))  # validated even when it is not used
            if digests.get(rule_id) != digest:
                continue
            if isinstance(st, SustainState) and rule_id in self._sustain:
                self._sustain[rule_id] = st
            elif isinstance(st, NibpRuleState) and rule_id in self._nibp_rules:
                self._nibp_rules[rule_id] = st

    def active_alarms(self) -> list[AlertTransition]:
        """The latest transition of each active alarm: adopted ones not found again first, then
        the engine's own in the order they were raised."""
        mine = [occ.last for occ in self._book.active() if occ.last is not None]
        return [*self._book.orphans.latest(), *mine] if self._book.orphans else mine

    def explain(self, alert_id: str) -> dict[str, Any]:
        """Which rule and which readings caused ``alert_id`` (KeyError when unknown)."""
        occ = self._book.find(alert_id)
        if occ is None:
            raise KeyError(alert_id)
        rule = self.table.rule(occ.rule)
        fields = ("type", "condition", *RULE_TYPES[rule.type])
        definition = {name: getattr(rule, name) for name in fields if getattr(rule, name) is not None}
        return {
            "alert_id": occ.alert_id,
            "condition": occ.finding.condition,
            "priority": occ.priority.value,
            "rule": rule.id,
            "rule_definition": {**definition, "priority": rule.priority.value, "phases": sorted(rule.phases)},
            "message": occ.finding.message,
            "evidence": list(occ.finding.evidence),
            "onset_t": occ.onset_t,
            "active": any(o is occ for o in self._book.active()),
            "history": list(occ.history),
            "baseline": self.baseline.describe(),
        }

    # ------------------------------------------------------------------ time
    def _next_id(self) -> str:
        self._count += 1
        return f"{self.bed}-{self._count:06d}"

    def _start(self, now: float) -> None:
        self._started = True
        self._now = self._phase_start = now
        self.phase_starts["baseline"] = now
        for device in self._roles:
            self._last_bytes.setdefault(device, now)

    def _enter(self, now: float) -> list[Output]:
        """Bring the session to ``now``: finish NIBP readings of earlier instants, advance timers."""
        if not self._started:
            self._start(now)
        now = max(now, self._now)
        if now == self._entered_at and now - now == 0.0:
            # The instant the last call entered (a device read's next value), a finite one:
            # nothing can expire or finish at it since, as everything since is stamped with it.
            self._now = now
            return []
        out: list[Output] = []
        if self._statuses.expire(now):  # statuses carried over a reconnect and not reported again
            self._agenda.touch("status")
        self._advance(now)
        for done in self._assembler.flush(now):
            out.extend(self._on_reading(*done))
        self._entered_at = now
        return out

    def _settled(self, now: float) -> bool:
        """Whether an evaluation at ``now`` would change nothing and emit nothing.

        True when the last call evaluated the engine's instant, nothing came since and ``now``
        is not later. An evaluation again at the same instant with the same inputs is a no-op:
        the rules are functions of the state and the time (the same findings again), every
        request is asked once (the confirmation, due and peak requests are marked; a baseline
        request waits its spacing), the discharge status reports edges, and the alarm book's
        timers were re-armed a positive time ahead at that instant. The last holds only while
        ``now`` plus the shortest positive timer is later than ``now`` in floating point, and
        the baseline request's only while its spacing is positive: ``_shortest_timer`` is
        ``0.0`` for a table without that spacing, and then nothing is skipped.
        """
        at = self._now
        return self._settled_at == at and now <= at and at + self._shortest_timer > at

    def _kinds_read(self, device: str) -> frozenset[str]:
        """The observation kinds of ``device`` that :meth:`observe` hands to a rule (its role's)."""
        kinds = self._reads.get(device)
        if kinds is None:
            role = self._roles.get(device, "multi")
            oxi = OXI_KINDS if measures_oximetry(role) else ()
            kinds = frozenset((*oxi, *(NIBP_KINDS if measures_nibp(role) else ())))
            self._reads[device] = kinds
        return kinds

    def _advance(self, now: float) -> None:
        """Credit the time since the last call to the sustained timers and the baseline."""
        t0 = self._now
        self._now = now
        if now <= t0:
            return
        spo2, pulse = self._spo2, self._pulse
        if self._phase == "baseline":
            spo2_credit, pulse_credit = spo2.credit(t0, now), pulse.credit(t0, now)
            self._collector.add_valid_time("spo2", spo2_credit)
            self._collector.add_valid_time("pulse_rate", pulse_credit)
            if not (spo2_credit > 0 or pulse_credit > 0):
                return  # no valid signal in the interval: no sustained timer runs
        frozen = self._frozen
        limits = self._limit_cache if frozen is not None and frozen is self._limits_frozen else self._limits()
        phase = self._phase
        for sig in (spo2, pulse):
            # Which timers run first (mostly none), the credit only for them: the same
            # additions as crediting every signal and skipping those without time.
            known = self._running.get(sig.name)  # _running_rules's own check, without the call
            if known is not None and known[0] is sig.current and known[1] is limits and known[2] == phase:
                running = known[3]
            else:
                running = self._running_rules(sig, limits)
            if not running:
                continue
            credit = sig.credit(t0, now)
            if credit <= 0:
                continue
            for rule, bypassed in running:
                st = self._sustain[rule.id]
                st.acc += credit
                if bypassed:
                    st.bypass_acc += credit

    def _running_rules(self, sig: Signal, limits: dict[str, float | None]) -> list[tuple[Rule, bool]]:
        """The sustained rules of the phase on ``sig`` whose condition its held value meets (and
        whether it also meets the bypass limit): those whose timers run while it is held. Worked
        out again only for another sample, other limits or another phase (an engine advancing
        many times per sample would otherwise compare every rule at every call)."""
        cur, phase = sig.current, self._phase
        known = self._running.get(sig.name)
        if known is not None and known[0] is cur and known[1] is limits and known[2] == phase:
            return known[3]
        running: list[tuple[Rule, bool]] = []
        if cur is not None and cur.value is not None:
            for rule in self._of_type["sustained"]:
                if phase not in rule.phases or (rule.parameter or "spo2") != sig.name:
                    continue
                limit = limits[rule.id]
                if limit is None or not compare(rule.compare, cur.value, limit):
                    continue
                bypass = rule.bypass_limit
                running.append((rule, bypass is not None and compare(rule.compare, cur.value, bypass)))
        self._running[sig.name] = (cur, limits, phase, running)
        return running

    def _limits(self) -> dict[str, float | None]:
        """Each sustained rule's limit in force (:func:`sustained_limit`), worked out again only
        when the baseline SpO2 or pulse in force changes: a limit reads nothing else of the
        baseline. The same dict while they stay lets _running_rules and _on_sample keep what they
        worked out under it (they compare it by identity), in the baseline phase too, where
        the baseline in force is a new object at every call (its valid time moves on)."""
        frozen = self._frozen
        if frozen is not None:
            if frozen is self._limits_frozen:
                return self._limit_cache
            spo2, pulse = frozen.spo2, frozen.pulse_rate
        else:
            spo2, pulse = self._collector.oximetry("spo2"), self._collector.oximetry("pulse_rate")
        known = self._limits_for
        if known is None or not (_same(spo2, known[0]) and _same(pulse, known[1])):
            self._limits_for = (spo2, pulse)
            baseline = self.baseline
            self._limit_cache = {r.id: sustained_limit(r, baseline) for r in self._of_type["sustained"]}
        self._limits_frozen = frozen
        return self._limit_cache

    def _ctx(self, now: float) -> tuple[str, float]:
        return self._phase, self._clock.running(self._phase_start, now)

    # ------------------------------------------------------------------ inputs
    def _unreliable(self, device: str, part: str, now: float | None = None) -> bool:
        """Whether ``part`` of ``device`` is spoilt (at ``now``; default: as of the last call)."""
        if device in self._garbled:  # its bytes keep failing to decode: what does decode is suspect
            return True
        on = self._statuses
        statuses = on.on.get(device, _NO_STATUS) if now is None else on.at(device, now)
        if not statuses:
            return False  # nothing can spoil it (most calls)
        return unreliable(self._roles.get(device, "multi"), statuses, part)

    def _decode_problem(self, device: str, now: float) -> None:
        """One decode problem from ``device``: extend its current run of problems or start one."""
        rule = self._garbled_rule()
        if rule is None:
            return
        first, last = self._problems.get(device, (now, now))
        if now - last > rule.gap_s:
            first = now
        self._problems[device] = (first, now)

    def _garbled_rule(self) -> Rule | None:
        rules = self._of_type["device_garbled"]
        return rules[0] if rules else None

    def _note_valid(self, device: str, t: float) -> None:
        """``device`` delivered a valid value at ``t`` (its first arms the technical rules)."""
        last = self._last_valid.get(device)
        if last is None:
            self._agenda.touch("armed")
            self._last_valid[device] = t
        elif not last > t:  # max(t, last), without the call
            self._last_valid[device] = t
        self._agenda.touch("valid")

    def _invalidate(self, device: str, now: float) -> None:
        """The held samples of ``device`` are not usable from ``now`` (a status, garbled bytes)."""
        for sig in self._signals.values():
            sig.invalidate(device, now)
        self._agenda.touch("spo2_invalid")

    def _update_garbled(self, now: float) -> None:
        """Which devices are garbled now: decode problems without a gap of more than ``gap_s``
        for at least ``after_s``. A device turning garbled spoils its held samples too."""
        rule = self._garbled_rule() if self._problems else None
        if rule is None:
            return
        for device, (first, last) in list(self._problems.items()):
            if now - last > rule.gap_s:
                del self._problems[device]
                if device in self._garbled:
                    self._garbled.discard(device)
                    self._agenda.touch("garbled")
            elif now - first >= rule.after_s - 1e-6 and device not in self._garbled:
                self._garbled.add(device)
                self._agenda.touch("garbled")
                self._invalidate(device, now)

    def _describe_now(self, finding: Finding) -> tuple[str | None, float | None]:
        """What is true now about a finding's parameter, for the texts of ended and cleared alarms."""
        now = self._now
        if finding.parameter in ("spo2", "pulse_rate"):
            label, unit = ("SpO2", "%") if finding.parameter == "spo2" else ("pulse", "/min")
            value = self._signals[finding.parameter].value_at(now)
            if value is None:
                return f"no valid {label}", None
            return f"{label} {fmt(value)} {unit}", value
        if finding.parameter == "nibp" and finding.category.value == "physiological":
            last = self._nibp.last_valid()
            if last is not None and last.systolic is not None:
                return f"last BP {fmt(last.systolic)}/{fmt(last.diastolic)} mmHg", last.systolic
        return None, None

    def _on_sample(self, parameter: str, sample: Sample) -> None:
        self._signals[parameter].update(sample)
        if not sample.valid or sample.value is None:
            if parameter == "spo2":
                self._agenda.touch("spo2_invalid")
            return  # invalid: timers pause, nothing else changes
        if self._phase == "baseline":
            self._collector.add_sample(parameter, sample.value)
        frozen = self._frozen
        limits = self._limit_cache if frozen is not None and frozen is self._limits_frozen else self._limits()
        phase = self._phase
        quiet = self._quiet.get(parameter)
        if quiet is not None and quiet[0] == sample.value and quiet[1] is limits and quiet[2] == phase:
            # The last sample left every rule of the parameter in range and reset, under these
            # limits in this phase, and nothing since could set one going (no rule ran, see
            # _running_rules): the same value finds them in range and reset again.
            if None not in self._sustained_of:
                self._running[parameter] = (sample, limits, phase, [])
            return
        running: list[tuple[Rule, bool]] = []  # what _running_rules would work out for this sample
        for rule in self._sustained_of.get(parameter, ()):
            if self._phase not in rule.phases:
                continue
            st = self._sustain[rule.id]
            limit = limits[rule.id]
            if limit is None or not compare(rule.compare, sample.value, limit):
                if st.is_reset():
                    continue
                self._agenda.touch_rule(self._index[rule.id])
                st.reset()
                continue
            self._agenda.touch_rule(self._index[rule.id])
            st.note(sample, low_is_bad=rule.compare.startswith("<"))
            bypass = rule.bypass_limit
            bypassed = bypass is not None and compare(rule.compare, sample.value, bypass)
            if bypass is not None and not bypassed:
                st.bypass_acc = 0.0
            running.append((rule, bypassed))
        if running:
            self._quiet.pop(parameter, None)
        else:
            self._quiet[parameter] = (sample.value, limits, phase)
        if None not in self._sustained_of:  # a rule without a parameter runs on SpO2: left to _running_rules
            self._running[parameter] = (sample, limits, phase, running)

    def _on_reading(
        self, device: str, t: float, values: dict[str, float | None], unreliable: bool
    ) -> list[Output]:
        sys_v, dia_v = values.get("nibp_systolic"), values.get("nibp_diastolic")
        valid = not unreliable and sys_v is not None and dia_v is not None
        reading = NibpReading(t, sys_v, dia_v, values.get("nibp_mean"), valid, device, self._phase)
        self._nibp.readings.append(reading)
        self._readings_seen += 1
        self._agenda.touch("nibp")
        self._confirm_at = -math.inf
        if not valid:
            return []
        self._note_valid(device, t)
        if self._phase == "baseline":
            self._collector.add_reading(reading)
        for rule in self._of_type["nibp"]:
            if self._phase not in rule.phases:
                continue
            check = nibp_check(rule, reading, self.baseline)
            if check is not None:
                self._nibp_rules[rule.id].update(rule, reading, check)
        for rule in self._of_type["nibp_gate"]:
            if self._phase in rule.phases:
                self._gate_reading(rule)
        return []

    def _confirm_requests(self, now: float) -> list[Output]:
        """One request for the confirmation readings now due (2 min after a first out-of-range one)."""
        if now < self._confirm_at and not self._evaluate_all:
            return []
        self._confirm_at = self._next_confirmation()
        due = [
            rule
            for rule in self._of_type["nibp"]
            if self._nibp_rules[rule.id].pending is not None
            and self._phase in rule.phases
            and self._nibp_rules[rule.id].confirmation_due(rule, now)
        ]
        if not due:
            return []
        for rule in due:
            self._nibp_rules[rule.id].requested = True
        self._confirm_at = self._next_confirmation()
        first = self._nibp_rules[due[0].id].pending
        assert first is not None
        reason = confirm_request_reason(first, [rule.id for rule in due])
        return [NibpRequest(t=now, bed=self.bed, reason=reason)]

    def _next_confirmation(self) -> float:
        """The earliest time a pending, not yet requested confirmation can fall due (its state
        changes only with a reading, a phase or a request, which all look again)."""
        at = math.inf
        for rule in self._of_type["nibp"]:
            st = self._nibp_rules[rule.id]
            if st.pending is not None and not st.requested:
                at = min(at, st.pending.t + rule.confirm_min_s - EPS)
        return at

    def _gate_reading(self, rule: Rule) -> None:
        """Start gate: judged on the last N baseline readings once there are N."""
        st = self._nibp_rules[rule.id]
        recent = self._collector.readings()[-rule.readings :]
        if len(recent) < rule.readings:
            st.reset()
            return
        st.check = gate_check(rule, recent, older_adult=self._older_adult)
        st.active = st.check.out
        st.evidence = recent

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, now: float) -> list[Output]:
        findings: dict[OccurrenceKey, Finding] = {}
        # The early returns of four steps below are checked here first: most evaluations (a
        # sample, a tick) need none of them, and a call that returns at once still costs one.
        everything = self._evaluate_all
        out: list[Output] = self._confirm_requests(now) if now >= self._confirm_at or everything else []
        if self._problems:
            self._update_garbled(now)
        if self._phase == "baseline" or self._baseline_key is None:  # else frozen until the next phase
            b = self._frozen
            if b is None:  # the live baseline's parts, without building it at every call
                baseline_key = self._collector.key()
            else:
                baseline_key = (b.systolic, b.diastolic, b.spo2, b.pulse_rate)
            if baseline_key != self._baseline_key:
                self._baseline_key = baseline_key
                self._agenda.touch("baseline")
        order, run = self._agenda.take(now)
        if order:
            self._run_rules(order, run, now, findings, out)
        if self._phase == "baseline":
            out.extend(self._baseline_request(now))
        if findings or self._book.any_active:  # else reconciling would change nothing
            out.extend(self._book.reconcile(findings, now, self._ctx(now)))
        if self._phase == "recovery" or self._discharge_ready or everything:
            out.extend(self._discharge(now))
        if not everything:
            self._settled_at = now
        return out

    def _run_rules(
        self,
        order: Sequence[int],
        run: AbstractSet[int] | None,
        now: float,
        findings: dict[OccurrenceKey, Finding],
        out: list[Output],
    ) -> None:
        """The findings of the rules ``order`` (table order) into ``findings``: those in ``run``
        (None: all) are run and put back on the agenda, the others held at their last findings."""
        if run is not None and not run:
            for i in order:
                self._merge(self._held_findings[i], findings)
            return
        view = BedView(
            now=now,
            phase=self._phase,
            phase_start=self._phase_start,
            baseline=self.baseline,
            frozen=self._frozen,
            roles=self._roles,
            statuses=self._statuses.on,
            last_data=self._last_bytes,
            port_down=self._port_down,
            spo2=self._signals["spo2"],
            nibp=self._nibp,
            table=self.table,
            clock=self._clock,
            last_valid=self._last_valid,
            garbled=self._garbled,
            pump_stop=self._pump_stop,
            pump_stop_elapsed=self._pump_stop_elapsed,
        )
        rules = self.table.rules
        for i in order:
            rule = rules[i]
            held = run is not None and i not in run
            asked = len(out)
            found = self._held_findings[i] if held else self._rule_findings(rule, view, out)
            self._merge(found, findings)
            if held:
                continue
            if found or len(out) > asked:
                self._held_findings[i] = found
                self._agenda.settle(i, True, math.inf)
            else:
                sustain = self._sustain.get(rule.id)
                wake = wake_at(rule, view, sustain, self._due_requested)
                self._agenda.settle(i, False, wake, deaf=deaf(rule, view))

    @staticmethod
    def _merge(found: list[Finding], findings: dict[OccurrenceKey, Finding]) -> None:
        """One rule's findings into the evaluation's: per occurrence key the highest priority
        (the first found, at equal priority)."""
        for finding in found:
            known = findings.get(finding.key)
            if known is None or finding.priority.rank > known.priority.rank:
                findings[finding.key] = finding

    def _baseline_request(self, now: float) -> list[Output]:
        """In the baseline phase, ask for the NIBP readings the baseline still needs, spaced apart."""
        s = self.table.baseline
        if self._phase != "baseline" or not self._has_cuff:
            return []
        if self._collector.systolic() is not None:
            return []
        latest = self._collector.last_reading()
        last = latest.t if latest is not None else None
        if last is not None and now - last < s.nibp_spacing_s:
            return []
        if self._baseline_requested is not None:
            # While the reading asked for has not come, ask again only after a cuff cycle could have
            # ended: with a short spacing the request would otherwise repeat at every evaluation.
            waiting = last is None or last < self._baseline_requested
            gap = max(s.nibp_spacing_s, BASELINE_RETRY_S) if waiting else s.nibp_spacing_s
            if now - self._baseline_requested < gap:
                return []
        self._baseline_requested = now
        reason = baseline_request_reason(self._collector.reading_count(), s.nibp_readings)
        return [NibpRequest(t=now, bed=self.bed, reason=reason)]

    def _rule_findings(self, rule: Rule, v: BedView, out: list[Output]) -> list[Finding]:
        """What ``rule`` finds true now (messages: :mod:`vitalwatch.engine.rules`)."""
        match rule.type:
            case "sustained":
                st = self._sustain[rule.id]
                limit = sustained_limit(rule, v.baseline)
                if limit is not None and st.active(rule):
                    return [sustained_finding(rule, st, limit, v.baseline)]
                return []
            case "nibp" | "nibp_gate":
                nst = self._nibp_rules[rule.id]
                return [nibp_finding(rule, nst)] if nst.active and nst.check is not None else []
            case "nibp_overdue":
                out.extend(self._due_request(rule, v))
                return overdue_findings(rule, v)
            case "nibp_peak":
                out.extend(self._due_request(rule, v))
                out.extend(self._peak_request(rule, v))
        finder = FINDERS.get(rule.type)
        return finder(rule, v) if finder is not None else []

    def _due_request(self, rule: Rule, v: BedView) -> list[Output]:
        """One reading asked for when the phase's due window opens without one (once per phase)."""
        if (
            not v.has_cuff
            or (rule.type == "nibp_peak" and v.phase != "infusion")
            or rule.due_from_s is None
            or rule.due_until_s is None
            or v.elapsed < rule.due_from_s
            or due_window_met(rule, v)
            or rule.id in self._due_requested
        ):
            return []
        self._due_requested.add(rule.id)
        return [NibpRequest(t=v.now, bed=self.bed, reason=due_request_reason(rule, self._phase))]

    def _peak_request(self, rule: Rule, v: BedView) -> list[Output]:
        """The peak reading was missed: ask for a reading now (once per phase)."""
        key = f"{rule.id}:missed"
        if key in self._due_requested or not peak_missed(rule, v):
            return []
        self._due_requested.add(key)
        return [NibpRequest(t=v.now, bed=self.bed, reason=f"peak reading missed ({rule.id})")]

    def _discharge_inputs(self, now: float) -> dict[str, Any]:
        return {
            "phase": self._phase,
            "recovery_elapsed": now - self._phase_start,
            "baseline": self.baseline,
            "readings": [r for r in self._nibp.valid() if r.phase == "recovery"],
            "spo2": self._signals["spo2"].value_at(now),
            "pulse": self._signals["pulse_rate"].value_at(now),
            "medium_or_high_active": any(occ.priority.rank >= 2 for occ in self._book.active()),
        }

    def _discharge(self, now: float) -> list[Output]:
        """The discharge_ready INFO status, reported on its edges only.

        Outside the recovery it is not ready; in it, whether it is ready is judged again only
        when one of its criteria may have changed: the time (crossed or not), the baseline, a
        reading, SpO2 and pulse (within their limits or not), the MEDIUM/HIGH alarms. The SpO2
        and pulse criteria themselves are not judged again while the numbers and the baseline
        are those they were last judged on (_discharge_seen): the key would be the same.
        """
        everything = self._evaluate_all
        if self._phase != "recovery" and not self._discharge_ready and not everything:
            return []
        s = self.table.discharge
        crossed = now - self._phase_start >= s.after_recovery_min * 60
        strong = self._book.any_active and any(occ.priority.rank >= 2 for occ in self._book.active())
        spo2, pulse, frozen = self._spo2.value_at(now), self._pulse.value_at(now), self._frozen
        seen = self._discharge_seen
        if (
            seen is not None
            and not everything
            and seen[0] is self._discharge_key
            and (seen[1] is spo2 or seen[1] == spo2)
            and (seen[2] is pulse or seen[2] == pulse)
            and frozen is not None
            and seen[3] is frozen
        ):
            # The SpO2 and pulse criteria judge the same numbers against the same baseline as
            # when the key was worked out (a number equal to another compares as it does):
            # only the other parts of the key can differ.
            known = seen[0]
            if (
                known[0] == self._phase
                and known[1] == crossed
                and known[2] == self._baseline_key
                and known[3] == self._readings_seen
                and known[6] == strong
            ):
                return []
        baseline = self.baseline
        key: tuple[Any, ...] = (
            self._phase,
            crossed,
            self._baseline_key,
            self._readings_seen,
            spo2_within(s, baseline, spo2),
            pulse_within(s, baseline, pulse),
            strong,
        )
        unchanged = self._discharge_key is not None and key == self._discharge_key
        if unchanged and self._discharge_key is not None:
            key = self._discharge_key  # the same parts: the object the next call compares with
        self._discharge_seen = (key, spo2, pulse, frozen)
        if unchanged and not everything:
            return []
        self._discharge_key = key
        ready, detail = discharge_status(self.table.discharge, **self._discharge_inputs(now))
        if ready == self._discharge_ready:
            return []
        self._discharge_ready = ready
        return [StatusChanged(t=now, bed=self.bed, code="discharge_ready", active=ready, detail=detail)]
