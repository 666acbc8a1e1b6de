"""Which rules an evaluation must run: the dirty ones, the live ones and the due ones.

Evaluating every rule of the phase at every engine call costs a 100-minute replay over a
million rule evaluations that almost all find what they found a moment ago: nothing. A rule
that found nothing keeps finding nothing until one of two things happens, and this module
keeps both:

- an input it reads changed: the engine *touches* a topic (``"nibp"`` when a reading is
  complete, ``"port"`` when a port opens or vanishes, ...), which marks every rule reading that
  topic dirty (:data:`TOPICS`); a sustained rule is touched alone when its own state changes;
- time reached its deadline (:func:`vitalwatch.engine.wakeup.wake_at`): a delay, an overdue
  or silence timer, a phase clock. A rule whose delay on the phase clock has not run yet is
  *deaf* until then (:func:`vitalwatch.engine.wakeup.deaf`): no input can make it find anything.

A rule that found something, or asked for a reading, is *live*: its finding's text moves with
time ("for 45 s"), and an alert transition carries the latest one, so it runs at every call
until it finds nothing again. A rule whose findings read no clock (:data:`STABLE`: a confirmed
BP, a baseline gate, a driver fault) is *held* instead: its last findings stand, unchanged,
until one of its inputs changes. A phase change (and a pause, a resume, an age band, a seeded
clock) touches everything. ``evaluate_all`` keeps the reference strategy (every rule of the
phase at every call) for the identity test (bench/engine_identity.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from vitalwatch.engine.table import Rule

__all__ = ["STABLE", "TOPICS", "Agenda"]

# What each rule type reads besides time and the phase (which touches everything). Sustained
# rules are touched one by one when their timer state changes, and by the baseline.
TOPICS: dict[str, tuple[str, ...]] = {
    "sustained": ("baseline",),
    "nibp": ("nibp",),
    "nibp_gate": ("nibp",),
    "nibp_overdue": ("nibp",),
    "nibp_peak": ("nibp",),
    "nibp_recovery": ("nibp", "baseline"),
    "baseline_gate": ("baseline",),
    "baseline_incomplete": (),
    "signal_lost": ("spo2_invalid", "armed"),
    "link_lost": ("port", "armed"),
    "driver_fault": ("status",),
    "infusion_overrun": (),
    "baseline_overrun": ("valid",),
    "device_garbled": ("garbled",),
}


# The rule types whose findings are a function of their inputs alone (no clock, no request).
STABLE = frozenset(
    {"nibp", "nibp_gate", "baseline_gate", "baseline_incomplete", "driver_fault", "device_garbled"}
)


# What take returns when there is nothing to run: one shared pair that cannot be changed (a
# new empty list and set at every call cost more than the test that finds nothing).
_NOTHING: tuple[Sequence[int], AbstractSet[int]] = ((), frozenset())


class Agenda:
    """The dirty, live and due rules of one bed (indices into the table's rules)."""

    def __init__(self, rules: Sequence[Rule], phase: str, *, evaluate_all: bool = False) -> None:
        self._rules = tuple(rules)
        self._evaluate_all = evaluate_all
        self._by_topic: dict[str, list[int]] = {}
        for i, rule in enumerate(self._rules):
            # An unknown type (none passes the table's checks) is run at every call.
            for topic in TOPICS.get(rule.type, ("*",)):
                self._by_topic.setdefault(topic, []).append(i)
        self._dirty: set[int] = set()
        self._live: set[int] = set()
        self._held: set[int] = set()
        self._deaf: set[int] = set()  # rules no input can wake before their deadline
        self._due: dict[int, float] = {}
        self._next_due = math.inf
        self.touch_all(phase)

    def touch(self, topic: str) -> None:
        """An input read by the rules of ``topic`` changed."""
        touched = self._topics.get(topic)
        if not touched:
            return
        if self._deaf:
            self._dirty.update(i for i in touched if i not in self._deaf)
        else:
            self._dirty.update(touched)

    def touch_rule(self, index: int) -> None:
        """The state of one rule of the phase changed (a sustained timer)."""
        self._dirty.add(index)

    def touch_all(self, phase: str) -> None:
        """Everything may have changed (a new ``phase``, a pause, a seeded clock, a restored
        state): run every rule of ``phase`` next time."""
        in_phase = [i for i, rule in enumerate(self._rules) if phase in rule.phases]
        self._in_phase = in_phase
        # Only the phase's rules are ever marked, so what is marked needs no phase filter.
        self._topics = {
            topic: [i for i in indices if i in in_phase] for topic, indices in self._by_topic.items()
        }
        self._always = frozenset(self._topics.pop("*", ()))
        self._dirty = set(in_phase)
        self._live.clear()
        self._held.clear()
        self._deaf.clear()
        self._due.clear()
        self._next_due = math.inf

    def take(self, now: float) -> tuple[Sequence[int], AbstractSet[int] | None]:
        """The rules of the phase with something to say at ``now`` in table order, and which of
        them to run (``None``: all); the others are held. The dirty marks are spent."""
        if self._evaluate_all:
            return self._in_phase, None
        if not (self._dirty or self._live or self._always or self._held) and now < self._next_due:
            return _NOTHING  # the common call: nothing changed, nothing due, nothing found
        run = self._dirty | self._live | self._always
        if now >= self._next_due:
            for i, at in list(self._due.items()):
                if now >= at:
                    run.add(i)
                    del self._due[i]
                    self._deaf.discard(i)
            self._next_due = min(self._due.values(), default=math.inf)
        self._dirty = set()
        return sorted(run | self._held if self._held else run), run

    def settle(self, index: int, busy: bool, wake: float, *, deaf: bool = False) -> None:
        """After running rule ``index``: ``busy`` (it found something or asked for a reading) keeps
        it live; else it sleeps until ``wake`` (``inf``: until an input it reads changes), and
        ``deaf``: no input can wake it before then either (only a new phase)."""
        self._deaf.discard(index)
        if busy:
            stable = self._rules[index].type in STABLE
            (self._held if stable else self._live).add(index)
            (self._live if stable else self._held).discard(index)
            self._due.pop(index, None)
            return
        self._live.discard(index)
        self._held.discard(index)
        if wake == math.inf:
            self._due.pop(index, None)
        else:
            self._due[index] = wake
            self._next_due = min(self._next_due, wake)
            if deaf:
                self._deaf.add(index)
