"""The alarm table: the shipped default, overrides from [alarms], and errors that name every bad key."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import pytest

from vitalwatch.engine.outputs import Priority
from vitalwatch.engine.table import load_alarm_table
from vitalwatch.errors import ConfigError


def problems(data: dict[str, object]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_alarm_table(data)
    return {p.key: p.reason for p in info.value.problems}


def test_default_values_follow_clinical_defaults() -> None:
    table = load_alarm_table(None)
    spo2 = table.rule("spo2_low_high")
    assert ("<", 90.0, 15.0, 85.0, 5.0) == (
        spo2.compare,
        spo2.limit,
        spo2.sustain_s,
        spo2.bypass_limit,
        spo2.bypass_s,
    )
    assert {Priority.HIGH: True, Priority.MEDIUM: False, Priority.LOW: False} == dict(table.latching)
    assert {Priority.HIGH: 30.0, Priority.MEDIUM: 300.0, Priority.LOW: 0.0} == dict(table.renotify_s)
    assert 120.0 == table.escalate_s[Priority.HIGH]
    assert (120.0, 2400.0) == (table.ack_silence_s, table.planned_infusion_s)
    assert (2, 120.0, 180.0) == (
        table.baseline.nibp_readings,
        table.baseline.nibp_spacing_s,
        table.baseline.oximetry_s,
    )


def test_every_shipped_rule_carries_an_evidence_mark() -> None:
    """Each [rules.x] table in the shipped TOML is preceded by a comment with [V], [R] or [EJ]."""
    text = resources.files("vitalwatch").joinpath("data/alarm-table.toml").read_text(encoding="utf-8")
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("[rules."):
            comment = []
            j = i - 1
            while j >= 0 and lines[j].startswith("#"):
                comment.append(lines[j])
                j -= 1
            joined = " ".join(comment)
            assert any(mark in joined for mark in ("[V", "[R]", "[EJ")), line


def test_overrides_change_one_key() -> None:
    table = load_alarm_table({"rules": {"spo2_low_high": {"limit": 88}}, "latching": {"medium": True}})
    assert 88.0 == table.rule("spo2_low_high").limit
    assert 15.0 == table.rule("spo2_low_high").sustain_s
    assert table.latching[Priority.MEDIUM]


def test_rule_can_be_disabled() -> None:
    table = load_alarm_table({"rules": {"nibp_high_awareness": {"enabled": False}}})
    with pytest.raises(KeyError):
        table.rule("nibp_high_awareness")


def test_every_problem_is_reported_with_its_dotted_key() -> None:
    got = problems(
        {
            "rules": {
                "spo2_low_high": {"limit": 120, "sustain_s": "15"},
                "pulse_high_high": {"compare": "=>", "colour": "red"},
                "new_rule": {"type": "sustained", "condition": "spo2_low"},
            },
            "latching": {"high": "yes"},
            "renotify_s": {"urgent": 10},
            "planned_infusion_min": 0,
            "bogus": 1,
        }
    )
    assert {
        "alarms.rules.spo2_low_high.limit": "must be 50-100, got 120",
        "alarms.rules.spo2_low_high.sustain_s": "must be a number, got '15'",
        "alarms.rules.pulse_high_high.compare": "must be one of <, <=, >, >=, got '=>'",
        "alarms.latching.high": "must be true or false, got 'yes'",
        "alarms.planned_infusion_min": "must be 5-240, got 0",
    }.items() <= got.items()
    assert got["alarms.rules.pulse_high_high.colour"].startswith("unknown key")
    assert got["alarms.renotify_s.urgent"].startswith("unknown key")
    assert got["alarms.bogus"].startswith("unknown key")
    assert "required" == got["alarms.rules.new_rule.priority"]
    assert "required" == got["alarms.rules.new_rule.phases"]


def test_unknown_condition_phase_and_type() -> None:
    got = problems(
        {
            "rules": {
                "a": {"type": "magic"},
                "b": {
                    "type": "link_lost",
                    "condition": "fire",
                    "priority": "urgent",
                    "phases": ["induction"],
                    "after_s": 10,
                },
            }
        }
    )
    assert got["alarms.rules.a.type"].startswith("must be one of sustained")
    assert got["alarms.rules.b.condition"].startswith("unknown condition 'fire'")
    assert "must be high, medium or low, got 'urgent'" == got["alarms.rules.b.priority"]
    assert got["alarms.rules.b.phases"].startswith("unknown phase 'induction'")


def test_table_file_and_key_prefix(tmp_path: Path) -> None:
    """``table = PATH`` loads a clinic's file; errors use the caller's key prefix."""
    shipped = resources.files("vitalwatch").joinpath("data/alarm-table.toml").read_text(encoding="utf-8")
    clinic = tmp_path / "clinic.toml"
    clinic.write_text(shipped.replace("planned_infusion_min = 40", "planned_infusion_min = 45"))
    assert 2700.0 == load_alarm_table({"table": str(clinic)}).planned_infusion_s
    with pytest.raises(ConfigError) as info:
        load_alarm_table({"table": str(tmp_path / "missing.toml")}, key="beds.0.alarms")
    assert ["beds.0.alarms.table"] == [p.key for p in info.value.problems]


def test_shipped_file_is_valid_toml_with_31_rules() -> None:
    data = tomllib.loads(
        resources.files("vitalwatch").joinpath("data/alarm-table.toml").read_text(encoding="utf-8")
    )
    assert 31 == len(data["rules"])
