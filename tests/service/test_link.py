"""The serial link over real pseudo-terminals: bytes to events, reconnect after the cable is pulled."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import random
import tty
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.helpers import wait_until
from vitalwatch.config import DeviceConfig
from vitalwatch.drivers import Event, Observation
from vitalwatch.drivers.base import MeasurementStarter, SerialSettings
from vitalwatch.link.device_link import (
    DRIVER_TIMER_GRID_S,
    IDLE_WAKE_S,
    READ_PAUSE_S,
    STREAM_READ_PAUSE_S,
    WAVEFORM_READ_PAUSE_S,
    DeviceLink,
    backoff_delay,
    next_read_at,
)
from vitalwatch.link.serial_port import SerialPort
from vitalwatch.simulators import make_simulator
from vitalwatch.simulators.endpoint import serve_pty
from vitalwatch.simulators.scenarios import get_scenario


class Recorder:
    """A LinkListener that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.links: list[tuple[bool, str]] = []

    def on_events(self, device: str, events: list[Event], now: float) -> None:
        self.events += events

    def on_link(self, device: str, up: bool, now: float, reason: str) -> None:
        self.links.append((up, reason))


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, rng) for n in range(20)]
    assert all(0.0 <= d <= 30.0 for d in delays)
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    assert max(backoff_delay(3, random.Random(s)) for s in range(200)) <= 4.0


@pytest.mark.asyncio
async def test_pty_bytes_become_observations_and_a_pulled_cable_reconnects(tmp_path: Path) -> None:
    """Masimo lines arrive as observations; closing the pty reports link down; reopening brings them back."""
    link_path = tmp_path / "oximeter"
    sim = make_simulator("masimo", get_scenario("normal"))
    async with serve_pty(sim, speed=20.0, link=link_path) as endpoint:
        recorder = Recorder()
        config = DeviceConfig(
            id="ox", driver="masimo", url=str(link_path), role="spo2", serial=SerialSettings()
        )
        link = DeviceLink(config, recorder, rng=random.Random(0))
        task = asyncio.create_task(link.run())
        try:
            await wait_until(lambda: sum(isinstance(e, Observation) for e in recorder.events) >= 6, 10)
            assert recorder.links[0] == (True, "port open")
            spo2 = [e.value for e in recorder.events if isinstance(e, Observation) and e.kind == "spo2"]
            assert all(v is not None and 90 <= v <= 100 for v in spo2)
            await endpoint.close()
            await wait_until(lambda: (False, "port closed") in recorder.links, 5)
            assert not link.connected
            seen = len(recorder.events)
            await endpoint.reopen()
            await wait_until(
                lambda: recorder.links[-1] == (True, "port open") and len(recorder.events) > seen + 4,
                20,
                "the link back up with fresh readings",
            )
            assert link.connected
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_missing_port_reports_link_down_once_and_keeps_trying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opens: list[str] = []  # every attempt to open the port (the real open, counted)
    real_open = SerialPort.open

    async def counted_open(url: str, settings: SerialSettings, *, device_id: str) -> SerialPort:
        opens.append(url)
        return await real_open(url, settings, device_id=device_id)

    monkeypatch.setattr(SerialPort, "open", counted_open)
    recorder = Recorder()
    config = DeviceConfig(
        id="ox", driver="masimo", url=str(tmp_path / "nothing-here"), role="spo2", serial=SerialSettings()
    )
    link = DeviceLink(config, recorder, rng=random.Random(0))
    task = asyncio.create_task(link.run())
    try:
        await wait_until(lambda: bool(recorder.links), 5)
        # Several retries, counted rather than waited for (backoff starts near 0.5 s): only then
        # does "reported once" mean anything.
        await wait_until(lambda: len(opens) >= 3, 10, "three attempts to open the port")
        assert recorder.links == [(False, "cannot open port")]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_decode_problem_dumps_scrubbed_raw_bytes_at_debug_only() -> None:
    """The last raw bytes go with a decode problem as hex at debug level, patient segments blanked."""
    import io
    import json

    from vitalwatch.drivers.events import DecodeProblem
    from vitalwatch.ops.logconfig import configure_logging

    config = DeviceConfig(id="mon", driver="hl7", url="x", role="multi", serial=SerialSettings())
    chunk = (
        b"\x0bMSH|^~\\&|M|I|V|C|20261129||ORU^R01|1|P|2.6\rPID|||SIM-0001||DOE^JANE\rOBX|1|NM|150456|1|9x\r"
    )
    for level, dumped in (("info", False), ("debug", True)):
        out = io.StringIO()
        configure_logging(level, "json", stream=out)
        link = DeviceLink(config, Recorder())
        link._recent.append(chunk)
        link._deliver([DecodeProblem("garbage", 5)], 0.0)
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        assert records[0]["event"] == "device.decode_problem"
        raw = [r for r in records if r["event"] == "device.decode_problem.raw"]
        assert bool(raw) is dumped
        if dumped:
            data = bytes.fromhex(raw[0]["recent_hex"])
            assert b"OBX|1|NM|150456" in data
            assert b"SIM-0001" not in data and b"DOE^JANE" not in data
    configure_logging("info", "json", stream=io.StringIO())


class StartsOnLinkUp(Recorder):
    """A bed that asked for a reading before the cuff's port opened: it starts the cuff on link up."""

    def __init__(self) -> None:
        super().__init__()
        self.link: DeviceLink | None = None
        self.started: list[bool] = []

    def on_link(self, device: str, up: bool, now: float, reason: str) -> None:
        super().on_link(device, up, now, reason)
        assert self.link is not None
        driver = self.link.driver
        if up and isinstance(driver, MeasurementStarter):  # what BedSession.request_nibp needs
            driver.start_measurement()
            self.link.poke()
        self.started.append(up and driver is not None)


@pytest.mark.asyncio
async def test_the_driver_exists_when_the_bed_hears_link_up_so_a_waiting_request_starts_the_cuff() -> None:
    """On the first connect the bed is told "port open" with the driver already built: a reading the
    engine asked for while the port was closed starts the SunTech cuff at once, and its reading arrives."""
    sim = make_simulator("suntech", get_scenario("normal"), min_cycle_s=1.0, max_cycle_s=1.5)
    async with serve_pty(sim) as endpoint:
        bed = StartsOnLinkUp()
        config = DeviceConfig(id="cuff", driver="suntech", url=endpoint.url, role="nibp", serial=sim.serial)
        bed.link = DeviceLink(config, bed, rng=random.Random(0))
        task = asyncio.create_task(bed.link.run())
        try:
            await wait_until(lambda: bool(bed.started), 10, "link up")
            assert [True] == bed.started
            await wait_until(
                lambda: any(isinstance(e, Observation) and e.kind == "nibp_systolic" for e in bed.events),
                15,
                "the cuff's reading",
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_a_waveform_rate_monitor_is_read_in_batches_and_every_frame_arrives(tmp_path: Path) -> None:
    """A Nonin writes a frame every 13 ms (75/s); the link reads its port at most every READ_PAUSE_S,
    and once bytes are found waiting at every read, every WAVEFORM_READ_PAUSE_S (about 8 reads a
    second: the family streams by design), and the frames that waited are all decoded, none dropped."""
    reads: list[float] = []
    received = bytearray()

    class CountingTap:
        def raw(self, device: str, data: bytes, now: float) -> None:
            reads.append(now)
            received.extend(data)

        def timer(self, device: str, now: float) -> None:
            pass

    link_path = tmp_path / "nonin"
    async with serve_pty(make_simulator("nonin", get_scenario("normal")), speed=1.0, link=link_path):
        recorder = Recorder()
        config = DeviceConfig(
            id="ox", driver="nonin", url=str(link_path), role="spo2", serial=SerialSettings()
        )
        link = DeviceLink(config, recorder, rng=random.Random(0))
        link.tap = CountingTap()
        task = asyncio.create_task(link.run())
        try:
            await wait_until(lambda: len(reads) >= 2, 10, "the first reads")
            first = len(reads)
            await wait_until(lambda: reads[-1] - reads[first - 1] >= 2.0, 10, "two seconds of frames")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    window = reads[first - 1 :]
    # Never read twice in one pause: each read is in a later slot of READ_PAUSE_S than the last.
    slots = [math.floor(t / READ_PAUSE_S + 1e-6) for t in window]
    assert all(b > a for a, b in itertools.pairwise(slots)), slots
    assert len(window) / (window[-1] - window[0]) <= 1.2 / WAVEFORM_READ_PAUSE_S  # about 8 reads/s, not 75
    assert len(received) / (window[-1] - window[0]) >= 0.8 * 75 * 5  # 75 five-byte frames/s still arrive
    assert sum(isinstance(e, Observation) and e.kind == "spo2" for e in recorder.events) >= 2


def test_the_next_read_is_the_next_multiple_of_the_pause_even_from_a_timer_a_hair_early() -> None:
    """Every port's next read falls on the same multiples of READ_PAUSE_S; a read at a multiple (or
    a nanosecond before it, as a loop timer may run) is followed by the next multiple, not itself."""
    for k in (1, 7, 40_000, 123_456_789):
        at = k * READ_PAUSE_S
        for now in (at, at - 1e-9, at + 1e-9):
            assert next_read_at(now) == pytest.approx((k + 1) * READ_PAUSE_S, abs=1e-6)
        assert next_read_at(at + 0.4 * READ_PAUSE_S) == pytest.approx((k + 1) * READ_PAUSE_S, abs=1e-6)
        assert next_read_at(at + 0.99 * READ_PAUSE_S) == pytest.approx((k + 1) * READ_PAUSE_S, abs=1e-6)


class ReadLog:
    """A link tap noting the loop time of every read that brought bytes."""

    def __init__(self) -> None:
        self.reads: list[float] = []
        self.sizes: list[int] = []

    def raw(self, device: str, data: bytes, now: float) -> None:
        self.reads.append(now)
        self.sizes.append(len(data))

    def timer(self, device: str, now: float) -> None:
        pass


@pytest.mark.asyncio
async def test_streaming_ports_are_read_by_their_timer_in_one_loop_turn_without_rewatching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Nonin (75 frames/s) and a Contec (60 packets/s): while bytes keep coming, the pause's timer
    reads the port itself (the port is not handed back to epoll after every read), and both ports'
    timers fall on the same multiples of READ_PAUSE_S, so one wake-up of the loop reads both."""
    loop = asyncio.get_running_loop()
    watched = [0]
    add_reader = loop.add_reader

    def counting_add_reader(fd: int, callback: object, *args: object) -> None:
        watched[0] += 1
        add_reader(fd, callback, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "add_reader", counting_add_reader)
    logs = {"nonin": ReadLog(), "contec": ReadLog()}
    tasks = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            for driver, log in logs.items():
                sim = make_simulator(driver, get_scenario("normal"))
                endpoint = await stack.enter_async_context(serve_pty(sim, speed=1.0))
                config = DeviceConfig(
                    id=driver, driver=driver, url=endpoint.url, role="spo2", serial=sim.serial
                )
                link = DeviceLink(config, Recorder(), rng=random.Random(0))
                link.tap = log
                tasks.append(asyncio.create_task(link.run()))
            await wait_until(lambda: all(len(log.reads) >= 5 for log in logs.values()), 10, "both streams")
            counted_from, watched_from = {d: len(log.reads) for d, log in logs.items()}, watched[0]
            await wait_until(
                lambda: all(len(log.reads) - counted_from[d] >= 60 for d, log in logs.items()), 15, "reads"
            )
            reads = sum(len(log.reads) - counted_from[d] for d, log in logs.items())
            rewatched = watched[0] - watched_from
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    # Before, every read handed the port back to epoll: one add_reader per read.
    assert rewatched <= 0.25 * reads, (rewatched, reads)
    # Timer reads run just after a multiple of the pause (the loop wakes within a millisecond or
    # two); reads scheduled per port would fall anywhere in it (about 1 in 5 within 5 ms).
    for driver, log in logs.items():
        late = [(t % READ_PAUSE_S) for t in log.reads[counted_from[driver] :]]
        on_grid = sum(1 for x in late if x < 0.005 or x > READ_PAUSE_S - 1e-6)
        assert on_grid >= 0.6 * len(late), (driver, sorted(round(x * 1000, 1) for x in late))


@contextlib.asynccontextmanager
async def silent_masimo_link() -> AsyncIterator[tuple[DeviceLink, int]]:
    """A Masimo link on a pty nobody writes to unless the test does (the master's fd comes with
    it); its driver's hooks may be replaced before the link runs, which it does inside the block."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)  # the master stays open
    try:
        config = DeviceConfig(id="ox", driver="masimo", url=path, role="spo2", serial=SerialSettings())
        yield DeviceLink(config, Recorder(), rng=random.Random(0)), master
    finally:
        os.close(master)


async def run_link_until(link: DeviceLink, done: Callable[[], bool], what: str) -> None:
    """Run ``link`` until ``done()`` holds (10 s at most), then stop it."""
    task = asyncio.create_task(link.run())
    try:
        await wait_until(done, 10, what)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_a_silent_ports_idle_wake_ups_fall_on_multiples_of_the_idle_period(tmp_path: Path) -> None:
    """A port with nothing to say: the link still wakes at least every IDLE_WAKE_S, and on the
    multiples of it on the loop clock, so eight silent or slow links wake the loop once, not eight
    times (a wake after "now + IDLE_WAKE_S" would fall anywhere in the period)."""
    loop = asyncio.get_running_loop()
    passes: list[float] = []
    async with silent_masimo_link() as (link, _):
        next_deadline = link.guard.next_deadline

        def noted() -> float | None:
            passes.append(loop.time())
            return next_deadline()

        link.guard.next_deadline = noted  # type: ignore[method-assign]
        await run_link_until(link, lambda: len(passes) >= 5, "idle wake-ups")
    later = passes[1:]
    assert all(b - a <= IDLE_WAKE_S + 0.1 for a, b in itertools.pairwise(passes))
    phases = [t % IDLE_WAKE_S for t in later]
    assert sum(1 for x in phases if x < 0.01) >= len(later) - 1, [round(x, 4) for x in phases]


@pytest.mark.asyncio
async def test_a_drivers_deadlines_run_at_the_first_multiple_of_the_timer_grid_at_or_after_them() -> None:
    """A driver's own timer (a NIBP poll, a keep-alive) set at odd instants runs at the first
    multiple of DRIVER_TIMER_GRID_S at or after its deadline: never early, at most one grid step
    late, and on the instants every other link's timers and the streaming reads use."""
    loop = asyncio.get_running_loop()
    deadline = [loop.time() + 0.037]
    fired: list[tuple[float, float]] = []  # (deadline, when it ran)

    def on_timer(now: float) -> list[Event]:
        fired.append((deadline[0], now))
        deadline[0] = now + 0.037 + 0.011 * (len(fired) % 3)  # never on the grid itself
        return []

    async with silent_masimo_link() as (link, _):
        link.guard.next_deadline = lambda: deadline[0]  # type: ignore[method-assign]
        link.guard.on_timer = on_timer  # type: ignore[method-assign]
        await run_link_until(link, lambda: len(fired) >= 6, "six driver timers")
    for due, ran in fired:
        assert ran >= due - 1e-6  # never early
        assert ran - due <= DRIVER_TIMER_GRID_S + 0.05, (
            due,
            ran,
        )  # at most a grid step late (and the loop's lag)
    phases = [ran % DRIVER_TIMER_GRID_S for _, ran in fired]
    on_grid = sum(1 for x in phases if x < 0.005 or x > DRIVER_TIMER_GRID_S - 1e-6)
    assert on_grid >= len(fired) - 1, [round(x, 4) for x in phases]


@pytest.mark.asyncio
async def test_a_line_after_a_quiet_spell_is_read_at_once_not_at_the_next_pause() -> None:
    """A monitor that sends a line now and then (a Masimo once a second) is not a stream: its port
    is watched, and a line is read as soon as it arrives, not at the next multiple of a pause
    (which would add up to STREAM_READ_PAUSE_S to every one of its alarms)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)
    log = ReadLog()
    loop = asyncio.get_running_loop()
    written: list[float] = []
    try:
        config = DeviceConfig(id="ox", driver="masimo", url=path, role="spo2", serial=SerialSettings())
        link = DeviceLink(config, Recorder(), rng=random.Random(0))
        link.tap = log
        task = asyncio.create_task(link.run())
        try:
            await wait_until(lambda: link.connected, 10, "the port open")
            for i in range(12):
                await asyncio.sleep(0.12)  # a quiet spell, longer than any pause (the subject's rate)
                written.append(loop.time())
                os.write(master, f"line {i}\r\n".encode())
                await wait_until(lambda n=i: len(log.reads) > n, 5, "the line read")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        os.close(master)
    delays = sorted(r - w for r, w in zip(log.reads, written, strict=True))
    assert delays[len(delays) // 2] < 0.01, delays  # read at once; a timer read would be ~25 ms


@pytest.mark.asyncio
async def test_a_line_monitor_in_a_burst_is_read_at_the_short_stream_pause_not_the_waveform_one() -> None:
    """A monitor that sends a line at a time (a Masimo) but faster than the pauses for a while
    (a burst after a reconnect, the latency benchmark's alarms) streams as far as the link can
    tell; its lines must still wait at most STREAM_READ_PAUSE_S, never the longer pause that only a
    family streaming by design gets (which would hold every line of the burst up to 125 ms)."""
    loop = asyncio.get_running_loop()
    log = ReadLog()
    written: list[float] = []
    async with silent_masimo_link() as (link, master):
        link.tap = log
        task = asyncio.create_task(link.run())
        try:
            await wait_until(lambda: link.connected, 10, "the port open")
            for i in range(60):  # 1.2 s of a line every 20 ms
                written.append(loop.time())
                os.write(master, f"line {i}\r\n".encode())
                await asyncio.sleep(0.02)
            await wait_until(
                lambda: sum(log.sizes) >= sum(len(f"line {i}\r\n") for i in range(60)), 5, "all read"
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    later = [t for t in log.reads if t >= written[10]]  # past the first lines: streaming by now
    gaps = [b - a for a, b in itertools.pairwise(later)]
    assert len(log.reads) < 50  # batched: fewer reads than lines
    assert max(gaps) <= STREAM_READ_PAUSE_S + 0.03, sorted(round(g, 3) for g in gaps)[-5:]
