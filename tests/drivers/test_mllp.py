"""MLLP deframer and plain splitter: blocks out, noise as DecodeProblem, never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import MODES, pieces
from vitalwatch.drivers.events import DecodeProblem
from vitalwatch.drivers.mllp import MllpDeframer, PlainSplitter, encode_block

MSG_A = b"MSH|^~\\&|A||||20200101||ORU^R01^ORU_R01|1|P|2.6\rOBX|1|NM|150456^X^MDC||97\r"
MSG_B = b"MSH|^~\\&|B||||20200101||ORU^R01^ORU_R01|2|P|2.6\rOBX|1|NM|149530^X^MDC||70\r"


def run(deframer: MllpDeframer, data: bytes, mode: str, seed: int = 0) -> list[bytes | DecodeProblem]:
    out: list[bytes | DecodeProblem] = []
    for piece in pieces(data, mode, seed=seed, max_chunk=17):
        out += deframer.feed(piece)
    return out + list(deframer.feed_eof())


def test_encode_block_layout() -> None:
    """A block is 0x0B, the payload, 0x1C 0x0D."""
    assert encode_block(b"MSH|x\r") == b"\x0bMSH|x\r\x1c\r"


def test_encode_block_refuses_framing_bytes() -> None:
    """A payload containing SB or EB would end the block early: that is misuse, so it raises."""
    with pytest.raises(ValueError):
        encode_block(b"a\x1cb")


@pytest.mark.parametrize("mode", MODES)
def test_two_blocks_with_junk_between_and_around(mode: str) -> None:
    """Junk before, between and after blocks is reported once per run; both payloads come out."""
    data = b"noise" + encode_block(MSG_A) + b"\r\nxx" + encode_block(MSG_B) + b"tail"
    assert [
        DecodeProblem("garbage", 5),
        MSG_A,
        DecodeProblem("garbage", 4),
        MSG_B,
        DecodeProblem("garbage", 4),
    ] == run(MllpDeframer(), data, mode)


@pytest.mark.parametrize("mode", MODES)
def test_whitespace_between_blocks_is_not_a_problem(mode: str) -> None:
    """Some senders add LF after EB CR; that is not noise."""
    data = encode_block(MSG_A) + b"\n" + encode_block(MSG_B) + b"\r\n"
    assert run(MllpDeframer(), data, mode) == [MSG_A, MSG_B]


@pytest.mark.parametrize("mode", MODES)
def test_restart_inside_block_reports_truncation(mode: str) -> None:
    """A new SB before EB means the sender gave up on the first message."""
    data = b"\x0bMSH|half" + encode_block(MSG_B)
    assert [DecodeProblem("truncated_block", 8), MSG_B] == run(MllpDeframer(), data, mode)


@pytest.mark.parametrize("mode", MODES)
def test_unterminated_block_at_eof(mode: str) -> None:
    """End of input inside a block is a problem carrying the length, not the bytes."""
    assert [MSG_A, DecodeProblem("unterminated_block", 6)] == run(
        MllpDeframer(), encode_block(MSG_A) + b"\x0bMSH|ab", mode
    )


@pytest.mark.parametrize("mode", MODES)
def test_block_too_long_is_dropped_and_stream_resyncs(mode: str) -> None:
    """Over the bound, the block is reported and discarded up to the next SB; no garbage noise after."""
    data = b"\x0b" + b"x" * 300 + b"\x1c\r" + encode_block(MSG_A)
    out = run(MllpDeframer(max_block_bytes=200), data, mode)
    assert out[-1] == MSG_A
    assert [p.reason for p in out[:-1] if isinstance(p, DecodeProblem)] == ["block_too_long"]


@pytest.mark.parametrize("mode", MODES)
def test_form_feed_terminates_when_enabled(mode: str) -> None:
    """python-hl7's reader notes FF-separated senders; FF ends a block unless disabled."""
    data = b"\x0b" + MSG_A + b"\x0c" + encode_block(MSG_B)
    assert run(MllpDeframer(), data, mode) == [MSG_A, MSG_B]
    strict = run(MllpDeframer(ff_terminates=False), data, mode)
    assert [DecodeProblem("truncated_block", len(MSG_A) + 1), MSG_B] == strict


def test_eb_without_cr_still_ends_block() -> None:
    """EB is unambiguous: a missing CR after it does not lose the message."""
    data = b"\x0b" + MSG_A + b"\x1c" + encode_block(MSG_B)
    assert run(MllpDeframer(), data, "whole") == [MSG_A, MSG_B]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=1000))
def test_random_bytes_never_raise(data: bytes, seed: int) -> None:
    """Whatever arrives, only payloads and problems come out."""
    out = run(MllpDeframer(max_block_bytes=64), data, "chunks", seed)
    assert all(isinstance(x, bytes | DecodeProblem) for x in out)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=80).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"")
                                           .replace(b"\x0c", b"")), max_size=5))
def test_round_trip(payloads: list[bytes]) -> None:
    """deframe(encode(p1) + encode(p2) ...) == [p1, p2, ...]."""
    data = b"".join(encode_block(p) for p in payloads)
    assert payloads == run(MllpDeframer(), data, "bytewise")


def plain_run(data: bytes, bytewise: bool) -> list[bytes | DecodeProblem]:
    splitter = PlainSplitter()
    out: list[bytes | DecodeProblem] = []
    for piece in pieces(data, "bytewise" if bytewise else "whole"):
        out += splitter.feed(piece)
    return out + splitter.flush()


@pytest.mark.parametrize("bytewise", [False, True])
def test_plain_splitter_splits_at_segment_start_msh(bytewise: bool) -> None:
    """Plain files: each MSH at a segment start begins a message; junk before the first is reported."""
    a = b"MSH|^~\\&|A\nOBX|1|ST|x||the MSH inside text\n"
    b = b"MSH|^~\\&|B\r\nOBX|2\r\n"
    assert [DecodeProblem("garbage", 5), a, b] == plain_run(b"junk\n" + a + b, bytewise)


@pytest.mark.parametrize("bytewise", [False, True])
def test_plain_splitter_msh_not_at_segment_start_is_not_a_message(bytewise: bool) -> None:
    """"xxMSH|" is not a message start, however the bytes arrive."""
    assert [DecodeProblem("garbage", 2 + len(MSG_A))] == plain_run(b"xx" + MSG_A, bytewise)


def test_plain_splitter_pending_and_flush() -> None:
    """Without a following MSH the message waits until flush()."""
    splitter = PlainSplitter()
    assert splitter.feed(MSG_A) == []
    assert splitter.pending()
    assert splitter.flush() == [MSG_A]
    assert not splitter.pending()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_plain_splitter_random_bytes_never_raise(data: bytes) -> None:
    """Only payloads and problems come out of the plain splitter too."""
    out = plain_run(data, bytewise=False)
    assert all(isinstance(x, bytes | DecodeProblem) for x in out)
