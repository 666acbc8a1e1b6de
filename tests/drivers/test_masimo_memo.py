"""The Masimo driver's memos change nothing: every line decodes as it does with no memo at all.

``MasimoDriver`` keeps what it worked out from a token (its key and value, a value's number, a
date's numbers, the status codes of an EXC/ALARM pair) and skips its status tracker when a line
has the last line's codes. The reference here is the same driver with every memo empty and never
filled (``_remember`` keeps nothing) and the tracker asked on every line, fed the same bytes in
the same reads: random lines from a small pool of tokens (so memos are hit, with every kind of
bad token among them), the real sample lines, and the simulator's own output.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from vitalwatch.drivers import masimo
from vitalwatch.drivers.events import Event
from vitalwatch.drivers.masimo import MasimoDriver

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "masimo"


class CarefulMasimo(MasimoDriver):
    """Asks the status tracker on every line: the last line's codes are never known."""

    @property  # type: ignore[override]
    def _codes(self) -> None:
        return None

    @_codes.setter
    def _codes(self, value: object) -> None:
        pass


def decode(data: bytes, chunks: list[int], *, careful: bool, **options: Any) -> list[tuple[int, Event]]:
    """Every event with the number of the read that gave it."""
    driver = CarefulMasimo(**options) if careful else MasimoDriver(**options)
    events: list[tuple[int, Event]] = []
    pos, k = 0, 0
    while pos < len(data):
        size = chunks[k % len(chunks)]
        events += [(k, e) for e in driver.feed(data[pos : pos + size], k * 0.25)]
        pos, k = pos + size, k + 1
    return events + [(k, e) for e in driver.feed_eof()]


def both_ways(data: bytes, chunks: list[int], monkeypatch: pytest.MonkeyPatch, **options: Any) -> list[Any]:
    """The memo run (memos as a long-running daemon has them: filled by earlier input) and the reference."""
    fast = decode(data, chunks, careful=False, **options)
    with monkeypatch.context() as patch:
        for memo in ("_TOKENS", "_VALUES", "_DATES", "_STATUSES"):
            patch.setattr(masimo, memo, {})
        patch.setattr(masimo, "_remember", lambda memo, key, value: value)
        careful = decode(data, chunks, careful=True, **options)
    assert fast == careful
    return fast


# Well-formed values (repeated, so memos are hit; statuses switch on and off) and optional tokens.
_GOOD = {
    "SPO2": ("097%", "098%", "---%", "085%", "000%"),
    "BPM": ("071", "072", "---", "140", "000"),
    "PI": ("03.06%", "00.55", "--.--%", "12.5%"),
    "ALARM": ("0000", "0000", "0012", "0072", "0030", "20"),
    "EXC": ("000800", "000800", "000820", "000C08", "1FF1FF", "800:SET", "000801", "0004"),
}
_OPTIONAL = (
    "SN=0000056661", "SN=----------", "PVI=027", "PVI=---", "SPHB=--.-", "SPHB=12.5", "SPCO=--.-%",
    "SPCO=01.5%", "SPMET=--.-%", "SPMET=00.8%", "DESAT=--", "PIDELTA=+--", "SPOC=--", "EXC1=00000000",
    "spco=02.0%",
)  # fmt: skip
# One defect a line may have: a token swapped in, or what is done to the whole line.
_BAD_TOKENS = (
    "NOEQUALS",
    "1BAD=3",
    "=097",
    "SPHB=9x",
    "SPMET=1" + "0" * 40,
    "SPHB=1.2.3",
    "SPHB=99.0",
    "ALARM=G1",
)
_STAMPS = (
    "03/04/24 09:00:00", "03/04/25 23:59:59", "02/29/24 10:00:00", "02/29/23 10:00:00", "02/30/24 10:00:00",
    "13/01/24 10:00:00", "12/31/99 24:00:00", "12/31/99 23:60:00",
)  # fmt: skip


def random_lines(seed: int, count: int) -> bytes:
    """Lines mostly well formed, about one in three with one of the ways a line can be bad."""
    rng = random.Random(seed)
    out = bytearray()
    for _ in range(count):
        trend = rng.random() < 0.1
        tokens = [
            f"{'PR' if trend and key == 'BPM' else key}={rng.choice(values)}" for key, values in _GOOD.items()
        ]
        if rng.random() < 0.2:  # trend lines have no ALARM, some models no EXC
            del tokens[rng.choice((3, 4))]
        tokens += rng.sample(_OPTIONAL, rng.randrange(4))
        rng.shuffle(tokens)
        line = " ".join(tokens).encode()
        if rng.random() < 0.9:
            line = rng.choice(_STAMPS).encode() + b" " + line
        match rng.randrange(30):
            case 0 | 1 | 2:
                line += b" " + rng.choice(_BAD_TOKENS).encode()
            case 3:
                line += b" " + rng.choice(tokens).encode()  # a duplicate key
            case 4:
                line = line.replace(b"SPO2=", b"SN2=", 1)  # no SpO2
            case 10:
                line = line.replace(b"SPO2=", b"SPO2=1", 1)  # 1097 %: implausible
            case 5:
                line = line.replace(b"EXC=", b"EXC=Z", 1)  # not hex
            case 6:
                line = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9))) + line  # noise before
            case 7:
                line = line.replace(b" ", b"\xb0", 1)  # not ASCII
            case 8:
                line = b""  # a blank line (a cooked tty)
            case 9:
                line = line * 9  # past max_line_bytes
            case _:
                pass
        out += line + rng.choice((b"\r\n", b"\n"))
    return bytes(out)


@pytest.mark.parametrize("seed", range(6))
def test_random_lines_decode_as_without_memos(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    data = random_lines(seed, 600)
    chunks = [[len(data)], [1], [64, 7, 300], [127, 129], [5, 500], [2, 3, 1000]][seed]
    events = both_ways(data, chunks, monkeypatch, trend_zero_is_missing=seed % 2 == 0)
    reasons = {getattr(e, "reason", "") for _, e in events}
    # the pool did make every kind of bad line, and statuses that switch on and off
    assert {"bad_token", "duplicate_key", "bad_value", "bad_hex", "not_ascii", "implausible:spo2"} <= reasons
    assert {"implausible:sphb", "missing_spo2_or_bpm", "garbage_before_line"} <= reasons
    if max(chunks) < 1000:  # a long line read whole with its line feed is not cut
        assert "line_too_long" in reasons
    assert sum(e.__class__.__name__ == "DeviceStatus" for _, e in events) > 20


@pytest.mark.parametrize("name", sorted(p.name for p in VECTORS.iterdir()))
def test_sample_lines_decode_as_without_memos(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = (VECTORS / name).read_bytes() * 20
    for chunks in ([len(data)], [1], [33, 200]):
        assert both_ways(data, chunks, monkeypatch)


@pytest.mark.parametrize("scenario", ["session", "probe_off", "desaturation", "tachycardia"])
def test_simulator_lines_decode_as_without_memos(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitalwatch.simulators import make_simulator
    from vitalwatch.simulators.scenarios import get_scenario

    sim = make_simulator("masimo", get_scenario(scenario, seed=1), seed=1)
    data = b"".join(sim.poll(i * 0.25) for i in range(4 * 2400))
    events = both_ways(data, [127, 64, 300], monkeypatch)
    assert sum(e.__class__.__name__ == "DeviceStatus" for _, e in events) >= 2


def test_memos_stay_bounded() -> None:
    """A stream of ever-new tokens empties a memo when it is full instead of growing it."""
    driver = MasimoDriver()
    for n in range(3 * masimo._MEMO_LIMIT):
        driver.feed(f"SPO2=097% BPM=071 PI={n // 100:02d}.{n % 100:02d}% SN={n:010d}\r\n".encode())
    assert 0 < len(masimo._TOKENS) <= masimo._MEMO_LIMIT
    assert 0 < len(masimo._VALUES) <= masimo._MEMO_LIMIT
