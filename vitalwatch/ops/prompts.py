"""The nurse prompts of one bed: what only a person can do, open until it is done.

Why: on a cuff the gateway cannot start (an Accutorr), the engine's request for a baseline
reading, a confirmation reading or a scheduled one can only be carried out by the nurse, and a
confirmation reading is what turns a BP alarm HIGH. A log line reaches nobody; an open prompt
is published retained on ``.../prompts`` (docs/mqtt.md) until a valid NIBP reading arrives or
the nurse sends ``prompt_done``.

Sans-I/O: the clock is passed in; :class:`PromptBook` only keeps the set and says whether it
changed. A prompt that stays open changes nothing in the engine: the rule that asked for the
reading goes on by itself (a BP alarm waits for its confirmation, the overdue rule raises
``nibp_overdue``), which is what ``then`` tells the nurse.

The need outlives the process: :meth:`PromptBook.to_state` is what the daemon journals with the
bed's session values on every change, and :meth:`PromptBook.restore` rebuilds the book after a
restart, clean or not (docs/operations.md, "Restarts"). Times are kept as UTC epochs there and
rebased to the new process's monotonic clock, as the engine's snapshot does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Prompt", "PromptBook", "prompt_kind"]

# What follows when a prompt of each kind stays open (the rule that asked for it).
_THEN = {
    "take_bp": "the baseline stays incomplete: start infusion will list it as open",
    "confirm_bp": (
        "the BP alarm needs a second reading within the confirmation window; without one the "
        "first reading lapses and no alarm is confirmed"
    ),
    "repeat_bp": "the NIBP overdue alarm is raised when the reading's window closes without one",
}
_TEXT = {
    "take_bp": "Take a blood pressure by hand",
    "confirm_bp": "Take a blood pressure by hand to confirm",
    "repeat_bp": "Take the scheduled blood pressure by hand",
}


def prompt_kind(reason: str) -> str:
    """The prompt's kind from the request's reason (the engine's reason texts, rules.py)."""
    if reason.startswith("confirm"):
        return "confirm_bp"
    if reason.startswith("scheduled"):
        return "repeat_bp"
    return "take_bp"


@dataclass(frozen=True, slots=True)
class Prompt:
    prompt_id: str
    kind: str
    text: str
    reason: str
    opened_t: float  # monotonic seconds
    then: str


class PromptBook:
    """The open prompts of one bed, oldest first; ids ``{bed}-p{n}`` never repeat (the counter is
    journalled with the prompts, so not across a restart either)."""

    def __init__(self, bed: str) -> None:
        self.bed = bed
        self._open: dict[str, Prompt] = {}
        self._n = 0

    @classmethod
    def restore(
        cls, bed: str, state: Mapping[str, Any] | None, *, now: float, epoch_now: float
    ) -> PromptBook:
        """The book journalled by :meth:`to_state` (None: a new one); ValueError names what is wrong.

        A prompt's opening time comes back on this process's monotonic clock, never after ``now``,
        so a reading that arrives after the restart still closes it.
        """
        book = cls(bed)
        if state is None:
            return book
        n = state.get("n")
        prompts = state.get("open")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0 or not isinstance(prompts, list):
            raise ValueError("prompts state needs a counter 'n' >= 0 and a list 'open'")
        book._n = n
        for item in prompts:
            if not isinstance(item, dict):
                raise ValueError("a journalled prompt must be an object")
            prompt_id, reason, opened = item.get("prompt_id"), item.get("reason"), item.get("opened_epoch")
            if not isinstance(prompt_id, str) or not isinstance(reason, str):
                raise ValueError("a journalled prompt needs a string prompt_id and reason")
            if not isinstance(opened, int | float) or isinstance(opened, bool):
                raise ValueError(f"prompt {prompt_id[:64]!r}: opened_epoch must be a number")
            kind = prompt_kind(reason)
            book._open[prompt_id] = Prompt(
                prompt_id=prompt_id,
                kind=kind,
                text=f"{_TEXT[kind]}: {reason}",
                reason=reason,
                opened_t=now - max(0.0, epoch_now - float(opened)),
                then=_THEN[kind],
            )
        return book

    def to_state(self, *, now: float, epoch_now: float) -> dict[str, Any]:
        """The open prompts and the id counter as JSON-able values, times as UTC epochs."""
        return {
            "n": self._n,
            "open": [
                {"prompt_id": p.prompt_id, "reason": p.reason, "opened_epoch": epoch_now - (now - p.opened_t)}
                for p in self._open.values()
            ],
        }

    def open_prompts(self) -> list[Prompt]:
        return list(self._open.values())

    def open(self, reason: str, now: float) -> Prompt:
        """Ask for a BP by hand; a prompt of the same kind already open is replaced (one cuff)."""
        kind = prompt_kind(reason)
        for old in [p for p in self._open.values() if p.kind == kind]:
            del self._open[old.prompt_id]
        self._n += 1
        prompt = Prompt(
            prompt_id=f"{self.bed}-p{self._n}",
            kind=kind,
            text=f"{_TEXT[kind]}: {reason}",
            reason=reason,
            opened_t=now,
            then=_THEN[kind],
        )
        self._open[prompt.prompt_id] = prompt
        return prompt

    def reading(self, now: float) -> list[Prompt]:
        """A valid NIBP reading arrived at ``now``: every prompt opened before it is done."""
        closed = [p for p in self._open.values() if p.opened_t <= now]
        for p in closed:
            del self._open[p.prompt_id]
        return closed

    def done(self, prompt_id: str) -> Prompt | None:
        """The nurse marked ``prompt_id`` done; None when it is not open."""
        return self._open.pop(prompt_id, None)

    def clear(self) -> list[Prompt]:
        """The session ended: nothing is asked any more."""
        closed = list(self._open.values())
        self._open.clear()
        return closed
