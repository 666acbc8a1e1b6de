"""tests/helpers.py itself: waits that fail saying what never happened, and feeders that cut bytes right."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.helpers import MODES, pieces, wait_until, wait_until_sync


@pytest.mark.asyncio
async def test_wait_until_returns_once_the_condition_holds() -> None:
    flag: list[bool] = []
    asyncio.get_running_loop().call_later(0.05, flag.append, True)
    await wait_until(lambda: bool(flag), 5, "the flag")
    assert flag


@pytest.mark.asyncio
async def test_wait_until_names_the_condition_and_the_time_given() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for the door to open"):
        await wait_until(lambda: False, 0.05, "the door to open")
    never = False
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for .*lambda: never"):
        await wait_until(lambda: never, 0.05)


@pytest.mark.asyncio
async def test_wait_until_awaits_a_coroutine_condition() -> None:
    calls: list[int] = []

    async def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await wait_until(third_time, 5, "the third look", poll_s=0.0)
    assert 3 == len(calls)


def test_wait_until_sync_returns_or_names_the_condition() -> None:
    done = threading.Event()
    timer = threading.Timer(0.05, done.set)
    timer.start()
    wait_until_sync(done.is_set, 5, "the timer")
    timer.join()
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for .*Event\.is_set"):
        wait_until_sync(threading.Event().is_set, 0.05)


@pytest.mark.parametrize("mode", MODES)
def test_pieces_put_back_together_give_the_data(mode: str) -> None:
    data = bytes(range(256)) * 3
    assert data == b"".join(pieces(data, mode, seed=3))
    assert [] == list(pieces(b"", mode))


def test_pieces_cut_the_announced_ways() -> None:
    data = b"0123456789" * 20
    assert [data] == list(pieces(data, "whole"))
    assert all(1 == len(p) for p in pieces(data, "bytewise"))
    chunks = list(pieces(data, "chunks", seed=5, max_chunk=7))
    assert chunks == list(pieces(data, "chunks", seed=5, max_chunk=7))  # a failure reproduces
    assert all(1 <= len(p) <= 7 for p in chunks) and len({len(p) for p in chunks}) > 1
    with pytest.raises(ValueError, match="unknown feeding mode 'halves'"):
        list(pieces(data, "halves"))
