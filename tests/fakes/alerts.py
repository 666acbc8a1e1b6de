"""Alert transitions made up for delivery tests, as the engine would hand them to the publisher."""

from __future__ import annotations

from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Priority

__all__ = ["transition"]


def transition(
    alert_id: str,
    seq: int,
    state: AlertState = AlertState.RAISED,
    *,
    priority: Priority = Priority.HIGH,
    bed: str = "chair-1",
    t: float | None = None,
    value: float = 84.0,
    message: str = "SpO2 84 % below 90 %",
) -> AlertTransition:
    """An spo2_low transition at ``t`` (default 100 + seq) of an alarm whose onset was at 100 (or ``t``)."""
    at = 100.0 + seq if t is None else t
    return AlertTransition(
        t=at,
        bed=bed,
        alert_id=alert_id,
        seq=seq,
        state=state,
        priority=priority,
        category=Category.PHYSIOLOGICAL,
        condition="spo2_low",
        parameter="spo2",
        value=value,
        unit="%",
        limit=90.0,
        phase="infusion",
        phase_elapsed_s=60.0 if t is None else 10.0,
        onset_t=100.0 if t is None else t,
        message=message,
    )
