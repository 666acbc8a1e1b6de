"""The replay's fast paths change no byte and no event: digests recorded from the code before them.

The Nonin simulator makes its frames ahead of time with numpy, the Nonin driver decodes the
well-formed frames in one loop, a scenario answers ``state_at`` from Python numbers instead of
numpy columns and many times at once with ``columns_at``, and the Masimo simulator reads a grid
scenario's seconds in blocks (docs/performance.md, "Replay"). The digests below were taken from
the frame-by-frame code they replace; a changed byte, event or state value changes a digest.
Select-format commands mid-stream and chunked feeding exercise the slow paths in between. The
Nonin look-ahead is also compared with the simulator's own frame-at-a-time loop, wherever a
look-ahead starts and ends.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from vitalwatch.drivers import make_driver
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.base import PatientState
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


class _NotAGrid:
    """A grid scenario behind the plain Scenario protocol (the simulators' generic path)."""

    def __init__(self, name: str, seed: int) -> None:
        self._grid = get_scenario(name, seed=seed)
        self.name, self.duration, self.phases = self._grid.name, self._grid.duration, self._grid.phases

    def state_at(self, t: float) -> PatientState:
        return self._grid.state_at(t)


def frame_by_frame(sim: NoninSimulator, times: list[float]) -> bytes:
    """What the frame-at-a-time loop (the reference the look-ahead reproduces) sends by each time."""
    out = bytearray()
    for t in times:
        sim._frames_until(t, out)
    return bytes(out)


def uneven_times(seed: int) -> list[float]:
    """Poll times at uneven steps, so look-aheads start and end anywhere (mid-packet, in a
    silence, in a probe-off display hold)."""
    rng = random.Random(seed)
    times, t = [], 0.0
    while t < 1300.0:
        times.append(t)
        t = round(t + rng.choice((0.001, 0.013, 0.25, 1.0, 3.7, 47.3, 131.0)), 6)
    return times


@pytest.mark.parametrize(
    ("name", "fmt", "seed", "times"),
    [
        ("probe_off", 2, 1, uneven_times(1)),
        ("silence", 7, 2, uneven_times(2)),
        ("session", 7, 3, uneven_times(3)),
    ],
)
def test_nonin_look_ahead_sends_the_frame_by_frame_bytes(
    name: str, fmt: int, seed: int, times: list[float]
) -> None:
    """The bulk frames are those of the loop one frame at a time, wherever a look-ahead starts;
    a scenario that is not a grid gives the same."""
    scenario = get_scenario(name, seed=seed)
    expected = frame_by_frame(NoninSimulator(scenario, seed=seed, data_format=fmt, low_battery=True), times)
    for source in (scenario, _NotAGrid(name, seed)):
        sim = NoninSimulator(source, seed=seed, data_format=fmt, low_battery=True)
        assert b"".join(sim.poll(t) for t in times) == expected


def test_nonin_look_ahead_starting_as_the_probe_comes_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A look-ahead whose first packet is the first with the probe off holds the display values
    of the one before (probe_off's probe comes off at 400, 1500 and 2000 s). With look-aheads of
    120 s (at most 480), these polls end one just before each of those times."""
    from vitalwatch.simulators import nonin

    monkeypatch.setattr(nonin, "_AHEAD_S", 120.0)
    monkeypatch.setattr(nonin, "_AHEAD_MAX_S", 480.0)
    times = [0.0, 150.0, 399.99, 401.0, 1250.0, 1499.99, 1501.0, 1750.0, 1999.99, 2001.0, 2300.0]
    scenario = get_scenario("probe_off", seed=4)
    expected = frame_by_frame(NoninSimulator(scenario, seed=4, data_format=7), times)
    sim = NoninSimulator(scenario, seed=4, data_format=7)
    sent = b""
    for t in times:
        sent += sim.poll(t)
        if t % 100 > 99:
            assert sim._ahead is None  # the look-ahead ended here: the next one starts with the probe off
    assert sent == expected


def test_nonin_float_bytes_with_any_timer_are_the_encoders() -> None:
    """The look-ahead XORs each timer bit's bytes into the bytes encoded with the timer at 0; for
    every timer value and a few sets of values that is exactly FloatValues.to_bytes."""
    import numpy as np

    from vitalwatch.drivers.nonin import FloatValues
    from vitalwatch.simulators.nonin import _float_values, _timer_floats

    timers = np.arange(0x4000, dtype=np.int64)
    flips = _timer_floats(timers)
    for key in ((72, 97, 72, 97, 0x20), (511, 127, 80, 96, 0x01), (0, 0, 510, 100, 0x21)):
        untimed = np.array(_float_values(key, 0).to_bytes(), dtype=np.int64)
        composed = (untimed ^ flips).tolist()
        for timer in range(0x4000):
            assert tuple(composed[timer]) == _float_values(key, timer).to_bytes()
    assert _float_values((72, 97, 72, 97, 0x20), 5) == FloatValues(
        hr=72, spo2=97, hr_d=72, spo2_d=97, e_hr=72, e_spo2=97, e_spo2_d=97, e_hr_d=72,
        spo2_fast=97, spo2_bb=97, timer=5, stat2=0x20,
    )  # fmt: skip


def test_masimo_reads_a_grid_scenario_as_any_other() -> None:
    """Seconds read in blocks from a grid are the seconds state_at gives one at a time."""
    for name in ("probe_off", "session"):
        grid = make_simulator("masimo", get_scenario(name, seed=2), seed=2)
        plain = make_simulator("masimo", _NotAGrid(name, 2), seed=2)
        assert grid.poll(6001.0) == plain.poll(6001.0)
