"""The alarm table: the shipped default, the clinic's overrides, and their validation.

The table is data (``vitalwatch/data/alarm-table.toml``, each row with its evidence mark; the
evidence table is in docs/alarms.md). The daemon's ``[alarms]`` config section selects a table file
(``table = "default"`` or a path) and overrides any key of it with the same layout, e.g.
``[alarms.rules.spo2_low_high] limit = 88``. Everything is checked once, here, and every problem
is reported at once as :class:`~vitalwatch.errors.ConfigError` with dotted keys, because a clinic
editing its table wants the whole list, not one error per restart.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vitalwatch.engine.outputs import Priority
from vitalwatch.engine.vocabulary import CONDITIONS, PHASES
from vitalwatch.errors import ConfigError, ConfigProblem

__all__ = [
    "COMPARES",
    "RULE_TYPES",
    "AlarmTable",
    "BaselineSettings",
    "DischargeSettings",
    "Rule",
    "default_table",
    "load_alarm_table",
]

COMPARES: tuple[str, ...] = ("<", "<=", ">", ">=")
_ALARM_PRIORITIES = ("high", "medium", "low")


def compare(op: str, value: float, limit: float) -> bool:
    """``value <op> limit`` for one of :data:`COMPARES`."""
    if op == "<":
        return value < limit
    if op == "<=":
        return value <= limit
    if op == ">":
        return value > limit
    return value >= limit


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One row of the table. Which fields mean something depends on ``type`` (docs/alarms.md)."""

    id: str
    type: str
    condition: str
    priority: Priority
    phases: frozenset[str]
    parameter: str | None = None
    compare: str = "<"
    limit: float | None = None
    baseline_offset: float | None = None
    baseline_percent: float | None = None
    sustain_s: float = 0.0
    bypass_limit: float | None = None
    bypass_s: float = 0.0
    systolic: float | None = None
    diastolic: float | None = None
    systolic_offset: float | None = None
    diastolic_offset: float | None = None
    confirm: bool = False
    confirm_min_s: float = 0.0  # earliest confirmation after the first reading (shipped table: 120)
    confirm_window_s: float = 300.0
    readings: int = 2
    systolic_above: float | None = None
    diastolic_above: float | None = None
    systolic_above_65: float | None = None
    interval_s: float = 300.0
    grace_s: float = 180.0
    due_from_s: float | None = None
    due_until_s: float | None = None
    after_s: float = 0.0
    gap_s: float = 2.0
    percent: float = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineSettings:
    """How the baseline is taken (docs/alarms.md, "Session and phases")."""

    nibp_readings: int = 2
    nibp_spacing_s: float = 120.0
    oximetry_s: float = 180.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DischargeSettings:
    """The discharge_ready criteria (docs/alarms.md, "Session and phases")."""

    after_recovery_min: float = 60.0
    nibp_spacing_min: float = 10.0
    nibp_percent: float = 20.0
    systolic_below: float = 160.0
    diastolic_below: float = 100.0
    pulse_percent: float = 20.0
    spo2_at_least: float = 92.0
    spo2_below_baseline_max: float = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmTable:
    """A validated alarm table: rules plus lifecycle settings, ready for :class:`BedEngine`."""

    rules: tuple[Rule, ...]
    planned_infusion_s: float = 2400.0
    ack_silence_s: float = 120.0
    sample_hold_s: float = 5.0
    latching: Mapping[Priority, bool] = field(default_factory=dict)
    renotify_s: Mapping[Priority, float] = field(default_factory=dict)
    escalate_s: Mapping[Priority, float] = field(default_factory=dict)
    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    discharge: DischargeSettings = field(default_factory=DischargeSettings)
    source: str = "default"

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id (KeyError when absent)."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def rules_of(self, rule_type: str) -> tuple[Rule, ...]:
        """Every enabled rule of one type, in table order."""
        return tuple(r for r in self.rules if r.type == rule_type)


# --------------------------------------------------------------------------- schema
# A field spec: (kind, low, high). kind: num | int | bool | compare | parameter | str.
_Spec = tuple[str, float | None, float | None]

_COMMON: dict[str, _Spec] = {
    "type": ("str", None, None),
    "condition": ("str", None, None),
    "priority": ("str", None, None),
    "phases": ("phases", None, None),
    "enabled": ("bool", None, None),
}

RULE_TYPES: dict[str, dict[str, _Spec]] = {
    "sustained": {
        "parameter": ("parameter", None, None),
        "compare": ("compare", None, None),
        "limit": ("num", None, None),  # range depends on parameter, checked below
        "baseline_offset": ("num", -50, 50),
        "baseline_percent": ("num", -90, 200),
        "sustain_s": ("num", 0, 3600),
        "bypass_limit": ("num", None, None),
        "bypass_s": ("num", 0, 600),
    },
    "baseline_gate": {
        "parameter": ("parameter", None, None),
        "compare": ("compare", None, None),
        "limit": ("num", None, None),
    },
    "nibp": {
        "compare": ("compare", None, None),
        "systolic": ("num", 30, 300),
        "diastolic": ("num", 20, 200),
        "systolic_offset": ("num", -100, 150),
        "diastolic_offset": ("num", -100, 150),
        "confirm": ("bool", None, None),
        "confirm_min_s": ("num", 0, 1800),
        "confirm_window_s": ("num", 30, 1800),
    },
    "nibp_gate": {
        "readings": ("int", 1, 10),
        "systolic_above": ("num", 60, 300),
        "diastolic_above": ("num", 30, 200),
        "systolic_above_65": ("num", 60, 300),
    },
    "nibp_overdue": {
        "interval_s": ("num", 60, 7200),
        "grace_s": ("num", 0, 3600),
        "due_from_s": ("num", 0, 14400),
        "due_until_s": ("num", 0, 14400),
    },
    "nibp_recovery": {"after_s": ("num", 0, 43200), "percent": ("num", 0, 100)},
    "signal_lost": {"after_s": ("num", 5, 600)},
    "link_lost": {"after_s": ("num", 2, 600)},
    "nibp_peak": {"due_from_s": ("num", 0, 14400), "due_until_s": ("num", 0, 14400)},
    "baseline_overrun": {"after_s": ("num", 60, 14400)},
    "device_garbled": {"after_s": ("num", 1, 600), "gap_s": ("num", 0.1, 60)},
    "driver_fault": {},
    "baseline_incomplete": {},
    "infusion_overrun": {},
}

_REQUIRED: dict[str, tuple[str, ...]] = {
    "sustained": ("parameter", "compare", "sustain_s"),
    "baseline_gate": ("parameter", "compare", "limit"),
    "nibp": ("compare",),
    "nibp_gate": ("systolic_above", "diastolic_above"),
    "nibp_overdue": ("interval_s", "grace_s"),
    "nibp_recovery": ("after_s", "percent"),
    "signal_lost": ("after_s",),
    "link_lost": ("after_s",),
    "nibp_peak": ("due_from_s", "due_until_s"),
    "baseline_overrun": ("after_s",),
    "device_garbled": ("after_s",),
}

_VALUE_RANGE: dict[str, tuple[float, float]] = {"spo2": (50, 100), "pulse_rate": (20, 250)}

_TOP: dict[str, _Spec] = {
    "planned_infusion_min": ("num", 5, 240),
    "ack_silence_s": ("num", 0, 3600),
    "sample_hold_s": ("num", 1, 60),
}
_PER_PRIORITY: dict[str, _Spec] = {
    "latching": ("bool", None, None),
    "renotify_s": ("num", 0, 3600),
    "escalate_s": ("num", 0, 3600),
}
_BASELINE: dict[str, _Spec] = {
    "nibp_readings": ("int", 1, 10),
    "nibp_spacing_s": ("num", 0, 3600),
    "oximetry_s": ("num", 30, 3600),
}
_DISCHARGE: dict[str, _Spec] = {
    "after_recovery_min": ("num", 0, 600),
    "nibp_spacing_min": ("num", 0, 120),
    "nibp_percent": ("num", 0, 100),
    "systolic_below": ("num", 80, 250),
    "diastolic_below": ("num", 40, 150),
    "pulse_percent": ("num", 0, 100),
    "spo2_at_least": ("num", 70, 100),
    "spo2_below_baseline_max": ("num", 0, 20),
}


def _fmt(x: float | None) -> str:
    return "" if x is None else (str(int(x)) if float(x).is_integer() else str(x))


def _check(key: str, value: Any, spec: _Spec, problems: list[ConfigProblem]) -> Any:
    """Type- and range-check one value; append a problem and return None when wrong."""
    kind, low, high = spec
    if kind == "bool":
        if not isinstance(value, bool):
            problems.append(ConfigProblem(key, f"must be true or false, got {value!r}"))
            return None
        return value
    if kind in ("num", "int"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(ConfigProblem(key, f"must be a number, got {value!r}"))
            return None
        if kind == "int" and not float(value).is_integer():
            problems.append(ConfigProblem(key, f"must be a whole number, got {value!r}"))
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            problems.append(ConfigProblem(key, f"must be {_fmt(low)}-{_fmt(high)}, got {value!r}"))
            return None
        return int(value) if kind == "int" else float(value)
    if kind == "phases":
        if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
            problems.append(ConfigProblem(key, f"must be a non-empty list of phases, got {value!r}"))
            return None
        bad = [p for p in value if p not in PHASES]
        if bad:
            problems.append(ConfigProblem(key, f"unknown phase {bad[0]!r} (phases: {', '.join(PHASES)})"))
            return None
        return frozenset(value)
    if not isinstance(value, str):
        problems.append(ConfigProblem(key, f"must be a string, got {value!r}"))
        return None
    if kind == "compare" and value not in COMPARES:
        problems.append(ConfigProblem(key, f"must be one of {', '.join(COMPARES)}, got {value!r}"))
        return None
    if kind == "parameter" and value not in _VALUE_RANGE:
        problems.append(ConfigProblem(key, f"must be spo2 or pulse_rate, got {value!r}"))
        return None
    return value


def _section(
    data: Any, key: str, specs: Mapping[str, _Spec], problems: list[ConfigProblem]
) -> dict[str, Any]:
    """Check a flat table against specs; unknown keys are errors (a typo must not be ignored)."""
    if not isinstance(data, Mapping):
        problems.append(ConfigProblem(key, f"must be a table, got {data!r}"))
        return {}
    out: dict[str, Any] = {}
    for name, value in data.items():
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(sorted(specs)) or "none"
            problems.append(ConfigProblem(f"{key}.{name}", f"unknown key (known: {known})"))
            continue
        checked = _check(f"{key}.{name}", value, spec, problems)
        if checked is not None:
            out[name] = checked
    return out


def _rule(rule_id: str, data: Any, key: str, problems: list[ConfigProblem]) -> Rule | None:
    """Validate one ``[rules.<id>]`` table; None when disabled or invalid."""
    if not isinstance(data, Mapping):
        problems.append(ConfigProblem(key, f"must be a table, got {data!r}"))
        return None
    before = len(problems)
    rule_type = data.get("type")
    if rule_type not in RULE_TYPES:
        problems.append(
            ConfigProblem(f"{key}.type", f"must be one of {', '.join(RULE_TYPES)}, got {rule_type!r}")
        )
        return None
    specs = _COMMON | RULE_TYPES[rule_type]
    values = _section(data, key, specs, problems)
    for name in ("condition", "priority", "phases", *_REQUIRED.get(rule_type, ())):
        if name not in data:
            problems.append(ConfigProblem(f"{key}.{name}", "required"))
    condition = values.get("condition")
    if condition is not None and condition not in CONDITIONS:
        problems.append(
            ConfigProblem(f"{key}.condition", f"unknown condition {condition!r} (see docs/alarms.md)")
        )
    priority = values.get("priority")
    if priority is not None and priority not in _ALARM_PRIORITIES:
        problems.append(ConfigProblem(f"{key}.priority", f"must be high, medium or low, got {priority!r}"))
    parameter = values.get("parameter")
    if parameter in _VALUE_RANGE:
        low, high = _VALUE_RANGE[parameter]
        for name in ("limit", "bypass_limit"):
            v = values.get(name)
            if v is not None and not low <= v <= high:
                problems.append(
                    ConfigProblem(f"{key}.{name}", f"must be {_fmt(low)}-{_fmt(high)}, got {_fmt(v)}")
                )
    if rule_type == "sustained":
        given = [n for n in ("limit", "baseline_offset", "baseline_percent") if n in data]
        if len(given) != 1:
            problems.append(
                ConfigProblem(key, "needs exactly one of limit, baseline_offset, baseline_percent")
            )
        if ("bypass_limit" in data) != ("bypass_s" in data):
            problems.append(ConfigProblem(key, "bypass_limit and bypass_s go together"))
    if rule_type == "nibp" and not any(
        n in data for n in ("systolic", "diastolic", "systolic_offset", "diastolic_offset")
    ):
        problems.append(ConfigProblem(key, "needs systolic, diastolic, systolic_offset or diastolic_offset"))
    if (
        rule_type == "nibp"
        and any(n in data for n in ("systolic", "diastolic"))
        and any(n in data for n in ("systolic_offset", "diastolic_offset"))
    ):
        problems.append(ConfigProblem(key, "use absolute limits or baseline offsets, not both"))
    if rule_type == "nibp_overdue" and ("due_from_s" in values) != ("due_until_s" in values):
        problems.append(ConfigProblem(key, "due_from_s and due_until_s go together"))
    if values.get("confirm_min_s", 0.0) > values.get("confirm_window_s", 300.0):
        problems.append(ConfigProblem(f"{key}.confirm_min_s", "must not be more than confirm_window_s"))
    if values.get("due_from_s", 0.0) > values.get("due_until_s", 1e9):
        problems.append(ConfigProblem(f"{key}.due_until_s", "must not be before due_from_s"))
    if len(problems) > before or not values.pop("enabled", True):
        return None
    values["priority"] = Priority(values["priority"])
    return Rule(id=rule_id, **values)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into ``base`` (tables merge, everything else replaces)."""
    out = dict(base)
    for name, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(name), Mapping):
            out[name] = _merge(out[name], value)
        else:
            out[name] = value
    return out


def _default_data() -> dict[str, Any]:
    text = resources.files("vitalwatch").joinpath("data/alarm-table.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def load_alarm_table(data: Mapping[str, Any] | None, *, key: str = "alarms") -> AlarmTable:
    """Build the table from the daemon's ``[alarms]`` section (None: the shipped default).

    ``table`` selects the base file ("default" or a path); every other key overrides the same
    key of that file. Raises ConfigError listing every problem, keys dotted from ``key``.
    """
    problems: list[ConfigProblem] = []
    overrides = dict(data or {})
    selector = overrides.pop("table", "default")
    source = "default"
    base: dict[str, Any] = {}
    if selector == "default":
        base = _default_data()
    elif isinstance(selector, str) and selector:
        source = selector
        try:
            base = tomllib.loads(Path(selector).read_text(encoding="utf-8"))
        except OSError as exc:
            problems.append(ConfigProblem(f"{key}.table", f"cannot read {selector}: {exc.strerror or exc}"))
        except tomllib.TOMLDecodeError as exc:
            problems.append(ConfigProblem(f"{key}.table", f"{selector} is not valid TOML: {exc}"))
    else:
        problems.append(ConfigProblem(f"{key}.table", f'must be "default" or a file path, got {selector!r}'))
    merged = _merge(base, overrides)

    top_specs: dict[str, _Spec] = dict(_TOP)
    sections = {"latching", "renotify_s", "escalate_s", "baseline", "discharge", "rules"}
    for name in merged:
        if name not in top_specs and name not in sections:
            known = ", ".join(sorted([*top_specs, *sections, "table"]))
            problems.append(ConfigProblem(f"{key}.{name}", f"unknown key (known: {known})"))
    top = _section({k: v for k, v in merged.items() if k in top_specs}, key, top_specs, problems)
    per_priority: dict[str, dict[Priority, Any]] = {}
    for name, spec in _PER_PRIORITY.items():
        checked = _section(
            merged.get(name, {}), f"{key}.{name}", dict.fromkeys(_ALARM_PRIORITIES, spec), problems
        )
        per_priority[name] = {Priority(p): v for p, v in checked.items()}
    baseline = _section(merged.get("baseline", {}), f"{key}.baseline", _BASELINE, problems)
    discharge = _section(merged.get("discharge", {}), f"{key}.discharge", _DISCHARGE, problems)
    rules: list[Rule] = []
    raw_rules = merged.get("rules", {})
    if not isinstance(raw_rules, Mapping):
        problems.append(ConfigProblem(f"{key}.rules", "must be a table of rules"))
        raw_rules = {}
    for rule_id, rule_data in raw_rules.items():
        rule = _rule(str(rule_id), rule_data, f"{key}.rules.{rule_id}", problems)
        if rule is not None:
            rules.append(rule)
    if problems:
        raise ConfigError(problems)
    defaults: dict[str, dict[Priority, Any]] = {
        "latching": {Priority.HIGH: True, Priority.MEDIUM: False, Priority.LOW: False},
        "renotify_s": {Priority.HIGH: 30.0, Priority.MEDIUM: 300.0, Priority.LOW: 0.0},
        "escalate_s": {Priority.HIGH: 120.0, Priority.MEDIUM: 0.0, Priority.LOW: 0.0},
    }
    return AlarmTable(
        rules=tuple(rules),
        planned_infusion_s=60.0 * top.get("planned_infusion_min", 40.0),
        ack_silence_s=top.get("ack_silence_s", 120.0),
        sample_hold_s=top.get("sample_hold_s", 5.0),
        latching=defaults["latching"] | per_priority["latching"],
        renotify_s=defaults["renotify_s"] | per_priority["renotify_s"],
        escalate_s=defaults["escalate_s"] | per_priority["escalate_s"],
        baseline=BaselineSettings(**baseline),
        discharge=DischargeSettings(**discharge),
        source=source,
    )


def default_table() -> AlarmTable:
    """The shipped default table (vitalwatch/data/alarm-table.toml)."""
    return load_alarm_table(None)
