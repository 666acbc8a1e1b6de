"""Impossible values never become numbers: each case found by hand, one test each.

Outside its documented range (drivers/plausibility.py, docs/devices.md "Plausible ranges") a value
is an ``implausible:<kind>`` problem followed by the same observation with ``value=None``; the
engine sees an invalid sample, never SpO2 150 or a pulse of 703.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import observations, problems
from vitalwatch.drivers import DRIVERS, driver_class, make_driver
from vitalwatch.drivers.accutorr import encode_patient_data
from vitalwatch.drivers.events import DecodeProblem, Event, Observation
from vitalwatch.drivers.hl7 import Hl7Driver
from vitalwatch.drivers.masimo import encode_line as masimo_line
from vitalwatch.drivers.mllp import encode_block
from vitalwatch.drivers.nellcor import NellcorLine, format_line
from vitalwatch.drivers.nonin_ascii import encode_line as nonin_ascii_line
from vitalwatch.drivers.plausibility import PLAUSIBLE_RANGES, implausible, is_screened, screen
from vitalwatch.drivers.suntech import SuntechResult, checksum, encode_bp_data
from vitalwatch.drivers.vocabulary import KINDS

MSH = "MSH|^~\\&|MON|ICU|VW|H|20240101120000||ORU^R01^ORU_R01|{id}|P|2.6\rOBR|1|||x|||20240101120000\r"


def hl7(*obx: str) -> list[Event]:
    """One ORU^R01 through the HL7 driver (MLLP framed); the OBX rows are given after OBX|n|NM|."""
    rows = "".join(f"OBX|{i}|NM|{row}\r" for i, row in enumerate(obx, 1))
    driver = Hl7Driver()
    return driver.feed(encode_block((MSH.format(id=1) + rows).encode()), 0.0) + driver.feed_eof()


def value_of(events: list[Event], kind: str) -> float | None:
    (obs,) = [o for o in observations(events) if o.kind == kind]
    return obs.value


def test_every_kind_has_a_range_and_every_driver_is_screened() -> None:
    """One table covers the whole vocabulary, and no registered driver bypasses the screen."""
    assert set(PLAUSIBLE_RANGES) == set(KINDS)
    assert [name for name in DRIVERS if not is_screened(driver_class(name))] == []


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        ("150456^MDC_PULS_OXIM_SAT_O2^MDC|1|150|262688^MDC_DIM_PERCENT^MDC|||||R", "spo2"),
        ("149530^MDC_PULS_OXIM_PULS_RATE^MDC|1|-40|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R", "pulse_rate"),
        ("150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1|-5|266016^MDC_DIM_MMHG^MDC|||||R", "nibp_systolic"),
        # A shifted row: the unit (262688^...) landed in OBX-5, OBX-6 is empty.
        ("150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.150456|262688^MDC_DIM_PERCENT^MDC||||||R", "spo2"),
    ],
)
def test_hl7_impossible_value_is_a_problem_and_no_number(row: str, kind: str) -> None:
    events = hl7(row)
    assert value_of(events, kind) is None
    assert DecodeProblem(f"implausible:{kind}", 0) in problems(events)


def test_hl7_overflowing_kpa_systolic_is_never_infinity() -> None:
    """``1`` and 308 zeros kPa used to become inf; now the field is too long to be a number."""
    events = hl7("150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.3.1.150021|1" + "0" * 308 + "|MDC_DIM_KILO_PA|||||R")
    assert observations(events) == []
    assert [p.reason for p in problems(events)] == ["rejected: OBX-5 of nibp_systolic is not a number"]
    lenient = Hl7Driver(reject_malformed=False)
    msg = MSH.format(id=2) + "OBX|1|NM|150021^X^MDC|1|1" + "0" * 308 + "|MDC_DIM_KILO_PA|||||R\r"
    events = lenient.feed(encode_block(msg.encode()), 0.0)
    assert observations(events) == [] and [p.reason for p in problems(events)] == ["bad_value:nibp_systolic"]


def test_hl7_plausible_row_next_to_an_impossible_one_is_kept() -> None:
    events = hl7(
        "150456^MDC_PULS_OXIM_SAT_O2^MDC|1|150|262688^MDC_DIM_PERCENT^MDC|||||R",
        "149530^MDC_PULS_OXIM_PULS_RATE^MDC|1|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R",
    )
    assert [(o.kind, o.value) for o in observations(events)] == [("spo2", None), ("pulse_rate", 72.0)]


def test_accutorr_spo2_150() -> None:
    line = encode_patient_data((150, 72, None, None, None, 0, 0, 0, None))
    events = make_driver("accutorr").feed(line, 0.0)
    assert (value_of(events, "spo2"), value_of(events, "pulse_rate")) == (None, 72.0)
    assert problems(events) == [DecodeProblem("implausible:spo2", 0)]


def test_suntech_65535_over_65000_with_a_valid_checksum() -> None:
    packet = encode_bp_data(SuntechResult(65535, 65000, 65000, 72))
    assert checksum(packet[:-1]) == packet[-1]  # the packet itself is perfectly framed
    events = make_driver("suntech").feed(packet, 0.0)
    assert [value_of(events, k) for k in ("nibp_systolic", "nibp_diastolic", "nibp_mean")] == [None] * 3
    assert value_of(events, "nibp_pulse_rate") == 72.0
    assert {p.reason for p in problems(events)} == {
        "implausible:nibp_systolic",
        "implausible:nibp_diastolic",
        "implausible:nibp_mean",
    }


def test_suntech_systolic_not_above_diastolic_is_no_reading() -> None:
    events = make_driver("suntech").feed(encode_bp_data(SuntechResult(80, 120, 95, 72)), 0.0)
    assert [value_of(events, k) for k in ("nibp_systolic", "nibp_diastolic", "nibp_mean")] == [None] * 3
    assert problems(events) == [DecodeProblem("implausible_reading:nibp", 0)]


@pytest.mark.parametrize(
    ("driver", "line"),
    [
        ("nellcor", format_line(NellcorLine(time=None, spo2=97, pulse_rate=999, pa=50))),
        ("nonin-ascii", nonin_ascii_line(97, 999)),
        ("masimo", masimo_line(when=datetime(2024, 1, 1), spo2=97, pulse_rate=703, perfusion_index=3.6)),
    ],
)
def test_oximeter_impossible_pulse(driver: str, line: bytes) -> None:
    """Nellcor and Nonin ASCII pulse 999, Masimo pulse 703: SpO2 kept, pulse a problem and None."""
    events = make_driver(driver).feed(line, 0.0)
    assert (value_of(events, "spo2"), value_of(events, "pulse_rate")) == (97.0, None)
    assert DecodeProblem("implausible:pulse_rate", 0) in problems(events)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_is_never_plausible(value: float) -> None:
    assert all(implausible(kind, value) for kind in KINDS)
    screened = screen([Observation("spo2", value, "%")])
    assert screened == [DecodeProblem("implausible:spo2", 0), Observation("spo2", None, "%")]


def test_bounds_are_inclusive() -> None:
    assert not implausible("spo2", 100.0) and not implausible("spo2", 0.0)
    assert implausible("spo2", 100.5) and implausible("spo2", -0.5)


def test_documented_table_matches_the_code() -> None:
    """docs/devices.md "Plausible ranges" lists every kind with the bounds the screen applies."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "devices.md").read_text(encoding="utf-8")
    section = doc.split("## Plausible ranges", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, tuple[float, float]] = {}
    for row in re.findall(r"^\| (`.+?) \| [^|]+ \| ([\d.]+)-([\d.]+) \|", section, flags=re.MULTILINE):
        for kind in re.findall(r"`(\w+)`", row[0]):
            documented[kind] = (float(row[1]), float(row[2]))
    assert documented == {k: (r.low, r.high) for k, r in PLAUSIBLE_RANGES.items()}


@pytest.mark.parametrize("seed", range(4))
def test_one_pass_screen_is_the_careful_screen(seed: int) -> None:
    """``screen`` answers in one pass; ``_screen_values`` (the algorithm it had before) is the reference.

    Random driver outputs: values at, inside and just past every bound, NaN, infinities, None, a
    kind without a range, NIBP readings in every order and with repeated kinds.
    """
    import random

    from vitalwatch.drivers.events import DeviceStatus
    from vitalwatch.drivers.plausibility import _screen_values

    rng = random.Random(seed)
    kinds = [*PLAUSIBLE_RANGES, "nibp_systolic", "nibp_diastolic", "nibp_mean", "not_a_kind"]
    changed = 0
    for _ in range(3000):
        events: list[Event] = []
        for _ in range(rng.choice((0, 1, 2, 3, 5, 8))):
            kind = rng.choice(kinds)
            bounds = PLAUSIBLE_RANGES.get(kind)
            low, high = (bounds.low, bounds.high) if bounds else (0.0, 100.0)
            value = rng.choice(
                (None, low, high, low - 0.5, high + 0.01, (low + high) / 2, rng.uniform(-10, 400),
                 math.nan, math.inf, -math.inf, 120.0, 80.0, 80, -0.0)
            )  # fmt: skip
            match rng.randrange(6):
                case 0:
                    events.append(DecodeProblem("x", 1))
                case 1:
                    events.append(DeviceStatus("sensor_off", rng.random() < 0.5))
                case _:
                    events.append(Observation(kind, value, "u"))
        reference = _screen_values(list(events))
        got = screen(events)
        assert repr(got) == repr(reference)
        assert (got is events) == (reference == events)
        changed += got is not events
    assert changed > 300  # the careful path was needed often enough to compare something
