"""Fixtures shared by every test layer: a real Mosquitto broker, a real PostgreSQL server, and a check
that nothing leaks."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import leak_report, leaked_tasks, leaked_threads
from vitalwatch.testing import Mosquitto, PostgreSQL, postgres_bindir


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto on a free loopback port, stopped after the test."""
    broker = Mosquitto(workdir=tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgresql() -> Iterator[PostgreSQL]:
    """One real PostgreSQL server for the whole run (initdb in a temporary directory, as an
    unprivileged user when the tests run as root); each test creates its own database in it."""
    if postgres_bindir() is None:
        # A failure, not a skip: a registry test that did not run must not pass for one that did.
        pytest.fail("PostgreSQL is not installed (make test installs it: scripts/ensure-postgresql.sh)")
    server = PostgreSQL()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a thread or an asyncio task running once its fixtures are torn down.

    A leaked daemon task or paho thread keeps publishing, holding ports and files, and logging
    into the tests after it, where its effects are blamed on the wrong test. Autouse fixtures are
    set up first, so this teardown runs after every fixture the test asked for has cleaned up.
    For an async test the check also needs the test's event loop, still open: pytest-asyncio
    (1.x) keeps it in its ``_function_scoped_runner`` fixture, requested here so that it is torn
    down (loop closed, stragglers cancelled silently) only after this check has looked.
    """
    loop = None
    scope = "function"
    if inspect.iscoroutinefunction(getattr(request.node, "obj", None)):
        marker = request.node.get_closest_marker("asyncio")
        scope = (marker.kwargs.get("loop_scope") if marker else None) or "function"
        loop = request.getfixturevalue(f"_{scope}_scoped_runner").get_loop()
    before = set(threading.enumerate())
    yield
    if scope != "function":  # a loop shared with other tests: its tasks and workers are not this test's
        loop = None
    tasks = leaked_tasks(loop) if loop is not None else []
    if loop is not None and not tasks:
        # asyncio.to_thread workers live until the loop's executor is shut down (the runner does
        # it when it closes the loop): shut it down now so they are not counted as leaks.
        loop.run_until_complete(loop.shutdown_default_executor())
    threads = leaked_threads(before, grace_s=0.0 if tasks else 2.0)
    if tasks or threads:
        pytest.fail(leak_report(threads, tasks), pytrace=False)
