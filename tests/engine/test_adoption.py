"""Alarms of an earlier process handed to the alarm book: continued under their id, or cleared."""

from __future__ import annotations

from dataclasses import replace

from tests.fakes.alerts import transition
from vitalwatch.engine.lifecycle import AlarmBook, Finding
from vitalwatch.engine.outputs import AlertState, Category, Priority
from vitalwatch.engine.table import default_table

CTX = ("infusion", 60.0)


def spo2_low() -> Finding:
    return Finding(
        condition="spo2_low",
        category=Category.PHYSIOLOGICAL,
        parameter="spo2",
        priority=Priority.HIGH,
        rule="spo2_low_high",
        value=85.0,
        unit="%",
        limit=90.0,
        message="SpO2 85 % below 90 % for 15 s",
    )


def book(*, latching: bool) -> AlarmBook:
    table = replace(default_table(), latching={Priority.HIGH: latching})
    ids = iter(f"fresh-{n}" for n in range(1, 100))
    made = AlarmBook(table, "chair-1", lambda: next(ids))
    made.seed_seq(10)
    return made


def test_restored_alarm_is_adopted_under_its_old_id_and_stale_ones_clear_after_grace() -> None:
    """The new occurrence of a restored alarm keeps the old id and onset; an unseen one clears."""
    b = book(latching=False)
    kept = transition("old-1", 5)
    gone = replace(transition("old-2", 6), condition="pulse_high", parameter="pulse_rate")
    b.adopt([kept, gone], now=0.0, grace_s=10.0)
    out = b.reconcile({spo2_low().key: spo2_low()}, 3.0, CTX)
    assert [("old-1", AlertState.RENOTIFIED, 100.0, 11)] == [
        (o.alert_id, o.state, o.onset_t, o.seq) for o in out
    ]
    assert [] == b.orphans.expire(9.0, "infusion")
    out = b.orphans.expire(11.0, "infusion")
    assert [("old-2", AlertState.CLEARED, 12)] == [(o.alert_id, o.state, o.seq) for o in out]
    out = b.acknowledge("old-1", "nurse", 12.0, CTX)  # a nurse's ack of the old id reaches the occurrence
    assert [("old-1", AlertState.ACKNOWLEDGED)] == [(o.alert_id, o.state) for o in out]


def test_acknowledged_orphan_is_acknowledged_again_when_adopted() -> None:
    b = book(latching=False)
    b.adopt(
        [replace(transition("old-1", 5), acknowledged_by="RN Kim", acknowledged_t=101.0)],
        now=0.0,
        grace_s=10.0,
    )
    out = b.reconcile({spo2_low().key: spo2_low()}, 3.0, CTX)
    assert [(AlertState.RENOTIFIED, None), (AlertState.ACKNOWLEDGED, "RN Kim")] == [
        (o.state, o.acknowledged_by) for o in out
    ]


def test_latched_restored_alarm_stays_until_acknowledged() -> None:
    """A HIGH physiological alarm that latches is not dropped by the grace timer: a nurse must ack it."""
    b = book(latching=True)
    b.adopt([transition("old-1", 5)], now=0.0, grace_s=1.0)
    assert [] == b.orphans.expire(5.0, "infusion")
    assert ["old-1"] == [t.alert_id for t in b.orphans.latest()]
    out = b.orphans.acknowledge("old-1", "nurse", 6.0, "infusion")
    assert [AlertState.ACKNOWLEDGED, AlertState.CLEARED] == [o.state for o in out]
    assert [11, 12] == [o.seq for o in out]
    assert [] == b.orphans.latest()
