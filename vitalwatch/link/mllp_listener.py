"""The MLLP listener: networked monitors connect over TCP and send IHE PCD-01; each message goes to its bed.

Why a listener and not a link per device: a networked monitor (Mindray, GE, a Philips gateway) is a
TCP *client* that connects to the gateway's HL7 port, and one connection may carry several beds (a
gateway) or a monitor may reconnect for every message. So the connection is not the device. Each
message names its sender (MSH-3 EUI-64 or PV1-3 location, :mod:`vitalwatch.link.mllp_routing`) and
is routed by that to a configured device, or answered AE and never routed by guess.

.. code-block:: text

    monitor ─TCP─▶ connection task: bounded MLLP deframer ─payload─▶ routing keys ─▶ MllpRoute (bed device)
        ◀── ACK ──────────────────────────────────────────────────── its own Hl7Driver: events + ACK
                                                                       └─▶ bed session (LinkListener)
    unknown / ambiguous sender ─▶ AE ACK (ERR 204), logged with the keys and the peer, counted

One driver per routed device, not per connection: the driver keeps the device's status edges
(demo, the device's own alarm), which belong to the bed whatever connection a message came on, and
a gateway interleaves beds on one connection. The listener does the framing (it must look at a
message before it knows the device), hands the driver exactly one framed message, and sends back on
the message's own connection the ACK the driver made; the driver is the same sans-I/O
:class:`~vitalwatch.drivers.hl7.Hl7Driver` a serial HL7 monitor uses.

Link state, as for a serial device: the device is "up" (``connected``) while the listener is
bound *and* a message routed to it was accepted (AA) within the link timeout (the alarm table's
``link_lost`` delay). The engine, as for a serial port, takes only decoded data as a sign of life,
so a sender that stops, or sends only what is refused, gets ``link_lost`` exactly as a silent
serial port does. A port that cannot be bound is a vanished port (``on_link`` down) and is
retried with the serial link's backoff.

One misbehaving client costs only its own connection: each connection is its own task with a
bounded deframer (``max_message_bytes``), a deadline for a message once it has started
(``message_timeout_s``, slowloris), a deadline for the next complete message (``idle_timeout_s``),
a cap on bad frames in a row, a bounded send buffer, and a cap on connections per listener. The
driver runs in the same :class:`~vitalwatch.link.driver_guard.DriverGuard` as a serial link's (an
exception is that device's ``driver_fault`` alarm and a fresh driver, the connection stays); any
other exception while handling a connection closes only that connection and is logged. No
patient data is logged: routing keys are a device id and a place.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from prometheus_client import Counter
from structlog.contextvars import bound_contextvars, clear_contextvars

from vitalwatch.config import DeviceConfig
from vitalwatch.drivers import make_driver
from vitalwatch.drivers.events import DecodeProblem
from vitalwatch.drivers.hl7 import DEFAULT_MAX_MESSAGE_BYTES, Delimiters, build_ack, msh_fields, parse_ack
from vitalwatch.drivers.mllp import EB, SB, MllpDeframer, encode_block
from vitalwatch.link.device_link import LinkListener, LinkTap, backoff_delay
from vitalwatch.link.guarded import GuardedDevice
from vitalwatch.link.mllp_routing import (
    MAX_KEY_CHARS,
    SenderKeys,
    parse_mllp_url,
    sender_keys,
)

__all__ = [
    "LISTENER_LIMITS",
    "ListenerLimits",
    "MllpHub",
    "MllpListener",
    "MllpRoute",
    "link_timeout_of",
]

log = structlog.get_logger("vitalwatch.link.mllp_listener")

MESSAGES = Counter(
    "vitalwatch_mllp_messages",
    "HL7 messages received by the MLLP listener, by outcome (accepted, rejected, unknown_sender, not_hl7)",
    ["listener", "outcome"],
)
CONNECTIONS_CLOSED = Counter(
    "vitalwatch_mllp_connections_closed",
    "MLLP connections closed, by reason (eof, idle, slow_message, bad_frames, send_backlog, full, error)",
    ["listener", "reason"],
)

# Reason text and HL7 table 0357 code for an unknown sender's AE.
_ERR_UNKNOWN_KEY = ("204", "Unknown key identifier")
DEFAULT_LINK_TIMEOUT_S = 10.0  # the default table's link_lost delay
UNKNOWN_LOG_EVERY_S = 60.0
MAX_UNKNOWN_KEYS = 256


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """What one client may cost; each limit closes only that client's connection."""

    max_connections: int = 64  # per listener; a gateway or 30 monitors fit, a connection flood does not
    idle_timeout_s: float = 300.0  # no complete message this long: a dead or stuck peer
    message_timeout_s: float = 10.0  # a started message must end within this (slowloris)
    max_bad_frames: int = 10  # garbage / oversized / unreadable frames in a row
    max_send_backlog: int = 256 * 1024  # ACK bytes the peer has not read
    send_timeout_s: float = 10.0  # a peer that does not read its ACKs
    read_chunk: int = 64 * 1024


LISTENER_LIMITS = ListenerLimits()


def link_timeout_of(alarms: object) -> float:
    """The alarm table's ``link_lost`` delay (the silence after which the engine raises it)."""
    rules_of = getattr(alarms, "rules_of", None)
    if callable(rules_of):
        rules = rules_of("link_lost")
        if rules:
            return float(rules[0].after_s)
    return DEFAULT_LINK_TIMEOUT_S


class MllpRoute(GuardedDevice):
    """One configured device fed by a listener: its guarded driver, link state and counters (a ``Link``)."""

    def __init__(
        self,
        config: DeviceConfig,
        listener: LinkListener,
        server: MllpListener,
        *,
        tap: LinkTap | None = None,
        link_timeout_s: float = DEFAULT_LINK_TIMEOUT_S,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            config, listener, lambda: make_driver(config.driver, **dict(config.options)), clock=clock
        )
        self._server = server
        self.tap = tap
        self._link_timeout_s = link_timeout_s
        self._rng = rng or random.Random()
        bed = getattr(listener, "bed", None)  # the bed session's id, for log lines
        self.bed: str | None = bed if isinstance(bed, str) else None
        self.accepted = 0
        self.last_accepted: float | None = None
        self.bound = False

    @property
    def connected(self) -> bool:
        """Listening, and an accepted message within the link timeout."""
        last = self.last_accepted
        return self.bound and last is not None and self.now() - last <= self._link_timeout_s

    def poke(self) -> None:
        """Nothing to do: the ACK for a message is sent with the message's handling."""

    async def run(self) -> None:
        """Keep the shared listener bound while this device is configured; retry a port in use."""
        with bound_contextvars(device=self.config.id, port=self.config.url):
            attempt = 0
            reported_down = False
            while True:
                try:
                    async with self._server.serving(self):
                        attempt = 0
                        reported_down = False
                        self.bound = True
                        now = self.now()
                        self._listener.on_link(self.config.id, True, now, "listening")
                        self._deliver(self.guard.start(now), now)
                        try:
                            await asyncio.Event().wait()  # until cancelled
                        finally:
                            self.bound = False
                except OSError as exc:
                    if not reported_down:
                        log.warning("mllp.listen_failed", error=exc.strerror or str(exc))
                        self._listener.on_link(self.config.id, False, self.now(), "cannot listen")
                        reported_down = True
                await asyncio.sleep(backoff_delay(attempt, self._rng))
                attempt += 1

    def deliver(self, payload: bytes, now: float) -> bytes:
        """Feed one message to the guarded driver; the ACK bytes it made (MLLP-framed), maybe empty.

        Every routed message is recorded and its events go to the bed session, as a serial link
        hands on every chunk: only decoded data counts as a sign of life there, so a refused
        message (an AE, a decode problem) keeps no link alive. ``accepted`` and ``connected``
        count the AA-answered ones. No ACK while the driver is restarting after a fault: the
        monitor resends, as after a lost ACK.
        """
        block = encode_block(payload)
        if self.tap is not None:
            self.tap.raw(self.config.id, block, now)
        events = self.guard.feed(block, now)
        ack = self.guard.data_to_send()
        answer = parse_ack(ack.strip(bytes([SB, EB, 0x0D]))) if ack else None
        if answer is not None and answer[0] == "AA":
            self.accepted += 1
            self.last_accepted = now
        try:
            self._deliver(events, now)
        except Exception as exc:  # a failure in the bed session: this device's fault, not the connection's
            self.report_fault(exc, "deliver")
        return ack


class _Connection:
    """Per-connection counters for its limits and the close log line."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.messages = 0
        self.bad_in_row = 0
        self.block_started: float | None = None


class MllpListener:
    """One ``mllp://host:port``: the TCP server, its connections, and the routing table."""

    def __init__(
        self,
        url: str,
        *,
        limits: ListenerLimits = LISTENER_LIMITS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.url = url
        self.host, self.port = parse_mllp_url(url)
        self.limits = limits
        self._clock = clock
        self._by_eui64: dict[str, MllpRoute] = {}
        self._by_location: dict[str, MllpRoute] = {}
        self._users = 0
        self._bind_lock = asyncio.Lock()
        self._server: asyncio.Server | None = None
        # Unknown senders are logged once per UNKNOWN_LOG_EVERY_S per (EUI-64, location): a
        # monitor nobody configured sends every second and retries each message.
        self._unknown_logged: dict[tuple[str | None, str | None], tuple[float, int]] = {}
        self._connections: set[asyncio.Task[None]] = set()
        self.unknown_senders = 0
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    @property
    def bound_port(self) -> int | None:
        """The port actually bound (useful with port 0 in tests), or None while not listening."""
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def add_route(self, route: MllpRoute) -> None:
        """Register a device under its configured EUI-64 or location (ValueError on a clash)."""
        cfg = route.config
        size = cfg.options.get("max_block_bytes", DEFAULT_MAX_MESSAGE_BYTES)
        if isinstance(size, int):
            self.max_message_bytes = max(self.max_message_bytes, size)
        for key, table in ((cfg.eui64, self._by_eui64), (cfg.location, self._by_location)):
            if key is None:
                continue
            if key in table and table[key] is not route:
                raise ValueError(f"{key!r} already routes to device {table[key].config.id!r}")
            table[key] = route

    @contextlib.asynccontextmanager
    async def serving(self, route: MllpRoute) -> AsyncIterator[None]:
        """Listening while at least one route is running; OSError when the port cannot be bound."""
        async with self._bind_lock:  # the devices of one listener start together: bind once
            if self._server is None:
                self._server = await asyncio.start_server(
                    self._accept, self.host, self.port, limit=self.limits.read_chunk
                )
                log.info("mllp.listening", listener=self.url, port=self.bound_port)
            self._users += 1
        try:
            yield
        finally:
            self._users -= 1
            if self._users == 0:
                await self.close()

    async def close(self) -> None:
        """Stop listening and end every connection (daemon stop)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    # -- routing ---------------------------------------------------------------------------------

    def route_for(self, keys: SenderKeys) -> tuple[MllpRoute | None, str]:
        """The device a message belongs to, or None and why (unknown or ambiguous sender)."""
        by_eui = self._by_eui64.get(keys.eui64) if keys.eui64 is not None else None
        by_loc = self._by_location.get(keys.location) if keys.location is not None else None
        if by_eui is not None and by_loc is not None and by_eui is not by_loc:
            return None, "ambiguous sender: its EUI-64 and its location name different devices"
        route = by_eui or by_loc
        if route is None:
            return None, "unknown sender: neither its EUI-64 (MSH-3) nor its location (PV1-3) is configured"
        return route, ""

    def handle_message(self, payload: bytes, peer: str) -> tuple[bytes, str]:
        """One complete message: (ACK bytes to send back, outcome)."""
        now = self.now()
        keys = sender_keys(payload)
        if keys is None:
            log.info("mllp.not_hl7", listener=self.url, peer=peer, length=len(payload))
            return b"", "not_hl7"
        route, why = self.route_for(keys)
        if route is None:
            self.unknown_senders += 1
            self._log_unknown(keys, peer, why, now)
            return _refusal(payload, why), "unknown_sender"
        with bound_contextvars(bed=route.bed, device=route.config.id):
            ack = route.deliver(payload, now)
        answer = parse_ack(ack.strip(bytes([SB, EB, 0x0D]))) if ack else None
        return ack, "accepted" if answer is not None and answer[0] == "AA" else "rejected"

    def _log_unknown(self, keys: SenderKeys, peer: str, why: str, now: float) -> None:
        """A warning per sender key at most every UNKNOWN_LOG_EVERY_S, with how many were refused."""
        key = (keys.eui64, keys.location)
        last, refused = self._unknown_logged.get(key, (float("-inf"), 0))
        refused += 1
        if now - last < UNKNOWN_LOG_EVERY_S:
            self._unknown_logged[key] = (last, refused)
            return
        if len(self._unknown_logged) >= MAX_UNKNOWN_KEYS:  # bounded: forget the oldest
            del self._unknown_logged[next(iter(self._unknown_logged))]
        self._unknown_logged[key] = (now, 0)
        log.warning(
            "mllp.unknown_sender",
            listener=self.url,
            peer=peer,
            eui64=keys.eui64,
            location=None if keys.location is None else keys.location[:MAX_KEY_CHARS],
            refused=refused,
            reason=why,
        )

    # -- connections -----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # This task inherited the log context of the route that bound the server: a connection
        # is not that device, so its lines carry the listener and peer only.
        clear_contextvars()
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        task = asyncio.current_task()
        if len(self._connections) >= self.limits.max_connections or task is None:
            log.warning(
                "mllp.connection_refused", listener=self.url, peer=peer, reason="too many connections"
            )
            CONNECTIONS_CLOSED.labels(self.url, "full").inc()
            writer.close()
            return
        self._connections.add(task)
        reason = "error"
        try:
            with bound_contextvars(listener=self.url, peer=peer):
                log.info("mllp.connected")
                reason = await self._serve(reader, writer, _Connection(peer))
        except asyncio.CancelledError:
            # The listener is closing. Not re-raised: the task ends here anyway, and on 3.11 the
            # stream server's done-callback logs a cancelled handler task as an error.
            reason = "stopped"
        except Exception as exc:  # one client's failure (or a driver bug) ends only this connection
            log.error("mllp.connection_failed", listener=self.url, peer=peer, error=type(exc).__name__)
        finally:
            self._connections.discard(task)
            CONNECTIONS_CLOSED.labels(self.url, reason).inc()
            log.info("mllp.disconnected", listener=self.url, peer=peer, reason=reason)
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Connection
    ) -> str:
        """Read, frame, route and answer until the peer goes or breaks a limit; the reason."""
        limits = self.limits
        deframer = MllpDeframer(max_block_bytes=self.max_message_bytes)
        last_message = self.now()
        while True:
            now = self.now()
            wait = last_message + limits.idle_timeout_s - now
            if conn.block_started is not None:
                wait = min(wait, conn.block_started + limits.message_timeout_s - now)
            if wait <= 0:
                return "slow_message" if conn.block_started is not None else "idle"
            try:
                async with asyncio.timeout(wait):
                    data = await reader.read(limits.read_chunk)
            except TimeoutError:
                continue  # the deadline check above names the reason
            if not data:
                return "eof"
            out = bytearray()
            for item in deframer.feed(data):
                if isinstance(item, DecodeProblem):
                    conn.bad_in_row += 1
                    MESSAGES.labels(self.url, "bad_frame").inc()
                    log.info("mllp.frame_problem", reason=item.reason, length=item.length)
                    continue
                ack, outcome = self.handle_message(item, conn.peer)
                MESSAGES.labels(self.url, outcome).inc()
                conn.bad_in_row = conn.bad_in_row + 1 if outcome == "not_hl7" else 0
                conn.messages += 1
                last_message = self.now()
                out += ack
            if conn.bad_in_row >= limits.max_bad_frames:
                return "bad_frames"
            conn.block_started = (conn.block_started or self.now()) if deframer.in_block else None
            if out:
                writer.write(bytes(out))
                if writer.transport.get_write_buffer_size() > limits.max_send_backlog:
                    return "send_backlog"
                try:
                    async with asyncio.timeout(limits.send_timeout_s):
                        await writer.drain()
                except TimeoutError:
                    return "send_backlog"
            # Let the other connections in between two chunks of a fast sender.
            await asyncio.sleep(0)


def _refusal(payload: bytes, reason: str) -> bytes:
    """The AE ACK for a message that cannot be routed (framed, in the message's delimiters)."""
    text = payload.decode("utf-8", errors="replace").replace("\r\n", "\r").replace("\n", "\r")
    text = text.strip(" \t\r\x0c")
    d = Delimiters.from_msh(text)
    if d is None:  # sender_keys found an MSH, so this does not happen; no ACK without one
        return b""
    msh = msh_fields(text, d)
    ack = build_ack(msh, d, "AE", reason, _ERR_UNKNOWN_KEY, control_id=f"VWR{msh[9][:20]}", when=msh[6])
    return encode_block(ack.encode("utf-8"))


class MllpHub:
    """The daemon's listeners, one per configured ``mllp://`` address, shared by its devices."""

    def __init__(
        self, *, link_timeout_s: float = DEFAULT_LINK_TIMEOUT_S, limits: ListenerLimits = LISTENER_LIMITS
    ) -> None:
        self.link_timeout_s = link_timeout_s
        self.limits = limits
        self.listeners: dict[tuple[str, int], MllpListener] = {}

    def link(self, config: DeviceConfig, listener: LinkListener, *, tap: LinkTap | None = None) -> MllpRoute:
        """The route (a device ``Link``) for ``config``, registered on its address's listener."""
        host, port = parse_mllp_url(config.url)
        server = self.listeners.get((host, port))
        if server is None:
            server = self.listeners[(host, port)] = MllpListener(config.url, limits=self.limits)
        route = MllpRoute(config, listener, server, tap=tap, link_timeout_s=self.link_timeout_s)
        server.add_route(route)
        return route
