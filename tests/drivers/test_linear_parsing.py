"""Parsing is linear in the input: hostile fields decode quickly instead of freezing the event loop.

Every bed's alarm evaluation shares the daemon's event loop, so a driver that takes seconds on one
message stalls them all (40,000 digits and a letter in OBX-5 once took 8.4 s). The timing asserts
here are only a coarse guard against super-linear blow-up (generous 2 s bound on inputs that took
seconds before); the precise measurement is ``bench/fuzz_drivers.py --pathological``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.helpers import observations, problems
from vitalwatch.drivers.events import Event
from vitalwatch.drivers.hl7 import DEFAULT_MAX_MESSAGE_BYTES, Hl7Driver, parse_nm
from vitalwatch.drivers.masimo import MasimoDriver
from vitalwatch.drivers.mllp import encode_block
from vitalwatch.drivers.plausibility import MAX_NUMBER_CHARS

BOUND_S = 2.0
HEAD = "MSH|^~\\&|MON|ICU|VW|H|20240101120000||ORU^R01^ORU_R01|1|P|2.6\rOBR|1|||x|||20240101120000\r"


def obx(value: str) -> str:
    return f"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1|{value}|262688^MDC_DIM_PERCENT^MDC|||||R\r"


def timed(decode: Callable[[], list[Event]]) -> tuple[list[Event], float]:
    start = time.perf_counter()
    events = decode()
    return events, time.perf_counter() - start


def hl7(text: str, **options: object) -> list[Event]:
    driver = Hl7Driver(**options)  # type: ignore[arg-type]
    return driver.feed(encode_block(text.encode("latin-1")), 0.0) + driver.feed_eof()


@pytest.mark.parametrize(
    "value",
    [
        "1" * 40_000 + "x",  # the reported case: 8.4 s with the old backtracking pattern
        "1" * 40_000 + "." + "1" * 20_000 + "x",
        "-" + "1" * 60_000,
    ],
)
def test_long_obx5_is_rejected_quickly(value: str) -> None:
    events, took = timed(lambda: hl7(HEAD + obx(value)))
    assert took < BOUND_S
    assert observations(events) == []
    assert [p.reason for p in problems(events)] == ["rejected: OBX-5 of spo2 is not a number"]


def test_message_of_the_largest_allowed_size_made_of_delimiters_decodes_quickly() -> None:
    """Every byte a component separator: the most work python-hl7 can be given per byte."""
    filler = "^" * (DEFAULT_MAX_MESSAGE_BYTES - len(HEAD) - 200)
    events, took = timed(lambda: hl7(HEAD + obx(filler)))
    assert took < BOUND_S
    assert [o.value for o in observations(events)] == [None]


def test_a_message_over_the_size_bound_is_refused_without_parsing() -> None:
    events = hl7(HEAD + obx("9" * DEFAULT_MAX_MESSAGE_BYTES))
    assert observations(events) == []
    assert [p.reason for p in problems(events)] == ["block_too_long"]


def test_nm_length_bound() -> None:
    """A numeric field longer than MAX_NUMBER_CHARS is a problem, not a number."""
    assert parse_nm("1" * MAX_NUMBER_CHARS) == float("1" * MAX_NUMBER_CHARS)
    assert parse_nm("1" * (MAX_NUMBER_CHARS + 1)) is None
    assert [parse_nm(t) for t in ("97", "-40", ".5", "5.", "+3", "1e5", "", "-", ".", "NaN")] == [
        97.0, -40.0, 0.5, 5.0, 3.0, None, None, None, None, None,
    ]  # fmt: skip


@pytest.mark.parametrize("token", ["-" * 20_000 + "x", "-." * 10_000 + "x", "1" * 20_000 + "x"])
def test_masimo_long_value_token_is_rejected_quickly(token: str) -> None:
    """The dash-fill pattern ``[-.]*-[-.]*`` was quadratic; a wide line bound exposes it."""
    line = f"02/22/16 22:47:45 SPO2={token}% BPM=097 EXC=800\r\n".encode()
    driver = MasimoDriver(max_line_bytes=len(line) + 1)
    events, took = timed(lambda: driver.feed(line, 0.0))
    assert took < BOUND_S
    assert [p.reason for p in problems(events)] == ["bad_value"]
