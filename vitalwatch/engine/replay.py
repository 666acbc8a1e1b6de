"""Deterministic replay's formats: the observation CSV it reads and the JSON line it prints.

The replays themselves drive the daemon's own bed session in virtual time
(:mod:`vitalwatch.continuity.replay`); this module is the pure part they share with the CLI.
Three inputs, one output format (one JSON object per output, see :func:`output_to_json`):

- :func:`parse_observations` + ``replay_rows``: the ``t,event,name,value`` CSV. Rows::

      phase,<baseline|infusion|recovery|ended>,        a nurse's phase command
      phase,<pause|resume>,                            ... pausing/resuming the infusion (in it only)
      obs,<kind>,<number or empty>                     an observation (empty: the device's "no value")
      status,<code>,<device>                           a device status switched on
      status,-<code>,<device>                          ... switched off
      status,ok,<device>                               every status of that device off
      link,<device>,<up|down>                          the port opened / vanished
      ack,<alert_id or *>,<who>                        a nurse acknowledged

  An ``obs`` row goes to the first configured device whose role measures that kind. Between
  rows the engine is ticked every second, and every device whose link is up is taken to be
  sending bytes (a CSV has no bytes): link_lost comes only from ``link,<device>,down``.

- ``run_scenario``: simulator bytes -> drivers -> bed session, exactly the daemon's data path
  without the ports. An ``NibpRequest`` starts a cuff cycle on the first driver that can
  (:class:`~vitalwatch.drivers.base.MeasurementStarter`), else becomes a ``NursePrompt``.

- ``replay_recording`` (:mod:`vitalwatch.continuity.recording`): a live run's raw bytes.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vitalwatch.drivers.vocabulary import KINDS, STATUS_CODES
from vitalwatch.engine.outputs import (
    AlertTransition,
    NibpRequest,
    NursePrompt,
    Output,
    PhaseChanged,
    StatusChanged,
)
from vitalwatch.engine.roles import measures_nibp, measures_oximetry
from vitalwatch.engine.transition_codec import transition_to_dict
from vitalwatch.engine.vocabulary import PHASE_COMMANDS

__all__ = [
    "ALERT_LINE_FIELDS",
    "DEFAULT_DEVICES",
    "SCENARIO_DRIVER_OPTIONS",
    "ReplayInputError",
    "Row",
    "device_for_kind",
    "output_to_json",
    "parse_observations",
]

DEFAULT_DEVICES: dict[str, str] = {"oximeter": "spo2", "nibp": "nibp"}
_HEADER = ["t", "event", "name", "value"]
# A SunTech module measures only when told: cycle every 5 min, as the infusion table's interval.
SCENARIO_DRIVER_OPTIONS: dict[str, dict[str, Any]] = {"suntech": {"interval_s": 300.0}}


class ReplayInputError(ValueError):
    """A bad CSV row; ``line`` is the 1-based line number in the file."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}")


@dataclass(frozen=True, slots=True)
class Row:
    """One parsed CSV row."""

    line: int
    t: float
    event: str
    name: str
    value: str


def parse_observations(lines: Iterable[str], devices: Mapping[str, str]) -> list[Row]:
    """Parse and check the whole CSV first, so a bad row stops the replay before any output."""
    rows: list[Row] = []
    last_t = -math.inf
    phase = "baseline"  # the session's phase so far: a pause or resume outside the infusion is refused
    seen_header = False
    reader = csv.reader(lines)
    for index, fields in enumerate(reader, start=1):
        if index == 1:
            seen_header = True
            if [f.strip() for f in fields] != _HEADER:
                raise ReplayInputError(1, f"header must be {','.join(_HEADER)}, got {','.join(fields)!r}")
            continue
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != 4:
            raise ReplayInputError(index, f"expected 4 fields (t,event,name,value), got {len(fields)}")
        t_text, event, name, value = (f.strip() for f in fields)
        try:
            t = float(t_text)
        except ValueError:
            raise ReplayInputError(index, f"t must be a number of seconds, got {t_text!r}") from None
        if not math.isfinite(t) or t < 0:
            raise ReplayInputError(index, f"t must be a finite number >= 0, got {t_text!r}")
        if t < last_t:
            raise ReplayInputError(index, f"rows must be in time order ({t} after {last_t})")
        last_t = t
        _check_row(index, event, name, value, devices)
        if event == "phase" and name in ("pause", "resume"):
            if phase != "infusion":
                raise ReplayInputError(index, f"{name} only during the infusion (phase is {phase})")
        elif event == "phase":
            phase = name
        rows.append(Row(index, t, event, name, value))
    if not seen_header:
        raise ReplayInputError(1, "empty file (expected the header t,event,name,value)")
    return rows


def _check_row(line: int, event: str, name: str, value: str, devices: Mapping[str, str]) -> None:
    match event:
        case "phase":
            if name not in PHASE_COMMANDS:
                raise ReplayInputError(line, f"unknown phase {name!r} (phases: {', '.join(PHASE_COMMANDS)})")
        case "obs":
            if name not in KINDS:
                raise ReplayInputError(line, f"unknown observation kind {name!r}")
            if value:
                try:
                    number = float(value)
                except ValueError:
                    raise ReplayInputError(line, f"value must be a number or empty, got {value!r}") from None
                if not math.isfinite(number):
                    raise ReplayInputError(line, f"value must be finite, got {value!r}")
            if device_for_kind(name, devices) is None:
                raise ReplayInputError(line, f"no configured device measures {name!r}")
        case "status":
            code = name[1:] if name.startswith("-") else name
            if code != "ok" and code not in STATUS_CODES:
                raise ReplayInputError(line, f"unknown status code {name!r}")
            if value not in devices:
                raise ReplayInputError(line, f"unknown device {value!r} (devices: {', '.join(devices)})")
        case "link":
            if name not in devices:
                raise ReplayInputError(line, f"unknown device {name!r} (devices: {', '.join(devices)})")
            if value not in ("up", "down"):
                raise ReplayInputError(line, f"link state must be up or down, got {value!r}")
        case "ack":
            if not name:
                raise ReplayInputError(line, "ack needs an alert_id or *")
            if not value:
                raise ReplayInputError(line, "ack needs who acknowledged")
        case _:
            raise ReplayInputError(line, f"unknown event {event!r} (phase, obs, status, link, ack)")


def device_for_kind(kind: str, devices: Mapping[str, str]) -> str | None:
    """The first configured device whose role measures ``kind`` (what an ``obs`` row goes to)."""
    wanted = measures_nibp if kind.startswith("nibp_") or kind == "cuff_pressure" else measures_oximetry
    for device, role in devices.items():
        if wanted(role):
            return device
    return None


# The fields of an alert line, in the order they are printed ("t" is rounded to the millisecond).
ALERT_LINE_FIELDS = (
    "t",
    "alert_id",
    "seq",
    "state",
    "priority",
    "category",
    "condition",
    "parameter",
    "value",
    "limit",
    "phase",
    "message",
)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def output_to_json(out: Output) -> dict[str, Any]:
    """One replay line: alert transitions with the issue's exact fields, other outputs by ``type``."""
    match out:
        case AlertTransition():
            data = transition_to_dict(out)
            return {"type": "alert", **{name: data[name] for name in ALERT_LINE_FIELDS}, "t": _r(out.t)}
        case NibpRequest():
            return {"type": "nibp_request", "t": _r(out.t), "reason": out.reason}
        case NursePrompt():
            return {"type": "nurse_prompt", "t": _r(out.t), "text": out.text}
        case PhaseChanged():
            return {"type": "phase", "t": _r(out.t), "phase": out.phase, "previous": out.previous}
        case StatusChanged():
            return {
                "type": "status",
                "t": _r(out.t),
                "code": out.code,
                "active": out.active,
                "detail": out.detail,
            }
