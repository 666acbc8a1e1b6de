"""Endpoints: a simulator served over a real pty and TCP, read by pyserial and decoded by the driver."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import pytest
import serial

from tests.helpers import wait_until
from vitalwatch.drivers.base import SerialSettings
from vitalwatch.drivers.events import Observation
from vitalwatch.drivers.masimo import MasimoDriver
from vitalwatch.simulators.endpoint import serve_pty, serve_tcp
from vitalwatch.simulators.masimo import MasimoSimulator
from vitalwatch.simulators.scenarios import get_scenario

SPEED = 20.0  # 20 Masimo lines per wall second


class EchoSim:
    """A fake device: emits ``chunk`` every ``period`` scenario seconds and records what it hears."""

    device: ClassVar[str] = "echo"
    serial: ClassVar[SerialSettings] = SerialSettings()

    def __init__(self, chunk: bytes = b"", period: float = 1.0) -> None:
        self.chunk = chunk
        self.period = period
        self.next = 0.0
        self.heard = bytearray()

    def poll(self, now: float) -> bytes:
        out = b""
        while self.next <= now:
            out += self.chunk
            self.next += self.period
        return out

    def receive(self, data: bytes, now: float) -> None:
        self.heard += data

    def next_deadline(self) -> float | None:
        return self.next


def masimo() -> MasimoSimulator:
    return MasimoSimulator(get_scenario("normal", seed=1))


def read_lines(port: serial.SerialBase, n: int) -> list[bytes]:
    lines = [port.readline() for _ in range(n)]
    assert all(line.endswith(b"\r\n") for line in lines), lines
    return lines


def spo2_times(data: bytes) -> list[object]:
    events = MasimoDriver().feed(data, 0.0)
    return [e.device_time for e in events if isinstance(e, Observation) and e.kind == "spo2"]


def assert_consecutive_masimo_lines(lines: list[bytes]) -> None:
    """Valid lines for the driver, one device second apart (nothing lost in between)."""
    events = MasimoDriver().feed(b"".join(lines), 0.0)
    spo2 = [e for e in events if isinstance(e, Observation) and e.kind == "spo2"]
    assert len(lines) == len(spo2)
    assert all(e.value is not None and 94 <= e.value <= 100 for e in spo2)
    times = [e.device_time for e in spo2]
    assert all(t is not None for t in times)
    assert [timedelta(seconds=1)] * (len(times) - 1) == [b - a for a, b in itertools.pairwise(times)]  # type: ignore[operator]


@pytest.mark.asyncio
async def test_pty_lines_read_with_pyserial_decode() -> None:
    async with serve_pty(masimo(), speed=SPEED) as ep:
        assert ep.url.startswith("/dev/pts/")

        def read() -> list[bytes]:
            with serial.Serial(ep.url, timeout=2) as port:
                return read_lines(port, 4)

        lines = await asyncio.to_thread(read)
    assert_consecutive_masimo_lines(lines)
    assert ep.bytes_sent >= sum(map(len, lines))


@pytest.mark.asyncio
async def test_pty_raw_mode_and_os_open() -> None:
    """The slave is raw: CR LF arrive untranslated even to a reader that sets nothing itself."""
    async with serve_pty(masimo(), speed=SPEED) as ep:
        fd = os.open(ep.url, os.O_RDONLY | os.O_NOCTTY)
        try:
            data = b""
            while data.count(b"\r\n") < 3:
                data += await asyncio.to_thread(os.read, fd, 4096)
        finally:
            os.close(fd)
    assert b"\r\r\n" not in data and b"\n\n" not in data
    assert len(spo2_times(data)) >= 3


@pytest.mark.asyncio
async def test_pty_host_bytes_reach_the_simulator() -> None:
    sim = EchoSim()
    async with serve_pty(sim, speed=SPEED) as ep:

        def write() -> None:
            with serial.Serial(ep.url, timeout=1) as port:
                port.write(b"START\r")
                port.flush()
                port.read(1)  # keep the slave open until the endpoint has read our bytes

        await asyncio.to_thread(write)
        await wait_until(lambda: bytes(sim.heard) == b"START\r", 5, "the host's bytes at the simulator")


@pytest.mark.asyncio
async def test_pty_without_reader_drops_bytes_and_never_blocks() -> None:
    """Like a device with its cable unplugged: output is counted as dropped, the clock runs on."""
    sim = EchoSim(chunk=b"x" * 8192, period=0.05)
    async with serve_pty(sim, speed=1.0) as ep:
        await wait_until(lambda: ep.bytes_dropped > 0, 5, "output dropped with no reader")
        assert 0 == ep.bytes_sent  # checked after output was produced, so it means something
        # A reader that opens the port but never reads: the kernel buffer fills, then bytes drop.
        fd = os.open(ep.url, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            before = ep.bytes_dropped
            await wait_until(lambda: ep.bytes_sent > 0, 5, "bytes into the reader's buffer")
            await wait_until(lambda: ep.bytes_dropped > before, 5, "bytes dropped once the buffer is full")
            t = ep.scenario_time()
            await wait_until(lambda: ep.scenario_time() > t, 5, "the scenario clock running on")
        finally:
            os.close(fd)


@pytest.mark.asyncio
async def test_pty_close_and_reopen_follows_the_link(tmp_path: Path) -> None:
    link = tmp_path / "masimo-bed1"
    async with serve_pty(masimo(), speed=SPEED, link=link) as ep:
        assert str(link) == ep.url
        first = os.readlink(link)

        def read_some() -> list[bytes]:
            with serial.Serial(str(link), timeout=2) as port:
                return read_lines(port, 2)

        before = await asyncio.to_thread(read_some)
        await ep.close()
        assert not link.exists()
        assert not Path(first).exists()  # the pty is gone, like a USB adapter pulled out  # noqa: ASYNC240
        out_at = ep.scenario_time()
        cable_out_s = 4.0  # scenario seconds: the device talks on, nobody hears it
        await wait_until(lambda: ep.scenario_time() >= out_at + cable_out_s, 5, "the cable out long enough")
        await ep.reopen()
        assert link.is_symlink()
        after = await asyncio.to_thread(read_some)
    assert_consecutive_masimo_lines(before)
    assert_consecutive_masimo_lines(after)
    # The device kept its clock while the cable was out: what it said meanwhile is lost.
    gap = spo2_times(after[0])[0] - spo2_times(before[-1])[0]  # type: ignore[operator]
    assert gap >= timedelta(seconds=4)


@pytest.mark.asyncio
async def test_pty_next_reader_gets_fresh_lines_not_what_the_last_one_left() -> None:
    """Lines a reader left unread are discarded when it goes; the next reader starts now."""
    async with serve_pty(masimo(), speed=SPEED) as ep:

        def lazy_reader() -> None:
            with serial.Serial(ep.url, timeout=2) as port:
                port.readline()
                # The subject: a reader that stops reading for a while (~10 lines pile up unread)
                # and then goes away.
                time.sleep(0.5)

        await asyncio.to_thread(lazy_reader)
        await wait_until(lambda: not ep.connected, 5, "the endpoint noticing the reader went")

        def next_reader() -> tuple[bytes, float]:
            # os.open, not pyserial: pyserial flushes input on open and would hide stale lines.
            fd = os.open(ep.url, os.O_RDONLY | os.O_NOCTTY)
            try:
                data = b""
                while b"\r\n" not in data:
                    data += os.read(fd, 1)
                return data, ep.scenario_time()
            finally:
                os.close(fd)

        line, now = await asyncio.to_thread(next_reader)
    assert spo2_times_offset(line) >= now - 2.0, (line, now)


def spo2_times_offset(line: bytes) -> float:
    """Scenario second of a line from the ``normal`` Masimo simulator."""
    t = spo2_times(line)[0]
    assert t is not None
    return (t - masimo().clock_start).total_seconds()  # type: ignore[operator]


@pytest.mark.asyncio
async def test_pty_reader_sees_the_cable_pulled() -> None:
    async with serve_pty(masimo(), speed=SPEED) as ep:
        port = serial.Serial(ep.url, timeout=1)
        try:
            await asyncio.to_thread(read_lines, port, 1)
            await ep.close()
            with pytest.raises(serial.SerialException):
                await asyncio.to_thread(port.read, 4096)
        finally:
            port.close()


@pytest.mark.asyncio
async def test_tcp_socket_and_pyserial_url() -> None:
    async with serve_tcp(masimo(), speed=SPEED) as ep:
        assert ep.url == f"socket://127.0.0.1:{ep.port}"

        def with_socket() -> bytes:
            with socket.create_connection(("127.0.0.1", ep.port), timeout=2) as sock:
                data = b""
                while data.count(b"\r\n") < 3:
                    data += sock.recv(4096)
                return data

        def with_pyserial() -> list[bytes]:
            port = serial.serial_for_url(ep.url, timeout=2)
            try:
                return read_lines(port, 3)
            finally:
                port.close()

        raw = await asyncio.to_thread(with_socket)
        lines = await asyncio.to_thread(with_pyserial)
    assert len(spo2_times(raw)) >= 3
    assert_consecutive_masimo_lines(lines)


@pytest.mark.asyncio
async def test_tcp_one_client_at_a_time_and_host_bytes() -> None:
    sim = EchoSim(chunk=b"tick\n", period=1.0)
    async with serve_tcp(sim, speed=SPEED) as ep:
        reader, writer = await asyncio.open_connection("127.0.0.1", ep.port)
        await reader.readline()
        assert ep.connected
        r2, w2 = await asyncio.open_connection("127.0.0.1", ep.port)
        assert b"" == await asyncio.wait_for(r2.read(), 2)  # refused: closed at once
        w2.close()
        writer.write(b"ping")
        await writer.drain()
        await wait_until(lambda: b"ping" == bytes(sim.heard), 5, "the client's bytes at the simulator")
        writer.close()
        await writer.wait_closed()


@pytest.mark.asyncio
async def test_tcp_close_and_reopen_on_the_same_port() -> None:
    async with serve_tcp(masimo(), speed=SPEED) as ep:
        port = ep.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        await ep.close()
        assert b"" == await asyncio.wait_for(reader.read(), 2)  # the client sees EOF
        writer.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        await ep.reopen()
        assert port == ep.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = [await asyncio.wait_for(reader.readline(), 2) for _ in range(2)]
        writer.close()
        await writer.wait_closed()
    assert_consecutive_masimo_lines(lines)


@pytest.mark.asyncio
async def test_finishes_at_until() -> None:
    sim = EchoSim()
    async with serve_tcp(sim, speed=100.0, until=30.0) as ep:
        await asyncio.wait_for(ep.wait_finished(), 2)
        assert ep.scenario_time() >= 30.0
        assert 31.0 == sim.next  # ticks at 0..30 inclusive were polled
    with pytest.raises(ValueError):
        async with serve_tcp(sim, speed=0):
            pass


def start_simulate(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "vitalwatch", "simulate", "--device", "masimo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_simulate_command_serves_a_pty_until_sigterm() -> None:
    proc = start_simulate("--scenario", "normal", "--speed", str(SPEED))
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        assert first.startswith("serving masimo on /dev/pts/"), first
        with serial.Serial(first.split(" on ", 1)[1].strip(), timeout=3) as port:
            assert_consecutive_masimo_lines(read_lines(port, 2))
        proc.send_signal(signal.SIGTERM)
        assert 0 == proc.wait(timeout=5)
    finally:
        proc.kill()
        proc.wait()


def test_simulate_command_tcp_with_duration() -> None:
    proc = start_simulate(
        "--scenario", "desaturation", "--tcp", "0", "--speed", str(SPEED), "--duration", "2"
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode().strip()
        assert first.startswith("serving masimo on socket://127.0.0.1:"), first
        port = serial.serial_for_url(first.split(" on ", 1)[1], timeout=3)
        try:
            assert_consecutive_masimo_lines(read_lines(port, 2))
        finally:
            port.close()
        assert 0 == proc.wait(timeout=5)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scenario", "nope"], "unknown scenario"),
        (["--scenario", "normal", "--option", "model=rad97"], "bad option"),
    ],
)
def test_simulate_command_usage_errors(args: list[str], needle: str) -> None:
    proc = start_simulate(*args)
    out, err = proc.communicate(timeout=10)
    assert 2 == proc.returncode
    assert b"" == out
    assert 1 == len(err.decode().strip().splitlines())
    assert needle in err.decode()


def test_simulate_command_unknown_device() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vitalwatch", "simulate", "--device", "nope", "--scenario", "normal"],
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert 2 == proc.returncode
    assert "unknown device" in proc.stderr.decode()
