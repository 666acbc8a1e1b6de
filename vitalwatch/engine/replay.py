"""Deterministic replay: observation CSVs and simulator scenarios driven through a BedEngine in virtual time.

Two inputs, one output format (one JSON object per output, see :func:`output_to_json`):

- :func:`parse_observations` + :func:`replay_rows`: the ``t,event,name,value`` CSV of
  issue 5 §5. Rows::

      phase,<baseline|infusion|recovery|ended>,        a nurse's phase command
      obs,<kind>,<number or empty>                     an observation (empty: the device's "no value")
      status,<code>,<device>                           a device status switched on
      status,-<code>,<device>                          ... switched off
      status,ok,<device>                               every status of that device off
      link,<device>,<up|down>                          the port opened / vanished
      ack,<alert_id or *>,<who>                        a nurse acknowledged

  An ``obs`` row goes to the first configured device whose role measures that kind. Between
  rows the engine is ticked every second, and every device whose link is up is taken to be
  sending bytes (a CSV has no bytes): link_lost comes only from ``link,<device>,down``.

- :func:`run_scenario`: simulator bytes -> drivers -> engine, exactly the daemon's data path
  without the ports. An ``NibpRequest`` starts a cuff cycle on a driver that can
  (:class:`~vitalwatch.drivers.base.MeasurementStarter`), else becomes a ``NursePrompt``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vitalwatch.drivers.base import MeasurementStarter
from vitalwatch.drivers.events import DeviceStatus, Observation
from vitalwatch.drivers.vocabulary import KINDS, STATUS_CODES
from vitalwatch.engine.outputs import (
    AlertTransition,
    NibpRequest,
    NursePrompt,
    Output,
    PhaseChanged,
    StatusChanged,
)
from vitalwatch.engine.roles import measures_nibp, measures_oximetry, role_for_driver
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import AlarmTable
from vitalwatch.engine.vocabulary import PHASES
from vitalwatch.simulators.base import Scenario

__all__ = [
    "DEFAULT_DEVICES",
    "ReplayInputError",
    "Row",
    "output_to_json",
    "parse_observations",
    "replay_rows",
    "run_scenario",
]

DEFAULT_DEVICES: dict[str, str] = {"oximeter": "spo2", "nibp": "nibp"}
_HEADER = ["t", "event", "name", "value"]
# A SunTech module measures only when told: cycle every 5 min, as the infusion table's interval.
_SCENARIO_DRIVER_OPTIONS: dict[str, dict[str, Any]] = {"suntech": {"interval_s": 300.0}}


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
        rows.append(Row(index, t, event, name, value))
    if not seen_header:
        raise ReplayInputError(1, "empty file (expected the header t,event,name,value)")
    return rows


def _check_row(line: int, event: str, name: str, value: str, devices: Mapping[str, str]) -> None:
    match event:
        case "phase":
            if name not in PHASES:
                raise ReplayInputError(line, f"unknown phase {name!r} (phases: {', '.join(PHASES)})")
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
            if _device_for_kind(name, devices) is None:
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


def _device_for_kind(kind: str, devices: Mapping[str, str]) -> str | None:
    wanted = measures_nibp if kind.startswith("nibp_") or kind == "cuff_pressure" else measures_oximetry
    for device, role in devices.items():
        if wanted(role):
            return device
    return None


def replay_rows(
    table: AlarmTable, bed: str, devices: Mapping[str, str], rows: Sequence[Row], *, tick_s: float = 1.0
) -> Iterator[Output]:
    """Drive a fresh engine with parsed rows; ticks every ``tick_s`` of virtual time between rows."""
    engine = BedEngine(table, bed=bed, devices=devices)
    down: set[str] = set()
    statuses: dict[str, set[str]] = {d: set() for d in devices}
    clock: float | None = None

    def advance(to: float) -> Iterator[Output]:
        nonlocal clock
        t = to if clock is None else clock
        while True:
            for device in devices:
                if device not in down:
                    engine.bytes_seen(device, t)
            yield from engine.tick(t)
            clock = t
            if t >= to:
                return
            t = min(to, math.floor(t / tick_s + 1e-9) * tick_s + tick_s)

    for row in rows:
        yield from advance(row.t)
        t = row.t
        match row.event:
            case "phase":
                yield from engine.set_phase(row.name, t)
            case "obs":
                device = _device_for_kind(row.name, devices)
                assert device is not None
                value = float(row.value) if row.value else None
                yield from engine.observe(device, Observation(row.name, value, KINDS[row.name].unit), t)
            case "status":
                device, have = row.value, statuses[row.value]
                if row.name == "ok":
                    codes, on = sorted(have), False
                elif row.name.startswith("-"):
                    codes, on = [row.name[1:]], False
                else:
                    codes, on = [row.name], True
                for code in codes:
                    if (code in have) != on:
                        (have.add if on else have.discard)(code)
                        yield from engine.observe(device, DeviceStatus(code, on), t)
            case "link":
                (down.discard if row.value == "up" else down.add)(row.name)
                yield from engine.link(row.name, row.value == "up", t)
            case "ack":
                yield from engine.acknowledge(row.name, row.value, t)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def output_to_json(out: Output) -> dict[str, Any]:
    """One replay line: alert transitions with the issue's exact fields, other outputs by ``type``."""
    match out:
        case AlertTransition():
            return {
                "type": "alert",
                "t": _r(out.t),
                "alert_id": out.alert_id,
                "seq": out.seq,
                "state": out.state.value,
                "priority": out.priority.value,
                "category": out.category.value,
                "condition": out.condition,
                "parameter": out.parameter,
                "value": out.value,
                "limit": out.limit,
                "phase": out.phase,
                "message": out.message,
            }
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


def run_scenario(
    scenario: Scenario,
    drivers: Sequence[str],
    *,
    table: AlarmTable,
    seed: int = 0,
    bed: str = "bed-1",
    step_s: float = 0.25,
    driver_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[Output]:
    """Simulated device bytes -> drivers -> engine in virtual time (a 100-minute session in seconds).

    ``drivers`` are driver/simulator names (e.g. ``("masimo", "suntech")``); each becomes a device
    of the same id with :func:`~vitalwatch.engine.roles.role_for_driver`.
    Phase commands come from ``scenario.phases``.
    """
    from vitalwatch.drivers import make_driver
    from vitalwatch.simulators import make_simulator

    options = {**_SCENARIO_DRIVER_OPTIONS, **(driver_options or {})}
    sims = {name: make_simulator(name, scenario, seed=seed) for name in drivers}
    drvs = {name: make_driver(name, **options.get(name, {})) for name in drivers}
    engine = BedEngine(table, bed=bed, devices={name: role_for_driver(name) for name in drivers})
    phases = list(scenario.phases)
    steps = math.ceil(scenario.duration / step_s)
    for i in range(steps + 1):
        t = round(i * step_s, 6)
        while phases and phases[0][0] <= t:
            _, phase = phases.pop(0)
            yield from engine.set_phase(phase, t)
        outputs: list[Output] = []
        for name in drivers:
            sim, drv = sims[name], drvs[name]
            data = sim.poll(t)
            if data:
                engine.bytes_seen(name, t)
                for event in drv.feed(data, t):
                    outputs.extend(engine.observe(name, event, t))
            deadline = drv.next_deadline()
            if deadline is not None and deadline <= t:
                for event in drv.on_timer(t):
                    outputs.extend(engine.observe(name, event, t))
            sent = drv.data_to_send()
            if sent:
                sim.receive(sent, t)
        outputs.extend(engine.tick(t))
        prompts: list[Output] = []
        for out in outputs:
            if not isinstance(out, NibpRequest):
                continue
            started = False
            for n in drivers:
                drv = drvs[n]
                if measures_nibp(role_for_driver(n)) and isinstance(drv, MeasurementStarter):
                    drv.start_measurement()
                    sent = drvs[n].data_to_send()
                    if sent:
                        sims[n].receive(sent, t)
                    started = True
            if not started:
                prompts.append(
                    NursePrompt(t=t, bed=bed, text=f"Start an NIBP measurement by hand: {out.reason}")
                )
        yield from outputs
        yield from prompts
