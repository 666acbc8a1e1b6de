"""The ORU^R40 encoder, read back field by field with python-hl7 (an independent HL7 parser).

The GE Mural ORU^R40 in tests/vectors/hl7 is the reference for the shape (segments, message type,
profile, MDC_EVT_ALARM order, the 1.0.0.0.n facet sub-ids).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hl7
import pytest

from tests.fakes.alerts import transition
from vitalwatch.config import PCD04_PROFILE_ID, AlertReporterConfig
from vitalwatch.delivery.payloads import WallClock, alert_payload
from vitalwatch.delivery.pcd04 import facets, hl7_time, oru_r40
from vitalwatch.engine.outputs import AlertState, Category, Priority
from vitalwatch.engine.vocabulary import CONDITIONS

SITE = "clinic-a"
WALL = WallClock(100.0, datetime(2025, 3, 4, 10, 0, 0, tzinfo=UTC))
NOW = datetime(2025, 3, 4, 10, 0, 5, 250000, tzinfo=UTC)
CFG = AlertReporterConfig(id="ascom", host="127.0.0.1")
GE_SAMPLE = Path(__file__).parents[1] / "vectors" / "hl7" / "ge_mural_pcd04_oru_r40.txt"


def payload(**changes: Any) -> dict[str, Any]:
    tr = dataclasses.replace(transition("chair-1-20250304T100000-0001", 7), **changes)
    return alert_payload(tr, site=SITE, wall=WALL)


def parse(p: dict[str, Any], counter: int = 0, cfg: AlertReporterConfig = CFG) -> hl7.Message:
    text = oru_r40(p, counter=counter, cfg=cfg, site=SITE, now=NOW)
    assert text.endswith("\r") and "\n" not in text
    return hl7.parse(text)


def value(message: hl7.Message, key: str) -> str:
    """One value by python-hl7 accessor, which unescapes it."""
    return str(message[key])


def obx(message: hl7.Message, n: int) -> Any:
    return message.segments("OBX")[n - 1]


def test_header_is_an_ihe_pcd_acm_oru_r40() -> None:
    m = parse(payload())
    msh = m.segment("MSH")
    assert str(msh[9]) == "ORU^R40^ORU_R40"
    assert str(msh[10]) == "chair-1-20250304T100000-0001.0"
    assert (str(msh[11]), str(msh[12]), str(msh[15]), str(msh[16])) == ("P", "2.6", "AL", "NE")
    assert str(msh[18]) == "UNICODE UTF-8"
    assert str(msh[21]) == PCD04_PROFILE_ID
    assert value(m, "MSH.F21.R1.C1") == "IHE_PCD_ACM_001"
    assert (str(msh[3]), str(msh[4])) == ("VITALWATCH", SITE)
    assert str(msh[7]) == "20250304100005.250+0000"


def test_no_patient_identifier_unless_mapped_and_bed_is_the_location() -> None:
    m = parse(payload())
    assert [str(s[0]) for s in m][:4] == ["MSH", "PID", "PV1", "OBR"]
    assert str(m.segment("PID")).strip("|") == "PID"  # no field at all
    assert str(m.segment("PV1")[2]) == "O"
    assert (value(m, "PV1.F3.R1.C1"), value(m, "PV1.F3.R1.C3")) == (SITE, "chair-1")
    mapped = dataclasses.replace(
        CFG, patient_ids={"chair-1": "ONC-CHAIR-1"}, point_of_care="ONC", facility="H1"
    )
    m = parse(payload(), cfg=mapped)
    assert value(m, "PID.F3") == "ONC-CHAIR-1"
    assert str(m.segment("PV1")[3]) == "ONC^^chair-1^H1"
    other_bed = parse(payload(bed="chair-2"), cfg=mapped)
    assert str(other_bed.segment("PID")).strip("|") == "PID"


def test_obr_names_the_alert_and_its_update_counter() -> None:
    first = parse(payload())
    assert value(first, "OBR.F3.R1.C1") == "0"
    assert value(first, "OBR.F3.R1.C2") == "chair-1-20250304T100000-0001"
    assert str(first.segment("OBR")[4]) == "196616^MDC_EVT_ALARM^MDC"
    assert str(first.segment("OBR")[7]) == hl7_time(WALL.utc(100.0))  # onset
    assert len(first.segment("OBR")) <= 9  # no end time, no parent on the first report
    later = parse(payload(state=AlertState.CLEARED, t=130.0), counter=3)
    obr = later.segment("OBR")
    assert value(later, "OBR.F3.R1.C1") == "3"
    assert str(obr[8]) == hl7_time(WALL.utc(130.0))  # end of the alert
    assert str(obr[29]) == "^0&chair-1-20250304T100000-0001"  # the alert's first report
    assert str(later.segment("MSH")[10]) == "chair-1-20250304T100000-0001.3"


def test_eui64_identifies_the_gateway_in_msh3_obr3_and_the_parent() -> None:
    cfg = dataclasses.replace(CFG, eui64="00A0B1FFFEC2D3E4")
    m = parse(payload(), counter=1, cfg=cfg)
    assert str(m.segment("MSH")[3]) == "VITALWATCH^00A0B1FFFEC2D3E4^EUI-64"
    assert str(m.segment("OBR")[3]) == "1^chair-1-20250304T100000-0001^00A0B1FFFEC2D3E4^EUI-64"
    assert str(m.segment("OBR")[29]) == "^0&chair-1-20250304T100000-0001&00A0B1FFFEC2D3E4&EUI-64"


def test_physiological_alert_event_parameter_value_and_limit() -> None:
    m = parse(payload(message="SpO2 84 % below 90 % for 15 s"))
    event = obx(m, 1)
    assert (str(event[1]), str(event[2]), str(event[3]), str(event[4])) == (
        "1",
        "CWE",
        "196616^MDC_EVT_ALARM^MDC",
        "1.0.0.0.1",
    )
    assert [str(c) for c in event[5][0]][:4] == ["196670", "MDC_EVT_LO", "MDC", "spo2_low"]
    assert value(m, "OBX1.F5.R1.C9") == "SpO2 84 % below 90 % for 15 s"
    assert [str(r) for r in event[8]] == ["L", "PH", "SP"]  # below the limit, high priority, physiological
    assert str(event[11]) == "F" and str(event[14]) == hl7_time(WALL.utc(107.0))
    source = obx(m, 2)
    assert (str(source[2]), str(source[3]), str(source[4]), str(source[5])) == (
        "NM",
        "150456^MDC_PULS_OXIM_SAT_O2^MDC",
        "1.0.0.0.2",
        "84",
    )
    assert value(m, "OBX2.F6.R1.C1") == "262688" and value(m, "OBX2.F6.R1.C4") == "%"
    assert value(m, "OBX2.F7") == ">90"


@pytest.mark.parametrize(
    ("state", "acked", "expected"),
    [
        (AlertState.RAISED, False, ("start", "active", "enabled")),
        (AlertState.RENOTIFIED, False, ("continue", "active", "enabled")),
        (AlertState.ESCALATED, False, ("escalate", "active", "enabled")),
        (AlertState.ACKNOWLEDGED, True, ("update", "active", "alert-acknowledged")),
        (AlertState.CLEARED, True, ("end", "inactive", "alert-acknowledged")),
        (AlertState.CLEARED, False, ("end", "inactive", "enabled")),
    ],
)
def test_state_facets(state: AlertState, acked: bool, expected: tuple[str, str, str]) -> None:
    changes: dict[str, Any] = {"state": state}
    if acked:
        changes |= {"acknowledged_by": "nurse-7", "acknowledged_t": 105.0}
    m = parse(payload(**changes), counter=2)
    got = [(str(obx(m, n)[3]), str(obx(m, n)[4]), str(obx(m, n)[5])) for n in range(3, 8)]
    assert got == [
        ("68481^MDC_ATTR_EVENT_PHASE^MDC", "1.0.0.0.3", expected[0]),
        ("68482^MDC_ATTR_ALARM_STATE^MDC", "1.0.0.0.4", expected[1]),
        ("68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC", "1.0.0.0.5", expected[2]),
        ("68484^MDC_ATTR_ALARM_PRIORITY^MDC", "1.0.0.0.6", "PH"),
        ("68485^MDC_ATTR_ALERT_TYPE^MDC", "1.0.0.0.7", "SP"),
    ]


@pytest.mark.parametrize(
    ("priority", "code"), [(Priority.HIGH, "PH"), (Priority.MEDIUM, "PM"), (Priority.LOW, "PL")]
)
def test_priority(priority: Priority, code: str) -> None:
    m = parse(payload(priority=priority))
    assert [str(r) for r in obx(m, 1)[8]][1] == code
    assert str(obx(m, 6)[5]) == code


def test_technical_alert_names_its_source_not_a_parameter() -> None:
    m = parse(
        payload(
            condition="link_lost",
            category=Category.TECHNICAL,
            parameter=None,
            value=None,
            unit=None,
            limit=None,
            device="oximeter",
            message="No data from oximeter for 10 s",
        )
    )
    assert [str(c) for c in obx(m, 1)[5][0]][:4] == ["196616", "MDC_EVT_ALARM", "MDC", "link_lost"]
    assert [str(r) for r in obx(m, 1)[8]] == ["A", "PH", "ST"]
    source = obx(m, 2)
    assert (str(source[2]), str(source[3]), str(source[5])) == (
        "ST",
        "68480^MDC_ATTR_ALERT_SOURCE^MDC",
        "oximeter",
    )
    assert str(obx(m, 7)[5]) == "ST"


def test_advisory_and_high_side_conditions() -> None:
    advisory = parse(payload(condition="infusion_overrun", category=Category.ADVISORY, parameter=None))
    assert [str(r) for r in obx(advisory, 1)[8]] == ["A", "PH", "SA"]
    high = parse(
        payload(condition="pulse_high", parameter="pulse_rate", value=131.0, unit="/min", limit=120.0)
    )
    assert [str(c) for c in obx(high, 1)[5][0]][:2] == ["196648", "MDC_EVT_HI"]
    assert str(obx(high, 2)[3]) == "149530^MDC_PULS_OXIM_PULS_RATE^MDC"
    assert (str(obx(high, 2)[5]), value(high, "OBX2.F7")) == ("131", "<120")
    assert value(high, "OBX2.F6.R1.C2") == "MDC_DIM_BEAT_PER_MIN"


def test_delimiters_in_text_are_escaped_and_read_back() -> None:
    text = "odd | text ^ with & delimiters ~ and \\ escape"
    m = parse(payload(message=text))
    assert value(m, "OBX1.F5.R1.C9") == text
    assert len(m.segments("OBX")) == 7


@pytest.mark.parametrize("condition", sorted(CONDITIONS))
def test_every_condition_encodes(condition: str) -> None:
    info = CONDITIONS[condition]
    m = parse(payload(condition=condition, category=info.category, parameter=info.parameter))
    assert len(m.segments("OBX")) == 7
    assert value(m, "OBX1.F5.R1.C4") == condition
    assert [str(r) for r in obx(m, 1)[8]][2] == {"physiological": "SP", "technical": "ST", "advisory": "SA"}[
        info.category.value
    ]


def test_same_shape_as_the_ge_mural_sample() -> None:
    ge = hl7.parse(GE_SAMPLE.read_text().replace("\n", "\r"))
    ours = parse(payload())
    for m in (ge, ours):
        names = [str(s[0]) for s in m]
        assert names[:4] == ["MSH", "PID", "PV1", "OBR"] and set(names[4:]) == {"OBX"}
        assert str(m.segment("MSH")[9]) == "ORU^R40^ORU_R40"
        assert (str(m.segment("MSH")[12]), str(m.segment("MSH")[15]), str(m.segment("MSH")[16])) == (
            "2.6",
            "AL",
            "NE",
        )
        assert value(m, "MSH.F21.R1.C1") == "IHE_PCD_ACM_001"
        assert str(m.segment("OBR")[4]) == "196616^MDC_EVT_ALARM^MDC"
        facet_ids = [str(s[4]) for s in m.segments("OBX") if str(s[4]).count(".") == 4]
        assert facet_ids and all(f.startswith("1.0.0.0.") for f in facet_ids)


def test_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown alert state"):
        facets("sleeping", False)


def test_the_example_in_docs_pcd04_is_what_the_encoder_writes() -> None:
    """docs/pcd04.md shows a whole message; it must not drift from the code."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "pcd04.md").read_text()
    block = doc.split("```\nMSH|", 1)[1].split("```", 1)[0]
    shown = "MSH|" + block.strip("\n").replace("\n", "\r") + "\r"
    p = alert_payload(transition("chair-1-20250304T100000-0001", 7), site=SITE, wall=WALL)
    p["message"] = "SpO2 84 % below 90 %"
    assert oru_r40(p, counter=0, cfg=CFG, site=SITE, now=NOW) == shown
