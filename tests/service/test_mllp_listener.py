"""The MLLP listener on real loopback TCP: simulated networked monitors, routing, AE for strangers, limits.

The bed session is a recording fake here (the engine has its own tests); the daemon, the engine
and a real broker are together in tests/integration/test_mllp_end_to_end.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.helpers import wait_until
from vitalwatch.config import DeviceConfig
from vitalwatch.drivers.base import SerialSettings
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event, Observation
from vitalwatch.drivers.hl7 import parse_ack
from vitalwatch.drivers.mllp import MllpDeframer, encode_block
from vitalwatch.link.mllp_listener import ListenerLimits, MllpHub, MllpListener, MllpRoute
from vitalwatch.link.mllp_routing import sender_keys
from vitalwatch.simulators.endpoint import TcpClientEndpoint, connect_tcp
from vitalwatch.simulators.hl7 import Hl7Simulator, ObxRow, build_oru
from vitalwatch.simulators.scenarios import get_scenario

EUI_A = "00A0C9FFFE000001"
EUI_B = "00A0C9FFFE000002"
EUI_STRANGER = "00A0C9FFFE0000FF"


@dataclass
class FakeBed:
    """Records what a route reports, as the bed session (a LinkListener) would receive it."""

    bed: str
    events: list[tuple[str, Event]] = field(default_factory=list)
    links: list[tuple[bool, str]] = field(default_factory=list)

    @property
    def decoded(self) -> int:
        """Events that are data, not problems: what the engine takes as a sign of life."""
        return sum(1 for _, e in self.events if not isinstance(e, DecodeProblem))

    def on_events(self, device: str, events: list[Event], now: float) -> None:
        self.events += [(device, e) for e in events]

    def on_link(self, device: str, up: bool, now: float, reason: str) -> None:
        self.links.append((up, reason))

    def kinds(self) -> set[str]:
        return {e.kind for _, e in self.events if isinstance(e, Observation)}


def device(
    dev_id: str, *, eui64: str | None = None, location: str | None = None, port: int = 0
) -> DeviceConfig:
    return DeviceConfig(
        id=dev_id,
        driver="hl7",
        url=f"mllp://127.0.0.1:{port}",
        role="multi",
        serial=SerialSettings(),
        eui64=eui64,
        location=location,
    )


@contextlib.asynccontextmanager
async def running(routes: list[MllpRoute]) -> AsyncIterator[MllpListener]:
    """Run the routes (which keep their shared listener bound); yield the listener once bound."""
    tasks = [asyncio.create_task(r.run()) for r in routes]
    listener = routes[0]._server
    try:
        await wait_until(lambda: listener.bound_port is not None, 10.0, "the listener to bind")
        yield listener
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def monitor(eui64: str, location: str, *, resp_rate: bool = False, seed: int = 0) -> Hl7Simulator:
    return Hl7Simulator(
        get_scenario("normal", seed), seed=seed, eui64=eui64, location=location, period_s=0.2,
        resp_rate=resp_rate,
    )  # fmt: skip


def message(eui64: str, location: str, control: str = "1") -> bytes:
    rows = [ObxRow(150456, "MDC_PULS_OXIM_SAT_O2", "97", 262688, "MDC_DIM_PERCENT", "R", "1.3.1.150456", "")]
    return build_oru(control, "20250101120000", eui64, rows, location=location)


async def exchange(port: int, data: bytes, *, answers: int = 1) -> list[tuple[str, str, str]]:
    """Send raw bytes on a fresh connection, read ``answers`` ACKs back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        deframer = MllpDeframer()
        acks: list[tuple[str, str, str]] = []
        async with asyncio.timeout(10):
            while len(acks) < answers:
                chunk = await reader.read(65536)
                assert chunk, "connection closed before the ACK"
                for item in deframer.feed(chunk):
                    assert isinstance(item, bytes)
                    ack = parse_ack(item)
                    assert ack is not None
                    acks.append(ack)
        return acks
    finally:
        writer.close()


async def closed_within(reader: asyncio.StreamReader, within_s: float) -> bool:
    """True when the server closes the connection (EOF or reset) within ``within_s``."""
    try:
        async with asyncio.timeout(within_s):
            while await reader.read(65536):
                pass
        return True
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False


def test_sender_keys_read_msh3_eui64_and_pv1_3_without_touching_pid() -> None:
    keys = sender_keys(message("00-a0-c9-ff-fe-00-00-01".replace("-", ""), "ICU^^BED3^^"))
    assert keys is not None
    assert keys.eui64 == EUI_A and keys.location == "ICU^^BED3"
    assert sender_keys(b"not an hl7 message") is None
    # Other delimiters: read from MSH-1/MSH-2 like the driver does.
    odd = message(EUI_B, "ICU^^BED3").replace(b"|", b"#").replace(b"^", b"!")
    other = sender_keys(odd)
    assert other is not None and other.eui64 == EUI_B and other.location == "ICU^^BED3"


@pytest.mark.asyncio
async def test_several_monitors_at_once_are_routed_by_eui64_and_by_location() -> None:
    """Three monitors connected together: one routed by MSH-3 EUI-64, one by PV1-3, each to its own bed."""
    hub = MllpHub(link_timeout_s=5.0)
    by_eui, by_place, third = FakeBed("chair-1"), FakeBed("chair-2"), FakeBed("chair-3")
    routes = [
        hub.link(device("mon-a", eui64=EUI_A), by_eui),
        hub.link(device("mon-b", location="ICU^^BED2"), by_place),
        hub.link(device("mon-c", location="ICU^^BED3"), third),
    ]
    assert len(hub.listeners) == 1  # one address, one listener, shared
    async with running(routes) as listener:
        port = listener.bound_port
        assert port is not None
        sims = [
            monitor(EUI_A, "SOMEWHERE^^ELSE", resp_rate=True, seed=1),  # routed by its EUI-64
            monitor(EUI_B, "ICU^^BED2", seed=2),  # routed by its location
            monitor("00A0C9FFFE000003", "ICU^^BED3", resp_rate=True, seed=3),
        ]
        async with contextlib.AsyncExitStack() as stack:
            for sim in sims:
                await stack.enter_async_context(connect_tcp(sim, host="127.0.0.1", port=port, speed=5.0))
            await wait_until(
                lambda: all(s.acked >= 5 for s in sims), 10.0, "every monitor to be acknowledged 5 times"
            )
            assert listener.connection_count == 3
    assert all(s.errors == 0 for s in sims)
    # Respiratory rate only where its monitor sends it: nothing crossed between beds.
    assert {"spo2", "pulse_rate", "resp_rate"} <= by_eui.kinds()
    assert "resp_rate" not in by_place.kinds() and "spo2" in by_place.kinds()
    assert "resp_rate" in third.kinds()
    rr = [e.value for _, e in by_eui.events if isinstance(e, Observation) and e.kind == "resp_rate"]
    assert rr and all(v == 14.0 for v in rr)
    assert routes[0].accepted >= 5 and routes[1].accepted >= 5
    assert by_eui.links[0] == (True, "listening")


@pytest.mark.asyncio
async def test_an_unknown_sender_gets_ae_and_is_logged_without_patient_data() -> None:
    bed = FakeBed("chair-1")
    routes = [MllpHub().link(device("mon-a", eui64=EUI_A), bed)]
    async with running(routes) as listener:
        assert listener.bound_port is not None
        with capture_logs() as logs:
            acks = await exchange(listener.bound_port, encode_block(message(EUI_STRANGER, "WARD^^9", "77")))
        code, control, text = acks[0]
        assert (code, control) == ("AE", "77") and "unknown sender" in text
        assert not bed.events  # nothing of the stranger's reached the bed
        # The configured EUI-64 routes, whatever (unconfigured) location the message names.
        known = encode_block(message(EUI_A, "WARD^^9", "78"))
        assert (await exchange(listener.bound_port, known))[0][:2] == ("AA", "78")
    assert listener.unknown_senders == 1
    assert [e.kind for _, e in bed.events if isinstance(e, Observation)] == ["spo2"]
    unknown = [entry for entry in logs if entry["event"] == "mllp.unknown_sender"]
    assert len(unknown) == 1
    assert unknown[0]["eui64"] == EUI_STRANGER and unknown[0]["location"] == "WARD^^9"
    flat = repr(logs)
    assert "SIMULATED" not in flat and "SIM-0001" not in flat  # PID never reaches a log line


@pytest.mark.asyncio
async def test_ambiguous_sender_is_refused_not_guessed() -> None:
    hub = MllpHub()
    a, b = FakeBed("chair-1"), FakeBed("chair-2")
    routes = [hub.link(device("mon-a", eui64=EUI_A), a), hub.link(device("mon-b", location="ICU^^BED2"), b)]
    async with running(routes) as listener:
        assert listener.bound_port is not None
        acks = await exchange(listener.bound_port, encode_block(message(EUI_A, "ICU^^BED2")))
    assert acks[0][0] == "AE" and "ambiguous" in acks[0][2]
    assert not a.events and not b.events


@pytest.mark.asyncio
async def test_a_sender_that_stops_takes_its_link_down_and_only_its_own() -> None:
    """Link state is 'an accepted message within the link timeout', per device."""
    hub = MllpHub(link_timeout_s=0.6)
    quiet, busy = FakeBed("chair-1"), FakeBed("chair-2")
    routes = [hub.link(device("mon-a", eui64=EUI_A), quiet), hub.link(device("mon-b", eui64=EUI_B), busy)]
    async with running(routes) as listener:
        port = listener.bound_port
        assert port is not None
        assert not routes[0].connected  # listening, but nothing heard yet
        going = monitor(EUI_A, "X^^1", seed=1)
        staying = monitor(EUI_B, "X^^2", seed=2)
        async with connect_tcp(staying, host="127.0.0.1", port=port, speed=5.0):
            async with connect_tcp(going, host="127.0.0.1", port=port, speed=5.0):
                await wait_until(lambda: routes[0].connected and routes[1].connected, 10.0, "both links up")
            heard = quiet.decoded
            await wait_until(lambda: not routes[0].connected, 5.0, "the stopped sender's link to drop")
            assert routes[1].connected
            assert quiet.decoded == heard  # nothing told the engine it is alive any more


@pytest.mark.asyncio
async def test_rejected_messages_do_not_keep_a_link_alive() -> None:
    """A routed message the driver answers AE (a value that is not a number) is not a sign of life."""
    bed = FakeBed("chair-1")
    routes = [MllpHub().link(device("mon-a", eui64=EUI_A), bed)]
    bad = message(EUI_A, "X^^1").replace(b"|97|", b"|9x7|")
    async with running(routes) as listener:
        assert listener.bound_port is not None
        acks = await exchange(listener.bound_port, encode_block(bad))
    assert acks[0][0] == "AE"
    assert routes[0].accepted == 0 and not routes[0].connected
    # The bed hears of the problem, and of no data: the engine keeps no link alive on problems.
    assert [type(e) for _, e in bed.events] == [DecodeProblem] and bed.decoded == 0
    assert routes[0].decode_problems == 1


async def _good_monitor_survives(
    limits: ListenerLimits, attack: Callable[[int], Awaitable[Any]]
) -> tuple[Hl7Simulator, Any]:
    """Run one well-behaved monitor while ``attack(port)`` misbehaves on its own connection."""
    hub = MllpHub(limits=limits)
    bed = FakeBed("chair-1")
    routes = [hub.link(device("mon-a", eui64=EUI_A), bed)]
    sim = monitor(EUI_A, "X^^1")
    async with running(routes) as listener:
        port = listener.bound_port
        assert port is not None
        async with connect_tcp(sim, host="127.0.0.1", port=port, speed=5.0) as ep:
            await wait_until(lambda: sim.acked >= 2, 10.0, "the good monitor's first ACKs")
            result = await attack(port)
            before = sim.acked
            await wait_until(
                lambda: sim.acked >= before + 3, 10.0, "the good monitor to go on being acknowledged"
            )
            assert isinstance(ep, TcpClientEndpoint) and ep.connections == 1  # never dropped
    return sim, result


@pytest.mark.asyncio
async def test_garbage_costs_only_its_own_connection() -> None:
    limits = ListenerLimits(max_bad_frames=3)

    async def attack(port: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(5):
            writer.write(b"\x0bGARBAGE NOT HL7\x1c\r" + bytes(range(256)))
        await writer.drain()
        closed = await closed_within(reader, 5.0)
        writer.close()
        return closed

    _, closed = await _good_monitor_survives(limits, attack)
    assert closed


@pytest.mark.asyncio
async def test_a_huge_frame_is_dropped_bounded_and_the_connection_goes_on() -> None:
    limits = ListenerLimits()

    async def attack(port: int) -> list[tuple[str, str, str]]:
        huge = b"\x0bMSH|" + b"A" * (2 * 1024 * 1024) + b"\x1c\r"  # 2 MiB, bound is 64 KiB
        return await exchange(port, huge + encode_block(message(EUI_A, "X^^1", "after")))

    _, acks = await _good_monitor_survives(limits, attack)
    assert acks == [("AA", "after", "")]  # the oversized block was skipped, the next one read


@pytest.mark.asyncio
async def test_slowloris_is_cut_off_at_the_message_deadline() -> None:
    limits = ListenerLimits(message_timeout_s=0.5)

    async def attack(port: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x0bMSH|^~\\&|")
        closed = False
        for _ in range(40):  # a byte every 0.1 s: never idle, never finishing
            if writer.is_closing() or reader.at_eof():
                break
            with contextlib.suppress(ConnectionError, OSError):
                writer.write(b"A")
                await writer.drain()
            if await closed_within(reader, 0.1):
                closed = True
                break
        writer.close()
        return closed

    _, closed = await _good_monitor_survives(limits, attack)
    assert closed


@pytest.mark.asyncio
async def test_an_idle_connection_is_closed_and_the_connection_cap_holds() -> None:
    # Well above the good monitor's message period (0.04 s wall), so only the idle peer is cut.
    limits = ListenerLimits(idle_timeout_s=1.5, max_connections=2)

    async def attack(port: int) -> tuple[bool, bool]:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        over_reader, over_writer = await asyncio.open_connection("127.0.0.1", port)  # third one: refused
        refused = await closed_within(over_reader, 2.0)
        idle_closed = await closed_within(idle_reader, 5.0)
        idle_writer.close()
        over_writer.close()
        return refused, idle_closed

    _, (refused, idle_closed) = await _good_monitor_survives(limits, attack)
    assert refused and idle_closed


@pytest.mark.asyncio
async def test_a_driver_failure_is_that_devices_driver_fault_and_a_fresh_driver() -> None:
    """As on a serial port: the guard turns the exception into driver_fault; the connection stays."""
    hub = MllpHub()
    bed, other = FakeBed("chair-1"), FakeBed("chair-2")
    route = hub.link(device("mon-a", eui64=EUI_A), bed)
    bystander = hub.link(device("mon-b", eui64=EUI_B), other)

    def explode(data: bytes, now: float = 0.0) -> list[Event]:
        raise RuntimeError("driver bug")

    async with running([route, bystander]) as listener:
        port = listener.bound_port
        assert port is not None
        broken = route.driver
        assert broken is not None
        broken.feed = explode  # type: ignore[method-assign]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(encode_block(message(EUI_A, "X^^1", "1")))
            await wait_until(lambda: route.driver_faults == 1, 10.0, "the fault to be caught")
            assert DeviceStatus("driver_fault", True, {"error": "RuntimeError"}) in [e for _, e in bed.events]
            # The other device, on the same connection, is answered meanwhile.
            writer.write(encode_block(message(EUI_B, "X^^2", "2")))
            deframer = MllpDeframer()
            async with asyncio.timeout(10):
                got = [a for a in deframer.feed(await reader.read(65536)) if isinstance(a, bytes)]
            assert parse_ack(got[0])[:2] == ("AA", "2")  # type: ignore[index]
            # While the driver restarts (1 s backoff) the monitor gets no ACK and resends, as after
            # a lost ACK; a fresh driver then answers it again.
            answer = None
            async with asyncio.timeout(10):
                for n in range(3, 1000):
                    writer.write(encode_block(message(EUI_A, "X^^1", str(n))))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.25):
                            got = [a for a in deframer.feed(await reader.read(65536)) if isinstance(a, bytes)]
                            answer = parse_ack(got[-1]) if got else None
                    if answer is not None and answer[0] == "AA":
                        break
            assert answer is not None and answer[0] == "AA"
        finally:
            writer.close()
    assert route.driver is not broken
    assert DeviceStatus("driver_fault", False) in [e for _, e in bed.events]
    assert not [e for _, e in other.events if isinstance(e, DeviceStatus)]


@pytest.mark.asyncio
async def test_a_port_in_use_is_a_vanished_port_until_it_can_be_bound() -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    bed = FakeBed("chair-1")
    route = MllpHub().link(device("mon-a", eui64=EUI_A, port=port), bed)
    task = asyncio.create_task(route.run())
    try:
        await wait_until(
            lambda: (False, "cannot listen") in bed.links, 10.0, "the bind failure to be reported"
        )
        blocker.close()
        await wait_until(lambda: (True, "listening") in bed.links, 20.0, "the listener to bind")
    finally:
        blocker.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
