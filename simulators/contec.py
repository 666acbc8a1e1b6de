"""Contec CMS50D+/CMS50E simulator, old 5-byte or V7 9-byte protocol, byte-exact with the driver.

Uses the driver's encoders (:mod:`vitalwatch.drivers.contec`), ``device-protocols.md`` §1.4.

``protocol="old"`` (19200 8O1): streams 60 live packets per second from the start, unasked.

``protocol="new"`` (V7, 115200 8N1): silent until the host sends the start command
``7D 81 A1 80 ...``; then 60 real-time packets per second (rate from the titinho11 CMS50E
README). The stream stops when no keep-alive (``AF``) or start command has arrived for
``keepalive_timeout`` seconds. That a V7 device stops without keep-alives, and after how long,
is **[unconfirmed]**: HEADROTOR sends AF every 100 packets and wonders whether it is needed;
5 s is our default, and ``keepalive_timeout=None`` streams forever. The info commands of the
HEADROTOR capture (A7, A2, A0, B0, AC, B3, A8, AA, A9) are answered with the captured replies.

Equipment conditions -> device markers:

- old: ``probe_off`` -> finger-out bit, signal 0, pulse 0xFF, SpO2 0x7F (markers
  [unconfirmed], as in the driver); ``artifact`` -> searching bit, signal 1.
- V7: ``probe_off`` -> pleth byte 0x80 (so the high byte has bit 1 set, HEADROTOR's ``E2``
  "nothing valid"), pulse 0xFF, SpO2 0x7F; ``artifact`` -> status byte 0x85 (high-byte bit 0,
  HEADROTOR's ``E1`` "pulse/SpO2 not valid") with the values still sent.
- ``silent``: nothing is sent (keep-alives are still heard).

The V7 bytes this simulator invents: d2 is 0x05 (as captured), d4 is a bar value, d7 d8 are
FF FF (as captured).
"""

from __future__ import annotations

import random
from typing import ClassVar, Literal

from vitalwatch.drivers.base import SerialSettings
from vitalwatch.drivers.contec import (
    KEEP_ALIVE,
    NEW_SERIAL,
    START_REALTIME,
    OldPacket,
    V7Packet,
    encode_old,
    encode_v7,
)
from vitalwatch.simulators.base import PatientState, Scenario
from vitalwatch.simulators.bci import PacketClock, PulseShape, clamp, signal_strength

__all__ = ["INFO_REPLIES", "ContecSimulator"]

# Replies captured by HEADROTOR (tests/vectors/contec_berrymed/cms50dplus_v7_capture_headrotor.txt).
INFO_REPLIES: dict[int, bytes] = {
    0xA7: bytes.fromhex("0C80"),
    0xA2: bytes.fromhex("0C80"),
    0xA0: bytes.fromhex("06808087"),
    0xB0: bytes.fromhex("118081818080808080"),
    0xAC: bytes.fromhex("0E8081"),
    0xB3: bytes.fromhex("13 80 A0 A0 A0 A0 A0 A0 A0 14 80 A0 A0 A0 A0 A0 80 80"),
    0xA8: bytes.fromhex("02 80 80 A0 A0 A0 A0 A0 A0 02 81 FF A0 A0 A0 A0 A0 A0"),
    0xAA: bytes.fromhex("04 80 F5 F3 E5 F2 A0 A0 A0"),
    0xA9: bytes.fromhex("03 80 A0 A0 A0 A0 A0 A0 A0"),
}
_CMD_PREFIX = b"\x7d\x81"
_CMD_LEN = 9


class ContecSimulator:
    """A Contec CMS50D+ in the old or the V7 protocol, driven by a scenario."""

    device: ClassVar[str] = "contec"
    serial: ClassVar[SerialSettings] = NEW_SERIAL  # old devices: ContecDriver.serial_for("old")

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        *,
        protocol: Literal["old", "new"] = "new",
        rate: float = 60.0,
        keepalive_timeout: float | None = 5.0,
    ) -> None:
        if protocol not in ("old", "new"):
            raise ValueError(f"protocol must be 'old' or 'new', not {protocol!r}")
        self.protocol = protocol
        self._scenario = scenario
        self._rng = random.Random(seed)
        self._clock = PacketClock(rate)
        self._shape = PulseShape(self._rng)
        # The old live stream needs no keep-alive; only V7 times out.
        self._timeout = keepalive_timeout if protocol == "new" else None
        self._streaming = protocol == "old"
        self._alive_at = 0.0  # last start/keep-alive time
        self._pending = bytearray()  # generated before a command arrived, not yet polled
        self._rx = bytearray()

    @property
    def streaming(self) -> bool:
        """True while the device sends real-time packets."""
        return self._streaming

    # -- DeviceSimulator protocol -----------------------------------------------------------

    def poll(self, now: float) -> bytes:
        """Bytes due up to ``now``: command replies and packets in time order."""
        self._generate(now)
        out = bytes(self._pending)
        self._pending.clear()
        return out

    def receive(self, data: bytes, now: float) -> None:
        """Handle V7 commands at time ``now`` (packets before ``now`` are generated first)."""
        if self.protocol == "old":
            return  # the old live stream takes no commands (F5 F5 download is not simulated)
        self._generate(now)
        self._rx += data
        while True:
            start = self._rx.find(_CMD_PREFIX)
            if start < 0:
                del self._rx[: max(0, len(self._rx) - 1)]
                return
            if len(self._rx) - start < _CMD_LEN:
                del self._rx[:start]
                return
            command = bytes(self._rx[start : start + _CMD_LEN])
            del self._rx[: start + _CMD_LEN]
            self._command(command, now)

    def next_deadline(self) -> float | None:
        """Next packet time, or None while idle (V7 before start / after the stream died)."""
        if not self._streaming:
            return None
        t = self._clock.next_time()
        if t >= self._scenario.duration:
            return None
        if self._timeout is not None:
            return min(t, self._alive_at + self._timeout)
        return t

    # -- internals --------------------------------------------------------------------------

    def _command(self, command: bytes, now: float) -> None:
        if command == START_REALTIME:
            if not self._streaming:
                self._streaming = True
                self._clock.restart(now)
            self._alive_at = now
        elif command == KEEP_ALIVE:
            self._alive_at = now
        elif command[2] in INFO_REPLIES and command[3:] == b"\x80" * 6:
            self._pending += INFO_REPLIES[command[2]]

    def _generate(self, now: float) -> None:
        if not self._streaming:
            return
        end = self._scenario.duration
        if self._timeout is not None:
            # Without keep-alives the V7 device stops streaming [unconfirmed, see docstring].
            end = min(end, self._alive_at + self._timeout)
        for t in self._clock.due(now, end):
            state = self._scenario.state_at(t)
            packet = self._packet(state)
            if not state.silent:
                self._pending += packet
        if self._timeout is not None and now >= self._alive_at + self._timeout:
            self._streaming = False

    def _packet(self, state: PatientState) -> bytes:
        amplitude, beat = self._shape.step(state.pulse_rate, self._clock.period)
        pulse = clamp(state.pulse_rate, 0, 254)
        spo2 = clamp(state.spo2, 0, 100)
        pleth = clamp(1 + amplitude * 99, 1, 100)
        bar = clamp(1 + amplitude * 14, 1, 15)
        if self.protocol == "old":
            if state.probe_off:
                return encode_old(OldPacket(finger_out=True))
            return encode_old(
                OldPacket(
                    signal_strength=1 if state.artifact else signal_strength(state),
                    beep=beat,
                    pleth=pleth,
                    bar=bar,
                    searching=state.artifact,
                    pulse_rate=pulse,
                    spo2=spo2,
                )
            )
        if state.probe_off:
            return encode_v7(V7Packet(data=(0x05, 0x80, 0, 0xFF, 0x7F, 0xFF, 0xFF)))
        status = 0x85 if state.artifact else 0x05
        return encode_v7(V7Packet(data=(status, pleth, bar, pulse, spo2, 0xFF, 0xFF)))
