"""Health: faults (restart helps, watchdog withheld) versus degradations (reported, watchdog kept)."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from vitalwatch.ops.health import (
    BedState,
    DaemonSnapshot,
    DeviceState,
    Severity,
    Thresholds,
    assess,
    format_report,
)


def device(**changes: object) -> DeviceState:
    base = DeviceState(id="oximeter", task_running=True, link_up=True, last_reading_age_s=1.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def snapshot(*devices: DeviceState, phase: str = "infusion", **changes: object) -> DaemonSnapshot:
    bed = BedState(id="chair-1", phase=phase, devices=devices or (device(),), active_alarms={"high": 1})
    base = DaemonSnapshot(uptime_s=600.0, loop_lag_s=0.01, beds=(bed,), broker_connected=True)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def codes(snap: DaemonSnapshot) -> dict[str, Severity]:
    return {p.code: p.severity for p in assess(snap).problems}


def test_all_well_is_healthy_and_pings() -> None:
    """A patient alarm is not a health problem: it is clinical, not technical."""
    health = assess(snapshot())
    assert health.healthy
    assert health.watchdog_ok
    assert () == health.reasons


def test_lagging_loop_is_a_fault() -> None:
    """A blocked loop must stop the pings so systemd restarts the service."""
    health = assess(snapshot(loop_lag_s=2.5))
    assert not health.watchdog_ok and not health.healthy
    assert {"loop.lag": Severity.FAULT} == codes(snapshot(loop_lag_s=2.5))


def test_dead_device_task_is_a_fault_even_when_idle() -> None:
    assert {"device.task_dead": Severity.FAULT} == codes(snapshot(device(task_running=False)))
    assert {"device.task_dead": Severity.FAULT} == codes(snapshot(device(task_running=False), phase="ended"))


def test_dead_publisher_is_a_fault() -> None:
    assert {"publisher.task_dead": Severity.FAULT} == codes(snapshot(publisher_running=False))


def test_pulled_cable_is_degraded_not_a_fault() -> None:
    """Restarting cannot plug a cable back in: report it, keep pinging."""
    snap = snapshot(device(link_up=False, last_reading_age_s=40.0, silence_alarm=True))
    health = assess(snap)
    assert health.watchdog_ok and not health.healthy
    assert {"device.link_down": Severity.DEGRADED, "device.stale": Severity.DEGRADED} == codes(snap)


def test_silent_device_with_its_alarm_is_degraded() -> None:
    snap = snapshot(device(last_reading_age_s=300.0, silence_alarm=True))
    assert {"device.stale": Severity.DEGRADED} == codes(snap)


def test_long_silence_without_an_alarm_is_degraded_not_a_restart() -> None:
    """A restart brings the same silence back: keep pinging, report it (the daemon alarms locally)."""
    snap = snapshot(device(last_reading_age_s=121.0, silence_alarm=False))
    assert {"device.silence_unalarmed": Severity.DEGRADED} == codes(snap)
    health = assess(snap)
    assert health.watchdog_ok and not health.healthy
    # Just below the overdue limit it is only stale.
    assert {"device.stale": Severity.DEGRADED} == codes(snapshot(device(last_reading_age_s=119.0)))


def test_no_reading_ever_counts_from_start() -> None:
    """A device that never spoke has been silent for the whole uptime."""
    assert {} == codes(snapshot(device(last_reading_age_s=None), uptime_s=10.0))
    never = device(last_reading_age_s=None)
    assert {"device.stale": Severity.DEGRADED} == codes(snapshot(never, uptime_s=70.0))
    assert {"device.silence_unalarmed": Severity.DEGRADED} == codes(
        snapshot(device(last_reading_age_s=None), uptime_s=500.0)
    )


def test_a_host_driven_cuff_idle_between_measurements_is_not_silence() -> None:
    """An NIBP module speaks only when asked (every few minutes): its quiet is normal, its port is not."""
    cuff = device(id="nibp", streams=False, last_reading_age_s=600.0)
    assert {} == codes(snapshot(cuff))
    assert {} == codes(snapshot(dataclasses.replace(cuff, last_reading_age_s=None), uptime_s=900.0))
    unplugged = dataclasses.replace(cuff, link_up=False)
    assert {"device.link_down": Severity.DEGRADED} == codes(snapshot(unplugged))
    dead = dataclasses.replace(cuff, task_running=False)
    assert {"device.task_dead": Severity.FAULT} == codes(snapshot(dead))


def test_startup_grace_suppresses_staleness_but_not_link_down() -> None:
    snap = snapshot(device(link_up=False, last_reading_age_s=None), uptime_s=5.0)
    assert {"device.link_down": Severity.DEGRADED} == codes(snap)


def test_idle_bed_ignores_unplugged_devices() -> None:
    """After the session ended the monitors may be switched off and unplugged."""
    snap = snapshot(device(link_up=False, last_reading_age_s=None), phase="ended")
    assert {} == codes(snap)


def test_broker_outage_with_its_alarm_is_degraded() -> None:
    snap = snapshot(broker_connected=False, broker_alarm=True, outbox_depth=3, outbox_oldest_age_s=400.0)
    assert {
        "broker.disconnected": Severity.DEGRADED,
        "broker.unreachable_alarm": Severity.DEGRADED,
    } == codes(snap)
    assert assess(snap).watchdog_ok


def test_stuck_outbox_without_alarm_is_a_fault() -> None:
    """Connected (or not), undelivered for long and nobody told: the publisher is stuck."""
    snap = snapshot(outbox_depth=2, outbox_oldest_age_s=61.0)
    assert {"outbox.stuck_unalarmed": Severity.FAULT} == codes(snap)
    assert {} == codes(snapshot(outbox_depth=2, outbox_oldest_age_s=5.0))


def test_unsynchronised_clock_is_degraded_unless_waived() -> None:
    snap = snapshot(clock_synced=False)
    assert {"clock.unsynchronized": Severity.DEGRADED} == codes(snap)
    assert assess(snap, Thresholds(require_clock_sync=False)).healthy


def test_thresholds_are_respected() -> None:
    strict = Thresholds(max_loop_lag_s=0.005)
    assert not assess(snapshot(), strict).watchdog_ok


def test_snapshot_json_round_trip() -> None:
    """A snapshot survives JSON (the status command gets it over a socket)."""
    snap = snapshot(
        device(last_reading_age_s=None, silence_alarm=True),
        device(id="nibp", link_up=False, streams=False),
        broker_connected=False,
        outbox_depth=4,
        outbox_oldest_age_s=12.5,
        clock_synced=False,
    )
    assert snap == DaemonSnapshot.from_dict(json.loads(json.dumps(snap.to_dict())))


def test_report_lists_beds_devices_and_reasons() -> None:
    snap = snapshot(device(link_up=False, last_reading_age_s=None), uptime_s=5.0)
    text = format_report(snap, assess(snap))
    assert text.startswith("vitalwatch: UNHEALTHY")
    assert "bed chair-1: phase infusion, active alarms: 1 high" in text
    assert "oximeter: link DOWN, last reading never" in text
    assert "degraded: chair-1/oximeter: device.link_down" in text


devices = st.builds(
    DeviceState,
    id=st.sampled_from(["a", "b"]),
    task_running=st.booleans(),
    link_up=st.booleans(),
    last_reading_age_s=st.none() | st.floats(0, 1e5),
    silence_alarm=st.booleans(),
)
snapshots = st.builds(
    DaemonSnapshot,
    uptime_s=st.floats(0, 1e6),
    loop_lag_s=st.floats(0, 100),
    beds=st.lists(
        st.builds(
            BedState,
            id=st.just("chair-1"),
            phase=st.sampled_from(["baseline", "infusion", "recovery", "ended"]),
            devices=st.lists(devices, max_size=3).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
    broker_connected=st.booleans(),
    broker_alarm=st.booleans(),
    publisher_running=st.booleans(),
    outbox_depth=st.integers(0, 100),
    outbox_oldest_age_s=st.floats(0, 1e5),
    clock_synced=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(snapshots)
def test_invariants(snap: DaemonSnapshot) -> None:
    """Never raises; a fault always means unhealthy; healthy iff no problem."""
    health = assess(snap)
    if not health.watchdog_ok:
        assert not health.healthy
    assert health.healthy == (not health.problems)
    assert snap == DaemonSnapshot.from_dict(json.loads(json.dumps(snap.to_dict())))
    format_report(snap, health)
