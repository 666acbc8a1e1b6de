"""The pre-infusion readiness check of one bed: what must hold before the drug starts.

Why: once the infusion runs, the baseline is frozen and every baseline-relative alarm depends
on it, a silent device is a blind spot, and an alert that cannot leave the gateway reaches
nobody. So before ``start_infusion`` the nurse sees (retained on ``.../readiness``) and the
command checks:

- every configured device linked, with a valid reading in the last :data:`FRESH_S` seconds;
- the baseline complete (two NIBP readings >= 2 min apart, 3 min of valid SpO2 and pulse), or
  what is missing;
- the broker connected and the outbox drained (every alert so far acknowledged by the broker);
- no start-gate advisory active (baseline BP above the gate).

An open item refuses the start unless the nurse gives an ``override_reason``, which is recorded.
Pure: the caller passes what it knows, with the clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vitalwatch.engine.baseline import Baseline
from vitalwatch.engine.table import BaselineSettings

__all__ = ["FRESH_S", "ReadinessItem", "readiness_items"]

FRESH_S = 30.0


@dataclass(frozen=True, slots=True)
class ReadinessItem:
    item: str  # device:<id> | baseline | broker | start_gate
    ok: bool
    text: str

    def to_dict(self) -> dict[str, object]:
        return {"item": self.item, "ok": self.ok, "text": self.text}


def _baseline_item(bl: Baseline, s: BaselineSettings) -> ReadinessItem:
    missing: list[str] = []
    if bl.systolic is None or bl.diastolic is None:
        if bl.nibp_count < s.nibp_readings:
            missing.append(f"NIBP {bl.nibp_count} of {s.nibp_readings} readings")
        else:
            missing.append(f"NIBP readings not yet {s.nibp_spacing_s / 60:g} min apart")
    if bl.spo2 is None or bl.pulse_rate is None:
        done = int(bl.oximetry_s // 30) / 2  # half minutes: the text (and retained copy) changes rarely
        missing.append(f"SpO2 and pulse {done:g} of {s.oximetry_s / 60:g} min valid")
    if missing:
        return ReadinessItem("baseline", False, "baseline incomplete: " + ", ".join(missing))
    return ReadinessItem("baseline", True, f"baseline complete ({bl.describe()})")


def readiness_items(
    *,
    devices: Sequence[str],
    links: Mapping[str, bool],
    last_valid: Mapping[str, float],
    now: float,
    baseline: Baseline,
    settings: BaselineSettings,
    broker_connected: bool,
    outbox_pending: int,
    advisories: Sequence[str],
) -> list[ReadinessItem]:
    """Every readiness item, ok or open, in the order the station shows them."""
    items: list[ReadinessItem] = []
    for device in devices:
        seen = last_valid.get(device)
        if not links.get(device, False):
            items.append(ReadinessItem(f"device:{device}", False, f"{device} not linked"))
        elif seen is None or now - seen > FRESH_S:
            items.append(
                ReadinessItem(
                    f"device:{device}", False, f"{device}: no valid reading in the last {FRESH_S:g} s"
                )
            )
        else:
            items.append(ReadinessItem(f"device:{device}", True, f"{device} linked, valid reading"))
    items.append(_baseline_item(baseline, settings))
    if not broker_connected:
        items.append(ReadinessItem("broker", False, "broker not connected: alerts cannot reach the station"))
    elif outbox_pending:
        items.append(
            ReadinessItem("broker", False, f"broker connected, {outbox_pending} alert(s) not yet sent")
        )
    else:
        items.append(ReadinessItem("broker", True, "broker connected, every alert sent"))
    if advisories:
        items.append(ReadinessItem("start_gate", False, "start gate: " + "; ".join(advisories)))
    else:
        items.append(ReadinessItem("start_gate", True, "no start-gate advisory"))
    return items
