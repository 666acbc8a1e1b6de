"""Nurse commands arriving on ``{prefix}/{site}/{bed}/cmd``: strict parsing, then one result each.

What is accepted is exactly what ``schemas/command.schema.json`` accepts (docs/mqtt.md,
"Commands"); ``tests/service/test_schemas.py`` checks the two agree on every documented and
malformed command and on generated ones. At most :data:`MAX_COMMAND_BYTES` of UTF-8 JSON::

    {"request_id": "st1-000481", "command": "ack", "alert_id": "<an active alert_id>" | "*",
     "by": "RN Kim"}
    {"request_id": "st1-000483", "command": "phase",
     "phase": "baseline|infusion|recovery|ended|pause|resume",
     "dose_mg_per_kg": 0.5, "planned_minutes": 40,          (both optional, stored for the record)
     "age_band": "adult|older_adult"}                       (optional: the session's age band)
    ``pause``/``resume`` pause and resume the infusion (the phase stays ``infusion``; refused
    with ``bad_value`` in another phase).
    {"request_id": "st1-000484", "command": "nibp"}
    optional everywhere: "by" (required for ack), "site" and "bed" (must be the topic's),
    "sent_utc" (when the station sent it)

Every command gets exactly one result on ``.../cmd/result`` echoing ``request_id``, built by
:func:`vitalwatch.delivery.payloads.command_result_payload` (one builder, one schema)::

    {"schema": "vitalwatch.cmd-result/1", "request_id": ..., "command": ..., "ok": true|false,
     "error": null | {"code": "...", "message": "..."}, "site": ..., "bed": ...,
     "detail": {...} | null, "sent_utc": ...}

Error codes are :data:`vitalwatch.delivery.payloads.ERROR_CODES`. A rejected command changes nothing.
Fields are checked strictly (unknown fields are errors) because a typo in a clinical command
should be refused loudly, not half-applied. Who may send a command at all is the broker's ACL's
job. ``alert_id`` ``"*"`` acknowledges every active alarm of the bed; nothing else is a wildcard.
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
    "MAX_COMMAND_BYTES",
    "Command",
    "CommandError",
    "CommandHandler",
    "CommandJournal",
    "CommandTarget",
    "parse_command",
]

log = structlog.get_logger("vitalwatch.delivery.commands")

# Real commands are ~150 bytes; 4 KiB leaves room for long ids while bounding what a
# misbehaving client can make us parse.
MAX_COMMAND_BYTES = 4096
PHASES = PHASE_COMMANDS  # the four phases, and pause/resume of the infusion
# The patterns of schemas/command.schema.json. fullmatch, because Python's "$" would also
# match before a trailing newline where the schema's (ECMA 262) does not.
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_LEVEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ALERT_ID = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Who acts: 1-64 printable characters ("RN Kim"); no C0/C1 control characters or DEL, which
# could forge lines in a log or a station's display.
_WHO = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,64}")
_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")
# command -> (required, optional) beyond the fields every command may carry.
_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "ack": (frozenset({"alert_id", "by"}), frozenset()),
    "phase": (frozenset({"phase"}), frozenset({"dose_mg_per_kg", "planned_minutes", "age_band"})),
    "nibp": (frozenset(), frozenset()),
}
_COMMON = frozenset({"request_id", "command", "by", "site", "bed", "sent_utc"})
# Exclusive lower and inclusive upper bound of each number (the schema's).
_NUMBERS = {"dose_mg_per_kg": (0.0, 10.0), "planned_minutes": (0.0, 600.0)}
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
            return "bad_value", "by must be 1-64 characters without control characters"
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


def _check_args(command: str, data: dict[str, Any]) -> tuple[str, str] | dict[str, Any]:
    """The command's own fields: its arguments, or (code, message) of the first problem."""
    args: dict[str, Any] = {}
    if command == "ack":
        alert_id = data["alert_id"]
        if not isinstance(alert_id, str):
            return "wrong_type", "alert_id must be a string"
        if not _ALERT_ID.fullmatch(alert_id):
            return "bad_value", "alert_id must be '*' or 1-64 letters, digits, '_', '.' or '-'"
        args["alert_id"] = alert_id
        args["by"] = data["by"]
    elif command == "phase":
        for name, choices in (("phase", PHASES), ("age_band", AGE_BANDS)):
            if name not in data:
                continue  # only age_band is optional: the caller checked the required fields
            value = data[name]
            if not isinstance(value, str):
                return "wrong_type", f"{name} must be a string"
            if value not in choices:
                return "bad_value", f"{name} must be one of {', '.join(choices)}, got {value!r}"
            args[name] = value
        for name, (low, high) in _NUMBERS.items():
            if name not in data:
                continue
            value = data[name]
            if not _is_number(value):
                return "wrong_type", f"{name} must be a number"
            if not low < value <= high:
                return "bad_value", f"{name} must be more than {low:g} and at most {high:g}, got {value}"
            args[name] = float(value)
    return args


def parse_command(
    payload: bytes, *, site: str, bed: str, max_bytes: int = MAX_COMMAND_BYTES
) -> Command | CommandError:
    """Validate one command payload for ``site``/``bed`` as the command schema does; never raises."""
    if len(payload) > max_bytes:
        return CommandError("too_large", f"command is {len(payload)} bytes, limit {max_bytes}")
    try:
        data = json.loads(payload.decode("utf-8"))
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


class CommandHandler:
    """Applies valid commands to one bed (a :class:`CommandTarget`) and builds every result."""

    def __init__(
        self,
        *,
        site: str,
        bed: str,
        target: CommandTarget,
        clock: Callable[[], float],
        journal: CommandJournal | None = None,
        seen: Iterable[str] = (),
        max_bytes: int = MAX_COMMAND_BYTES,
    ) -> None:
        self.site, self.bed = site, bed
        self._target = target
        self._clock = clock
        self._journal = journal
        self._seen = _Seen(seen)
        self._max_bytes = max_bytes
        self.accepted = 0
        self.rejected = 0

    def handle(self, payload: bytes) -> dict[str, Any]:
        """Parse, check, apply; the result payload to publish on ``.../cmd/result``."""
        parsed = parse_command(payload, site=self.site, bed=self.bed, max_bytes=self._max_bytes)
        detail: dict[str, Any] | None = None
        if isinstance(parsed, Command):
            outcome = self._apply(parsed)
            if isinstance(outcome, CommandError):
                parsed = outcome
            else:
                detail = outcome
        if isinstance(parsed, CommandError):
            self.rejected += 1
            log.warning(
                "command.rejected", code=parsed.code, reason=parsed.message, request_id=parsed.request_id
            )
            return self._result(parsed.request_id, parsed.command, (parsed.code, parsed.message), None)
        self.accepted += 1
        log.info("command.applied", command=parsed.command, request_id=parsed.request_id)
        return self._result(parsed.request_id, parsed.command, None, detail)

    def _apply(self, cmd: Command) -> dict[str, Any] | CommandError:
        """Carry out a valid command; its result detail, or why it cannot be done (nothing changed)."""

        def error(code: str, message: str) -> CommandError:
            return CommandError(code, message, cmd.request_id, cmd.command)

        if cmd.request_id in self._seen:
            return error("replayed", f"request_id {cmd.request_id!r} was already used")
        now = self._clock()
        detail: dict[str, Any]
        if cmd.command == "ack":
            alert_id = cmd.args["alert_id"]
            if alert_id != "*" and not self._target.is_active(alert_id):
                return error(
                    "unknown_alert", f"unknown alert_id {alert_id!r} (not an active alarm of {self.bed})"
                )
            ids = [alert_id] if alert_id != "*" else self._target.active_ids()
            self._target.acknowledge(alert_id, cmd.args["by"], now)
            detail = {"acknowledged": ids}
        elif cmd.command == "phase":
            try:
                self._target.set_phase(cmd.args["phase"], now)
            except ValueError as exc:  # pause/resume outside the infusion: nothing changed
                return error("bad_value", str(exc))
            if "age_band" in cmd.args:
                self._target.set_age_band(cmd.args["age_band"], now)
            if self._journal is not None:
                self._journal.phase_fields(dict(cmd.args))
            detail = {"phase": cmd.args["phase"]}
            if "age_band" in cmd.args:
                detail["age_band"] = cmd.args["age_band"]
        else:  # nibp
            if not self._target.request_nibp("nurse request", now):
                return error("unavailable", "no NIBP device of this bed can be started remotely")
            detail = {"nibp": "started"}
        self._seen.add(cmd.request_id)
        if self._journal is not None:
            self._journal.remember_request(cmd.request_id)
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
