"""The autouse leak check (tests/conftest.py) must be able to fail: leaky tests, run for real, fail."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

from tests.helpers import leaked_tasks, leaked_threads

CONFTEST = Path(__file__).with_name("conftest.py")
ROOT = CONFTEST.parents[1]  # on the subprocess's path, for ``tests.helpers``

LEAKY = """
import asyncio
import threading

import pytest


def test_leaks_a_thread():
    stop = threading.Event()
    threading.Thread(target=stop.wait, name="forgotten-worker", daemon=True).start()


@pytest.mark.asyncio
async def test_leaks_a_task():
    asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="forgotten-task")


@pytest.mark.asyncio
async def test_cancels_and_awaits_its_task():
    task = asyncio.create_task(asyncio.Event().wait())
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_cancels_without_awaiting_is_given_grace():
    asyncio.create_task(asyncio.Event().wait()).cancel()


def test_thread_that_is_finishing_is_given_grace():
    threading.Thread(target=lambda: __import__("time").sleep(0.3), name="finishing").start()


@pytest.mark.asyncio
async def test_to_thread_workers_are_not_leaks():
    assert 1 == await asyncio.to_thread(lambda: 1)
"""


def test_conftest_fails_a_test_that_leaks_a_thread_or_a_task(tmp_path: Path) -> None:
    """The leaky file runs in its own pytest process with this conftest: its leaked thread must not
    reach this process's own check. (Not pytester: loading that plugin here changed how the
    tail test's subprocess took SIGINT.)"""
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "test_leaky.py").write_text(LEAKY, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rE", "--rootdir", str(tmp_path),
            "-o", f"pythonpath={ROOT}", "-o", "asyncio_default_fixture_loop_scope=function", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    out = done.stdout
    assert "6 passed, 2 errors" in out, out
    assert "ERROR at teardown of test_leaks_a_thread" in out, out
    assert "left running after the test: thread 'forgotten-worker'" in out, out
    assert "ERROR at teardown of test_leaks_a_task" in out, out
    assert "left running after the test: task 'forgotten-task' running <coroutine object Event.wait" in out, (
        out
    )


def test_leaked_threads_names_a_new_thread_and_ignores_old_ones() -> None:
    stop = threading.Event()
    old = threading.Thread(target=stop.wait, name="old")
    old.start()
    before = set(threading.enumerate())
    new = threading.Thread(target=stop.wait, name="new")
    new.start()
    try:
        assert [new] == leaked_threads(before, grace_s=0.0)
    finally:
        stop.set()
        old.join()
        new.join()
    assert [] == leaked_threads(before, grace_s=0.0)


def test_leaked_tasks_finds_a_pending_task_and_lets_a_cancelled_one_finish() -> None:
    loop = asyncio.new_event_loop()
    try:
        forgotten = loop.create_task(asyncio.Event().wait())
        cancelled = loop.create_task(asyncio.Event().wait())
        cancelled.cancel()
        assert [forgotten] == leaked_tasks(loop, grace_s=0.05)
        assert cancelled.cancelled()
        forgotten.cancel()
        assert [] == leaked_tasks(loop, grace_s=1.0)
    finally:
        loop.close()
