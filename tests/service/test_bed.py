"""The bed session on replay links (no ports): one validity rule, one NIBP dispatch."""

from __future__ import annotations

from typing import Any

from vitalwatch.bed import NIBP_DEFER_S, BedSession, VitalPayload
from vitalwatch.config import BedConfig, DeviceConfig
from vitalwatch.continuity.replay import ReplayLink
from vitalwatch.drivers import SerialSettings
from vitalwatch.drivers.events import DeviceStatus, Observation
from vitalwatch.engine.outputs import AlertTransition, NibpRequest, NursePrompt, Output
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import default_table
from vitalwatch.link.device_link import LinkListener


class Sink:
    """What the publisher would get: alerts, and each vital's payload as it would be sent."""

    def __init__(self) -> None:
        self.alerts: list[AlertTransition] = []
        self.vitals: list[dict[str, Any]] = []

    def alert(self, transition: AlertTransition) -> None:
        self.alerts.append(transition)

    def vital(self, kind: str, payload: VitalPayload) -> None:
        self.vitals.append(payload() if callable(payload) else payload)


SENT: list[tuple[str, bytes]] = []


def bed(devices: dict[str, tuple[str, str]]) -> tuple[BedSession[ReplayLink], Sink, list[Any], list[Output]]:
    """A bed of ``devices`` (id -> (driver, role)); its sink, session-record calls and outputs.

    What a driver sends to its device lands in ``SENT`` (cleared here).
    """
    SENT.clear()
    config = BedConfig(
        id="bed-1",
        devices=tuple(
            DeviceConfig(id=d, driver=drv, url="replay", role=role, serial=SerialSettings())
            for d, (drv, role) in devices.items()
        ),
    )
    engine = BedEngine(default_table(), "bed-1", {d: role for d, (_, role) in devices.items()})
    sink, recorded, outputs = Sink(), [], []

    def link(dev: DeviceConfig, listener: LinkListener) -> ReplayLink:
        return ReplayLink(
            dev, listener, clock=lambda: 0.0, peer=lambda data, now: SENT.append((dev.id, data))
        )

    session = BedSession(
        config,
        engine,
        links=link,
        sink=sink,
        vital_payload=lambda device, obs, now, valid: {
            "kind": obs.kind,
            "quality": "valid" if valid else "invalid",
        },
        observers=[outputs.append],
        recorder=lambda device, obs, now, valid: recorded.append((obs.kind, valid)),
    )
    return session, sink, recorded, outputs


def test_multi_device_spo2_stays_valid_under_cuff_error_in_vitals_record_and_alarms() -> None:
    """An Accutorr/HL7 monitor with a cuff error: its SpO2 is still SpO2 everywhere, its NIBP is not."""
    session, sink, recorded, _ = bed({"monitor": ("hl7", "multi")})
    session.set_phase("infusion", 0.0)
    session.on_events("monitor", [DeviceStatus("cuff_error", True)], 0.0)
    for t in range(40):
        session.on_events("monitor", [Observation("spo2", 85.0, "%")], float(t))
        session.tick(float(t))
    session.on_events("monitor", [Observation("nibp_systolic", 120.0, "mm[Hg]")], 40.0)
    assert {"valid"} == {v["quality"] for v in sink.vitals if v["kind"] == "spo2"}
    assert [("nibp_systolic", "invalid")] == [
        (v["kind"], v["quality"]) for v in sink.vitals if v["kind"] != "spo2"
    ]
    assert {True} == {valid for kind, valid in recorded if kind == "spo2"}
    assert ("nibp_systolic", False) == recorded[-1]
    assert any(tr.condition == "spo2_low" for tr in sink.alerts)  # the engine alarms on that same SpO2


def test_oximeter_values_are_invalid_under_probe_off_everywhere() -> None:
    session, sink, recorded, _ = bed({"oximeter": ("masimo", "spo2")})
    session.set_phase("infusion", 0.0)
    session.on_events("oximeter", [DeviceStatus("sensor_off", True)], 0.0)
    for t in range(40):
        session.on_events("oximeter", [Observation("spo2", 70.0, "%")], float(t))
        session.tick(float(t))
    assert {"invalid"} == {v["quality"] for v in sink.vitals}
    assert {False} == {valid for _, valid in recorded}
    assert not any(tr.condition == "spo2_low" for tr in sink.alerts)


def test_nibp_request_starts_the_first_commandable_cuff() -> None:
    session, _, _, outputs = bed({"oximeter": ("masimo", "spo2"), "cuff": ("suntech", "nibp")})
    session.links["cuff"].open(0.0, report=False)  # the port is open; the engine not yet told
    session.dispatch([NibpRequest(t=1.0, bed="bed-1", reason="confirm BP")])
    assert ["cuff"] == [device for device, data in SENT if data]  # the start command went to the cuff
    assert [] == [o for o in outputs if isinstance(o, NursePrompt)]


def test_nibp_request_without_a_commandable_cuff_prompts_the_nurse() -> None:
    """An Accutorr cannot be started by the daemon: the nurse is asked at once."""
    session, _, _, outputs = bed({"oximeter": ("masimo", "spo2"), "cuff": ("accutorr", "multi")})
    session.links["cuff"].open(0.0, report=False)
    session.dispatch([NibpRequest(t=1.0, bed="bed-1", reason="confirm BP")])
    assert ["Please take a blood pressure: confirm BP"] == [
        o.text for o in outputs if isinstance(o, NursePrompt)
    ]
    assert session.request_nibp("nurse request", 2.0) is False


def test_a_request_waits_for_a_startable_cuff_that_is_not_linked_yet() -> None:
    """At start-up the engine asks before the cuff's port is open: start it when it opens, no prompt."""
    session, _, _, outputs = bed({"oximeter": ("masimo", "spo2"), "cuff": ("suntech", "nibp")})
    session.dispatch([NibpRequest(t=1.0, bed="bed-1", reason="baseline reading 1 of 2")])
    assert [] == [device for device, data in SENT if data]
    session.tick(5.0)
    session.links["cuff"].open(6.0)  # the port opens: link up reaches the bed session
    assert ["cuff"] == [device for device, data in SENT if data]
    session.tick(60.0)
    assert [] == [o for o in outputs if isinstance(o, NursePrompt)]


def test_a_startable_cuff_that_stays_down_gets_the_nurse_asked_after_the_wait() -> None:
    session, _, _, outputs = bed({"oximeter": ("masimo", "spo2"), "cuff": ("suntech", "nibp")})
    session.dispatch([NibpRequest(t=1.0, bed="bed-1", reason="confirm BP")])
    session.tick(1.0 + NIBP_DEFER_S - 0.5)
    assert [] == [o for o in outputs if isinstance(o, NursePrompt)]
    session.tick(1.0 + NIBP_DEFER_S)
    # One prompt, when the wait that began with the first request is over; it names the latest
    # reason (the engine asked again meanwhile, for its baseline reading).
    prompts = [o.text for o in outputs if isinstance(o, NursePrompt)]
    assert 1 == len(prompts) and prompts[0].startswith("Please take a blood pressure: ")
