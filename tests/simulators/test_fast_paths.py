"""The replay's fast paths change no byte and no event: digests recorded from the code before them.

The Nonin simulator encodes a packet's frames in one loop, the Nonin driver decodes the
well-formed frames in one loop, and a scenario answers ``state_at`` from Python numbers instead
of numpy columns (docs/performance.md, "Replay"). The digests below were taken from the
frame-by-frame code they replace; a changed byte, event or state value changes a digest.
Select-format commands mid-stream and chunked feeding exercise the slow paths in between.
"""

from __future__ import annotations

import hashlib

import pytest

from vitalwatch.drivers import make_driver
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.nonin import NoninSimulator
from vitalwatch.simulators.scenarios import get_scenario


def nonin_digests(name: str, fmt: int, step: float, seconds: float, chunk: int | None) -> tuple[str, str]:
    """(bytes digest, events digest) of a Nonin simulator and driver over ``seconds`` of ``name``."""
    sim = NoninSimulator(get_scenario(name, seed=0), seed=0, data_format=fmt)
    driver = make_driver("nonin", data_format=fmt)
    sent, decoded = hashlib.sha256(), hashlib.sha256()
    for i in range(int(seconds / step) + 1):
        t = round(i * step, 6)
        data = sim.poll(t)
        sent.update(data)
        parts = [data[j : j + chunk] for j in range(0, len(data), chunk)] if chunk else [data]
        for part in parts:
            if part:
                for event in driver.feed(part, t):
                    decoded.update(repr(event).encode())
        if i == 4 and fmt != 8:  # a format switch mid-stream: the driver sees frames it did not ask for
            sim.receive(bytes((0x02, 0x70, 0x02, 0x02, 0x07 if fmt == 2 else 0x02, 0x03)), t)
    decoded.update(repr(driver.pleth_samples).encode())
    return sent.hexdigest()[:16], decoded.hexdigest()[:16]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (("session", 2, 0.25, 300, None), ("49022884ed8fb36d", "7941dcc226ef2310")),
        (("probe_off", 2, 1.0, 900, 7), ("dc0cf02532c33871", "d2b269a2d5692b17")),
        (("probe_off", 7, 0.25, 900, None), ("7ccd6e3bf17fdbb7", "c3b560d7d0cca9a3")),
        (("desaturation", 7, 0.013, 30, None), ("db1c7917bb7cf9e7", "5e57599366dc5b73")),
        (("bradycardia", 8, 0.25, 300, 3), ("c78947302ec8a478", "99e2bf8eca2611ec")),
    ],
)
def test_nonin_bytes_and_events_are_the_frame_by_frame_ones(
    case: tuple[str, int, float, float, int | None], expected: tuple[str, str]
) -> None:
    """(scenario, format, poll step s, seconds, feed chunk or None): the digests from before."""
    assert nonin_digests(*case) == expected


def state_digest(name: str) -> str:
    """Every field of ``state_at`` on and between the grid's seconds, and past both ends."""
    scenario = get_scenario(name, seed=3)
    h = hashlib.sha256()
    for t in (-1.0, 0.0, 0.3, 17.77, 600.5, 1234.9, 2999.999, scenario.duration, scenario.duration + 5):
        h.update(repr(scenario.state_at(t)).encode())
    for i in range(0, int(scenario.duration), 7):
        h.update(repr(scenario.state_at(i + 0.61)).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("session", "0a9d88ba7381e64c"), ("probe_off", "d9208d5531e49806"), ("hypotension", "bcc2a99c275751f6")],
)
def test_scenario_states_are_numpys_numbers(name: str, expected: str) -> None:
    assert state_digest(name) == expected


def test_masimo_and_suntech_simulators_send_the_same_bytes() -> None:
    """The 1 Hz simulators over a scenario's silence and probe-off stretches."""
    h = hashlib.sha256()
    for device in ("masimo", "suntech"):
        sim = make_simulator(device, get_scenario("silence", seed=1), seed=1)
        for i in range(4 * 1800):
            h.update(sim.poll(i * 0.25))
    assert h.hexdigest()[:16] == "7dd525b3fadffbf1"


def test_nonin_pleth_worked_out_again_with_pythons_math_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulator's numpy pleth falls back to Python's math near an integer; with every frame
    sent that way (the margin widened to half a unit) the bytes are still the recorded ones."""
    from vitalwatch.simulators import nonin

    monkeypatch.setattr(nonin, "_NEAR_INTEGER", 0.5)
    assert nonin_digests("session", 2, 0.25, 300, None) == ("49022884ed8fb36d", "7941dcc226ef2310")
    assert nonin_digests("probe_off", 7, 0.25, 900, None) == ("7ccd6e3bf17fdbb7", "c3b560d7d0cca9a3")
