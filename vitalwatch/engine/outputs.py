"""What the engine hands to the rest of the daemon: alert transitions and actions.

These are the contract between the pure engine and the I/O edges (outbox, MQTT, drivers).
Times are the engine's monotonic seconds (``now`` as passed in); the service maps them to
UTC for payloads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "AlertState",
    "AlertTransition",
    "Category",
    "NibpRequest",
    "NursePrompt",
    "Output",
    "PhaseChanged",
    "Priority",
    "StatusChanged",
]


class Priority(enum.StrEnum):
    """IEC 60601-1-8 priorities; INFO is a status, never an alarm."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _RANKS[self.value]


_RANKS = {"high": 3, "medium": 2, "low": 1, "info": 0}  # built once: the engine asks at every call


class Category(enum.StrEnum):
    PHYSIOLOGICAL = "physiological"
    TECHNICAL = "technical"
    ADVISORY = "advisory"


class AlertState(enum.StrEnum):
    RAISED = "raised"
    RENOTIFIED = "renotified"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertTransition:
    """One step in the life of one alarm occurrence (``alert_id`` is stable for its life)."""

    t: float  # engine time of the transition
    bed: str
    alert_id: str
    seq: int  # per bed, +1 per transition
    state: AlertState
    priority: Priority
    category: Category
    condition: str  # from the documented vocabulary (spo2_low, link_lost, ...)
    parameter: str | None  # spo2 | pulse_rate | nibp | None
    value: float | None
    unit: str | None
    limit: float | None
    phase: str
    phase_elapsed_s: float
    onset_t: float  # engine time the condition was first raised
    message: str  # for a nurse: "SpO2 86 % below 90 % for 15 s"
    rule: str = ""  # the id of the rule that raised it
    evidence: tuple[str, ...] = ()  # the readings that caused it, human-readable
    escalation_level: int = 0
    acknowledged_by: str | None = None
    acknowledged_t: float | None = None
    device: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NibpRequest:
    """Ask an NIBP device for a (confirmation) reading; the service knows which can."""

    t: float
    bed: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NursePrompt:
    """Something only a person can do (e.g. start a cuff by hand on a device we cannot command)."""

    t: float
    bed: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseChanged:
    t: float
    bed: str
    phase: str
    previous: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChanged:
    """An INFO status such as discharge_ready turning on or off (never an alarm)."""

    t: float
    bed: str
    code: str
    active: bool
    detail: dict[str, float | str] = field(default_factory=dict)


Output = AlertTransition | NibpRequest | NursePrompt | PhaseChanged | StatusChanged
