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


def decode(data: bytes, fmt: int, chunks: list[int], *, whole: bool) -> tuple[list[tuple[int, Event]], int]:
    """Every event with the number of the read that gave it (an event one read late is a difference)."""
    driver = NoninDriver(data_format=fmt)
    if not whole:
        driver._whole_frames = lambda *args: False  # type: ignore[method-assign]
    events: list[tuple[int, Event]] = []
    pos, t, k = 0, 0.0, 0
    while pos < len(data):
        size = chunks[k % len(chunks)]
        events += [(k, e) for e in driver.feed(data[pos : pos + size], t)]
        pos, t, k = pos + size, t + 0.25, k + 1
    events += [(k, e) for e in driver.feed_eof()]
    return events, driver.pleth_samples


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
