"""The alarm lifecycle (IEC 60601-1-8 / IHE ACM): latching, acknowledge, re-notify, escalate, clear."""

from __future__ import annotations

import itertools

from vitalwatch.engine.outputs import AlertState, AlertTransition, Priority
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import load_alarm_table
from vitalwatch.engine.testing import EngineHarness

T = 300.0


def infusing(**overrides: object) -> EngineHarness:
    h = EngineHarness(overrides=overrides or None)
    h.standard_baseline(until=T)
    return h


def desat(h: EngineHarness, start: float, end: float, value: float = 88.0) -> None:
    h.run(start, end, spo2=value)


def states(alerts: list[AlertTransition]) -> list[tuple[float, str]]:
    return [(a.t, a.state.value) for a in alerts]


def test_high_latches_until_acknowledged_and_renotifies_every_30_s() -> None:
    """SpO2 88 for 20 s then normal: the HIGH stays, re-notifies at +30 s, and clears on ack."""
    h = infusing()
    desat(h, T, T + 20)
    h.run(T + 20, T + 100)
    assert [(T + 15, "raised"), (T + 45, "renotified"), (T + 75, "renotified")] == states(
        h.alerts("spo2_low")
    )
    h.ack("*", T + 100)
    assert [(T + 100, "acknowledged"), (T + 100, "cleared")] == states(h.alerts("spo2_low")[3:])
    cleared = h.alerts("spo2_low")[-1]
    assert ("nurse", T + 100) == (cleared.acknowledged_by, cleared.acknowledged_t)


def test_medium_does_not_latch() -> None:
    """SpO2 91 for 40 s then normal: MEDIUM raised at 30 s and cleared when SpO2 recovers."""
    h = infusing()
    desat(h, T, T + 40, 91.0)
    h.run(T + 40, T + 60)
    assert [(T + 30, "raised"), (T + 40, "cleared")] == states(h.alerts("spo2_low"))


def test_latching_is_configurable_per_priority() -> None:
    """The clinic may latch MEDIUM too (and unlatch HIGH)."""
    h = infusing(latching={"medium": True, "high": False})
    desat(h, T, T + 40, 91.0)
    h.run(T + 40, T + 60)
    assert [(T + 30, "raised")] == states(h.alerts("spo2_low"))
    h2 = infusing(latching={"high": False})
    desat(h2, T, T + 20)
    h2.run(T + 20, T + 30)
    assert [(T + 15, "raised"), (T + 20, "cleared")] == states(h2.alerts("spo2_low"))


def test_unacknowledged_high_escalates_after_2_min() -> None:
    h = infusing()
    desat(h, T, T + 200)
    got = states(h.alerts("spo2_low"))
    assert [
        (T + 15, "raised"),
        (T + 45, "renotified"),
        (T + 75, "renotified"),
        (T + 105, "renotified"),
        (T + 135, "escalated"),
        (T + 165, "renotified"),
        (T + 195, "renotified"),
    ] == got
    assert [0, 0, 0, 0, 1, 1, 1] == [a.escalation_level for a in h.alerts("spo2_low")]


def test_ack_silences_for_2_min_then_renotifies_if_still_true() -> None:
    """Ack at +20 s of a persisting HIGH: quiet until +140 s, then re-notified and unacknowledged."""
    h = infusing()
    desat(h, T, T + 35)
    h.ack("*", T + 35)
    desat(h, T + 35, T + 300)
    got = states(h.alerts("spo2_low"))
    assert [(T + 15, "raised"), (T + 35, "acknowledged"), (T + 155, "renotified")] == got[:3]
    # Unacknowledged again: re-notify every 30 s and escalate 2 min after the silence ended.
    assert (T + 185, "renotified") == got[3]
    assert (T + 275, "escalated") in got


def test_medium_renotifies_every_5_min_and_never_escalates() -> None:
    h = infusing()
    desat(h, T, T + 700, 91.0)
    got = states(h.alerts("spo2_low"))
    assert [(T + 30, "raised"), (T + 330, "renotified"), (T + 630, "renotified")] == got


def test_rise_in_priority_notifies_again_even_after_ack() -> None:
    """MEDIUM acknowledged, then SpO2 falls below 85: the same occurrence re-notifies at HIGH."""
    h = infusing()
    desat(h, T, T + 40, 91.0)
    h.ack("*", T + 40)
    desat(h, T + 40, T + 60, 83.0)
    alerts = h.alerts("spo2_low")
    assert [
        (T + 30, "raised", Priority.MEDIUM),
        (T + 40, "acknowledged", Priority.MEDIUM),
        (T + 45, "renotified", Priority.HIGH),
    ] == [(a.t, a.state.value, a.priority) for a in alerts]
    assert 1 == len({a.alert_id for a in alerts})
    assert alerts[-1].acknowledged_by is None


def test_ack_of_one_id_leaves_the_others() -> None:
    h = infusing()
    h.run(T, T + 40, spo2=88.0, pulse=145.0)
    spo2_id = h.raised("spo2_low")[0].alert_id
    out = h.ack(spo2_id, T + 40)
    assert [spo2_id] == [a.alert_id for a in out if isinstance(a, AlertTransition)]
    assert [] == h.ack("no-such-id", T + 41)


def test_seq_grows_by_one_and_ids_are_stable_and_sortable() -> None:
    h = infusing()
    h.run(T, T + 200, spo2=88.0, pulse=145.0)
    h.ack("*", T + 200)
    alerts = h.alerts()
    assert list(range(1, len(alerts) + 1)) == [a.seq for a in alerts]
    ids = [a.alert_id for a in h.raised()]
    assert ["bed-1-000001", "bed-1-000002", "bed-1-000003", "bed-1-000004"] == ids
    assert 4 == len({a.alert_id for a in alerts})


def test_id_factory_is_used() -> None:
    counter = itertools.count(100)
    engine = BedEngine(
        load_alarm_table(None), bed="b", devices={"ox": "spo2"}, id_factory=lambda: f"X{next(counter)}"
    )
    out = engine.tick(0.0) + engine.set_phase("infusion", 1.0)
    assert ["X100"] == [o.alert_id for o in out if isinstance(o, AlertTransition)]


def test_active_alarms_and_explain() -> None:
    h = infusing()
    h.run(T, T + 20, spo2=88.0)
    active = h.engine.active_alarms()
    assert [("spo2_low", AlertState.RAISED)] == [(a.condition, a.state) for a in active]
    why = h.engine.explain(active[0].alert_id)
    assert "spo2_low_high" == why["rule"]
    assert 90 == why["rule_definition"]["limit"]
    assert any("t=300.0 spo2=88" in e for e in why["evidence"])


def test_ended_phase_clears_everything_including_latched() -> None:
    h = infusing()
    h.run(T, T + 20, spo2=88.0)
    h.phase("ended", T + 20)
    assert [] == h.engine.active_alarms()
    assert "cleared" == h.alerts("spo2_low")[-1].state.value


def test_time_never_runs_back() -> None:
    """A ``now`` before one already seen is treated as the latest seen (no negative timers)."""
    h = infusing()
    h.run(T, T + 10, spo2=88.0)
    out = h.tick(T - 100)
    assert [] == out
    h.run(T + 10, T + 20, spo2=88.0)
    assert T + 15 == h.raised("spo2_low")[0].t


def test_acknowledged_high_falls_to_medium_then_rises_again() -> None:
    """HIGH acknowledged, SpO2 back to 91 (MEDIUM only): a new fall below 90 notifies HIGH again."""
    h = infusing()
    desat(h, T, T + 40)
    h.ack("*", T + 40)
    desat(h, T + 40, T + 80, 91.0)
    desat(h, T + 80, T + 100, 88.0)
    alerts = h.alerts("spo2_low")
    assert [
        (T + 15, "raised", Priority.HIGH),
        (T + 40, "acknowledged", Priority.HIGH),
        (T + 95, "renotified", Priority.HIGH),
    ] == [(a.t, a.state.value, a.priority) for a in alerts]
    assert 1 == len({a.alert_id for a in alerts})
    assert None is alerts[-1].acknowledged_by
