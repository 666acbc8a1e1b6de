"""Fault isolation: a driver that raises costs its device a restart, never the link or another bed.

The guard is tested with a fake driver (unit); the link with that fake behind a real pty, a real
bed session and the real engine, so the problem, the HIGH alarm and the restart are the ones the
daemon produces.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from typing import ClassVar

import pytest

from tests.helpers import wait_until
from vitalwatch.bed import BedSession
from vitalwatch.config import BedConfig, DeviceConfig
from vitalwatch.drivers import Event, Observation, SerialSettings
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Output, Priority
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import load_alarm_table
from vitalwatch.link import device_link
from vitalwatch.link.device_link import DeviceLink
from vitalwatch.link.driver_guard import DriverGuard, fault_site


class Fragile:
    """A fake driver: ``ok`` gives an SpO2 observation, ``boom`` raises, as a buggy family would."""

    name: ClassVar[str] = "fragile"
    serial: ClassVar[SerialSettings] = SerialSettings()
    built = 0

    def __init__(self, *, fail_in: str = "feed") -> None:
        type(self).built += 1
        self.instance = type(self).built
        self._fail_in = fail_in
        self._armed = False

    def feed(self, data: bytes, now: float = 0.0) -> list[Event]:
        if b"boom" in data:
            if self._fail_in == "feed":
                raise ValueError("MLLP payload must not contain 0x0B or 0x1C")
            self._armed = True
        return [Observation("spo2", 97.0, "%")] if b"ok" in data else []

    def feed_eof(self) -> list[Event]:
        if self._armed and self._fail_in == "feed_eof":
            raise KeyError("PID|||SECRET")
        return []

    def data_to_send(self) -> bytes:
        if self._armed and self._fail_in == "data_to_send":
            raise IndexError("index out of range")
        return b""

    def next_deadline(self) -> float | None:
        if self._armed and self._fail_in == "next_deadline":
            raise ZeroDivisionError("division by zero")
        return None

    def on_timer(self, now: float) -> list[Event]:
        if self._armed and self._fail_in == "on_timer":
            raise RuntimeError("timer")
        return []


def fragile_guard(fail_in: str = "feed") -> DriverGuard:
    Fragile.built = 0
    return DriverGuard(lambda: Fragile(fail_in=fail_in))


def test_a_raising_driver_gives_a_problem_the_fault_status_and_a_fresh_instance_after_backoff() -> None:
    guard = fragile_guard()
    assert [] == guard.start(0.0)
    assert [Observation("spo2", 97.0, "%")] == guard.feed(b"ok", 0.5)
    events = guard.feed(b"boom", 1.0)
    assert [
        DecodeProblem("driver_fault:ValueError", 0),
        DeviceStatus("driver_fault", True, {"error": "ValueError"}),
    ] == events
    assert guard.driver is None and guard.faults == 1
    assert guard.last_fault is not None
    fault = guard.last_fault
    assert ("ValueError", "feed", 1) == (fault.error_type, fault.call, fault.in_a_row)
    assert 1.0 == fault.restart_in_s
    assert fault.where.startswith("test_driver_guard.py:")
    assert 2.0 == guard.next_deadline()  # the link wakes up to restart it
    assert [] == guard.feed(b"ok!", 1.5)  # still backing off: skipped, reported at the restart
    assert [DecodeProblem("skipped_while_restarting", 3)] == guard.on_timer(2.0)
    assert Fragile.built == 2 and isinstance(guard.driver, Fragile) and guard.driver.instance == 2
    assert guard.fault_active
    events = guard.feed(b"ok", 2.5)
    assert [Observation("spo2", 97.0, "%"), DeviceStatus("driver_fault", False)] == events
    assert not guard.fault_active


def test_a_driver_that_raises_on_every_byte_backs_off_up_to_a_cap_and_never_spins() -> None:
    """Each fault in a row doubles the wait (1, 2, 4 ... 60 s); bytes in between are not fed."""
    guard = fragile_guard()
    guard.start(0.0)
    now, delays = 0.0, []
    for _ in range(9):
        guard.feed(b"boom", now)
        assert guard.last_fault is not None
        delays.append(guard.last_fault.restart_in_s)
        deadline = guard.next_deadline()
        assert deadline is not None
        for k in range(5):  # bytes keep coming: none reaches a driver before the deadline
            guard.feed(b"boom", now + (deadline - now) * k / 5)
        now = deadline
        guard.on_timer(now)
    assert [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0] == delays
    assert 9 == guard.faults  # one per backoff period, not one per chunk
    statuses = [e for e in guard.feed(b"ok", now) if isinstance(e, DeviceStatus)]
    assert [DeviceStatus("driver_fault", False)] == statuses


@pytest.mark.parametrize("call", ["feed_eof", "data_to_send", "next_deadline", "on_timer"])
def test_every_driver_call_is_guarded(call: str) -> None:
    guard = fragile_guard(fail_in=call)
    guard.start(0.0)
    guard.feed(b"boom", 1.0)  # arms the fake: the named call raises from now on
    events: list[Event] = []
    if call == "feed_eof":
        events += guard.feed_eof()
    elif call == "data_to_send":
        assert b"" == guard.data_to_send()
        events += guard.on_timer(1.0)  # the fault is handed over at the next call that returns events
    elif call == "next_deadline":
        assert 1.0 == guard.next_deadline()  # "now": call on_timer at once
        events += guard.on_timer(1.0)
    else:
        events += guard.on_timer(1.0)
    assert (
        DecodeProblem(f"driver_fault:{guard.last_fault.error_type if guard.last_fault else ''}", 0) in events
    )
    assert any(isinstance(e, DeviceStatus) and e.code == "driver_fault" and e.active for e in events)
    assert guard.last_fault is not None and call == guard.last_fault.call


def test_fault_site_names_the_place_not_the_message() -> None:
    try:
        {}["PID|||MRN123456"]
    except KeyError as exc:
        site = fault_site(exc)
    assert site.startswith("test_driver_guard.py:") and site.endswith(
        "in test_fault_site_names_the_place_not_the_message"
    )
    assert "MRN" not in site


# --------------------------------------------------------------------------- the link, over a pty


@pytest.fixture
def pty_url() -> Iterator[tuple[str, int]]:
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave), master
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.asyncio
async def test_link_with_a_raising_driver_reports_alarms_and_restarts_while_another_link_runs(
    pty_url: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver raising on a pty: problem, HIGH driver_fault, restart; the other device never stops."""
    Fragile.built = 0
    real = device_link.make_driver
    monkeypatch.setattr(
        device_link,
        "make_driver",
        lambda name, **options: Fragile() if name == "nonin" else real(name, **options),
    )
    url, master = pty_url
    other_master, other_slave = os.openpty()
    devices = (
        DeviceConfig(id="bomb", driver="nonin", url=url, role="spo2", serial=SerialSettings()),
        DeviceConfig(
            id="steady", driver="nonin", url=os.ttyname(other_slave), role="spo2", serial=SerialSettings()
        ),
    )
    bed = BedConfig(id="chair-1", devices=devices)
    engine = BedEngine(load_alarm_table(None), bed="chair-1", devices={d.id: d.role for d in devices})
    dispatched: list[Output] = []  # every output, as an observer sees it (not the trimmed debug buffer)
    session = BedSession(
        bed,
        engine,
        links=lambda dev, listener: DeviceLink(dev, listener, rng=random.Random(0)),
        observers=[dispatched.append],
    )
    tasks = [asyncio.create_task(link.run()) for link in session.links.values()]
    bomb, steady = session.links["bomb"], session.links["steady"]
    try:
        await wait_until(lambda: bomb.connected and steady.connected, 5)
        os.write(master, b"ok")
        await wait_until(lambda: bomb.readings >= 1, 5)
        os.write(master, b"boom")
        await wait_until(lambda: bomb.guard.faults == 1, 5)
        alarms = [o for o in dispatched if isinstance(o, AlertTransition) and o.condition == "driver_fault"]
        assert [(AlertState.RAISED, Priority.HIGH, Category.TECHNICAL, "bomb")] == [
            (a.state, a.priority, a.category, a.device) for a in alarms
        ]
        assert "Driver fault on bomb: restarted" == alarms[0].message
        assert bomb.decode_problems >= 1
        # The other device keeps decoding while the bomb is down, and nothing ended.
        before = steady.readings
        os.write(other_master, b"ok")
        await wait_until(lambda: steady.readings > before, 5)
        # Restarted after the 1 s backoff: a fresh instance whose data clears the alarm.
        await wait_until(lambda: Fragile.built >= 3 and bomb.driver is not None, 5)
        os.write(master, b"ok")
        await wait_until(
            lambda: any(
                isinstance(o, AlertTransition)
                and o.condition == "driver_fault"
                and o.state is AlertState.CLEARED
                for o in dispatched
            ),
            5,
        )
        assert not any(task.done() for task in tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        os.close(other_master)
        os.close(other_slave)


@pytest.mark.asyncio
async def test_an_exception_in_what_consumes_the_events_ends_only_that_port_session(
    pty_url: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener that raises on one device's events: the link reports a fault and reopens, the task lives."""
    monkeypatch.setattr(device_link, "make_driver", lambda name, **options: Fragile())
    url, master = pty_url

    class Brittle:
        def __init__(self) -> None:
            self.events: list[Event] = []
            self.links: list[bool] = []

        def on_events(self, device: str, events: list[Event], now: float) -> None:
            if any(isinstance(e, Observation) for e in events):
                raise TypeError("bug downstream")
            self.events += events

        def on_link(self, device: str, up: bool, now: float, reason: str) -> None:
            self.links.append(up)

    listener = Brittle()
    config = DeviceConfig(id="ox", driver="nonin", url=url, role="spo2", serial=SerialSettings())
    link = DeviceLink(config, listener, rng=random.Random(0))
    task = asyncio.create_task(link.run())
    try:
        await wait_until(lambda: link.connected, 5)
        os.write(master, b"ok")
        await wait_until(lambda: DecodeProblem("driver_fault:TypeError", 0) in listener.events, 5)
        assert DeviceStatus("driver_fault", True, {"error": "TypeError"}) in listener.events
        await wait_until(lambda: listener.links.count(True) >= 2, 5)  # reopened
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
