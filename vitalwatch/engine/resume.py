"""BedEngine's snapshot and restore: which part of the session goes where (format in :mod:`.snapshot`).

.. code-block:: text

    {"version": 1, "taken_at", "now", "bed", "devices", "older_adult", "id_counter", "started",
     "phase", "phase_start", "phase_starts",
     "signals": {spo2, pulse_rate},            held sample + end of the last valid stretch
     "nibp_pending", "nibp_readings",          readings being assembled, the reading log
     "baseline", "frozen_baseline",            what the baseline phase collected, the frozen copy
     "rules": {id: {digest, type, state}},     sustained timers, NIBP confirmations
     "port_down", "due_requested", "discharge_ready", "baseline_requested",
     "alarms": {seq, active, closed}}          the AlarmBook (alert_ids, lifecycle timers)

Kept apart from ``session.py`` so the engine module stays about rules and time; this module
reaches into the engine's private attributes on purpose (it is the engine's own persistence).
Not stored: device statuses and link silence clocks. After a restart the drivers start with an
empty status set and report every status that is still on as a new edge (a fresh
``StatusTracker`` never reports "off" for a status it did not see on, so a restored probe_off
could never end); and the daemon reopens every port, so each device counts as just connected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vitalwatch.engine.baseline import Baseline
from vitalwatch.engine.rules import NibpRuleState, SustainState
from vitalwatch.engine.snapshot import VERSION, StateReader, rule_digest
from vitalwatch.engine.vocabulary import PHASES

if TYPE_CHECKING:
    from vitalwatch.engine.session import BedEngine
    from vitalwatch.engine.table import AlarmTable

__all__ = ["engine_snapshot", "restore_engine"]

_RULE_KINDS = ("sustained", "nibp")


def engine_snapshot(e: BedEngine, now: float | None = None) -> dict[str, Any]:
    """The whole state of ``e`` as strict JSON data (``json.dumps(..., allow_nan=False)`` works).

    ``taken_at`` is the latest time the engine was told about (``bytes_seen`` included, which
    does not move the engine clock ``now``), or the caller's ``now`` when later.
    """
    rules: dict[str, Any] = {}
    for rule in e.table.rules:
        if rule.id in e._sustain:
            rules[rule.id] = {
                "digest": rule_digest(rule),
                "type": "sustained",
                "state": e._sustain[rule.id].snapshot(),
            }
        elif rule.id in e._nibp_rules:
            rules[rule.id] = {
                "digest": rule_digest(rule),
                "type": "nibp",
                "state": e._nibp_rules[rule.id].snapshot(),
            }
    return {
        "version": VERSION,
        "taken_at": max([e._now, *e._last_bytes.values(), *([now] if now is not None else [])]),
        "now": e._now,
        "bed": e.bed,
        "devices": dict(e._roles),
        "older_adult": e._older_adult,
        "id_counter": e._count,
        "started": e._started,
        "phase": e._phase,
        "phase_start": e._phase_start,
        "phase_starts": dict(e.phase_starts),
        "signals": {p: sig.snapshot() for p, sig in e._signals.items()},
        "nibp_pending": e._assembler.snapshot(),
        "nibp_readings": e._nibp.snapshot(),
        "baseline": e._collector.snapshot(),
        "frozen_baseline": e._frozen.to_state() if e._frozen is not None else None,
        "rules": rules,
        "port_down": sorted(e._port_down),
        "due_requested": sorted(e._due_requested),
        "discharge_ready": e._discharge_ready,
        "baseline_requested": e._baseline_requested,
        "alarms": e._book.snapshot(),
    }


def restore_engine(
    cls: type[BedEngine],
    table: AlarmTable,
    state: object,
    id_factory: Callable[[], str] | None,
    *,
    now: float,
    elapsed_outage_s: float = 0.0,
) -> BedEngine:
    """Build an engine from ``state``, its times moved into the clock of ``now`` (see :mod:`.snapshot`)."""
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite number, got {now!r}")
    if not math.isfinite(elapsed_outage_s) or elapsed_outage_s < 0:
        raise ValueError(f"elapsed_outage_s must be a finite number >= 0, got {elapsed_outage_s!r}")
    top = StateReader(state, "", 0.0)
    version = top.raw("version")
    if version != VERSION:
        raise ValueError(f"engine snapshot: version: this engine reads version {VERSION}, got {version!r}")
    taken_at = top.when("taken_at")
    r = StateReader(state, "", now - elapsed_outage_s - taken_at)

    from vitalwatch.engine.roles import ROLES

    devices = r.text_map("devices")
    for device, role in devices.items():
        if role not in ROLES:
            raise ValueError(
                f"engine snapshot: devices.{device}: expected one of {', '.join(ROLES)}, got {role!r}"
            )
    e = cls(table, r.text("bed"), devices, id_factory, older_adult=r.flag("older_adult"))
    e._count = r.integer("id_counter")
    e._started = r.flag("started")
    e._now = r.when("now")
    e._phase = r.text("phase", PHASES)
    e._phase_start = r.when("phase_start")
    e.phase_starts = r.when_map("phase_starts")
    for phase in e.phase_starts:
        if phase not in PHASES:
            raise ValueError(f"engine snapshot: phase_starts.{phase}: not a phase ({', '.join(PHASES)})")
    signals = r.child("signals")
    for p, sig in e._signals.items():
        sig.restore_state(signals.child(p))
    e._assembler.restore_state(r, "nibp_pending")
    e._nibp.restore_state(r, "nibp_readings")
    e._collector.restore_state(r.child("baseline"))
    frozen = r.opt_child("frozen_baseline")
    e._frozen = Baseline.from_state(frozen) if frozen is not None else None
    _restore_rules(e, table, r)
    e._port_down = set(r.texts("port_down"))
    e._due_requested = set(r.texts("due_requested"))
    e._discharge_ready = r.flag("discharge_ready")
    e._baseline_requested = r.opt_when("baseline_requested")
    e._book.restore_state(r.child("alarms"))
    if e._started:
        # Just connected: the daemon reopens every port and its drivers report afresh.
        e._last_bytes = dict.fromkeys(devices, now)
    return e


def _restore_rules(e: BedEngine, table: AlarmTable, r: StateReader) -> None:
    """Rule states by id; one whose definition changed (digest) or vanished is left fresh."""
    digests = {rule.id: rule_digest(rule) for rule in table.rules}
    for rule_id, c in r.child_map("rules").items():
        digest = c.text("digest")
        kind = c.text("type", _RULE_KINDS)
        st: SustainState | NibpRuleState = SustainState() if kind == "sustained" else NibpRuleState()
        st.restore_state(c.child("state"))  # validated even when it is not used
        if digests.get(rule_id) != digest:
            continue
        if isinstance(st, SustainState) and rule_id in e._sustain:
            e._sustain[rule_id] = st
        elif isinstance(st, NibpRuleState) and rule_id in e._nibp_rules:
            e._nibp_rules[rule_id] = st
