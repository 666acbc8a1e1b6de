"""Save and restore a bed engine's whole state, so a daemon killed with SIGKILL continues its session.

.. code-block:: text

    engine.snapshot() ──▶ dict (JSON-safe, "version": 1, "taken_at": engine time) ──▶ state store
    BedEngine.restore(table, state, now=loop.time()) ◀── json.loads ◀───────────────── state store

**Clock rule.** A monotonic clock does not survive a restart: the new process's ``loop.time()``
has another origin. The snapshot records ``taken_at`` (the latest time any call gave the engine,
``bytes_seen`` included, or the ``now`` passed to ``snapshot(now)`` when later) and restore
moves every stored engine time by ``delta = now - elapsed_outage_s - taken_at``. With the default
``elapsed_outage_s = 0`` the outage is not counted at all: every elapsed duration (phase time,
time since the last NIBP, re-notify/escalation/ack-silence deadlines, the held sample's age) is
what it was at the snapshot. When the daemon knows the wall-clock gap it passes it as
``elapsed_outage_s``; the engine then behaves exactly as if it had run without any input during
the outage: the phase, overdue, re-notify and escalation clocks include the gap, the held sample
goes stale after ``sample_hold_s`` (so ``signal_lost`` may be raised at once when the gap exceeds
its delay - true: nobody watched the patient), and the timers that count *valid signal*
(sustained delays, the baseline's oximetry seconds) advance only over the rest of the held
sample's hold, as without a restart, then neither advance nor reset (the engine's own rule for
absent signal).

**Links and statuses.** Every device counts as just connected at ``now``: its silence clock
restarts and its status set is empty (the daemon reopens the ports and the fresh drivers report
every status still on as a new edge; a restored ``probe_off`` could never end, because a fresh
driver never reports "off" for a status it did not see on). A port that was vanished at the
snapshot stays vanished until the daemon reports it open (it does at every open), so an active
``link_lost`` keeps its alert_id rather than clearing and coming back under a new one.

**Times inside text.** Evidence (``t=610.0 BP ...``) and the explain() history carry engine times
as text; restore rewrites them by the same ``delta`` so they read in the new process's clock.

**Table changes.** The snapshot records a digest of each rule; a rule whose definition changed
(or that is new) starts with fresh state, and the state of a rule no longer in the table is
dropped. Active alarms are restored whatever their rule (an alarm of a removed rule clears at
the next evaluation unless latched).

**Validation.** :meth:`BedEngine.restore` checks every field it reads and raises ``ValueError``
naming the dotted path of the first problem (``engine snapshot: alarms.active[0].onset_t:
missing``); a snapshot of another ``version`` is refused. Non-finite measured values (never
expected from a driver) are stored as the strings ``"nan"``/``"inf"``/``"-inf"`` so the state
stays strict JSON; times must be finite.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from vitalwatch.engine.table import Rule

__all__ = ["VERSION", "StateReader", "encode_number", "rule_digest"]

VERSION = 1
"""The snapshot format; bump it whenever a field changes meaning (old snapshots are then refused)."""

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_T_IN_TEXT = re.compile(r"\bt=(-?\d+(?:\.\d+)?)")
_LEADING_T = re.compile(r"^(-?\d+(?:\.\d+)?)(?= )")

E = TypeVar("E", bound=enum.Enum)


def encode_number(x: float | None) -> float | str | None:
    """A measured value as strict JSON: finite numbers as is, NaN/inf as a string."""
    if x is None or math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def rule_digest(rule: Rule) -> str:
    """A stable digest of one rule's definition (phases sorted, so it does not depend on hashing)."""
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(rule):
        v = getattr(rule, f.name)
        fields[f.name] = sorted(v) if isinstance(v, frozenset) else v.value if isinstance(v, enum.Enum) else v
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _fail(path: str, problem: str) -> ValueError:
    return ValueError(f"engine snapshot: {path}: {problem}")


def _kind(v: object) -> str:
    return "null" if v is None else type(v).__name__


class StateReader:
    """One JSON object of a snapshot, read with checks; every error names the field's dotted path.

    ``delta`` is the clock shift: :meth:`when` returns stored engine times moved into the new
    process's clock, while :meth:`number` and :meth:`seconds` return values and durations as stored.
    """

    __slots__ = ("_data", "delta", "path")

    def __init__(self, data: object, path: str, delta: float) -> None:
        if not isinstance(data, dict):
            raise _fail(path or "state", f"expected an object, got {_kind(data)}")
        self._data: dict[str, Any] = data
        self.path = path
        self.delta = delta

    def _p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str) -> Any:
        """The stored value (KeyError-free: a missing key is a ValueError naming it)."""
        if key not in self._data:
            raise _fail(self._p(key), "missing")
        return self._data[key]

    # ------------------------------------------------------------------ nested
    def child(self, key: str) -> StateReader:
        return StateReader(self.raw(key), self._p(key), self.delta)

    def opt_child(self, key: str) -> StateReader | None:
        return None if self.raw(key) is None else self.child(key)

    def children(self, key: str, max_len: int | None = None) -> list[StateReader]:
        return [
            StateReader(v, f"{self._p(key)}[{i}]", self.delta) for i, v in enumerate(self._list(key, max_len))
        ]

    def child_map(self, key: str) -> dict[str, StateReader]:
        return {k: StateReader(v, f"{self._p(key)}.{k}", self.delta) for k, v in self._map(key).items()}

    def _list(self, key: str, max_len: int | None = None) -> list[Any]:
        v = self.raw(key)
        if not isinstance(v, list):
            raise _fail(self._p(key), f"expected a list, got {_kind(v)}")
        if max_len is not None and len(v) > max_len:
            raise _fail(self._p(key), f"more than {max_len} entries ({len(v)})")
        return v

    def _map(self, key: str) -> dict[str, Any]:
        v = self.raw(key)
        if not isinstance(v, dict):
            raise _fail(self._p(key), f"expected an object, got {_kind(v)}")
        return v

    # ------------------------------------------------------------------ scalars
    @staticmethod
    def _number(path: str, v: object, *, finite: bool) -> float:
        if isinstance(v, str) and v in _NONFINITE and not finite:
            return _NONFINITE[v]
        if isinstance(v, bool) or not isinstance(v, int | float) or (finite and not math.isfinite(v)):
            return_kind = "a finite number" if finite else "a number"
            raise _fail(path, f"expected {return_kind}, got {v!r}")
        return float(v)

    def number(self, key: str) -> float:
        """A measured value (NaN/inf allowed in their string form)."""
        return self._number(self._p(key), self.raw(key), finite=False)

    def opt_number(self, key: str) -> float | None:
        return None if self.raw(key) is None else self.number(key)

    def numbers(self, key: str, max_len: int | None = None) -> list[float]:
        return [
            self._number(f"{self._p(key)}[{i}]", v, finite=False)
            for i, v in enumerate(self._list(key, max_len))
        ]

    def opt_number_map(self, key: str) -> dict[str, float | None]:
        return {
            k: None if v is None else self._number(f"{self._p(key)}.{k}", v, finite=False)
            for k, v in self._map(key).items()
        }

    def seconds(self, key: str) -> float:
        """A duration: finite and not negative; not moved by the clock shift."""
        v = self._number(self._p(key), self.raw(key), finite=True)
        if v < 0:
            raise _fail(self._p(key), f"expected a duration >= 0, got {v!r}")
        return v

    def when(self, key: str) -> float:
        """An engine time, moved into the new process's clock."""
        return self._number(self._p(key), self.raw(key), finite=True) + self.delta

    def opt_when(self, key: str) -> float | None:
        return None if self.raw(key) is None else self.when(key)

    def when_map(self, key: str) -> dict[str, float]:
        return {
            k: self._number(f"{self._p(key)}.{k}", v, finite=True) + self.delta
            for k, v in self._map(key).items()
        }

    def integer(self, key: str, minimum: int = 0) -> int:
        v = self.raw(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise _fail(self._p(key), f"expected an integer >= {minimum}, got {v!r}")
        return v

    def flag(self, key: str) -> bool:
        v = self.raw(key)
        if not isinstance(v, bool):
            raise _fail(self._p(key), f"expected true or false, got {v!r}")
        return v

    def text(self, key: str, choices: Collection[str] | None = None) -> str:
        v = self.raw(key)
        if not isinstance(v, str):
            raise _fail(self._p(key), f"expected a string, got {_kind(v)}")
        if choices is not None and v not in choices:
            raise _fail(self._p(key), f"expected one of {', '.join(sorted(choices))}, got {v!r}")
        return v

    def opt_text(self, key: str, choices: Collection[str] | None = None) -> str | None:
        return None if self.raw(key) is None else self.text(key, choices)

    def texts(self, key: str, choices: Collection[str] | None = None) -> list[str]:
        out = []
        for i, v in enumerate(self._list(key)):
            if not isinstance(v, str) or (choices is not None and v not in choices):
                raise _fail(f"{self._p(key)}[{i}]", f"unexpected {v!r}")
            out.append(v)
        return out

    def text_map(self, key: str) -> dict[str, str]:
        out = {}
        for k, v in self._map(key).items():
            if not isinstance(v, str):
                raise _fail(f"{self._p(key)}.{k}", f"expected a string, got {_kind(v)}")
            out[k] = v
        return out

    def enum(self, key: str, cls: type[E]) -> E:
        v = self.raw(key)
        try:
            return cls(v)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in cls)
            raise _fail(self._p(key), f"expected one of {allowed}, got {v!r}") from None

    # ------------------------------------------------------------------ times inside text
    def _shift(self, m: re.Match[str], prefix: str) -> str:
        return f"{prefix}{float(m.group(1)) + self.delta:.1f}"

    def timed_texts(self, key: str) -> tuple[str, ...]:
        """Evidence lines: every ``t=<engine time>`` moved by the clock shift."""
        return tuple(_T_IN_TEXT.sub(lambda m: self._shift(m, "t="), s) for s in self.texts(key))

    def timed_text(self, key: str) -> str:
        return _T_IN_TEXT.sub(lambda m: self._shift(m, "t="), self.text(key))

    def history(self, key: str) -> tuple[str, ...]:
        """explain() history lines ``'<engine time> <state> <priority>'``, times moved."""
        out = []
        for i, s in enumerate(self.texts(key)):
            if not _LEADING_T.match(s):
                raise _fail(f"{self._p(key)}[{i}]", f"expected '<time> <state> <priority>', got {s!r}")
            out.append(_LEADING_T.sub(lambda m: self._shift(m, ""), s, count=1))
        return tuple(out)
