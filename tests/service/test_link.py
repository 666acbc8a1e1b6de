"""The serial link over real pseudo-terminals: bytes to events, reconnect after the cable is pulled."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

import pytest

from tests.helpers import wait_until
from vitalwatch.config import DeviceConfig
from vitalwatch.drivers import Event, Observation
from vitalwatch.drivers.base import MeasurementStarter, SerialSettings
from vitalwatch.link.device_link import DeviceLink, backoff_delay
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
    so it wakes about 40 times a second, and the frames that waited are all decoded, none dropped."""
    from vitalwatch.link.device_link import READ_PAUSE_S

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
    gaps = [b - a for a, b in itertools.pairwise(window)]
    assert min(gaps) >= READ_PAUSE_S * 0.9  # never read again inside the pause
    assert len(window) / (window[-1] - window[0]) <= 1.2 / READ_PAUSE_S  # about 40 reads/s, not 75
    assert len(received) / (window[-1] - window[0]) >= 0.8 * 75 * 5  # 75 five-byte frames/s still arrive
    assert sum(isinstance(e, Observation) and e.kind == "spo2" for e in recorder.events) >= 2
