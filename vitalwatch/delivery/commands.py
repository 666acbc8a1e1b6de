"""Nurse commands arriving on ``{prefix}/{site}/{bed}/cmd``: strict parsing, then one result each.

What is accepted is exactly what ``schemas/command.schema.json`` accepts (docs/mqtt.md,
"Commands"); ``tests/service/test_schemas.py`` checks the two agree on every documented and
malformed command and on generated ones. At most :data:`MAX_COMMAND_BYTES` of UTF-8 JSON::

    {"request_id": "st1-000481", "command": "ack", "alert_id": "<an active alert_id>" | "*",
     "by": "RN Kim"}
    {"request_id": "st1-000483", "command": "phase",
     "phase": "baseline|infusion|recovery|ended|pause|resume", "dose_mg_per_kg": 0.5,
     "planned_minutes": 40, "age_band": "adult|older_adult", "override_reason": "..."}
                               (all but phase optional; pause/resume only in the infusion)
    {"request_id": "st1-000484", "command": "nibp"}      take a BP now: the cuff, else a prompt
    {"command": "start_session", "by": ..., "age_band": "adult|older_adult"}   ended -> baseline
    {"command": "start_infusion", "by": ..., "dose_mg_per_kg": 0.5, "weight_kg": 70,
     "planned_minutes": 40, "override_reason": "..."}                          baseline -> infusion
    {"command": "pump_stopped", "by": ...}                                     infusion -> recovery
    {"command": "end_session", "by": ...}                          recovery (or baseline) -> ended
    {"command": "prompt_done", "by": ..., "prompt_id": "chair-1-p3"}
    {"command": "event", "by": ..., "event": "dissociation", "score": 2}     (see EVENT_FIELDS)
    optional everywhere: "by" (required for all but phase and nibp), "site" and "bed" (must be
    the topic's), "sent_utc" (when the station sent it)

Every command gets exactly one result on ``.../cmd/result`` echoing ``request_id``, built by
:func:`vitalwatch.delivery.payloads.command_result_payload` (one builder, one schema)::

    {"schema": "vitalwatch.cmd-result/1", "request_id": ..., "command": ..., "ok": true|false,
     "error": null | {"code": "...", "message": "..."}, "site": ..., "bed": ...,
     "detail": {...} | null, "sent_utc": ...}

Error codes are :data:`vitalwatch.delivery.payloads.ERROR_CODES`. A rejected command changes nothing.
Fields are checked strictly (unknown fields, duplicate keys, control and bidirectional-override
characters in text are errors) because a typo in a clinical command should be refused loudly,
not half-applied. A command that arrives flagged *retained* (the broker stored it and replays
it on every connect) is refused, and each bed's commands pass a token bucket
(:class:`RateLimit`): a flood is refused with ``rate_limited`` and costs the alarm path nothing.
Phase changes follow :data:`TRANSITIONS`; entering ``infusion`` asks the bed's readiness check
first and needs ``override_reason`` while an item is open. Who may send a command at all is the
broker's ACL's job. ``alert_id`` ``"*"`` acknowledges every active alarm of the bed; nothing
else is a wildcard.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from vitalwatch.delivery.payloads import COMMANDS, command_result_payload
from vitalwatch.engine.vocabulary import AGE_BANDS, PHASE_COMMANDS

__all__ = [
    "AGE_BANDS",
    "EVENTS",
    "MAX_COMMAND_BYTES",
    "TRANSITIONS",
    "Command",
    "CommandError",
    "CommandHandler",
    "CommandJournal",
    "CommandTarget",
    "RateLimit",
    "SessionDesk",
    "parse_command",
    "transition_refusal",
]

log = structlog.get_logger("vitalwatch.delivery.commands")

# Real commands are ~150 bytes; 4 KiB leaves room for long ids while bounding what a
# misbehaving client can make us parse.
MAX_COMMAND_BYTES = 4096
PHASES = PHASE_COMMANDS  # the four phases, and pause/resume of the infusion
# The session's state machine: from each phase, the phases a command may move it to. A new
# session starts from ``ended`` (or from the daemon's first ``baseline``); infusion ends only
# through the pump stop (recovery), so the recovery rules and discharge criteria always run;
# a session may be abandoned before the infusion (baseline -> ended). ``baseline`` again while in
# baseline only names the running session (start_session, an age band). Anything else is refused
# with ``wrong_phase`` (ended -> infusion, recovery -> baseline, the same phase again, ...).
TRANSITIONS: dict[str, frozenset[str]] = {
    "ended": frozenset({"baseline"}),
    "baseline": frozenset({"infusion", "ended"}),
    "infusion": frozenset({"recovery"}),
    "recovery": frozenset({"ended"}),
}
# Nurse-entered observations (``event`` command): kind -> (required, optional) fields.
# dissociation and emergence use one documented 0-3 scale (none, mild, moderate, severe).
EVENTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "dissociation": (frozenset({"score"}), frozenset()),
    "emergence": (frozenset({"score"}), frozenset()),
    "nausea": (frozenset(), frozenset()),
    "vomiting": (frozenset(), frozenset()),
    "agitation": (frozenset(), frozenset({"score"})),
    "rescue_medication": (frozenset({"drug", "dose", "dose_unit"}), frozenset()),
    "note": (frozenset({"note"}), frozenset()),
}
_EVENT_FIELDS = frozenset({"score", "drug", "dose", "dose_unit", "note"})
DOSE_UNITS = ("mg", "mcg", "ml")
# The patterns of schemas/command.schema.json. fullmatch, because Python's "$" would also
# match before a trailing newline where the schema's (ECMA 262) does not.
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_LEVEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ALERT_ID = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Characters no person's text needs and an attacker uses: C0/C1 controls and DEL (forged log
# lines), bidirectional marks, embeddings, overrides and isolates (U+061C, U+200E/F,
# U+202A-202E, U+2066-2069: "RN Kim" displayed as someone else), zero-width characters and
# line/paragraph separators.
_FORBIDDEN = "\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
_WHO = re.compile(f"[^{_FORBIDDEN}]{{1,64}}")
_TEXT = re.compile(f"[^{_FORBIDDEN}]{{1,200}}")
# A free note must not carry identifiers: four digits in a row (a date, a record number) are refused.
_DIGITS = re.compile(r"[0-9]{4}")
_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")
_BY = frozenset({"by"})
# command -> (required, optional) beyond the fields every command may carry.
_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "ack": (frozenset({"alert_id", "by"}), frozenset()),
    "phase": (
        frozenset({"phase"}),
        frozenset({"dose_mg_per_kg", "planned_minutes", "age_band", "override_reason"}),
    ),
    "nibp": (frozenset(), frozenset()),
    "start_session": (_BY, frozenset({"age_band"})),
    "start_infusion": (
        frozenset({"by", "dose_mg_per_kg", "weight_kg"}),
        frozenset({"planned_minutes", "override_reason"}),
    ),
    "pump_stopped": (_BY, frozenset()),
    "end_session": (_BY, frozenset()),
    "prompt_done": (frozenset({"by", "prompt_id"}), frozenset()),
    "event": (frozenset({"by", "event"}), _EVENT_FIELDS),
}
_COMMON = frozenset({"request_id", "command", "by", "site", "bed", "sent_utc"})
# Exclusive lower and inclusive upper bound of each number (the schema's).
_NUMBERS = {
    "dose_mg_per_kg": (0.0, 10.0),
    "planned_minutes": (0.0, 600.0),
    "weight_kg": (0.0, 400.0),
    "dose": (0.0, 10000.0),
}
# The session phase each named session command moves to.
_TARGET_PHASE = {
    "start_session": "baseline",
    "start_infusion": "infusion",
    "pump_stopped": "recovery",
    "end_session": "ended",
}
DEFAULT_PLANNED_MINUTES = 40.0
assert tuple(_FIELDS) == COMMANDS  # the payloads module documents the same commands


@dataclass(frozen=True, slots=True)
class Command:
    """A command that passed validation (not yet applied)."""

    request_id: str
    command: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommandError:
    """Why a command is refused; ``request_id``/``command`` as far as they could be read."""

    code: str
    message: str
    request_id: str | None = None
    command: str | None = None


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: a key given twice is refused (which one would the station mean?)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key[:64])
        out[key] = value
    return out


def _is_number(value: object) -> bool:
    # JSON true/false are not numbers (Python's bool is an int); NaN/Infinity are not JSON.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _valid_utc(value: str) -> bool:
    if not _UTC.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:  # 2026-13-45T...: the schema's date-time format refuses it too
        return False
    return True


def _check_common(data: dict[str, Any], site: str, bed: str) -> tuple[str, str] | None:
    """The optional fields every command may carry: (code, message) of the first problem."""
    if "by" in data:
        by = data["by"]
        if not isinstance(by, str):
            return "wrong_type", "by must be a string"
        if not _WHO.fullmatch(by):
            return "bad_value", "by must be 1-64 characters without control or bidirectional characters"
    for name, mine in (("site", site), ("bed", bed)):
        if name not in data:
            continue
        value = data[name]
        if not isinstance(value, str):
            return "wrong_type", f"{name} must be a string"
        if not _LEVEL.fullmatch(value):
            return "bad_value", f"{name} must be 1-64 letters, digits, '_', '.' or '-'"
        if value != mine:
            return "wrong_bed", f"command for {name} {value!r} sent to {site}/{bed}"
    if "sent_utc" in data:
        sent = data["sent_utc"]
        if not isinstance(sent, str):
            return "wrong_type", "sent_utc must be a string"
        if not _valid_utc(sent):
            return "bad_value", "sent_utc must be UTC like 2026-03-01T10:15:02.331Z"
    return None


def _numbers(data: dict[str, Any], args: dict[str, Any]) -> tuple[str, str] | None:
    for name, (low, high) in _NUMBERS.items():
        if name not in data:
            continue
        value = data[name]
        if not _is_number(value):
            return "wrong_type", f"{name} must be a number"
        if not low < value <= high:
            return "bad_value", f"{name} must be more than {low:g} and at most {high:g}, got {value}"
        args[name] = float(value)
    return None


def _texts(data: dict[str, Any], args: dict[str, Any]) -> tuple[str, str] | None:
    for name in ("override_reason", "drug", "note"):
        if name not in data:
            continue
        value = data[name]
        if not isinstance(value, str):
            return "wrong_type", f"{name} must be a string"
        if not _TEXT.fullmatch(value):
            return "bad_value", f"{name} must be 1-200 characters without control or bidirectional characters"
        if name == "note" and _DIGITS.search(value):
            return "bad_value", "a note must not contain four digits in a row (no dates or record numbers)"
        args[name] = value
    return None


def _check_event(data: dict[str, Any], args: dict[str, Any]) -> tuple[str, str] | None:
    kind = data["event"]
    if not isinstance(kind, str):
        return "wrong_type", "event must be a string"
    if kind not in EVENTS:
        return "bad_value", f"event must be one of {', '.join(EVENTS)}, got {kind[:64]!r}"
    required, optional = EVENTS[kind]
    extra = sorted((set(data) & _EVENT_FIELDS) - required - optional)
    if extra:
        return "unknown_field", f"unknown field(s) for event {kind}: {', '.join(extra)}"
    missing = sorted(required - set(data))
    if missing:
        return "missing_field", f"event {kind} needs {', '.join(missing)}"
    args["event"] = kind
    if "score" in data:
        score = data["score"]
        if not isinstance(score, int) or isinstance(score, bool):
            return "wrong_type", "score must be an integer"
        if not 0 <= score <= 3:
            return "bad_value", f"score must be 0 (none) to 3 (severe), got {score}"
        args["score"] = score
    if "dose_unit" in data:
        unit = data["dose_unit"]
        if not isinstance(unit, str):
            return "wrong_type", "dose_unit must be a string"
        if unit not in DOSE_UNITS:
            return "bad_value", f"dose_unit must be one of {', '.join(DOSE_UNITS)}"
        args["dose_unit"] = unit
    return None


def _check_args(command: str, data: dict[str, Any]) -> tuple[str, str] | dict[str, Any]:
    """The command's own fields: its arguments, or (code, message) of the first problem."""
    args: dict[str, Any] = {}
    if "by" in data:
        args["by"] = data["by"]
    if command == "ack":
        alert_id = data["alert_id"]
        if not isinstance(alert_id, str):
            return "wrong_type", "alert_id must be a string"
        if not _ALERT_ID.fullmatch(alert_id):
            return "bad_value", "alert_id must be '*' or 1-64 letters, digits, '_', '.' or '-'"
        args["alert_id"] = alert_id
    elif command in ("phase", "start_session"):
        for name, choices in (("phase", PHASES), ("age_band", AGE_BANDS)):
            if name not in data:
                continue  # only age_band is optional: the caller checked the required fields
            value = data[name]
            if not isinstance(value, str):
                return "wrong_type", f"{name} must be a string"
            if value not in choices:
                never = " (never a date of birth)" if name == "age_band" else ""
                return "bad_value", f"{name} must be one of {', '.join(choices)}{never}, got {value[:64]!r}"
            args[name] = value
    elif command == "prompt_done":
        prompt_id = data["prompt_id"]
        if not isinstance(prompt_id, str):
            return "wrong_type", "prompt_id must be a string"
        if not _LEVEL.fullmatch(prompt_id):
            return "bad_value", "prompt_id must be 1-64 letters, digits, '_', '.' or '-'"
        args["prompt_id"] = prompt_id
    elif command == "event":
        problem = _check_event(data, args)
        if problem is not None:
            return problem
    problem = _numbers(data, args) or _texts(data, args)
    return problem if problem is not None else args


def parse_command(
    payload: bytes, *, site: str, bed: str, max_bytes: int = MAX_COMMAND_BYTES
) -> Command | CommandError:
    """Validate one command payload for ``site``/``bed`` as the command schema does; never raises."""
    if len(payload) > max_bytes:
        return CommandError("too_large", f"command is {len(payload)} bytes, limit {max_bytes}")
    try:
        data = json.loads(payload.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        return CommandError("duplicate_key", f"key {str(exc)!r} appears twice")
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return CommandError("bad_json", f"not UTF-8 JSON: {exc}")
    if not isinstance(data, dict):
        return CommandError("not_object", "a command is a JSON object")
    rid = data.get("request_id")
    request_id = rid if isinstance(rid, str) and _REQUEST_ID.fullmatch(rid) else None
    cmd = data.get("command")
    command = cmd[:64] if isinstance(cmd, str) else None  # echoed; bounded

    def error(code: str, message: str) -> CommandError:
        return CommandError(code, message, request_id, command)

    if "request_id" not in data:
        return error("missing_field", "request_id is required")
    if request_id is None:
        return error("wrong_type", "request_id must be 1-64 letters, digits, '_', '.', ':' or '-'")
    if "command" not in data:
        return error("missing_field", "command is required")
    if not isinstance(cmd, str):
        return error("wrong_type", "command must be a string")
    if cmd not in _FIELDS:
        return error("unknown_command", f"unknown command {command!r} (known: {', '.join(_FIELDS)})")
    required, optional = _FIELDS[cmd]
    unknown = sorted(set(data) - _COMMON - required - optional)
    if unknown:
        return error("unknown_field", f"unknown field(s) for {cmd}: {', '.join(unknown)}")
    missing = sorted(required - set(data))
    if missing:
        return error("missing_field", f"{cmd} needs {', '.join(missing)}")
    problem = _check_common(data, site, bed)
    if problem is not None:
        return error(*problem)
    args = _check_args(cmd, data)
    if isinstance(args, tuple):
        return error(*args)
    return Command(request_id, cmd, args)


def transition_refusal(current: str, target: str) -> str | None:
    """Why the session may not go from ``current`` to ``target`` (None: it may).

    Only the four session phases are judged here; anything else (an infusion pause, whose
    rules live with the engine) is not this table's to refuse.
    """
    if current not in TRANSITIONS or target not in TRANSITIONS:
        return None
    if target == current:
        return f"the session is already in {current}"
    if target in TRANSITIONS[current]:
        return None
    allowed = " or ".join(sorted(TRANSITIONS[current]))
    return f"cannot go from {current} to {target} (from {current}: {allowed})"


class RateLimit:
    """A token bucket: ``burst`` commands at once, then ``per_s`` a second (clock passed in).

    Why: 4,690 commands in 5 s on one bed once delayed another bed's HIGH alert. A nurse
    station sends a few commands a minute; anything beyond the bucket is refused cheaply,
    before it is applied or journalled.
    """

    def __init__(self, *, burst: float = 20.0, per_s: float = 5.0) -> None:
        self.burst, self.per_s = burst, per_s
        self._tokens = burst
        self._t: float | None = None

    def take(self, now: float) -> bool:
        if self._t is not None and now > self._t:
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.per_s)
        self._t = now if self._t is None else max(self._t, now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class _Seen:
    """Request ids already accepted, bounded (oldest forgotten first)."""

    def __init__(self, initial: Iterable[str], limit: int = 10_000) -> None:
        self._order: deque[str] = deque()
        self._set: set[str] = set()
        self._limit = limit
        for rid in initial:
            self.add(rid)

    def __contains__(self, rid: object) -> bool:
        return rid in self._set

    def add(self, rid: str) -> None:
        if rid in self._set:
            return
        self._order.append(rid)
        self._set.add(rid)
        while len(self._order) > self._limit:
            self._set.discard(self._order.popleft())


class CommandTarget(Protocol):
    """The bed a command acts on (:class:`vitalwatch.bed.BedSession` is one)."""

    @property
    def phase(self) -> str:
        """The session's current phase."""

    def acknowledge(self, alert_id: str, by: str, now: float) -> None: ...

    def set_phase(self, phase: str, now: float) -> None:
        """Enter ``phase``, or ``pause``/``resume`` the infusion; ValueError when it cannot."""

    def set_age_band(self, band: str, now: float) -> None:
        """The session's age band (``adult`` or ``older_adult``)."""

    def request_nibp(self, reason: str, now: float) -> bool:
        """Start a cuff cycle; False when no device of the bed can be started remotely."""

    def is_active(self, alert_id: str) -> bool: ...

    def active_ids(self) -> list[str]:
        """The active alarms, so the result of ``ack "*"`` names what it acknowledged."""


class CommandJournal(Protocol):
    """Where an applied command is remembered across a restart (the daemon's store)."""

    def remember_request(self, request_id: str) -> None:
        """``request_id`` was applied: a replay of it is refused, even after a restart."""

    def phase_fields(self, fields: dict[str, Any]) -> None:
        """The nurse's phase command fields (dose, planned minutes), for the session record."""


class SessionDesk(CommandJournal, Protocol):
    """The chairside session around the engine (the daemon's :class:`BedRuntime`)."""

    def readiness_open(self, now: float) -> list[str]:
        """The pre-infusion readiness items still open (texts for the nurse); [] when ready."""

    def age_band(self, band: str | None, now: float) -> None:
        """The age band of a new session (None: not given, the bed's configured band)."""

    def session_event(self, kind: str, data: dict[str, Any], now: float) -> None:
        """A nurse's step or observation for the session record (start, infusion, event ...)."""

    def open_prompt(self, reason: str, now: float) -> str:
        """Ask the nurse to take a BP by hand; the prompt's id."""

    def prompt_done(self, prompt_id: str, by: str, now: float) -> bool:
        """The nurse marked an open prompt done; False when no such prompt is open."""


class CommandHandler:
    """Applies valid commands to one bed (a :class:`CommandTarget`) and builds every result."""

    def __init__(
        self,
        *,
        site: str,
        bed: str,
        target: CommandTarget,
        clock: Callable[[], float],
        journal: SessionDesk | None = None,
        seen: Iterable[str] = (),
        max_bytes: int = MAX_COMMAND_BYTES,
        rate: RateLimit | None = None,
    ) -> None:
        self.site, self.bed = site, bed
        self._target = target
        self._clock = clock
        self._journal = journal
        self._seen = _Seen(seen)
        self._max_bytes = max_bytes
        self._rate = rate or RateLimit()
        self.accepted = 0
        self.rejected = 0
        self.rate_limited = 0

    def handle(self, payload: bytes, *, retained: bool = False) -> dict[str, Any]:
        """Parse, check, apply; the result payload to publish on ``.../cmd/result``.

        ``retained``: the broker delivered it as a stored retained message (refused: it would
        be applied again on every connect).
        """
        parsed = parse_command(payload, site=self.site, bed=self.bed, max_bytes=self._max_bytes)
        detail: dict[str, Any] | None = None
        if not self._rate.take(self._clock()):
            self.rate_limited += 1
            parsed = self._refuse(
                parsed, "rate_limited", f"too many commands for {self.bed}; wait a moment and send it again"
            )
        elif retained:
            parsed = self._refuse(
                parsed, "retained", "a retained command is never applied (send it with retain off)"
            )
        if isinstance(parsed, Command):
            outcome = self._apply(parsed)
            if isinstance(outcome, CommandError):
                parsed = outcome
            else:
                detail = outcome
        if isinstance(parsed, CommandError):
            self.rejected += 1
            if (
                parsed.code != "rate_limited"
                or self.rate_limited in (1, 10, 100)
                or not self.rate_limited % 1000
            ):
                log.warning(
                    "command.rejected",
                    code=parsed.code,
                    reason=parsed.message,
                    request_id=parsed.request_id,
                    rate_limited=self.rate_limited,
                )
            return self._result(parsed.request_id, parsed.command, (parsed.code, parsed.message), None)
        self.accepted += 1
        log.info("command.applied", command=parsed.command, request_id=parsed.request_id)
        return self._result(parsed.request_id, parsed.command, None, detail)

    @staticmethod
    def _refuse(parsed: Command | CommandError, code: str, message: str) -> CommandError:
        return CommandError(code, message, parsed.request_id, parsed.command)

    def _apply(self, cmd: Command) -> dict[str, Any] | CommandError:
        """Carry out a valid command; its result detail, or why it cannot be done (nothing changed)."""

        def error(code: str, message: str) -> CommandError:
            return CommandError(code, message, cmd.request_id, cmd.command)

        if cmd.request_id in self._seen:
            return error("replayed", f"request_id {cmd.request_id!r} was already used")
        now = self._clock()
        args = cmd.args
        detail: dict[str, Any]
        if cmd.command == "ack":
            alert_id = args["alert_id"]
            if alert_id != "*" and not self._target.is_active(alert_id):
                return error(
                    "unknown_alert", f"unknown alert_id {alert_id!r} (not an active alarm of {self.bed})"
                )
            ids = [alert_id] if alert_id != "*" else self._target.active_ids()
            self._target.acknowledge(alert_id, args["by"], now)
            detail = {"acknowledged": ids}
        elif cmd.command == "nibp":
            if self._target.request_nibp("nurse request", now):
                detail = {"nibp": "started"}
            elif self._journal is not None:
                detail = {"nibp": "prompted", "prompt_id": self._journal.open_prompt("nurse request", now)}
            else:
                return error("unavailable", "no NIBP device of this bed can be started remotely")
        elif cmd.command == "prompt_done":
            if self._journal is None or not self._journal.prompt_done(args["prompt_id"], args["by"], now):
                return error("unknown_prompt", f"no open prompt {args['prompt_id']!r} on {self.bed}")
            detail = {"prompt_id": args["prompt_id"]}
        elif cmd.command == "event":
            if self._journal is None:
                return error("unavailable", "this bed keeps no session record")
            data = {k: v for k, v in args.items() if k != "event"}
            self._journal.session_event(f"nurse_{args['event']}", data, now)
            detail = {"event": args["event"]}
        else:
            outcome = self._change_phase(cmd, now)
            if isinstance(outcome, tuple):
                return error(*outcome)
            detail = outcome
        self._seen.add(cmd.request_id)
        if self._journal is not None:
            self._journal.remember_request(cmd.request_id)
        return detail

    def _change_phase(self, cmd: Command, now: float) -> dict[str, Any] | tuple[str, str]:
        """``phase`` and the named session commands: the state machine, readiness, the record."""
        args = cmd.args
        target = args["phase"] if cmd.command == "phase" else _TARGET_PHASE[cmd.command]
        current = self._target.phase
        # baseline -> baseline names the running session (an age band, the nurse): no phase change
        restart = current == target == "baseline"
        refusal = None if restart else transition_refusal(current, target)
        if refusal is not None:
            return "wrong_phase", refusal
        detail: dict[str, Any] = {"phase": target}
        record: dict[str, Any] = {k: v for k, v in args.items() if k != "phase"}
        if target == "infusion":
            open_items = self._journal.readiness_open(now) if self._journal is not None else []
            reason = args.get("override_reason")
            if open_items and reason is None:
                return "not_ready", (
                    "not ready to start the infusion: "
                    + "; ".join(open_items)
                    + " (send override_reason to start anyway)"
                )
            if cmd.command == "start_infusion":
                planned = args.get("planned_minutes", DEFAULT_PLANNED_MINUTES)
                total = round(args["dose_mg_per_kg"] * args["weight_kg"], 1)
                record |= {"planned_minutes": planned, "total_mg": total}
                detail |= {
                    "dose_mg_per_kg": args["dose_mg_per_kg"],
                    "weight_kg": args["weight_kg"],
                    "planned_minutes": planned,
                    "total_mg": total,
                }
            if open_items:
                record["open_items"] = open_items
                detail |= {"override_reason": reason, "open_items": open_items}
        if target in ("pause", "resume"):
            try:  # only an infusion pauses: refused before anything is recorded
                self._target.set_phase(target, now)
            except ValueError as exc:
                return "bad_value", str(exc)
            if self._journal is not None:
                self._journal.phase_fields(dict(args))
            return detail
        journal = self._journal
        if journal is not None and (cmd.command != "phase" or record):
            kind = cmd.command if cmd.command != "phase" else "phase_command"
        else:
            kind = None
        # In the record the step goes with its session: a start after the new session opened, any
        # other step (the end above all) before the phase change closes it.
        if journal is not None and kind is not None and cmd.command != "start_session":
            journal.session_event(kind, record, now)
        if not restart:
            self._target.set_phase(target, now)
        if cmd.command == "start_session" and journal is not None:
            journal.age_band(args.get("age_band"), now)  # a new patient: never the last one's band
        elif "age_band" in args:
            self._target.set_age_band(args["age_band"], now)
        if "age_band" in args:
            detail["age_band"] = args["age_band"]
        if journal is None:
            return detail
        if kind is not None and cmd.command == "start_session":
            journal.session_event(kind, record, now)
        fields = {k: v for k, v in args.items() if k in ("dose_mg_per_kg", "planned_minutes", "age_band")}
        if "planned_minutes" in record:
            fields["planned_minutes"] = record["planned_minutes"]
        if fields or cmd.command == "phase":
            journal.phase_fields(fields | {"phase": target})
        return detail

    def _result(
        self,
        request_id: str | None,
        command: str | None,
        error: tuple[str, str] | None,
        detail: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return command_result_payload(
            request_id=request_id,
            command=command,
            ok=error is None,
            error=error,
            site=self.site,
            bed=self.bed,
            detail=detail,
            sent_at=datetime.now(UTC),
        )
