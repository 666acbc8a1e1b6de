"""The bed session lets an alert's journal commit run before the rest of the input that raised it.

What is checked: the rest of the input and every later input of the bed wait for the commit (or
for ALERT_COMMIT_WAIT_S), in order; the sender woken by the commit runs before them; commands
and link changes first finish what waits; a failing input that was waiting costs only itself;
and the outputs, the session-record calls and the alerts are the same, in the same order, as
when nothing waits.
"""

from __future__ import annotations

import asyncio
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.common import zero_delay_alarms
from tests.helpers import wait_until
from vitalwatch import bed as bed_module
from vitalwatch.bed import BedSession, VitalPayload
from vitalwatch.config import BedConfig, DeviceConfig
from vitalwatch.continuity.replay import ReplayLink
from vitalwatch.delivery.commit import Commit
from vitalwatch.drivers import SerialSettings
from vitalwatch.drivers.events import Event, Observation
from vitalwatch.engine.outputs import AlertTransition, Output
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import load_alarm_table
from vitalwatch.link.device_link import LinkListener


def zero_delay_table() -> Any:
    """The latency benchmark's table: every crossing line raises an alert, every recovery clears it."""
    return load_alarm_table(zero_delay_alarms())


class CommitSink:
    """A publisher stand-in: every alert gets a Commit that the test settles (or never does)."""

    def __init__(self, journal: bool = True) -> None:
        self.journal = journal
        self.alerts: list[AlertTransition] = []
        self.commits: list[Commit] = []

    def alert(self, transition: AlertTransition) -> Commit | None:
        self.alerts.append(transition)
        if not self.journal:
            return None
        commit = Commit()
        self.commits.append(commit)
        return commit

    def vital(self, kind: str, payload: VitalPayload) -> None:
        pass


def make_bed(sink: CommitSink) -> tuple[BedSession[ReplayLink], list[Any]]:
    """One oximeter bed on a replay link; ``log`` gets every output and every recorded value."""
    config = BedConfig(
        id="bed-1",
        devices=(DeviceConfig(id="ox", driver="masimo", url="replay", role="spo2", serial=SerialSettings()),),
    )
    engine = BedEngine(zero_delay_table(), "bed-1", {"ox": "spo2"}, id_factory=_ids())
    log: list[Any] = []

    def link(dev: DeviceConfig, listener: LinkListener) -> ReplayLink:
        return ReplayLink(dev, listener, clock=lambda: 0.0, peer=lambda data, now: None)

    session = BedSession(
        config,
        engine,
        links=link,
        sink=sink,
        observers=[lambda out: log.append(("out", _key(out)))],
        recorder=lambda device, obs, now, valid: log.append(("obs", obs.kind, obs.value, now, valid)),
    )
    return session, log


def _ids() -> Any:
    n = iter(range(10**6))
    return lambda: f"a{next(n)}"


def _key(out: Output) -> tuple[Any, ...]:
    if isinstance(out, AlertTransition):
        return (type(out).__name__, out.alert_id, out.seq, out.state.value, out.t)
    return (type(out).__name__, getattr(out, "t", None))


def line(spo2: float) -> list[Event]:
    """What a Masimo line gives: SpO2 first, then the pulse."""
    return [Observation("spo2", spo2, "%"), Observation("pulse_rate", 70.0, "/min")]


async def turns(n: int = 3) -> None:
    """Let the loop run a few callbacks (the resume is one call_soon after the commit)."""
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_the_rest_of_the_input_and_later_inputs_wait_for_the_commit() -> None:
    sink = CommitSink()
    session, log = make_bed(sink)
    session.on_events("ox", line(97.0), 1.0)
    session.on_events("ox", line(85.0), 2.0)  # the crossing: the alert is submitted, then it waits
    assert len(sink.alerts) == 1 and not sink.commits[0].done()
    assert ("obs", "pulse_rate", 70.0, 2.0, True) not in log  # the line's pulse waits
    assert not any(entry[0] == "out" for entry in log)  # so do the alert's observers
    session.tick(2.5)  # a later input of the bed queues behind it
    session.on_events("ox", line(97.0), 3.0)
    assert len(sink.alerts) == 1
    sink.commits[0].settle(True)
    await turns()
    assert len(sink.alerts) == 2  # the recovery line cleared it, after the rest
    assert [e[:2] for e in log] == [
        ("obs", "spo2"),
        ("obs", "pulse_rate"),
        ("obs", "spo2"),
        ("out", ("AlertTransition", "a0", 1, "raised", 2.0)),
        ("obs", "pulse_rate"),
        ("obs", "spo2"),  # the 3.0 line: its clear waits for its own commit in turn
    ]
    sink.commits[1].settle(True)
    await turns()
    assert log[-2:] == [
        ("out", ("AlertTransition", "a0", 2, "cleared", 3.0)),
        ("obs", "pulse_rate", 70.0, 3.0, True),
    ]


@pytest.mark.asyncio
async def test_the_sender_woken_by_the_commit_runs_before_the_rest() -> None:
    sink = CommitSink()
    session, log = make_bed(sink)
    order: list[str] = []

    session.on_events("ox", line(85.0), 1.0)
    commit = sink.commits[0]

    async def sender() -> None:
        await commit
        order.append(f"sent, log length {len(log)}")

    task = asyncio.create_task(sender())
    await turns()  # the sender is waiting on the commit
    length = len(log)
    commit.settle(True)
    await task
    await turns()
    assert order == [f"sent, log length {length}"]  # nothing of the rest had run when it sent
    assert len(log) > length


@pytest.mark.asyncio
async def test_a_commit_that_never_comes_holds_the_bed_only_for_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bed_module, "ALERT_COMMIT_WAIT_S", 0.02)
    sink = CommitSink()
    session, log = make_bed(sink)
    session.on_events("ox", line(85.0), 1.0)
    session.on_events("ox", line(97.0), 2.0)
    assert len(sink.alerts) == 1
    await wait_until(lambda: len(sink.alerts) == 2, 5, "the bed going on after the bound")
    assert ("obs", "pulse_rate", 70.0, 1.0, True) in log
    assert not sink.commits[0].done()  # still not on disk: the bed did not wait for it


@pytest.mark.asyncio
async def test_a_command_first_finishes_what_waits() -> None:
    sink = CommitSink()
    session, log = make_bed(sink)
    session.on_events("ox", line(85.0), 1.0)
    session.on_events("ox", line(97.0), 2.0)  # queued: it will clear the alarm
    assert session.is_active("a0") is False  # the query caught up: the recovery line has cleared it
    assert len(sink.alerts) == 2
    session.set_phase("infusion", 3.0)
    assert log[-1][0] == "out" and log[-1][1][0] == "PhaseChanged"


@pytest.mark.asyncio
async def test_then_runs_after_the_waiting_inputs() -> None:
    sink = CommitSink()
    session, log = make_bed(sink)
    session.on_events("ox", line(85.0), 1.0)
    session.then(lambda: log.append("timers"))
    assert "timers" not in log
    sink.commits[0].settle(True)
    await turns()
    assert log[-1] == "timers" and ("obs", "pulse_rate", 70.0, 1.0, True) in log


@pytest.mark.asyncio
async def test_a_failing_input_that_waited_costs_only_itself(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sink = CommitSink()
    session, log = make_bed(sink)
    session.on_events("ox", line(85.0), 1.0)
    observe = session.engine.observe

    def failing(device: str, event: Event, now: float) -> list[Output]:
        if now == 2.0:
            raise RuntimeError("engine bug")
        return observe(device, event, now)

    monkeypatch.setattr(session.engine, "observe", failing)
    session.on_events("ox", line(97.0), 2.0)  # queued; raises when it runs
    session.on_events("ox", line(97.0), 3.0)  # queued behind it; must still run
    sink.commits[0].settle(True)
    await turns()
    assert ("obs", "spo2", 97.0, 3.0, True) in log
    assert len(sink.alerts) == 2  # the 3.0 line cleared the alarm


@pytest.mark.asyncio
async def test_the_direct_caller_still_hears_of_a_failure_when_nothing_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session, _ = make_bed(CommitSink())

    def failing(device: str, event: Event, now: float) -> list[Output]:
        raise RuntimeError("engine bug")

    monkeypatch.setattr(session.engine, "observe", failing)
    with pytest.raises(RuntimeError):
        session.on_events("ox", line(97.0), 1.0)  # the device link reports it as its fault


def _drive(session: BedSession[ReplayLink], script: list[tuple[str, float, float]]) -> None:
    for what, t, value in script:
        if what == "line":
            session.on_events("ox", line(value), t)
        else:
            session.tick(t)


def _script(seed: int) -> list[tuple[str, float, float]]:
    rng = random.Random(seed)
    script: list[tuple[str, float, float]] = []
    t = 0.0
    for _ in range(400):
        t += rng.choice((0.1, 0.25, 0.5, 1.0))
        script.append(("line", t, rng.choice((97.0, 95.0, 89.0, 86.0, 91.0, 80.0))))
        if rng.random() < 0.4:
            script.append(("tick", t, 0.0))
    return script


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_waiting_changes_nothing_but_when(seed: int) -> None:
    """The same inputs with commits settling at random moments give the same outputs, record
    calls and alerts, in the same order, as with no journal at all (nothing ever waits)."""
    plain_sink = CommitSink(journal=False)
    plain, plain_log = make_bed(plain_sink)
    _drive(plain, _script(seed))

    sink = CommitSink()
    waiting, log = make_bed(sink)
    rng = random.Random(seed + 100)
    settled = 0
    held = 0
    for step in _script(seed):
        _drive(waiting, [step])
        held += waiting._held is not None
        for commit in sink.commits[settled:]:  # settle some now, some a few inputs later
            if rng.random() < 0.5:
                break
            commit.settle(True)
            settled += 1
        if rng.random() < 0.5:
            await turns()
    for commit in sink.commits[settled:]:
        commit.settle(True)
    await wait_until(lambda: waiting._held is None, 5, "every waiting input handled")
    assert held > 20  # the waits really happened
    assert log == plain_log
    assert [_key(a) for a in sink.alerts] == [_key(a) for a in plain_sink.alerts]


class WrittenSink(CommitSink):
    """Commits that a thread standing in for the journal writer reports written ``delay_s`` after
    the submit (the thread runs all along, like the writer's, so no thread start is timed)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.alerted = asyncio.Event()  # what wakes the publisher's sender in the daemon
        self._jobs: queue.SimpleQueue[Commit | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, daemon=True)
        self._thread.start()

    def _write(self) -> None:
        while (commit := self._jobs.get()) is not None:
            time.sleep(self.delay_s)
            commit.written(True)

    def alert(self, transition: AlertTransition) -> Commit | None:
        commit = super().alert(transition)
        assert commit is not None
        self._jobs.put(commit)
        self.alerted.set()
        return commit

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()


@pytest.fixture
def written_sinks() -> Iterator[Callable[[float], WrittenSink]]:
    made: list[WrittenSink] = []

    def make(delay_s: float) -> WrittenSink:
        made.append(WrittenSink(delay_s))
        return made[-1]

    yield make
    for sink in made:
        sink.close()


@pytest.mark.asyncio
async def test_the_bed_blocks_briefly_for_the_writer_and_settles_the_commit_itself(
    written_sinks: Callable[[float], WrittenSink],
) -> None:
    """The loop gives the writer thread the interpreter until the commit is written (bounded),
    settles it at once, and the publisher's send (woken by the alert) goes before the rest."""
    sink = written_sinks(0.0)
    session, log = make_bed(sink)
    order: list[str] = []

    async def sender() -> None:  # the publisher: woken when an alert is queued, then waits for its commit
        await sink.alerted.wait()
        await sink.commits[0]
        order.append(f"sent, log length {len(log)}")

    task = asyncio.create_task(sender())
    await turns()
    session.on_events("ox", line(85.0), 1.0)
    assert sink.commits[0].done() and session._held is not None  # settled; the rest still waits
    length = len(log)
    await task
    await turns()
    assert order == [f"sent, log length {length}"]
    assert ("obs", "pulse_rate", 70.0, 1.0, True) in log


@pytest.mark.asyncio
async def test_a_disk_slower_than_the_block_spends_the_budget_and_then_the_bed_stops_blocking(
    monkeypatch: pytest.MonkeyPatch, written_sinks: Callable[[float], WrittenSink]
) -> None:
    blocked: list[float] = []
    wait_written = Commit.wait_written

    def counted(self: Commit, timeout: float) -> bool:
        blocked.append(timeout)
        return wait_written(self, timeout)

    monkeypatch.setattr(Commit, "wait_written", counted)
    monkeypatch.setattr(bed_module, "COMMIT_BLOCK_BUDGET_S", 3 * bed_module.ALERT_COMMIT_BLOCK_S)
    monkeypatch.setattr(bed_module, "COMMIT_BLOCK_WINDOW_S", 3600.0)  # no refill during the test
    sink = written_sinks(0.2)  # far slower than ALERT_COMMIT_BLOCK_S
    session, _ = make_bed(sink)
    for i in range(10):
        session.on_events("ox", line(85.0 if i % 2 == 0 else 97.0), float(i))
        session.catch_up()
    assert len(sink.alerts) == 10
    assert len(blocked) == 3  # each wait ran out after 2 ms: the 6 ms budget is spent
    assert set(blocked) == {bed_module.ALERT_COMMIT_BLOCK_S}
    fast = written_sinks(0.0)
    quick, _ = make_bed(fast)
    before = len(blocked)
    for i in range(10):  # waits that end with the commit are not charged: every alert blocks
        quick.on_events("ox", line(85.0 if i % 2 == 0 else 97.0), float(i))
        quick.catch_up()
    assert len(blocked) - before == 10
