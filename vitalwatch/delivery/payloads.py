"""MQTT topics and JSON payloads: the wire contract nurses' phones and stations rely on.

Topics carry site and bed, never a patient identifier (docs/mqtt.md)::

    {prefix}/{site}/{bed}/alerts              every alert transition, QoS 1, not retained
    {prefix}/{site}/{bed}/alarms/{alert_id}   retained while the alarm is active
    {prefix}/{site}/{bed}/status              retained: online/offline, phase, links, heartbeat
    {prefix}/{site}/{bed}/vitals/{kind}       latest values, QoS 0
    {prefix}/{site}/{bed}/prompts             retained: the nurse prompts open now (take a BP ...)
    {prefix}/{site}/{bed}/readiness           retained: the pre-infusion readiness check
    {prefix}/{site}/{bed}/trend               retained: recent trend and latest values (delivery/trend.py)
    {prefix}/{site}/{bed}/cmd                 commands in; .../cmd/result out

Each payload has a JSON Schema (draft 2020-12) in ``schemas/``; ``tests/service/test_schemas.py``
checks every builder here against its schema, so the documentation cannot drift from the code.
Alert fields follow IHE PCD ACM (priority, kind, phase of the alert, parameter with its MDC
code, limits) in JSON, with ``alert_id`` stable per occurrence and ``seq`` +1 per transition
per bed so receivers order and de-duplicate on ``(alert_id, seq)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from vitalwatch import __version__, strict_json
from vitalwatch.drivers.vocabulary import KINDS
from vitalwatch.engine.outputs import AlertTransition, Priority
from vitalwatch.engine.transition_codec import transition_to_dict

__all__ = [
    "ALERT_SCHEMA",
    "COMMANDS",
    "COMMAND_RESULT_SCHEMA",
    "ERROR_CODES",
    "PROMPTS_SCHEMA",
    "READINESS_SCHEMA",
    "STATUS_SCHEMA",
    "TECHNICAL_ALARMS",
    "TREND_SCHEMA",
    "VITAL_SCHEMA",
    "Topics",
    "WallClock",
    "alert_payload",
    "command_result_payload",
    "discharge_doc",
    "encode",
    "iso_utc",
    "priority_rank",
    "prompts_payload",
    "readiness_payload",
    "status_payload",
    "vital_payload",
]

ALERT_SCHEMA = "vitalwatch.alert/1"
STATUS_SCHEMA = "vitalwatch.status/1"
VITAL_SCHEMA = "vitalwatch.vital/1"
COMMAND_RESULT_SCHEMA = "vitalwatch.cmd-result/1"
PROMPTS_SCHEMA = "vitalwatch.prompts/1"
TREND_SCHEMA = "vitalwatch.trend/1"
READINESS_SCHEMA = "vitalwatch.readiness/1"

# The commands a nurse station may send on ``.../cmd`` (schemas/command.schema.json).
COMMANDS: tuple[str, ...] = (
    "ack",
    "phase",
    "nibp",
    "start_session",
    "start_infusion",
    "pump_stopped",
    "end_session",
    "prompt_done",
    "event",
)

# Why a command was refused: ``error.code`` of a result (schemas/command_result.schema.json).
# A station may branch on the code; ``error.message`` is for people and may change wording.
ERROR_CODES: tuple[str, ...] = (
    "too_large",  # more than 4096 bytes
    "bad_json",  # not UTF-8 JSON
    "duplicate_key",  # a key appears twice in the object
    "not_object",  # JSON, but not an object
    "missing_field",  # request_id, command, or a field the command needs
    "wrong_type",  # a field of the wrong JSON type (or request_id not matching its pattern)
    "bad_value",  # right type, value outside what the schema allows
    "unknown_field",  # a field the command does not take (a typo is refused, never ignored)
    "unknown_command",
    "wrong_bed",  # site/bed in the command are not the topic's
    "replayed",  # request_id already accepted
    "unknown_alert",  # alert_id is not an active alarm of this bed
    "unavailable",  # the bed cannot do it
    "retained",  # sent with the MQTT retain flag: never applied
    "rate_limited",  # more commands for this bed than its token bucket allows
    "wrong_phase",  # the session's state machine does not allow this phase change now
    "not_ready",  # start infusion with readiness items open and no override_reason
    "unknown_prompt",  # prompt_done for a prompt that is not open
    "internal",  # a bug in the gateway; nothing was changed
)

# Local technical alarms a status may list (the gateway's own health, not the patient's).
TECHNICAL_ALARMS: tuple[str, ...] = (
    "broker_unreachable",
    "persistence_degraded",
    "alarm_manager_unreachable",
    "device_silent",
    "daemon_stalled",
    "journal_lost",
)

# The parameter of an alert and its MDC code; "nibp" alerts name the systolic code.
_PARAMETER_MDC = {
    "spo2": KINDS["spo2"].mdc,
    "pulse_rate": KINDS["pulse_rate"].mdc,
    "nibp": KINDS["nibp_systolic"].mdc,
}


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names of one bed."""

    prefix: str
    site: str
    bed: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.bed}"

    @property
    def alerts(self) -> str:
        return f"{self.base}/alerts"

    @property
    def escalations(self) -> str:
        """An escalated alert again, for the second recipient (a charge nurse's account)."""
        return f"{self.base}/escalations"

    def alarm(self, alert_id: str) -> str:
        return f"{self.base}/alarms/{alert_id}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    def vital(self, kind: str) -> str:
        return f"{self.base}/vitals/{kind}"

    @property
    def prompts(self) -> str:
        return f"{self.base}/prompts"

    @property
    def readiness(self) -> str:
        return f"{self.base}/readiness"

    @property
    def trend(self) -> str:
        return f"{self.base}/trend"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    @property
    def cmd_result(self) -> str:
        return f"{self.base}/cmd/result"


class WallClock:
    """Maps the engine's monotonic seconds to UTC labels.

    Durations never use the wall clock (an NTP step must not fire or delay a timer); UTC
    only labels payloads, computed as "now in UTC minus how long ago on the monotonic clock".
    """

    def __init__(
        self, monotonic_now: float, utc_now: datetime | None = None, clock_synced: bool = False
    ) -> None:
        self._mono = monotonic_now
        self._utc = utc_now or datetime.now(UTC)
        self.clock_synced = clock_synced

    def utc(self, t: float) -> datetime:
        return self._utc + timedelta(seconds=t - self._mono)


@overload
def iso_utc(dt: datetime) -> str: ...
@overload
def iso_utc(dt: None) -> None: ...
def iso_utc(dt: datetime | None) -> str | None:
    """UTC, milliseconds, ``Z``: the one time format of every payload (None stays None)."""
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def priority_rank(name: object) -> int:
    """The rank of a priority as a payload names it (``Priority.rank``: high 3 ... info 0); 0 if unknown.

    For readers of payloads and records that sort or compare by priority (``vitalwatch tail``,
    the export); the nurse station's copy in ``station.js`` is checked against this by a test.
    """
    try:
        return Priority(str(name)).rank
    except ValueError:
        return 0


# Alert payload fields copied as they are from the transition codec's dict (the rest are reshaped).
_ALERT_COPIED = (
    "alert_id",
    "seq",
    "bed",
    "state",
    "priority",
    "category",
    "condition",
    "value",
    "unit",
    "limit",
    "phase",
    "escalation_level",
    "acknowledged_by",
    "rule",
    "device",
    "message",
)


def alert_payload(
    tr: AlertTransition, *, site: str, wall: WallClock, sent_at: datetime | None = None
) -> dict[str, Any]:
    """The alert JSON for one transition (schema: schemas/alert.schema.json).

    Built from :func:`~vitalwatch.engine.transition_codec.transition_to_dict`: the parameter
    gets its MDC code, monotonic times become UTC, and the phase time becomes minutes.
    """
    data = transition_to_dict(tr)
    return {
        "schema": ALERT_SCHEMA,
        "site": site,
        **{name: data[name] for name in _ALERT_COPIED},
        "parameter": (
            {"name": tr.parameter, "mdc": _PARAMETER_MDC.get(tr.parameter)}
            if tr.parameter is not None
            else None
        ),
        "phase_minutes": round(tr.phase_elapsed_s / 60.0, 1),
        "onset_utc": iso_utc(wall.utc(tr.onset_t)),
        "event_utc": iso_utc(wall.utc(tr.t)),
        "sent_utc": iso_utc(sent_at or datetime.now(UTC)),
        "clock_synced": wall.clock_synced,
        "acknowledged_utc": iso_utc(wall.utc(tr.acknowledged_t)) if tr.acknowledged_t is not None else None,
    }


def status_payload(
    *,
    state: str,
    site: str,
    bed: str,
    phase: str | None,
    links: dict[str, bool],
    heartbeat: int,
    sent_at: datetime,
    phase_minutes: float | None = None,
    outbox_pending: int = 0,
    technical: Iterable[str] = (),
    paused: bool = False,
    discharge: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Retained bed status; ``state`` is online or offline (the last will says offline too).

    ``phase_minutes`` is the gateway's own count (monotonic clock) as of ``sent_utc``, so a
    station that reloads shows exact minutes in phase instead of "at least N"; None when the
    caller does not know it (paused infusion time is not counted; ``paused`` says the
    infusion is paused now). ``outbox_pending`` counts alert transitions the broker has not
    acknowledged yet; ``technical`` names the gateway's active local technical alarms
    (:data:`TECHNICAL_ALARMS`), so an engineer sees why a bed may be late with its alerts.
    ``discharge`` is the discharge readiness in recovery (:func:`discharge_doc`), else None.
    """
    return {
        "schema": STATUS_SCHEMA,
        "state": state,
        "site": site,
        "bed": bed,
        "phase": phase,
        "phase_minutes": None if phase_minutes is None else round(max(0.0, phase_minutes), 1),
        "paused": paused,
        "links": {name: ("up" if up else "down") for name, up in sorted(links.items())},
        "heartbeat": heartbeat,
        "outbox_pending": outbox_pending,
        "technical": sorted(set(technical)),
        "discharge": discharge,
        "version": __version__,
        "sent_utc": iso_utc(sent_at),
    }


def vital_payload(
    *, kind: str, value: float | None, unit: str, quality: str, measured_at: datetime, device: str
) -> dict[str, Any]:
    """Latest value of one vital sign (QoS 0; a newer one replaces it)."""
    return {
        "schema": VITAL_SCHEMA,
        "kind": kind,
        "value": value,
        "unit": unit,
        "quality": quality,
        "measured_utc": iso_utc(measured_at),
        "device": device,
    }


def command_result_payload(
    *,
    request_id: str | None,
    command: str | None,
    ok: bool,
    site: str,
    bed: str,
    sent_at: datetime,
    error: tuple[str, str] | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The answer on ``.../cmd/result`` to one command (schema: schemas/command_result.schema.json).

    ``request_id`` and ``command`` are echoed as far as they could be read: a command that is
    not JSON at all still gets a result, with both ``None`` and ``error`` naming the problem,
    so the sender is never left guessing. An ``ok`` result has no error; a refused one has
    ``error = (code, message)``, published as ``{"code": ..., "message": ...}``: the code
    (:data:`ERROR_CODES`) for a program, the message for a nurse or an engineer.
    """
    if ok == (error is not None):
        raise ValueError("a command result is either ok with no error, or not ok with an error")
    if error is not None and (error[0] not in ERROR_CODES or not error[1]):
        raise ValueError(f"unknown error code {error[0]!r} or empty message")
    return {
        "schema": COMMAND_RESULT_SCHEMA,
        "request_id": request_id,
        "command": command,
        "ok": ok,
        "error": None if error is None else {"code": error[0], "message": error[1]},
        "site": site,
        "bed": bed,
        "detail": detail,
        "sent_utc": iso_utc(sent_at),
    }


def discharge_doc(ready: bool, met: list[str], missing: list[str], confirms: Iterable[str]) -> dict[str, Any]:
    """The status's ``discharge`` object: what the monitors show met and missing, and what they cannot."""
    return {"ready": ready, "met": met, "missing": missing, "nurse_confirms": list(confirms)}


def prompts_payload(
    *, site: str, bed: str, prompts: list[dict[str, Any]], sent_at: datetime
) -> dict[str, Any]:
    """Retained ``.../prompts``: every nurse prompt open now (schema: schemas/prompts.schema.json).

    Each prompt is ``{"prompt_id", "kind", "text", "reason", "opened_utc", "then"}``; an empty
    list means nothing is asked of the nurse. The whole set is one document, so a station that
    connects late reads the truth from one retained message.
    """
    return {
        "schema": PROMPTS_SCHEMA,
        "site": site,
        "bed": bed,
        "prompts": prompts,
        "sent_utc": iso_utc(sent_at),
    }


def readiness_payload(
    *, site: str, bed: str, phase: str, items: list[dict[str, Any]], sent_at: datetime
) -> dict[str, Any]:
    """Retained ``.../readiness``: the pre-infusion check (schema: schemas/readiness.schema.json).

    ``items`` are ``{"item", "ok", "text"}``; ``ready`` is every item ok. ``start_infusion`` is
    refused with ``not_ready`` while one is open, unless it carries ``override_reason``.
    """
    return {
        "schema": READINESS_SCHEMA,
        "site": site,
        "bed": bed,
        "phase": phase,
        "ready": all(item["ok"] for item in items),
        "open": [item["text"] for item in items if not item["ok"]],
        "items": items,
        "sent_utc": iso_utc(sent_at),
    }


_KNOWN_SCHEMAS = {
    ALERT_SCHEMA: "alert",
    STATUS_SCHEMA: "status",
    VITAL_SCHEMA: "vital",
    PROMPTS_SCHEMA: "prompts",
    READINESS_SCHEMA: "readiness",
    TREND_SCHEMA: "trend",
}


def _what(payload: dict[str, Any]) -> str:
    """The payload's kind for the non-finite metric label (a fixed set, whatever the payload says)."""
    schema = payload.get("schema")
    if schema == COMMAND_RESULT_SCHEMA:
        return "command_result"
    return _KNOWN_SCHEMAS.get(schema, "mqtt") if isinstance(schema, str) else "mqtt"


SENT_KEY = "sent_utc"


def stamped_encoder(payload: dict[str, Any]) -> Callable[[str], bytes]:
    """What :func:`encode` makes of ``payload`` with ``sent_utc`` set, built in two halves now
    and joined around the stamp later.

    The publisher builds it while the writer thread fsyncs the alert and stamps it once the
    commit is done (``sent_utc`` is when the alert went out, after the journal), so the JSON
    encoding is off the path between the commit and the send (alarm latency,
    docs/performance.md). The bytes are :func:`encode`'s: keys sorted, so ``sent_utc`` sits
    between the keys that sort before it and those after; a ``sent_utc`` already in
    ``payload`` is replaced, as ``body["sent_utc"] = ...`` did.
    """
    what = _what(payload)

    def dump(obj: object) -> str:
        return strict_json.dumps(obj, what=what, separators=(",", ":"), sort_keys=True)

    head = dump({k: v for k, v in payload.items() if k < SENT_KEY})[:-1]  # '{' and the items
    tail = dump({k: v for k, v in payload.items() if k > SENT_KEY})[1:]  # the items and '}'
    head += "," if len(head) > 1 else ""
    tail = ("," if len(tail) > 1 else "") + tail

    def stamp(sent_utc: str) -> bytes:
        return f'{head}"{SENT_KEY}":{dump(sent_utc)}{tail}'.encode()

    return stamp


def encode(payload: dict[str, Any]) -> bytes:
    """Compact, key-sorted, strict JSON (stable bytes for the same payload).

    A non-finite number never goes out as ``Infinity``/``NaN`` (not JSON: a station's parser would
    drop the whole alert); :func:`vitalwatch.strict_json.dumps` publishes it as null, logs and
    counts it, and the alert itself still goes out.
    """
    return strict_json.dumps(payload, what=_what(payload), separators=(",", ":"), sort_keys=True).encode()
