"""Daemon health as a pure function of a state snapshot: for the systemd watchdog and ``vitalwatch status``.

Two questions, deliberately kept apart::

    snapshot ──assess()──▶ Health
                            ├─ watchdog_ok: is the daemon doing its job?   ──▶ WATCHDOG=1 or withhold
                            └─ healthy:     is everything around it fine?  ──▶ `vitalwatch status` exit code

A *fault* is a problem a restart can fix: the event loop lags, a device task died, the outbox is
stuck without the broker-unreachable alarm. Faults withhold the watchdog ping so systemd restarts
the service (``sd_notify(3)``: a watchdog ping should only follow a positive check that the service
does its job).

A *degradation* is a problem in the world that the daemon is already reporting: a pulled cable,
a silent monitor, a broker outage, an unsynchronised clock. It makes ``healthy`` False (so monitoring
scripts see it) but never stops the watchdog: restarting cannot plug a cable back in, and a restart
loop would only end in the start limit and the fail-safe alarm while the daemon was doing the right
thing.

A device silent for long *without* its technical alarm (``device.silence_unalarmed``: a monitor
that never sent anything, in a phase where the engine does not alarm on it) is a degradation too:
a restart brings the same silence back (under ``WatchdogSec=15s`` it was a kill and a restart
every two minutes, with nobody told). The daemon raises the local technical alarm
``device_silent`` for it instead (:data:`SILENCE_LOCAL_ALARM`), which someone sees: the log, the
local alarm command and the bed's status payload.

Patients' alarms are not health problems: they are counted in the snapshot for display only.
Nothing here reads a clock; ages and uptime come in with the snapshot, so tests are exact.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SILENCE_LOCAL_ALARM",
    "BedState",
    "DaemonSnapshot",
    "DeviceState",
    "Health",
    "Problem",
    "Severity",
    "Thresholds",
    "assess",
    "format_report",
]

# The local technical alarm the daemon raises for a device silent without its engine alarm.
SILENCE_LOCAL_ALARM = "device_silent"
# Phases in which a bed has no patient connected: silent or unplugged devices are expected then.
IDLE_PHASES = frozenset({"ended", "idle"})


class Severity(enum.StrEnum):
    FAULT = "fault"  # the daemon itself: withhold the watchdog
    DEGRADED = "degraded"  # the world around it, already reported by the daemon


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceState:
    """One configured device as the supervisor sees it."""

    id: str
    task_running: bool  # its device loop task exists and has not finished
    link_up: bool  # the port is open (and, for streaming devices, bytes are arriving)
    last_reading_age_s: float | None  # seconds since the last valid reading; None: none yet
    silence_alarm: bool = False  # the link-lost / no-data technical alarm is active for it
    # False for a host-driven NIBP module: silent between the measurements the daemon asks for, so
    # only its port and task are judged here (the engine's nibp_overdue covers a cuff that never answers).
    streams: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class BedState:
    id: str
    phase: str  # baseline, infusion, recovery, ended (engine phases)
    devices: tuple[DeviceState, ...]
    active_alarms: Mapping[str, int] = field(default_factory=dict)  # priority -> count


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonSnapshot:
    """Everything assess() needs, copied out of the running daemon (cheap, no locks)."""

    uptime_s: float
    loop_lag_s: float  # latest measured event-loop lag
    beds: tuple[BedState, ...]
    broker_connected: bool
    broker_alarm: bool = False  # the local "broker unreachable" technical alarm is raised
    publisher_running: bool = True
    outbox_depth: int = 0
    outbox_oldest_age_s: float = 0.0
    clock_synced: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (for a status socket)."""
        return {
            "uptime_s": self.uptime_s,
            "loop_lag_s": self.loop_lag_s,
            "broker_connected": self.broker_connected,
            "broker_alarm": self.broker_alarm,
            "publisher_running": self.publisher_running,
            "outbox_depth": self.outbox_depth,
            "outbox_oldest_age_s": self.outbox_oldest_age_s,
            "clock_synced": self.clock_synced,
            "beds": [
                {
                    "id": bed.id,
                    "phase": bed.phase,
                    "active_alarms": dict(bed.active_alarms),
                    "devices": [
                        {
                            "id": dev.id,
                            "task_running": dev.task_running,
                            "link_up": dev.link_up,
                            "last_reading_age_s": dev.last_reading_age_s,
                            "silence_alarm": dev.silence_alarm,
                            "streams": dev.streams,
                        }
                        for dev in bed.devices
                    ],
                }
                for bed in self.beds
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DaemonSnapshot:
        """The inverse of to_dict (KeyError/TypeError/ValueError on malformed data)."""
        beds = tuple(
            BedState(
                id=str(bed["id"]),
                phase=str(bed["phase"]),
                active_alarms={str(k): int(v) for k, v in bed.get("active_alarms", {}).items()},
                devices=tuple(
                    DeviceState(
                        id=str(dev["id"]),
                        task_running=bool(dev["task_running"]),
                        link_up=bool(dev["link_up"]),
                        last_reading_age_s=(
                            None if dev["last_reading_age_s"] is None else float(dev["last_reading_age_s"])
                        ),
                        silence_alarm=bool(dev.get("silence_alarm", False)),
                        streams=bool(dev.get("streams", True)),
                    )
                    for dev in bed["devices"]
                ),
            )
            for bed in data["beds"]
        )
        return cls(
            uptime_s=float(data["uptime_s"]),
            loop_lag_s=float(data["loop_lag_s"]),
            beds=beds,
            broker_connected=bool(data["broker_connected"]),
            broker_alarm=bool(data.get("broker_alarm", False)),
            publisher_running=bool(data.get("publisher_running", True)),
            outbox_depth=int(data.get("outbox_depth", 0)),
            outbox_oldest_age_s=float(data.get("outbox_oldest_age_s", 0.0)),
            clock_synced=bool(data.get("clock_synced", True)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """Limits; defaults chosen against WatchdogSec=15s and the engine's alarm delays."""

    # A loop late by a second is already too slow for 1 Hz oximeters; systemd kills after 15 s anyway.
    max_loop_lag_s: float = 1.0
    # A device silent this long is reported as degraded (a pulled RS-232 cable produces no error).
    stale_reading_s: float = 30.0
    # Silent this long WITHOUT its technical alarm raised: the local device_silent alarm.
    silence_alarm_overdue_s: float = 120.0
    # Undelivered alerts older than this without the broker-unreachable alarm: publisher stuck.
    outbox_stuck_s: float = 60.0
    # Right after start devices have not spoken yet: no staleness judgement before this.
    startup_grace_s: float = 60.0
    # An unsynchronised clock makes alert timestamps untrustworthy: degraded unless turned off.
    require_clock_sync: bool = True


@dataclass(frozen=True, slots=True)
class Problem:
    severity: Severity
    code: str  # stable dotted key, e.g. "device.stale"
    subject: str  # "daemon", a bed id, or "bed/device"
    detail: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.subject}: {self.code}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Health:
    problems: tuple[Problem, ...]

    @property
    def watchdog_ok(self) -> bool:
        """True when no fault: the daemon may ping the systemd watchdog."""
        return not any(p.severity is Severity.FAULT for p in self.problems)

    @property
    def healthy(self) -> bool:
        """True when nothing at all is wrong (the `vitalwatch status` exit code is 0)."""
        return not self.problems

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(str(p) for p in self.problems)


def _device_problems(bed: BedState, dev: DeviceState, snap: DaemonSnapshot, lim: Thresholds) -> list[Problem]:
    subject = f"{bed.id}/{dev.id}"
    if not dev.task_running:
        return [Problem(Severity.FAULT, "device.task_dead", subject, "the device task is not running")]
    if bed.phase in IDLE_PHASES:
        return []
    found: list[Problem] = []
    if not dev.link_up:
        found.append(Problem(Severity.DEGRADED, "device.link_down", subject, "serial link down"))
    if snap.uptime_s < lim.startup_grace_s or not dev.streams:
        return found
    # With no reading yet, the device has been silent since start.
    silent_s = snap.uptime_s if dev.last_reading_age_s is None else dev.last_reading_age_s
    if silent_s >= lim.silence_alarm_overdue_s and not dev.silence_alarm:
        found.append(
            Problem(
                Severity.DEGRADED,
                "device.silence_unalarmed",
                subject,
                f"no reading for {silent_s:.0f} s and no technical alarm raised",
            )
        )
    elif silent_s >= lim.stale_reading_s:
        found.append(Problem(Severity.DEGRADED, "device.stale", subject, f"no reading for {silent_s:.0f} s"))
    return found


def assess(snap: DaemonSnapshot, limits: Thresholds | None = None) -> Health:
    """Decide faults and degradations for ``snap``; pure and total (never raises on valid input)."""
    lim = limits or Thresholds()
    problems: list[Problem] = []
    if snap.loop_lag_s > lim.max_loop_lag_s:
        problems.append(
            Problem(Severity.FAULT, "loop.lag", "daemon", f"event loop {snap.loop_lag_s:.2f} s late")
        )
    if not snap.publisher_running:
        problems.append(Problem(Severity.FAULT, "publisher.task_dead", "daemon", "publisher not running"))
    for bed in snap.beds:
        for dev in bed.devices:
            problems.extend(_device_problems(bed, dev, snap, lim))
    if not snap.broker_connected:
        problems.append(Problem(Severity.DEGRADED, "broker.disconnected", "daemon", "MQTT not connected"))
    if snap.outbox_depth and snap.outbox_oldest_age_s >= lim.outbox_stuck_s and not snap.broker_alarm:
        problems.append(
            Problem(
                Severity.FAULT,
                "outbox.stuck_unalarmed",
                "daemon",
                f"{snap.outbox_depth} undelivered for {snap.outbox_oldest_age_s:.0f} s, "
                "no broker-unreachable alarm",
            )
        )
    elif snap.broker_alarm:
        problems.append(
            Problem(
                Severity.DEGRADED,
                "broker.unreachable_alarm",
                "daemon",
                f"broker-unreachable alarm raised, {snap.outbox_depth} undelivered",
            )
        )
    if lim.require_clock_sync and not snap.clock_synced:
        problems.append(Problem(Severity.DEGRADED, "clock.unsynchronized", "daemon", "clock unsynchronised"))
    return Health(tuple(problems))


def format_report(snap: DaemonSnapshot, health: Health) -> str:
    """Human-readable lines for `vitalwatch status` (no patient data exists in a snapshot)."""
    lines = [
        f"vitalwatch: {'healthy' if health.healthy else 'UNHEALTHY'}"
        f"{'' if health.watchdog_ok else ' (FAULT: watchdog withheld)'}",
        f"  uptime {snap.uptime_s:.0f} s, loop lag {snap.loop_lag_s * 1000:.0f} ms, "
        f"clock {'synchronised' if snap.clock_synced else 'NOT synchronised'}",
        f"  broker {'connected' if snap.broker_connected else 'DISCONNECTED'}, "
        f"outbox {snap.outbox_depth} (oldest {snap.outbox_oldest_age_s:.0f} s)",
    ]
    for bed in snap.beds:
        alarms = ", ".join(f"{n} {p}" for p, n in sorted(bed.active_alarms.items()) if n) or "none"
        lines.append(f"  bed {bed.id}: phase {bed.phase}, active alarms: {alarms}")
        for dev in bed.devices:
            age = "never" if dev.last_reading_age_s is None else f"{dev.last_reading_age_s:.0f} s ago"
            lines.append(f"    {dev.id}: link {'up' if dev.link_up else 'DOWN'}, last reading {age}")
    lines.extend(f"  {reason}" for reason in health.reasons)
    return "\n".join(lines)
