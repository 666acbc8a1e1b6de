"""The seed alarm engine: SpO2 below a limit, sustained, raises an alert; recovery clears it.

Pure and deterministic (the clock is a parameter). It is the smallest engine that speaks
the full engine's interface, so the daemon and its end-to-end tests were built against
that interface before the clinical engine existed; ``vitalwatch.engine.session.BedEngine``
replaces it in the daemon.
"""

from __future__ import annotations

from vitalwatch.drivers import Event, Observation
from vitalwatch.drivers.events import DeviceStatus
from vitalwatch.drivers.vocabulary import UNRELIABLE_STATUSES
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Output, Priority

__all__ = ["SeedEngine"]


class SeedEngine:
    """SpO2 < ``limit`` for ``sustain_s`` seconds of valid signal -> one HIGH alert."""

    def __init__(self, *, bed: str, limit: float = 90.0, sustain_s: float = 15.0) -> None:
        self.bed = bed
        self.limit = limit
        self.sustain_s = sustain_s
        self._phase = "baseline"
        self._seq = 0
        self._count = 0
        self._below_since: float | None = None
        self._unreliable: set[str] = set()
        self._active: AlertTransition | None = None

    @property
    def phase(self) -> str:
        return self._phase

    def _transition(self, state: AlertState, now: float, value: float | None) -> AlertTransition:
        self._seq += 1
        if state is AlertState.RAISED:
            self._count += 1
        onset = self._active.onset_t if self._active is not None else now
        return AlertTransition(
            t=now,
            bed=self.bed,
            alert_id=f"{self.bed}-{self._count:06d}",
            seq=self._seq,
            state=state,
            priority=Priority.HIGH,
            category=Category.PHYSIOLOGICAL,
            condition="spo2_low",
            parameter="spo2",
            value=value,
            unit="%",
            limit=self.limit,
            phase=self._phase,
            phase_elapsed_s=0.0,
            onset_t=onset,
            message=(
                f"SpO2 {value:g} % below {self.limit:g} % for {self.sustain_s:g} s"
                if state is AlertState.RAISED and value is not None
                else f"SpO2 back to {value:g} %"
                if value is not None
                else "SpO2 alarm ended"
            ),
            rule="seed.spo2_low",
        )

    def observe(self, device: str, event: Event, now: float) -> list[Output]:
        if isinstance(event, DeviceStatus) and event.code in UNRELIABLE_STATUSES:
            (self._unreliable.add if event.active else self._unreliable.discard)(event.code)
            return []
        if not isinstance(event, Observation) or event.kind != "spo2":
            return []
        if event.value is None or self._unreliable:
            return []  # invalid signal pauses the timer; it neither raises nor clears
        if event.value < self.limit:
            if self._below_since is None:
                self._below_since = now
            if self._active is None and now - self._below_since >= self.sustain_s:
                self._active = self._transition(AlertState.RAISED, now, event.value)
                return [self._active]
            return []
        self._below_since = None
        if self._active is not None:
            cleared = self._transition(AlertState.CLEARED, now, event.value)
            self._active = None
            return [cleared]
        return []

    def bytes_seen(self, device: str, now: float) -> None:
        return None

    def link(self, device: str, up: bool, now: float) -> list[Output]:
        return []

    def set_phase(self, phase: str, now: float) -> list[Output]:
        self._phase = phase
        return []

    def acknowledge(self, alert_id: str, by: str, now: float) -> list[Output]:
        return []

    def tick(self, now: float) -> list[Output]:
        return []

    def active_alarms(self) -> list[AlertTransition]:
        return [self._active] if self._active is not None else []
