"""A device status from before a fresh connection (link up, restarted driver) must not outlive it
unless the fresh connection reports it again, and must not lapse for a moment if it does.

Engine level, clock passed in: the oximeter's ``sensor_off`` is on, its link goes down and comes
back, and the fresh connection either reports the status again or only sends values.
"""

from __future__ import annotations

from vitalwatch.continuity.replay import replay_rows
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Observation
from vitalwatch.engine.device_statuses import STATUS_CONFIRM_S, DeviceStatuses
from vitalwatch.engine.outputs import AlertState, AlertTransition, Output
from vitalwatch.engine.replay import DEFAULT_DEVICES, parse_observations
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import load_alarm_table
from vitalwatch.engine.testing import EngineHarness

SPO2 = Observation("spo2", 97.0, "%")
LOW = Observation("spo2", 80.0, "%")


def probe_off_across_a_reconnect(h: EngineHarness) -> None:
    """Infusion running with good signal; the probe comes off at 400, the cable at 410 (link down),
    the link is back at 430. Nothing after that yet."""
    h.standard_baseline()
    h.run(300.0, 400.0)
    h.status("sensor_off", True, 400.0)
    h.sample("spo2", None, 400.0)
    h.run(401.0, 410.0, spo2=None, pulse=None)
    h.link(False, 410.0)
    h.link(True, 430.0)


def valid_at(h: EngineHarness, t: float, obs: Observation = SPO2) -> bool:
    """What the bed session asks before it hands the value over (vitals topic, session record)."""
    return h.engine.is_valid("oximeter", obs, t)


def test_a_status_the_fresh_connection_does_not_report_ends_after_the_window() -> None:
    h = EngineHarness()
    probe_off_across_a_reconnect(h)
    assert not valid_at(h, 430.0)
    # The probe went back on while the cable was out: the fresh connection only sends values.
    first_data = 431.0
    h.run(first_data, first_data + STATUS_CONFIRM_S, spo2=97.0)
    assert not valid_at(h, first_data + STATUS_CONFIRM_S - 0.5)
    assert valid_at(h, first_data + STATUS_CONFIRM_S)
    h.run(first_data + STATUS_CONFIRM_S, 480.0, spo2=97.0)
    lost = h.alerts("signal_lost")
    assert [AlertState.RAISED, AlertState.CLEARED] == [a.state for a in lost]
    assert "(sensor_off)" in lost[0].message
    assert first_data + STATUS_CONFIRM_S == lost[-1].t  # the first value of the fresh connection that counts


def test_a_desaturation_after_such_a_reconnect_alarms() -> None:
    """The clinical point: without the fix the held sensor_off kept SpO2 invalid for good."""
    h = EngineHarness()
    probe_off_across_a_reconnect(h)
    h.run(431.0, 500.0, spo2=80.0)
    raised = h.raised("spo2_low")
    assert raised, "no desaturation alarm after the reconnect"
    assert raised[0].t <= 431.0 + STATUS_CONFIRM_S + 5.0 + 1.0  # window + the 5 s rapid-desaturation delay


def test_a_status_the_fresh_connection_reports_again_stays_without_a_gap() -> None:
    h = EngineHarness()
    probe_off_across_a_reconnect(h)
    # The probe is still off: the fresh driver reports it in its first frame, with no values.
    h.status("sensor_off", True, 431.0)
    h.sample("spo2", None, 431.0)
    for t in range(432, 500):
        assert not valid_at(h, float(t), LOW), t  # never a moment valid while the probe is off
        h.sample("spo2", 80.0, float(t))  # a device that shows numbers under the status
        h.tick(float(t))
    assert [] == h.raised("spo2_low")
    assert [AlertState.RAISED] == [a.state for a in h.alerts("signal_lost")]
    # ... and it still ends when the device says so.
    h.status("sensor_off", False, 500.0)
    assert valid_at(h, 500.0)


def test_the_window_counts_from_the_fresh_connections_first_data_not_from_link_up() -> None:
    h = EngineHarness()
    probe_off_across_a_reconnect(h)
    for t in range(431, 500):  # port open, device still silent (or only garbled bytes)
        h.outputs += h.engine.observe("oximeter", DecodeProblem("resync", 8), float(t))
        h.tick(float(t))
    assert not valid_at(h, 500.0)
    h.run(500.0, 500.0 + STATUS_CONFIRM_S, spo2=97.0)
    assert valid_at(h, 500.0 + STATUS_CONFIRM_S)


def test_an_off_from_the_fresh_connection_ends_it_at_once() -> None:
    h = EngineHarness()
    probe_off_across_a_reconnect(h)
    h.status("searching", True, 431.0)  # a status the fresh connection reports is its own ...
    h.status("searching", False, 431.5)
    assert not valid_at(h, 431.5)  # ... and sensor_off, carried over, is not settled by it
    h.status("sensor_off", True, 432.0)
    h.status("sensor_off", False, 432.5)
    assert valid_at(h, 432.5)


def test_driver_fault_is_not_carried_over_it_ends_when_the_link_says_so() -> None:
    h = EngineHarness()
    h.standard_baseline()
    h.run(300.0, 400.0)
    h.status("driver_fault", True, 400.0)
    h.link(False, 401.0)
    h.link(True, 402.0)
    h.run(402.0, 420.0)
    assert [AlertState.RAISED] == [a.state for a in h.alerts("driver_fault") if a.state != "renotified"]
    h.status("driver_fault", False, 420.0)
    assert AlertState.CLEARED == h.alerts("driver_fault")[-1].state


def test_a_restarted_driver_is_a_fresh_connection_too() -> None:
    """The link's guard drops a driver that raised and builds a fresh one, whose first decoded
    events come before the ``driver_fault`` off; a status of the dropped driver is carried over."""
    h = EngineHarness()
    h.standard_baseline()
    h.status("sensor_off", True, 400.0)
    h.status("driver_fault", True, 401.0)  # the driver that knew about sensor_off is gone
    h.run(403.0, 404.0, spo2=97.0)  # the fresh driver: values, no sensor_off any more
    h.status("driver_fault", False, 403.0)
    assert not valid_at(h, 405.0)
    h.run(404.0, 410.0, spo2=97.0)
    assert valid_at(h, 403.0 + STATUS_CONFIRM_S)
    # The same with the probe still off: the fresh driver reports it first, so it stays.
    h.status("sensor_off", True, 420.0)
    h.status("driver_fault", True, 421.0)
    h.status("sensor_off", True, 423.0)
    h.status("driver_fault", False, 423.0)
    h.run(423.0, 440.0, spo2=97.0)
    assert not valid_at(h, 440.0)


def test_a_multi_devices_carried_cuff_error_ends_for_its_cuff_and_never_spoiled_its_spo2() -> None:
    h = EngineHarness(devices={"monitor": "multi"})
    nibp = Observation("nibp_systolic", 120.0, "mm[Hg]")
    h.engine.observe("monitor", DeviceStatus("cuff_error", True), 10.0)
    h.engine.link("monitor", False, 11.0)
    h.engine.link("monitor", True, 12.0)
    h.engine.observe("monitor", SPO2, 13.0)
    assert h.engine.is_valid("monitor", SPO2, 13.0)
    assert not h.engine.is_valid("monitor", nibp, 13.0)
    h.engine.tick(13.0 + STATUS_CONFIRM_S)
    assert h.engine.is_valid("monitor", nibp, 13.0 + STATUS_CONFIRM_S)


def test_the_incremental_engine_matches_the_reference_across_carried_statuses() -> None:
    def run(evaluate_all: bool) -> list[Output]:
        engine = BedEngine(load_alarm_table(None), "b", {"oximeter": "spo2"}, evaluate_all=evaluate_all)
        out: list[Output] = []
        for t in range(0, 900):
            now = float(t)
            if t == 200:
                out += engine.set_phase("infusion", now)
            if t in (300, 600):
                out += engine.observe("oximeter", DeviceStatus("sensor_off", True), now)
            if t in (310, 610):
                out += engine.link("oximeter", False, now)
            if t in (330, 630):
                out += engine.link("oximeter", True, now)
            if t == 640:
                out += engine.observe("oximeter", DeviceStatus("sensor_off", True), now)
            if not 300 <= t < 340 and not 600 <= t < 640:
                out += engine.observe("oximeter", Observation("spo2", 97.0 if t < 500 else 80.0, "%"), now)
                engine.bytes_seen("oximeter", now)
            out += engine.tick(now + 0.5)
        return out

    fast, reference = run(False), run(True)
    assert fast == reference
    assert any(isinstance(o, AlertTransition) and o.condition == "signal_lost" for o in fast)


def test_device_statuses_settle_and_expire() -> None:
    book = DeviceStatuses({"ox": "spo2"})
    book.report("ox", "sensor_off", True)
    book.report("ox", "artifact", True)
    book.fresh_start("ox")
    assert {"sensor_off", "artifact"} == book.carried("ox")
    assert not book.expire(100.0)  # no data from the fresh connection yet: nothing to judge by
    book.data("ox", 100.0)
    book.report("ox", "artifact", True)  # reported again: confirmed
    assert {"sensor_off"} == book.carried("ox")
    assert {"sensor_off", "artifact"} == book.at("ox", 100.0 + STATUS_CONFIRM_S - 0.01)
    assert {"artifact"} == book.at("ox", 100.0 + STATUS_CONFIRM_S)
    assert {"sensor_off", "artifact"} == book.on["ox"]  # at() changes nothing
    assert book.expire(100.0 + STATUS_CONFIRM_S)
    assert {"artifact"} == book.on["ox"] and frozenset() == book.carried("ox")


def _replay(text: str) -> list[Output]:
    rows = parse_observations(text.splitlines(), DEFAULT_DEVICES)
    return list(replay_rows(load_alarm_table(None), "bed-1", DEFAULT_DEVICES, rows))


def _csv(after_reconnect: list[str]) -> str:
    rows = ["t,event,name,value", "0,phase,infusion,"]
    rows += [f"{t},obs,spo2,97" for t in range(1, 100)]
    rows += ["100,status,sensor_off,oximeter", "101,link,oximeter,down", "140,link,oximeter,up"]
    rows += after_reconnect
    rows += [f"{t},obs,spo2,80" for t in range(141, 200)]
    return "\n".join(rows) + "\n"


def test_a_replay_csv_reconnect_ends_an_unreported_status_and_keeps_a_reported_one() -> None:
    """A CSV's status rows are a driver's edges: after a link up the fresh driver reports a status
    still on again, so that row reaches the engine (it used to be dropped as a repeat)."""
    ended = _replay(_csv([]))
    assert any(isinstance(o, AlertTransition) and o.condition == "spo2_low" for o in ended)
    kept = _replay(_csv(["141,status,sensor_off,oximeter"]))
    assert not any(isinstance(o, AlertTransition) and o.condition == "spo2_low" for o in kept)
