"""A corrupted line never hands the alarm engine an impossible SpO2 as a number.

Found by mutating the real samples: a Nellcor line whose spaces were lost read ``SpO2 980``.
Each oximeter driver that prints SpO2 as text either rejects the line or reports no value.
Nellcor treats such a line as unrecognised.
"""

from __future__ import annotations

import pytest

from vitalwatch.drivers import make_driver
from vitalwatch.drivers.events import DecodeProblem, Observation


@pytest.mark.parametrize(
    ("driver", "line"),
    [
        ("nellcor", b"12-NOV-98 14:00:05 980 120 50\r\n"),
        ("nellcor", b"12-NOV-98 14:00:05 101* 120 50 SH\r\n"),
        ("masimo", b"02/22/16 22:47:45 SN=0000056661 SPO2=101% BPM=097 PI=03.60% ALARM=0000 EXC=000800\r\n"),
        ("nonin-ascii", b"SPO2=101 HR=072\r\n"),
    ],
)
def test_spo2_above_100_is_never_a_number(driver: str, line: bytes) -> None:
    """Either a problem for the line or an observation without a value, never SpO2 > 100."""
    drv = make_driver(driver)
    events = drv.feed(line, 0.0) + drv.feed_eof()
    spo2 = [e.value for e in events if isinstance(e, Observation) and e.kind == "spo2"]
    assert all(v is None for v in spo2), spo2
    assert spo2 or any(isinstance(e, DecodeProblem) for e in events)


def test_nellcor_good_line_after_a_corrupted_one_still_decodes() -> None:
    """The corrupted line is a problem; the next line is read normally."""
    drv = make_driver("nellcor")
    events = drv.feed(b"12-NOV-98 14:00:05 980 120 50\r\n12-NOV-98 14:00:07 97 120 50\r\n", 0.0)
    assert [DecodeProblem("unrecognised_line", 29)] == [e for e in events if isinstance(e, DecodeProblem)]
    assert [("spo2", 97.0), ("pulse_rate", 120.0)] == [
        (e.kind, e.value) for e in events if isinstance(e, Observation)
    ]
