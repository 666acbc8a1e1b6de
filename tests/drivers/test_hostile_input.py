"""Hostile and broken input: the HL7 ACK that cannot be sent, the HL7 encoding, and long garbage.

Every case ends in a counted problem and a driver that keeps decoding, never an exception.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import feed_bytewise, feed_chunks, feed_whole, observations, problems
from vitalwatch.config import parse_config
from vitalwatch.drivers import Driver, make_driver
from vitalwatch.drivers.base import UNDECODABLE_REPORT_BYTES, OptionError
from vitalwatch.drivers.bci import BciPacket, encode_packet
from vitalwatch.drivers.contec import ContecDriver
from vitalwatch.drivers.events import DecodeProblem, Event
from vitalwatch.drivers.hl7 import Hl7Driver
from vitalwatch.drivers.mllp import encode_block
from vitalwatch.errors import ConfigError

OBX = b"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.150456|97|262688^MDC_DIM_PERCENT^MDC|||||R\r"


def message(control_id: bytes, *, sender: bytes = b"MON") -> bytes:
    return (
        b"MSH|^~\\&|"
        + sender
        + b"|ICU|VW|GW|20240101120000||ORU^R01^ORU_R01|"
        + control_id
        + b"|P|2.6\r"
        + OBX
    )


# The bytes that stopped a daemon: a plain message whose control id holds 0x1C, then 0x0B.
HOSTILE = message(b"AB\x1cCD") + b"\x0b"


def test_plain_message_before_the_first_sb_is_answered_plain_and_nothing_raises() -> None:
    driver = Hl7Driver()  # framing="auto"
    events = driver.feed(HOSTILE, 0.0)
    assert [("spo2", 97.0)] == [(o.kind, o.value) for o in observations(events)]
    ack = driver.data_to_send()
    assert ack.startswith(b"MSH|") and b"MSA|AA|AB\x1cCD" in ack  # plain, as the message came
    assert b"\x0b" not in ack
    # The line is now MLLP: a framed message after it is read and answered framed.
    events = driver.feed(message(b"2") + b"\x1c\r", 1.0)
    assert [("spo2", 97.0)] == [(o.kind, o.value) for o in observations(events)]
    assert driver.data_to_send().startswith(b"\x0bMSH|")


def test_an_ack_that_cannot_be_framed_is_not_sent_and_is_a_counted_problem() -> None:
    """Only a plain message can carry 0x1C; after the switch to MLLP its ACK could not be framed."""
    driver = Hl7Driver(framing="mllp")
    driver._mode = "mllp"  # the case the old code reached: a plain payload answered in MLLP
    events = driver._message(message(b"AB\x1cCD"))
    reasons = [p.reason for p in problems(events)]
    assert ["ack_not_sent: MLLP control byte in an echoed field"] == reasons
    assert b"" == driver.data_to_send()
    assert [("spo2", 97.0)] == [(o.kind, o.value) for o in observations(events)]


def test_ascii_encoding_with_a_non_ascii_msh_byte_is_a_problem_not_a_crash() -> None:
    driver = Hl7Driver(encoding="ascii")
    events = driver.feed(encode_block(message(b"1", sender=b"M\xc9DICA")), 0.0)
    assert ["ack_not_sent: not encodable in ascii"] == [p.reason for p in problems(events)]
    assert b"" == driver.data_to_send()
    events = driver.feed(encode_block(message(b"2")), 1.0)  # the next message is answered again
    assert [] == problems(events) and b"MSA|AA|2" in driver.data_to_send()


@pytest.mark.parametrize(
    ("encoding", "why"),
    [
        ("bogus", "unknown text encoding 'bogus'"),
        ("base64", "unknown text encoding 'base64'"),
        ("utf-16", "does not write ASCII unchanged"),
        ("cp500", "does not write ASCII unchanged"),
    ],
)
def test_unusable_encoding_is_refused_when_the_driver_is_built(encoding: str, why: str) -> None:
    with pytest.raises(OptionError) as info:
        Hl7Driver(encoding=encoding)
    assert "encoding" == info.value.option and why in info.value.reason


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "cp1252", "ascii"])
def test_ascii_compatible_encodings_are_accepted(encoding: str) -> None:
    Hl7Driver(encoding=encoding)


def test_check_config_names_the_encoding_key() -> None:
    data = {
        "site": "s",
        "beds": [
            {
                "id": "b",
                "devices": [{"id": "mon", "driver": "hl7", "url": "x", "options": {"encoding": "bogus"}}],
            }
        ],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert ["beds[0].devices[0].options.encoding"] == [p.key for p in info.value.problems]
    assert "unknown text encoding 'bogus'" in info.value.problems[0].reason


def test_decode_cli_on_the_hostile_bytes_exits_0_without_a_traceback(tmp_path: Path) -> None:
    capture = tmp_path / "hostile.hl7"
    capture.write_bytes(HOSTILE)
    done = subprocess.run(
        [sys.executable, "-m", "vitalwatch", "decode", "--driver", "hl7", str(capture)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert 0 == done.returncode, done.stderr
    assert "Traceback" not in done.stderr
    assert '"kind": "spo2", "value": 97.0' in done.stdout


def test_decode_cli_turns_a_raising_driver_into_problem_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vitalwatch.cli import decode, main

    class Raising(Hl7Driver):
        def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
            raise ValueError("bug")

    monkeypatch.setattr(decode, "make_driver", lambda name, **options: Raising(**options))
    capture = tmp_path / "any.hl7"
    # 10 kB at the line's 960 B/s is 10.4 s of virtual time: faults at 0 s and after the daemon's
    # restart backoff of 1, 2 and 4 s (at 1, 3 and 7 s); the bytes in between are skipped.
    capture.write_bytes(b"x" * 10_000)
    assert 0 == main(["decode", "--driver", "hl7", str(capture)])
    out = capsys.readouterr().out
    assert 4 == out.count('"reason": "driver_fault:ValueError"')
    assert 1 == out.count('"code": "driver_fault", "active": true')


# -- long garbage: reported as it goes, chunking does not matter --------------------------------

WRONG_BAUD = bytes(random.Random(3).choice(b"\x00\x07 ,.0123456789abcdef") for _ in range(20_000))


def _bci() -> Driver:
    return make_driver("bci")


def _contec() -> Driver:
    return ContecDriver(protocol="auto")


def _hl7() -> Driver:
    return Hl7Driver()


def _hl7_mllp_started() -> Driver:
    driver = Hl7Driver()
    driver.feed(encode_block(message(b"0")), 0.0)  # the line has spoken MLLP before
    driver.data_to_send()
    return driver


@pytest.mark.parametrize("factory", [_bci, _contec, _hl7, _hl7_mllp_started])
@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise, feed_chunks])
def test_garbage_without_a_frame_gives_problems_as_it_goes(
    factory: Callable[[], Driver], feed: Callable[..., list[Event]]
) -> None:
    driver = factory()
    per_feed = [problems(driver.feed(WRONG_BAUD[i : i + 4096], 0.0)) for i in range(0, len(WRONG_BAUD), 4096)]
    assert all(per_feed[1:]), "a 4 KiB chunk of junk must give at least one problem at once"
    total = sum(p.length for chunk in per_feed for p in chunk)
    assert len(WRONG_BAUD) - UNDECODABLE_REPORT_BYTES < total <= len(WRONG_BAUD)
    # The same problems whole, byte by byte or in random chunks.
    kwargs = {"seed": 5} if feed is feed_chunks else {}
    whole = problems(feed_whole(factory, WRONG_BAUD))
    assert whole == problems(feed(factory, WRONG_BAUD, **kwargs))
    assert len(whole) >= len(WRONG_BAUD) // UNDECODABLE_REPORT_BYTES


def test_ten_megabytes_of_garbage_is_reported_progressively_with_bounded_memory() -> None:
    """10 MB of junk in 4 KiB reads: problems from the first KiB on, every buffer stays small."""
    junk = bytes(4096)
    for factory in (_bci, _contec, _hl7):
        driver = factory()
        first_at: int | None = None
        count = 0
        for k in range(10 * 1024 * 1024 // len(junk)):
            got = problems(driver.feed(junk, float(k)))
            count += len(got)
            if got and first_at is None:
                first_at = k
        assert first_at == 0
        assert count >= 10 * 1024 - 1  # the last KiB may still be waiting for its report
        buffers = [v for v in vars(driver).values() if isinstance(v, bytearray)]
        assert all(len(b) <= 16 for b in buffers), [len(b) for b in buffers]


def test_bci_resyncs_after_a_long_run_of_junk() -> None:
    good = encode_packet(BciPacket(signal_strength=5, pulse_rate=72, spo2=97))
    events = feed_whole(
        lambda: make_driver("bci", packets_per_report=1, consistent_frames=1), bytes(3000) + good
    )
    assert [DecodeProblem("resync", 1024), DecodeProblem("resync", 1024), DecodeProblem("resync", 952)] == (
        problems(events)
    )
    assert [("spo2", 97.0), ("pulse_rate", 72.0)] == [(o.kind, o.value) for o in observations(events)]
