"""Clock synchronisation: timedatectl when it answers, adjtimex otherwise, cached, never slow."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vitalwatch.ops.clocksync import ClockSync, adjtimex_synchronized, parse_timedatectl


def fake_timedatectl(tmp_path: Path, body: str) -> str:
    """An executable standing in for timedatectl (a real subprocess, run the real way)."""
    program = tmp_path / "timedatectl"
    program.write_text("#!/bin/sh\n" + body + "\n")
    program.chmod(0o755)
    return str(program)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_parse_timedatectl() -> None:
    """Only the NTPSynchronized property decides; anything else is 'no answer'."""
    assert parse_timedatectl("NTPSynchronized=yes\n") is True
    assert parse_timedatectl("NTPSynchronized=no\n") is False
    assert parse_timedatectl("Timezone=UTC\nNTPSynchronized=yes") is True
    assert parse_timedatectl("") is None
    assert parse_timedatectl("NTPSynchronized=maybe") is None


def test_timedatectl_answer_wins(tmp_path: Path) -> None:
    """A working timedatectl is used even when the kernel would say otherwise."""
    program = fake_timedatectl(tmp_path, 'echo "NTPSynchronized=yes"')
    sync = ClockSync(timedatectl=program, adjtimex=lambda: False)
    assert sync.synchronized() is True
    assert "timedatectl" == sync.source


def test_timedatectl_no_means_not_synchronised(tmp_path: Path) -> None:
    program = fake_timedatectl(tmp_path, 'echo "NTPSynchronized=no"')
    sync = ClockSync(timedatectl=program, adjtimex=lambda: True)
    assert sync.synchronized() is False


def test_failing_timedatectl_falls_back_to_the_kernel(tmp_path: Path) -> None:
    """No D-Bus (exit 1, as in a container): the kernel's adjtimex state answers."""
    program = fake_timedatectl(tmp_path, 'echo "Failed to connect to bus" >&2; exit 1')
    sync = ClockSync(timedatectl=program, adjtimex=lambda: True)
    assert sync.synchronized() is True
    assert "adjtimex" == sync.source


def test_missing_program_falls_back_to_the_kernel(tmp_path: Path) -> None:
    sync = ClockSync(timedatectl=str(tmp_path / "absent"), adjtimex=lambda: True)
    assert sync.synchronized() is True
    sync = ClockSync(timedatectl=None, adjtimex=lambda: False)
    assert sync.synchronized() is False
    assert "adjtimex" == sync.source


def test_no_source_means_not_synchronised() -> None:
    """An unknown clock is not a trusted clock."""
    sync = ClockSync(timedatectl=None, adjtimex=lambda: None)
    assert sync.synchronized() is False
    assert "none" == sync.source


def test_answers_are_cached_until_stale() -> None:
    """Within max_age_s no probe runs; after it, the next call probes again."""
    calls: list[int] = []
    answers = iter([False, True])

    def kernel() -> bool | None:
        calls.append(1)
        return next(answers)

    clock = FakeClock()
    sync = ClockSync(timedatectl=None, adjtimex=kernel, max_age_s=60.0, clock=clock)
    assert sync.synchronized() is False
    clock.now += 59.0
    assert sync.synchronized() is False
    assert 1 == len(calls)
    clock.now += 2.0
    assert sync.synchronized() is True
    assert 2 == len(calls)


def test_hung_timedatectl_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    """A D-Bus call that hangs costs at most timeout_s, then the kernel answers."""
    program = fake_timedatectl(tmp_path, "exec sleep 10")
    sync = ClockSync(timedatectl=program, adjtimex=lambda: True, timeout_s=0.3)
    started = time.monotonic()
    assert sync.synchronized() is True
    assert time.monotonic() - started < 3.0


@pytest.mark.asyncio
async def test_async_refresh_uses_the_subprocess(tmp_path: Path) -> None:
    program = fake_timedatectl(tmp_path, 'echo "NTPSynchronized=yes"')
    sync = ClockSync(timedatectl=program, adjtimex=lambda: False)
    assert await sync.refresh() is True
    assert "timedatectl" == sync.source
    assert sync.synchronized() is True  # cached by refresh: no second probe needed


@pytest.mark.asyncio
async def test_async_refresh_timeout_kills_and_falls_back(tmp_path: Path) -> None:
    """The loop is blocked by nothing: a hung timedatectl is killed after timeout_s."""
    program = fake_timedatectl(tmp_path, "exec sleep 10")
    sync = ClockSync(timedatectl=program, adjtimex=lambda: False, timeout_s=0.3)
    started = time.monotonic()
    assert await sync.refresh() is False
    assert "adjtimex" == sync.source
    assert time.monotonic() - started < 3.0


def test_real_adjtimex_answers_on_linux() -> None:
    """The ctypes call works on this kernel (read-only, modes=0) and gives a bool."""
    assert adjtimex_synchronized() in (True, False)
