"""A small driver for BedEngine in tests and benchmarks: 1 Hz signals, NIBP readings, phase commands.

Shipped (not under tests/) so every test module and bench/ can use it without importing each
other (model: structlog's ``testing.py``). Every call records ``(t, output)`` in ``outputs``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vitalwatch.drivers.events import DeviceStatus, Observation
from vitalwatch.engine.outputs import AlertState, AlertTransition, NibpRequest, Output, StatusChanged
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import AlarmTable, load_alarm_table

__all__ = ["EngineHarness", "Signal"]

Signal = Callable[[float], float | None] | float | None
"""A value per second: a constant, a function of t, or None for 'no sample at all'."""


class EngineHarness:
    """Feeds one BedEngine ('oximeter' spo2 role, 'nibp' nibp role by default) in virtual time."""

    def __init__(
        self,
        table: AlarmTable | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        devices: Mapping[str, str] | None = None,
        older_adult: bool = False,
    ) -> None:
        if table is None:
            table = load_alarm_table(dict(overrides) if overrides else None)
        self.engine = BedEngine(
            table,
            bed="bed-1",
            devices=devices or {"oximeter": "spo2", "nibp": "nibp"},
            older_adult=older_adult,
        )
        self.outputs: list[Output] = []
        self.now = 0.0

    def _take(self, outs: list[Output]) -> list[Output]:
        self.outputs.extend(outs)
        return outs

    def phase(self, name: str, t: float) -> list[Output]:
        self.now = t
        return self._take(self.engine.set_phase(name, t))

    def sample(self, kind: str, value: float | None, t: float, device: str = "oximeter") -> list[Output]:
        self.now = t
        return self._take(self.engine.observe(device, Observation(kind, value, ""), t))

    def status(self, code: str, on: bool, t: float, device: str = "oximeter") -> list[Output]:
        self.now = t
        return self._take(self.engine.observe(device, DeviceStatus(code, on), t))

    def nibp(
        self, t: float, systolic: float | None, diastolic: float | None, device: str = "nibp"
    ) -> list[Output]:
        """One complete reading (systolic, diastolic, mean) at ``t``."""
        self.now = t
        out: list[Output] = []
        mean = None if systolic is None or diastolic is None else round((systolic + 2 * diastolic) / 3)
        for kind, value in (("nibp_systolic", systolic), ("nibp_diastolic", diastolic), ("nibp_mean", mean)):
            out += self.engine.observe(device, Observation(kind, value, "mm[Hg]"), t)
        return self._take(out)

    def link(self, up: bool, t: float, device: str = "oximeter") -> list[Output]:
        """The port of ``device`` opened (``up``) or vanished at ``t``."""
        self.now = t
        return self._take(self.engine.link(device, up, t))

    def ack(self, alert_id: str, t: float, by: str = "nurse") -> list[Output]:
        self.now = t
        return self._take(self.engine.acknowledge(alert_id, by, t))

    def tick(self, t: float) -> list[Output]:
        self.now = t
        return self._take(self.engine.tick(t))

    def run(self, start: float, end: float, *, spo2: Signal = 97.0, pulse: Signal = 72.0) -> list[Output]:
        """One sample of each signal per second for ``start <= t < end``; the NIBP link stays alive."""
        out: list[Output] = []
        t = start
        while t < end:
            for kind, sig in (("spo2", spo2), ("pulse_rate", pulse)):
                value = sig(t) if callable(sig) else sig
                if value is not None:
                    out += self.engine.observe("oximeter", Observation(kind, value, ""), t)
            for device in self.engine.devices:  # every device is sending
                self.engine.bytes_seen(device, t)
            out += self.engine.tick(t)
            t += 1.0
        self.now = end
        return self._take(out)

    def standard_baseline(
        self, *, until: float = 300.0, systolic: float = 120, diastolic: float = 80
    ) -> None:
        """A complete baseline (SpO2 97, pulse 72, BP 120/80 twice) then the infusion at ``until``."""
        self.nibp(0.0, systolic, diastolic)
        self.run(0.0, 150.0)
        self.nibp(150.0, systolic, diastolic)
        self.run(150.0, until)
        self.phase("infusion", until)

    # ------------------------------------------------------------------ queries
    def alerts(
        self, condition: str | None = None, state: AlertState | str | None = None
    ) -> list[AlertTransition]:
        return [
            o
            for o in self.outputs
            if isinstance(o, AlertTransition)
            and (condition is None or o.condition == condition)
            and (state is None or o.state == state)
        ]

    def raised(self, condition: str | None = None) -> list[AlertTransition]:
        return self.alerts(condition, AlertState.RAISED)

    def requests(self) -> list[NibpRequest]:
        return [o for o in self.outputs if isinstance(o, NibpRequest)]

    def statuses(self) -> list[StatusChanged]:
        return [o for o in self.outputs if isinstance(o, StatusChanged)]
