"""A Masimo Rad-8 / Radical pulse oximeter printing ASCII 1 lines, one per second.

Bytes come from :func:`vitalwatch.drivers.masimo.encode_line`, the driver's own encoder, so
what the simulator prints and what the driver parses are the same truth (house style §8).

How the scenario maps to the device (RAD8MAN p.4-24 exception names; device-protocols.md §1.2):

=====================  ==================================================================
scenario               line
=====================  ==================================================================
normal                 values, ``EXC=000800`` (Masimo SET running), ``ALARM=0000``
probe_off (first       ``SPO2=---% BPM=---``, ``EXC=000828`` (sensor off + pulse search +
``search_s`` s)        SET): the device searches before it declares the sensor off
probe_off (after)      dashes, ``EXC=000820`` (sensor off + SET)
probe back on (first   dashes, ``EXC=000808`` (pulse search): re-acquiring the pulse
``reacquire_s`` s)
artifact               the last good values held, ``EXC=000810`` (interference + SET); SET
                       keeps showing its last reading through motion [unconfirmed]
silent                 nothing at all (cable pulled); the clock keeps running
=====================  ==================================================================

ALARM bits follow the device's own limits (MDPNP ``alarmmessage()``): 0x02 SpO2 low, 0x04 PR
high, 0x08 PR low, with 0x10 "alarm active". The defaults 88 % / 140 / 50 are what we take to be
the Rad-8 factory limits [unconfirmed]; they are constructor options.

The device clock is ``clock_start`` + scenario time (a fixed date, so runs are repeatable).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

import numpy as np

from vitalwatch.drivers.base import SerialSettings
from vitalwatch.drivers.masimo import encode_line
from vitalwatch.simulators.base import Scenario
from vitalwatch.simulators.scenarios import GridScenario

__all__ = ["DEFAULT_CLOCK_START", "MasimoSimulator"]

DEFAULT_CLOCK_START = datetime(2024, 3, 4, 9, 0, 0)

EXC_SET = 0x800
EXC_SEARCH = 0x008
EXC_INTERFERENCE = 0x010
EXC_SENSOR_OFF = 0x020
ALARM_SPO2_LOW = 0x02
ALARM_PR_HIGH = 0x04
ALARM_PR_LOW = 0x08
ALARM_ACTIVE = 0x10

_EPS = 1e-6  # float slack so a poll at t=2.9999999 still emits the line due at 3
_BLOCK_S = 300  # a grid scenario's seconds are read this many at a time (MasimoSimulator._second)

# What a line takes from the scenario at its second: spo2, pulse rate, perfusion index, probe off,
# artifact, silent.
_Second = tuple[float, float, float, bool, bool, bool]


class MasimoSimulator:
    """Prints one ASCII 1 line per second of scenario time (lines at t = 0, 1, 2, ... duration)."""

    device: ClassVar[str] = "masimo"
    serial: ClassVar[SerialSettings] = SerialSettings(baudrate=9600)

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        *,
        model: str = "rad8",
        serial_number: str | None = "0000056661",
        clock_start: datetime | str = DEFAULT_CLOCK_START,
        search_s: float = 5.0,
        reacquire_s: float = 4.0,
        spo2_low_limit: float = 88.0,
        pr_high_limit: float = 140.0,
        pr_low_limit: float = 50.0,
    ) -> None:
        """``seed`` is accepted for the common constructor; the noise lives in the scenario."""
        if model not in ("rad8", "radical5", "radical7"):
            raise ValueError(f"unknown Masimo model {model!r} (rad8, radical5, radical7)")
        self.scenario = scenario
        self.seed = seed
        self.model = model
        self.serial_number = serial_number
        self.clock_start = (
            datetime.fromisoformat(clock_start) if isinstance(clock_start, str) else clock_start
        )
        self.search_s = float(search_s)
        self.reacquire_s = float(reacquire_s)
        self.spo2_low_limit = float(spo2_low_limit)
        self.pr_high_limit = float(pr_high_limit)
        self.pr_low_limit = float(pr_low_limit)
        self._next = 0  # index (= scenario second) of the next line
        self._off_since: float | None = None  # when the probe came off
        self._on_since: float | None = None  # when it went back on (re-acquiring)
        self._held: tuple[int, int, float] | None = None  # last good (spo2, pr, pi)
        self._block_of: Scenario | None = None  # the scenario _block was read from
        self._block_start = 0  # the first second of _block
        self._block: list[_Second] = []

    def poll(self, now: float) -> bytes:
        """Every line due up to ``now`` (all of them at once if the caller was late)."""
        if self._next > now + _EPS:
            return b""  # most polls come between two seconds
        out = bytearray()
        while self._next <= now + _EPS and self._next <= self.scenario.duration + _EPS:
            t = float(self._next)
            self._next += 1
            line = self._line(t, self._second(t))
            if line is not None:
                out += line
        return bytes(out)

    def _second(self, t: float) -> _Second:
        """The scenario at second ``t``: a grid scenario's (a pure function of time) read for
        ``_BLOCK_S`` seconds at once, the same numbers as ``state_at``; any other scenario's
        asked when the line is due."""
        if not isinstance(self.scenario, GridScenario):
            st = self.scenario.state_at(t)
            return st.spo2, st.pulse_rate, st.perfusion_index, st.probe_off, st.artifact, st.silent
        k = int(t) - self._block_start
        if not 0 <= k < len(self._block) or self._block_of is not self.scenario:
            self._block_of, self._block_start, k = self.scenario, int(t), 0
            times = np.arange(self._block_start, self._block_start + _BLOCK_S, dtype=np.float64)
            values, flags = self.scenario.columns_at(times)
            self._block = list(zip(*values[:3].tolist(), *flags[:3].tolist(), strict=True))
        return self._block[k]

    def receive(self, data: bytes, now: float) -> None:
        """ASCII 1 is output-only; the real device ignores whatever the host sends."""

    def next_deadline(self) -> float | None:
        """The next whole second, or None after the scenario's last line."""
        if self._next > self.scenario.duration + _EPS:
            return None
        return float(self._next)

    def _line(self, t: float, second: _Second) -> bytes | None:
        """The line for second ``t``; advances the probe state even when silent."""
        spo2_now, pr_now, pi_now, probe_off, artifact, silent = second
        if probe_off:
            if self._off_since is None:
                self._off_since = t
            self._on_since = None
        elif self._off_since is not None:
            self._off_since = None
            self._on_since = t
        if self._on_since is not None and t - self._on_since >= self.reacquire_s:
            self._on_since = None

        spo2: int | None
        pr: int | None
        pi: float | None
        if self._off_since is not None:
            searching = t - self._off_since < self.search_s
            exc = EXC_SET | EXC_SENSOR_OFF | (EXC_SEARCH if searching else 0)
            spo2 = pr = pi = None
            self._held = None
        elif self._on_since is not None:
            exc = EXC_SET | EXC_SEARCH
            spo2 = pr = pi = None
        elif artifact and self._held is not None:
            exc = EXC_SET | EXC_INTERFERENCE
            spo2, pr, pi = self._held
        else:
            exc = EXC_SET | (EXC_INTERFERENCE if artifact else 0)
            spo2 = max(0, min(100, round(spo2_now)))
            pr = max(0, min(999, round(pr_now)))
            pi = max(0.0, min(99.99, round(pi_now, 2)))
            self._held = (spo2, pr, pi)

        if silent:
            return None
        return encode_line(
            when=self.clock_start + timedelta(seconds=t),
            spo2=spo2,
            pulse_rate=pr,
            perfusion_index=pi,
            exc=exc,
            alarm=self._alarm(spo2, pr),
            serial_number=self.serial_number,
            model=self.model,
        )

    def _alarm(self, spo2: int | None, pr: int | None) -> int:
        """The device's own limit alarms (the bedside monitor stays the primary alarm)."""
        bits = 0
        if spo2 is not None and spo2 < self.spo2_low_limit:
            bits |= ALARM_SPO2_LOW
        if pr is not None and pr > self.pr_high_limit:
            bits |= ALARM_PR_HIGH
        if pr is not None and pr < self.pr_low_limit:
            bits |= ALARM_PR_LOW
        return bits | ALARM_ACTIVE if bits else 0
