"""``[[alert_reporters]]``: off by default, every key checked, problems named by key and reason."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from vitalwatch.config import PCD04_PROFILE_ID, parse_config, unreadable_files
from vitalwatch.errors import ConfigError


def minimal(*reporters: dict[str, Any]) -> dict[str, object]:
    data: dict[str, object] = {
        "site": "clinic-a",
        "beds": [
            {"id": "chair-1", "devices": [{"id": "ox", "driver": "masimo", "url": "socket://127.0.0.1:1"}]}
        ],
    }
    if reporters:
        data["alert_reporters"] = list(reporters)
    return data


def problems_of(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(p) for p in info.value.problems]


def test_off_by_default() -> None:
    assert parse_config(minimal()).alert_reporters == ()


def test_a_reporter_with_its_defaults_and_every_key() -> None:
    cfg = parse_config(minimal({"id": "ascom", "host": "am.hospital.local"})).alert_reporters[0]
    assert (cfg.id, cfg.host, cfg.port, cfg.tls) == ("ascom", "am.hospital.local", 2575, None)
    assert (cfg.profile_id, cfg.processing_id, dict(cfg.patient_ids)) == (PCD04_PROFILE_ID, "P", {})
    full = {
        "id": "spok",
        "host": "10.0.0.5",
        "port": 3001,
        "sending_application": "VW_GW",
        "sending_facility": "ONCOLOGY",
        "eui64": "00a0b1fffec2d3e4",
        "receiving_application": "SPOK",
        "receiving_facility": "HOSP",
        "processing_id": "T",
        "profile_id": "IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.4.1^ISO",
        "point_of_care": "ONC",
        "facility": "H1",
        "ack_timeout_s": 2,
        "unreachable_alarm_s": 30,
        "patient_ids": {"chair-1": "CHAIR-1"},
    }
    cfg = parse_config(minimal(full)).alert_reporters[0]
    assert cfg.eui64 == "00A0B1FFFEC2D3E4"
    assert (cfg.port, cfg.processing_id, cfg.ack_timeout_s, cfg.patient_ids["chair-1"]) == (
        3001,
        "T",
        2.0,
        "CHAIR-1",
    )


def test_every_bad_key_is_named() -> None:
    found = problems_of(
        minimal(
            {
                "id": "bad id",
                "port": 0,
                "eui64": "xyz",
                "sending_application": "A|B",
                "processing_id": "X",
                "ack_timeout_s": 0,
                "colour": "red",
                "patient_ids": {"chair-9": "P1", "chair-1": "a^b"},
            }
        )
    )
    key = "alert_reporters[0]"
    assert f"{key}.host: is required" in found
    assert any(p.startswith(f"{key}.id: must be 1-64 letters") for p in found)
    assert f"{key}.port: must be 1-65535, got 0" in found
    assert f"{key}.eui64: must be 16 hex digits (the gateway's EUI-64), got 'xyz'" in found
    assert any(p.startswith(f"{key}.sending_application: must be at most 64 characters") for p in found)
    assert f"{key}.processing_id: must be one of P, D, T, got 'X'" in found
    assert f"{key}.ack_timeout_s: must be 0.1-120, got 0" in found
    assert f"{key}.colour: unknown key" in found
    assert f"{key}.patient_ids.chair-9: no such bed" in found
    assert any(p.startswith(f"{key}.patient_ids.chair-1: must be 1-64 characters") for p in found)


def test_duplicate_ids_and_tls_files_checked_like_mqtt(tmp_path: Path) -> None:
    found = problems_of(
        minimal(
            {"id": "am", "host": "a"},
            {"id": "am", "host": "b"},
            {
                "id": "am2",
                "host": "c",
                "tls": {"ca_file": str(tmp_path / "ca.pem"), "cert_file": str(tmp_path)},
            },
        )
    )
    assert "alert_reporters[1].id: duplicate alert reporter id 'am'" in found
    assert f"alert_reporters[2].tls.ca_file: no such file: {tmp_path / 'ca.pem'}" in found
    assert f"alert_reporters[2].tls.cert_file: not a file: {tmp_path}" in found
    assert "alert_reporters[2].tls.key_file: cert_file and key_file go together" in found


def test_tls_files_that_vanish_are_named_by_run(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not really a certificate")
    config = parse_config(minimal({"id": "am", "host": "a", "tls": {"ca_file": str(ca)}}))
    assert config.alert_reporters[0].tls is not None
    assert unreadable_files(config) == []
    ca.unlink()
    assert [p.key for p in unreadable_files(config)] == ["alert_reporters[0].tls.ca_file"]


def test_the_commented_example_in_config_example_toml_is_valid() -> None:
    """Uncommented (all but the TLS table, whose CA file exists only at a clinic), it parses."""
    example = (Path(__file__).resolve().parents[2] / "config" / "example.toml").read_text()
    block = example[example.index("# [[alert_reporters]]") : example.index("#   [alert_reporters.tls]")]
    lines = [line.strip().removeprefix("#").strip() for line in block.splitlines()]
    toml = "\n".join(line for line in lines if line.startswith("[") or "=" in line)

    data = tomllib.loads(toml)
    cfg = parse_config(minimal(*data["alert_reporters"])).alert_reporters[0]
    assert (cfg.id, cfg.port, cfg.eui64, cfg.patient_ids["chair-1"]) == (
        "ascom",
        2575,
        "00A0B1FFFEC2D3E4",
        "ONC-CHAIR-1",
    )
