"""The Nonin driver's whole-read path decodes exactly what the frame-by-frame loop decodes.

``NoninDriver._whole_frames`` checks a read's frames at once and sends only the frames where
something can change through the status machine. These tests run the same streams through a
driver with that path switched off (every frame through ``_good_frames``, the reference) and
compare every event, in order, and the pleth count. The streams have what the shortcut must get
right: long runs of one STATUS past the 4 s stale-pulse limit, the battery bit turning on and off
at frame 8, reports split across reads, and damaged bytes that must send the read to the careful
path (checksums, shape bits, a SYNC bit off frame 1, dropped and inserted bytes).
"""

from __future__ import annotations

import random

import pytest

from vitalwatch.drivers.events import Event
from vitalwatch.drivers.nonin import (
    ARTF,
    GPRF,
    OOT,
    RPRF,
    SNSA,
    SNSD,
    SYNC,
    FloatValues,
    NoninDriver,
    encode_frame,
)

# STATUS values a stream is made of (bit 7 is added by encode_frame).
_STATUSES = (0, GPRF, RPRF, GPRF | RPRF, GPRF | ARTF, RPRF | ARTF, ARTF, OOT, OOT | GPRF, SNSA, SNSD)


def stream(fmt: int, seed: int, packets: int) -> bytes:
    """Packets whose STATUS holds for long stretches (some past 300 frames) and whose battery bit flips."""
    rng = random.Random(seed)
    out = bytearray()
    status, left = 0, 0
    script = [(RPRF, 12), (0, 350), (GPRF | ARTF, 12), (ARTF, 330), (RPRF | ARTF, 5), (SNSA, 40)]
    for _ in range(packets):
        floats = FloatValues(
            hr=rng.choice((60, 61, 200, 511)),
            spo2=rng.choice((97, 96, 127)),
            stat2=0x20 | rng.choice((0, 0, 0, 1)),
        ).to_bytes()
        for i in range(25):
            if left == 0 and script:  # first the stale-pulse limit passed with a latch on, then at random
                status, left = script.pop(0)
            elif left == 0:
                status = rng.choice(_STATUSES)
                left = rng.choice((1, 3, 12, 40, 320, 700))
            left -= 1
            pleth = rng.randrange(0x10000)
            status_byte = status | (SYNC if i == 0 else 0)
            out += encode_frame(fmt, status_byte, pleth if fmt == 7 else pleth >> 8, floats[i])
    return bytes(out)


def damage(data: bytes, seed: int, count: int) -> bytes:
    """``count`` random flips, drops and insertions."""
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(count):
        at = rng.randrange(len(out))
        match rng.randrange(3):
            case 0:
                out[at] ^= 1 << rng.randrange(8)
            case 1:
                del out[at]
            case _:
                out.insert(at, rng.randrange(256))
    return bytes(out)


def decode(
    data: bytes, fmt: int, chunks: list[int], *, whole: bool
) -> tuple[list[tuple[int, Event]], int, list[tuple[object, ...]]]:
    """Every event with the number of the read that gave it (an event one read late is a difference),
    the pleth count, and the decoder's state after every read: a difference there would show only
    later (a count since the last pulse that is one off moves the end of a latch by one frame)."""
    driver = NoninDriver(data_format=fmt)
    if not whole:
        driver._whole_frames = lambda *args: False  # type: ignore[method-assign]
    events: list[tuple[int, Event]] = []
    states: list[tuple[object, ...]] = []
    pos, t, k = 0, 0.0, 0
    while pos < len(data):
        size = chunks[k % len(chunks)]
        events += [(k, e) for e in driver.feed(data[pos : pos + size], t)]
        states.append(state(driver))
        pos, t, k = pos + size, t + 0.25, k + 1
    events += [(k, e) for e in driver.feed_eof()]
    return events, driver.pleth_samples, states


def state(driver: NoninDriver) -> tuple[object, ...]:
    """What the decoder knows between reads (not ``_previous_status``, which only the bulk path keeps)."""
    return (
        bytes(driver._buf), driver._synced, driver._unsynced, driver._index, list(driver._floats),
        driver._in_pulse, driver._pulse_artifact, driver._low_perfusion, driver._frames_since_pulse,
        driver._low_battery, driver._last_codes, driver._tracker.active,
        dict(driver._last), dict(driver._due),
    )  # fmt: skip


@pytest.mark.parametrize("fmt", [2, 7])
@pytest.mark.parametrize("seed", range(4))
def test_whole_reads_decode_as_frame_by_frame(fmt: int, seed: int) -> None:
    data = stream(fmt, seed, 240)
    chunks = [*[95, 90, 5, 1, 3, 500, 17, 2000][seed:], 95]
    reference = decode(data, fmt, chunks, whole=False)
    assert decode(data, fmt, chunks, whole=True) == reference
    assert sum(e.__class__.__name__ == "DeviceStatus" for _, e in reference[0]) > 20


@pytest.mark.parametrize("fmt", [2, 7])
@pytest.mark.parametrize("seed", range(4))
def test_damaged_reads_decode_as_frame_by_frame(fmt: int, seed: int) -> None:
    data = damage(stream(fmt, seed + 10, 120), seed, 25)
    chunks = [*[95, 7, 380, 1, 60][seed:], 95]
    reference = decode(data, fmt, chunks, whole=False)
    assert decode(data, fmt, chunks, whole=True) == reference
    assert any(e.__class__.__name__ == "DecodeProblem" for _, e in reference[0])


def test_the_whole_read_path_is_taken() -> None:
    """Healthy reads are decoded by the whole-read path (else the tests above compare nothing)."""
    driver = NoninDriver(data_format=2)
    taken: list[bool] = []
    original = driver._whole_frames

    def spy(*args: object) -> bool:
        taken.append(original(*args))  # type: ignore[arg-type]
        return taken[-1]

    driver._whole_frames = spy  # type: ignore[method-assign]
    data = stream(2, 0, 8)
    for at in range(0, len(data), 95):
        driver.feed(data[at : at + 95], at / 380)
    assert len(taken) == len(range(0, len(data), 95))
    assert all(taken[1:])  # the first read hunts for sync first


# -- the quiet-read path (NoninDriver._quiet_frames) ------------------------------------------
# STATUS values of a healthy device: plain frames, and pulses in green or yellow perfusion; now
# and then one that is not quiet (red perfusion, artifact, out of track, sensor off), which
# latches a status so the reads after it must leave the quiet path until the latch is gone.
_QUIET = (0, 0, 0, GPRF, GPRF | RPRF)
_LOUD = (RPRF, GPRF | ARTF, ARTF, OOT, SNSA, SNSD)


def healthy_stream(fmt: int, seed: int, packets: int) -> bytes:
    """A pulse every 40-90 frames (12 frames of GPRF or yellow), plain frames between them, gaps past
    the 4 s stale limit, a battery bit that sometimes flips, and a rare frame that is not quiet."""
    rng = random.Random(seed)
    out = bytearray()
    statuses: list[int] = []
    while len(statuses) < packets * 25:
        pulse = rng.choice((GPRF, GPRF, GPRF | RPRF))
        statuses += [pulse] * rng.choice((1, 6, 12, 12))
        statuses += [0] * rng.choice((28, 40, 63, 90, 90, 350))
        if rng.random() < 0.08:
            # a loud frame, then a gap that may take the count since the last pulse (which the quiet
            # reads kept) past the stale limit before the next pulse: the latch ends on that frame
            statuses += [rng.choice(_LOUD)] * rng.choice((1, 3, 12))
            statuses += [0] * rng.choice((100, 180, 220, 250, 290, 400))
    low_battery = 0
    for p in range(packets):
        if rng.random() < 0.03:
            low_battery ^= 1
        hr, spo2 = rng.choice((60, 61, 62, 180, 300, 511)), rng.choice((97, 98, 96, 100, 127))
        floats = FloatValues(hr=hr, spo2=spo2, stat2=low_battery).to_bytes()
        for i in range(25):
            status = statuses[p * 25 + i] | (SYNC if i == 0 else 0)
            pleth = rng.randrange(0x10000)
            out += encode_frame(fmt, status, pleth if fmt == 7 else pleth >> 8, floats[i])
    return bytes(out)


def quiet_reads(data: bytes, fmt: int, chunks: list[int]) -> int:
    """How many reads the quiet path judged (else the differential tests compare nothing)."""
    driver = NoninDriver(data_format=fmt)
    taken = 0
    original = driver._quiet_frames

    def spy(*args: object) -> None:
        nonlocal taken
        taken += 1
        original(*args)  # type: ignore[arg-type]

    driver._quiet_frames = spy  # type: ignore[method-assign]
    for at, size in _pieces(len(data), chunks):
        driver.feed(data[at : at + size], at / 375)
    return taken


def _pieces(length: int, chunks: list[int]) -> list[tuple[int, int]]:
    out, pos, k = [], 0, 0
    while pos < length:
        out.append((pos, chunks[k % len(chunks)]))
        pos, k = pos + chunks[k % len(chunks)], k + 1
    return out


@pytest.mark.parametrize("fmt", [2, 7])
@pytest.mark.parametrize("seed", range(6))
def test_quiet_reads_decode_as_frame_by_frame(fmt: int, seed: int) -> None:
    """Reads of 1 to 200 frames (reports at every place in a read, several packets in one read)."""
    data = healthy_stream(fmt, seed, 400)
    chunks = [[95, 90], [5, 10, 125], [1000, 5, 95], [95, 3, 2, 90], [375], [250, 130, 95]][seed]
    reference = decode(data, fmt, chunks, whole=False)
    assert decode(data, fmt, chunks, whole=True) == reference
    assert quiet_reads(data, fmt, chunks) > len(data) / sum(chunks) * len(chunks) / 2
    kinds = {e.__class__.__name__ for _, e in reference[0]}
    assert {"Observation", "DeviceStatus"} <= kinds  # the loud frames and the battery bit did happen


@pytest.mark.parametrize("fmt", [2, 7])
@pytest.mark.parametrize("seed", range(3))
def test_damaged_quiet_reads_decode_as_frame_by_frame(fmt: int, seed: int) -> None:
    data = damage(healthy_stream(fmt, seed + 20, 200), seed, 30)
    chunks = [95, 90, 7, 95, 400]
    reference = decode(data, fmt, chunks, whole=False)
    assert decode(data, fmt, chunks, whole=True) == reference
    assert any(e.__class__.__name__ == "DecodeProblem" for _, e in reference[0])


@pytest.mark.parametrize("scenario", ["session", "probe_off", "desaturation", "silence"])
def test_simulator_streams_decode_as_frame_by_frame(scenario: str) -> None:
    """The simulator's own bytes (as the replay reads them: about 19 frames a read) both ways."""
    from vitalwatch.simulators import make_simulator
    from vitalwatch.simulators.scenarios import get_scenario

    sim = make_simulator("nonin", get_scenario(scenario, seed=2), seed=2)
    data = b"".join(sim.poll(i * 0.25) for i in range(4 * 1200))
    chunks = [95, 90, 95, 95]
    reference = decode(data, 2, chunks, whole=False)
    assert decode(data, 2, chunks, whole=True) == reference
    assert quiet_reads(data, 2, chunks) > 1000


def test_sample_frames_between_healthy_packets_decode_as_frame_by_frame() -> None:
    """The published OEM III test frames (one with a bad checksum) spliced between healthy packets."""
    from pathlib import Path

    hex_file = (
        Path(__file__).resolve().parent.parent
        / "vectors"
        / "nonin"
        / "oem3_format2_frames_pufferfish_tests.hex"
    )
    lines = [line for line in hex_file.read_text().splitlines() if line.strip() and not line.startswith("#")]
    published = bytes.fromhex("".join(lines))
    healthy = healthy_stream(2, 7, 300)
    data = b"".join(healthy[at : at + 1250] + published for at in range(0, len(healthy), 1250))
    for chunks in ([95, 90], [5], [1250 + len(published)], [31, 400]):
        reference = decode(data, 2, chunks, whole=False)
        assert decode(data, 2, chunks, whole=True) == reference
        assert any(e.__class__.__name__ == "DecodeProblem" for _, e in reference[0])
    assert quiet_reads(data, 2, [95, 90]) > 200
