"""Nurse commands arriving on ``{prefix}/{site}/{bed}/cmd``: strict parsing, then one result each.

A command is a JSON object (at most :data:`MAX_COMMAND_BYTES`)::

    {"request_id": "st2-000123", "command": "ack", "alert_id": "chair-1-...-0001" | "all",
     "by": "nurse-station-2"}
    {"request_id": "st2-000124", "command": "phase", "phase": "baseline|infusion|recovery|ended",
     "dose_mg_per_kg": 0.5, "planned_minutes": 40}          (both optional, stored for later)
    {"request_id": "st2-000125", "command": "nibp"}
    optional everywhere: "bed": must equal the topic's bed (guards a station that mixed up topics)

Every command gets exactly one result on ``.../cmd/result`` echoing ``request_id``::

    {"schema": "vitalwatch.cmd_result/1", "request_id": ..., "command": ..., "ok": true|false,
     "error": null | {"code": "...", "message": "..."}, "site": ..., "bed": ..., "sent_utc": ...}

Error codes: ``too_large``, ``bad_json``, ``not_object``, ``missing_field``, ``wrong_type``,
``bad_value``, ``unknown_field``, ``unknown_command``, ``wrong_bed``, ``replayed`` (a
request_id already accepted), ``unknown_alert`` (not an active alarm of this bed),
``unavailable`` (no commandable NIBP device). A rejected command changes nothing. Fields are
checked strictly (unknown fields are errors) because a typo in a clinical command should be
refused loudly, not half-applied. Who may send a command at all is the broker's ACL's job.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

__all__ = ["MAX_COMMAND_BYTES", "Command", "CommandError", "CommandHandler", "parse_command"]

log = structlog.get_logger("vitalwatch.commands")

# Real commands are ~150 bytes; 4 KiB leaves room for long ids while bounding what a
# misbehaving client can make us parse.
MAX_COMMAND_BYTES = 4096
RESULT_SCHEMA = "vitalwatch.cmd_result/1"
PHASES = ("baseline", "infusion", "recovery", "ended")
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_FIELDS: dict[str, tuple[set[str], set[str]]] = {  # command -> (required, optional) beyond the common ones
    "ack": ({"alert_id", "by"}, set()),
    "phase": ({"phase"}, {"dose_mg_per_kg", "planned_minutes"}),
    "nibp": (set(), set()),
}
_COMMON = {"request_id", "command", "bed"}


@dataclass(frozen=True, slots=True)
class Command:
    request_id: str
    command: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommandError:
    code: str
    message: str
    request_id: str | None = None
    command: str | None = None


def _number(data: dict[str, Any], name: str, low: float, high: float) -> float | str | None:
    if name not in data:
        return None
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"{name} must be a number"
    if not low <= value <= high:
        return f"{name} must be {low:g}-{high:g}, got {value}"
    return float(value)


def parse_command(payload: bytes, *, bed: str, max_bytes: int = MAX_COMMAND_BYTES) -> Command | CommandError:
    """Validate one command payload for ``bed``; never raises."""
    if len(payload) > max_bytes:
        return CommandError("too_large", f"command is {len(payload)} bytes, limit {max_bytes}")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return CommandError("bad_json", f"not UTF-8 JSON: {exc}")
    if not isinstance(data, dict):
        return CommandError("not_object", "a command is a JSON object")
    rid = data.get("request_id")
    request_id = rid if isinstance(rid, str) and _TOKEN.match(rid) else None
    cmd = data.get("command")
    command = cmd if isinstance(cmd, str) else None

    def error(code: str, message: str) -> CommandError:
        return CommandError(code, message, request_id, command)

    if "request_id" not in data:
        return error("missing_field", "request_id is required")
    if request_id is None:
        return error("wrong_type", "request_id must be 1-64 letters, digits, '_', '.', ':' or '-'")
    if "command" not in data:
        return error("missing_field", "command is required")
    if command is None:
        return error("wrong_type", "command must be a string")
    if command not in _FIELDS:
        return error("unknown_command", f"unknown command {command!r} (known: {', '.join(_FIELDS)})")
    if "bed" in data and data["bed"] != bed:
        return error("wrong_bed", f"command for bed {data['bed']!r} sent to bed {bed!r}")
    required, optional = _FIELDS[command]
    unknown = sorted(set(data) - _COMMON - required - optional)
    if unknown:
        return error("unknown_field", f"unknown field(s) for {command}: {', '.join(unknown)}")
    missing = sorted(required - set(data))
    if missing:
        return error("missing_field", f"{command} needs {', '.join(missing)}")
    args: dict[str, Any] = {}
    if command == "ack":
        for name in ("alert_id", "by"):
            value = data[name]
            if not isinstance(value, str):
                return error("wrong_type", f"{name} must be a string")
            if not _TOKEN.match(value):
                return error("bad_value", f"{name} must be 1-64 letters, digits, '_', '.', ':' or '-'")
            args[name] = value
    elif command == "phase":
        phase = data["phase"]
        if not isinstance(phase, str):
            return error("wrong_type", "phase must be a string")
        if phase not in PHASES:
            return error("bad_value", f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
        args["phase"] = phase
        for name, low, high in (("dose_mg_per_kg", 0.0, 10.0), ("planned_minutes", 1.0, 600.0)):
            value = _number(data, name, low, high)
            if isinstance(value, str):
                return error("wrong_type" if "number" in value else "bad_value", value)
            if value is not None:
                args[name] = value
    return Command(request_id, command, args)


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


class CommandHandler:
    """Applies valid commands to one bed and builds the result for every command."""

    def __init__(
        self,
        *,
        site: str,
        bed: str,
        clock: Callable[[], float],
        acknowledge: Callable[[str, str, float], None],
        set_phase: Callable[[str, float], None],
        request_nibp: Callable[[str, float], bool],
        is_active: Callable[[str], bool],
        remember: Callable[[str], object] | None = None,
        store_phase_fields: Callable[[dict[str, Any]], object] | None = None,
        seen: Iterable[str] = (),
        max_bytes: int = MAX_COMMAND_BYTES,
    ) -> None:
        self.site, self.bed = site, bed
        self._clock = clock
        self._acknowledge = acknowledge
        self._set_phase = set_phase
        self._request_nibp = request_nibp
        self._is_active = is_active
        self._remember = remember
        self._store_phase_fields = store_phase_fields
        self._seen = _Seen(seen)
        self._max_bytes = max_bytes
        self.accepted = 0
        self.rejected = 0

    def handle(self, payload: bytes) -> dict[str, Any]:
        """Parse, check, apply; the result payload to publish on ``.../cmd/result``."""
        parsed = parse_command(payload, bed=self.bed, max_bytes=self._max_bytes)
        if isinstance(parsed, Command):
            parsed = self._apply(parsed)
        if isinstance(parsed, CommandError):
            self.rejected += 1
            log.warning(
                "command.rejected", code=parsed.code, reason=parsed.message, request_id=parsed.request_id
            )
            return self._result(
                parsed.request_id, parsed.command, {"code": parsed.code, "message": parsed.message}
            )
        self.accepted += 1
        log.info("command.applied", command=parsed.command, request_id=parsed.request_id)
        return self._result(parsed.request_id, parsed.command, None)

    def _apply(self, cmd: Command) -> Command | CommandError:
        def error(code: str, message: str) -> CommandError:
            return CommandError(code, message, cmd.request_id, cmd.command)

        if cmd.request_id in self._seen:
            return error("replayed", f"request_id {cmd.request_id!r} was already used")
        now = self._clock()
        if cmd.command == "ack":
            alert_id = cmd.args["alert_id"]
            if alert_id != "all" and not self._is_active(alert_id):
                return error("unknown_alert", f"{alert_id!r} is not an active alarm of bed {self.bed!r}")
            self._acknowledge("*" if alert_id == "all" else alert_id, cmd.args["by"], now)
        elif cmd.command == "phase":
            self._set_phase(cmd.args["phase"], now)
            if self._store_phase_fields is not None:
                self._store_phase_fields(dict(cmd.args))
        elif cmd.command == "nibp" and not self._request_nibp("nurse request", now):
            return error("unavailable", "no NIBP device of this bed can be started remotely")
        self._seen.add(cmd.request_id)
        if self._remember is not None:
            self._remember(cmd.request_id)
        return cmd

    def _result(
        self, request_id: str | None, command: str | None, error: dict[str, str] | None
    ) -> dict[str, Any]:
        return {
            "schema": RESULT_SCHEMA,
            "request_id": request_id,
            "command": command,
            "ok": error is None,
            "error": error,
            "site": self.site,
            "bed": self.bed,
            "sent_utc": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
