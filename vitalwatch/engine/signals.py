"""What the engine knows about each measured signal: the held value, its validity, NIBP readings.

Continuous signals (SpO2, pulse rate) arrive about once a second. Between samples the last
value is *held* for ``hold_s``; after that the signal is absent. A sample is valid when it
has a value (``None`` is the device's "no value") and no unreliable status
(:data:`vitalwatch.drivers.vocabulary.UNRELIABLE_STATUSES`) is active on its device. Timers
that need "N s of valid signal" ask :meth:`Signal.credit` how much of an interval was valid,
so invalid or absent signal pauses them without clearing them.

NIBP is episodic: one reading is the systolic, diastolic (and mean) observations that a
device sends at the same instant. :class:`NibpAssembler` groups them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vitalwatch.engine.snapshot import encode_number
from vitalwatch.engine.vocabulary import PHASES

if TYPE_CHECKING:
    from vitalwatch.engine.snapshot import StateReader

__all__ = ["NibpAssembler", "NibpReading", "Sample", "Signal", "fmt"]


def fmt(value: float | None) -> str:
    """A reading as a nurse reads it: 86, 36.5; '--' for no value."""
    if value is None:
        return "--"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a continuous signal at engine time ``t``."""

    t: float
    value: float | None
    valid: bool
    device: str

    def to_state(self) -> dict[str, Any]:
        """Snapshot form (:mod:`vitalwatch.engine.snapshot`)."""
        return {"t": self.t, "value": encode_number(self.value), "valid": self.valid, "device": self.device}

    @classmethod
    def from_state(cls, r: StateReader) -> Sample:
        return cls(r.when("t"), r.opt_number("value"), r.flag("valid"), r.text("device"))


class Signal:
    """A continuous parameter: the held sample and since when it has been invalid or absent."""

    def __init__(self, name: str, hold_s: float) -> None:
        self.name = name
        self.hold_s = hold_s
        self.current: Sample | None = None
        # The last instant the signal was valid (None: never valid yet).
        self.valid_end: float | None = None

    def valid_at(self, t: float) -> bool:
        """Is there a valid, fresh value at ``t``?"""
        cur = self.current
        return cur is not None and cur.valid and t <= cur.t + self.hold_s

    def value_at(self, t: float) -> float | None:
        """The valid, fresh value at ``t``, else None (:meth:`valid_at`'s test, without the call:
        the engine asks at every evaluation of the recovery)."""
        cur = self.current
        return cur.value if cur is not None and cur.valid and t <= cur.t + self.hold_s else None

    def credit(self, t0: float, t1: float) -> float:
        """Seconds of ``[t0, t1]`` during which the held value was valid and fresh."""
        cur = self.current
        if cur is None or not cur.valid or t1 <= t0:
            return 0.0
        return max(0.0, min(t1, cur.t + self.hold_s) - max(t0, cur.t))

    def update(self, sample: Sample) -> None:
        """A new sample arrived (valid or not)."""
        if self.current is not None and self.current.valid:
            # The previous value was valid until now (or until it went stale).
            self.valid_end = min(sample.t, self.current.t + self.hold_s)
        self.current = sample
        if sample.valid:
            self.valid_end = sample.t

    def invalidate(self, device: str, t: float) -> None:
        """An unreliable status switched on at ``t`` for ``device``: the held value is not usable."""
        cur = self.current
        if cur is not None and cur.device == device and cur.valid:
            self.update(Sample(t, cur.value, False, device))

    def invalid_for(self, t: float, since: float) -> float:
        """How long, at ``t``, the signal has been invalid or absent, counting from ``since`` at most."""
        if self.valid_at(t):
            return 0.0
        cur = self.current
        end = self.valid_end
        if cur is not None and cur.valid:
            end = cur.t + self.hold_s
        start = since if end is None else max(end, since)
        return max(0.0, t - start)

    def snapshot(self) -> dict[str, Any]:
        """The held sample and the end of the last valid stretch (``hold_s`` comes from the table)."""
        cur = self.current
        return {"current": cur.to_state() if cur is not None else None, "valid_end": self.valid_end}

    def restore_state(self, r: StateReader) -> None:
        cur = r.opt_child("current")
        self.current = Sample.from_state(cur) if cur is not None else None
        self.valid_end = r.opt_when("valid_end")


@dataclass(frozen=True, slots=True)
class NibpReading:
    """One complete NIBP measurement; ``valid`` False when a value is missing or a cuff status was on."""

    t: float
    systolic: float | None
    diastolic: float | None
    mean: float | None
    valid: bool
    device: str
    phase: str

    def describe(self) -> str:
        """Evidence text, e.g. 't=610.0 BP 185/112 (136) mmHg (nibp)'."""
        mean = f" ({fmt(self.mean)})" if self.mean is not None else ""
        flag = "" if self.valid else " INVALID"
        return (
            f"t={self.t:.1f} BP {fmt(self.systolic)}/{fmt(self.diastolic)}{mean} mmHg ({self.device}){flag}"
        )

    def to_state(self) -> dict[str, Any]:
        """Snapshot form (:mod:`vitalwatch.engine.snapshot`)."""
        return {
            "t": self.t,
            "systolic": encode_number(self.systolic),
            "diastolic": encode_number(self.diastolic),
            "mean": encode_number(self.mean),
            "valid": self.valid,
            "device": self.device,
            "phase": self.phase,
        }

    @classmethod
    def from_state(cls, r: StateReader) -> NibpReading:
        return cls(
            r.when("t"),
            r.opt_number("systolic"),
            r.opt_number("diastolic"),
            r.opt_number("mean"),
            r.flag("valid"),
            r.text("device"),
            r.text("phase", PHASES),
        )


class NibpAssembler:
    """Groups the NIBP observations of one device that share an instant into one reading.

    A reading is complete when systolic, diastolic and mean are in, or at the first call at a
    later instant (devices without a mean), or when a kind repeats (a new reading started).
    """

    _KINDS = ("nibp_systolic", "nibp_diastolic", "nibp_mean")

    def __init__(self) -> None:
        self._pending: dict[str, tuple[float, dict[str, float | None], bool]] = {}

    def add(
        self, device: str, kind: str, value: float | None, unreliable: bool, t: float
    ) -> list[tuple[str, float, dict[str, float | None], bool]]:
        """Add one observation; return the readings it completed (device, t, values, unreliable)."""
        done: list[tuple[str, float, dict[str, float | None], bool]] = []
        pending = self._pending.get(device)
        if pending is not None and (pending[0] != t or kind in pending[1]):
            done.append((device, *self._pending.pop(device)))
            pending = None
        if pending is None:
            pending = (t, {}, False)
        values = dict(pending[1])
        values[kind] = value
        pending = (pending[0], values, pending[2] or unreliable)
        if all(k in values for k in self._KINDS):
            self._pending.pop(device, None)
            done.append((device, *pending))
        else:
            self._pending[device] = pending
        return done

    def flush(self, now: float | None = None) -> list[tuple[str, float, dict[str, float | None], bool]]:
        """Readings whose instant is before ``now`` (all of them when ``now`` is None)."""
        if not self._pending:
            return []  # the engine asks at every call; a reading is rarely being assembled
        done = []
        for device, pending in list(self._pending.items()):
            if now is None or pending[0] < now:
                done.append((device, *pending))
                del self._pending[device]
        return done

    def snapshot(self) -> dict[str, Any]:
        """The readings still being assembled, per device."""
        return {
            device: {
                "t": t,
                "values": {k: encode_number(v) for k, v in values.items()},
                "unreliable": unreliable,
            }
            for device, (t, values, unreliable) in self._pending.items()
        }

    def restore_state(self, r: StateReader, key: str) -> None:
        self._pending = {}
        for device, p in r.child_map(key).items():
            values = p.opt_number_map("values")
            for kind in values:
                if kind not in self._KINDS:
                    raise ValueError(f"engine snapshot: {p.path}.values: unknown NIBP kind {kind!r}")
            self._pending[device] = (p.when("t"), values, p.flag("unreliable"))


class ReadingLog:
    """The recent NIBP readings of a bed, bounded (a long session has a few dozen)."""

    def __init__(self, maxlen: int = 500) -> None:
        self.readings: deque[NibpReading] = deque(maxlen=maxlen)

    def valid(self) -> list[NibpReading]:
        return [r for r in self.readings if r.valid]

    def snapshot(self) -> list[dict[str, Any]]:
        return [r.to_state() for r in self.readings]

    def restore_state(self, r: StateReader, key: str) -> None:
        self.readings.clear()
        self.readings.extend(NibpReading.from_state(c) for c in r.children(key, self.readings.maxlen))

    def last_valid(self) -> NibpReading | None:
        for r in reversed(self.readings):
            if r.valid:
                return r
        return None
