"""Configuration: typed, frozen, every problem named by key, unknown keys rejected."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vitalwatch.cli import main
from vitalwatch.config import load_config, parse_config
from vitalwatch.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "example.toml"


def minimal(**over: object) -> dict[str, object]:
    data: dict[str, object] = {
        "site": "clinic-a",
        "beds": [
            {"id": "chair-1", "devices": [{"id": "ox", "driver": "masimo", "url": "socket://127.0.0.1:1"}]}
        ],
    }
    data.update(over)
    return data


def problems_of(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(p) for p in info.value.problems]


def test_example_config_is_valid_and_typed() -> None:
    """The documented example loads into frozen objects with the values it shows."""
    cfg = load_config(EXAMPLE)
    assert cfg.site == "clinic-a"
    assert cfg.mqtt.port == 1883
    assert [b.id for b in cfg.beds] == ["chair-1", "chair-2"]
    assert [d.driver for d in cfg.beds[0].devices] == ["masimo", "suntech"]
    assert cfg.beds[0].devices[1].role == "nibp"
    assert cfg.beds[1].devices[0].serial.baudrate == 115200
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.site = "other"  # type: ignore[misc]


def test_port_out_of_range_names_key_and_value() -> None:
    assert "mqtt.port: must be 1-65535, got 70000" in problems_of(minimal(mqtt={"port": 70000}))


def test_every_problem_is_reported_not_only_the_first() -> None:
    found = problems_of(minimal(mqtt={"port": 0, "keepalive_s": "x", "colour": 1}, logging={"level": "loud"}))
    assert "mqtt.port: must be 1-65535, got 0" in found
    assert "mqtt.keepalive_s: must be an integer, got 'x'" in found
    assert "mqtt.colour: unknown key" in found
    assert "logging.level: must be one of debug, info, warning, error, got 'loud'" in found


def test_unknown_top_level_key_is_an_error() -> None:
    assert "colour: unknown key" in problems_of(minimal(colour="red"))


def test_unknown_driver_and_bad_ids() -> None:
    data = minimal(
        site="a/b",
        beds=[
            {"id": "chair+1", "devices": [{"id": "ox", "driver": "nosuch", "url": "x"}]},
        ],
    )
    found = problems_of(data)
    assert any(p.startswith("site: must be 1-64 letters") for p in found)
    assert any(p.startswith("beds[0].id: must be 1-64 letters") for p in found)
    assert any(p.startswith("beds[0].devices[0].driver: unknown driver 'nosuch'") for p in found)


def test_duplicate_beds_and_devices() -> None:
    dev = {"id": "ox", "driver": "masimo", "url": "x"}
    found = problems_of(minimal(beds=[{"id": "b", "devices": [dev, dev]}, {"id": "b", "devices": [dev]}]))
    assert "beds[0].devices[1].id: duplicate device id 'ox'" in found
    assert "beds[1].id: duplicate bed id 'b'" in found


def test_password_in_file_is_refused() -> None:
    found = problems_of(minimal(mqtt={"password": "hunter2"}))
    assert found == ["mqtt.password: not allowed here: use password_file (or a systemd credential)"]
    assert all("hunter2" not in p for p in found)


def test_driver_rejects_bad_options() -> None:
    dev = {"id": "ox", "driver": "masimo", "url": "x", "options": {"no_such_option": 1}}
    found = problems_of(minimal(beds=[{"id": "b", "devices": [dev]}]))
    assert len(found) == 1 and found[0].startswith(
        "beds[0].devices[0].options: rejected by the masimo driver"
    )


def test_missing_required_keys() -> None:
    found = problems_of({"beds": [{"id": "b", "devices": [{"id": "ox"}]}]})
    assert "site: is required" in found
    assert "beds[0].devices[0].driver: is required" in found
    assert "beds[0].devices[0].url: is required" in found


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config prints OK/exit 0, or each problem and exit 2; unreadable and non-TOML files too."""
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.strip() == "OK"
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("port = 1883", "port = 70000"))
    assert main(["check-config", str(bad)]) == 2
    assert "mqtt.port: must be 1-65535, got 70000" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("site = [")
    assert main(["check-config", str(broken)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["check-config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_run_refuses_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('site = "x"\n')
    assert main(["run", "--config", str(bad)]) == 2
    assert "beds: at least one [[beds]] table is required" in capsys.readouterr().err


def test_line_settings_follow_the_contec_protocol_option() -> None:
    """An old-protocol CMS50D+ talks 19200 8O1 unless the file says otherwise; an explicit baudrate wins."""
    old = {"id": "ox", "driver": "contec", "url": "x", "options": {"protocol": "old"}}
    new = {"id": "ox2", "driver": "contec", "url": "y", "options": {"protocol": "new"}}
    forced = {"id": "ox3", "driver": "contec", "url": "z", "options": {"protocol": "old"}, "baudrate": 9600}
    cfg = parse_config(minimal(beds=[{"id": "b", "devices": [old, new, forced]}]))
    serials = [d.serial for d in cfg.beds[0].devices]
    assert (serials[0].baudrate, serials[0].parity.value) == (19200, "O")
    assert (serials[1].baudrate, serials[1].parity.value) == (115200, "N")
    assert (serials[2].baudrate, serials[2].parity.value) == (9600, "O")


def test_missing_secret_and_certificate_files_are_named_by_check_config(tmp_path: Path) -> None:
    mqtt = {
        "password_file": str(tmp_path / "nope.pw"),
        "tls": {"ca_file": str(tmp_path / "ca.pem"), "cert_file": str(tmp_path), "key_file": ""},
    }
    found = problems_of(minimal(mqtt=mqtt))
    assert f"mqtt.password_file: no such file: {tmp_path / 'nope.pw'}" in found
    assert f"mqtt.tls.ca_file: no such file: {tmp_path / 'ca.pem'}" in found
    assert f"mqtt.tls.cert_file: not a file: {tmp_path}" in found
    assert "mqtt.tls.key_file: must not be empty" in found


def test_files_that_vanish_after_checking_are_named_by_run(tmp_path: Path) -> None:
    """`run` re-checks readability right before starting (check-config may run as another user)."""
    from vitalwatch.config import unreadable_files

    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    config = parse_config(minimal(mqtt={"password_file": str(secret)}))
    assert [] == unreadable_files(config)
    secret.unlink()
    assert ["mqtt.password_file"] == [p.key for p in unreadable_files(config)]


def test_empty_url_and_a_state_directory_that_is_a_file(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("")
    dev = {"id": "ox", "driver": "masimo", "url": ""}
    found = problems_of(minimal(state={"directory": str(not_a_dir)}, beds=[{"id": "b", "devices": [dev]}]))
    assert any(p.startswith("beds[0].devices[0].url: must not be empty") for p in found)
    assert f"state.directory: must be a directory, {not_a_dir} is a file" in found


def test_a_duplicate_device_id_is_reported_with_the_devices_other_problems() -> None:
    good = {"id": "ox", "driver": "masimo", "url": "x"}
    bad = {"id": "ox", "driver": "bogus", "url": "x"}
    found = problems_of(minimal(beds=[{"id": "b", "devices": [good, bad]}]))
    assert "beds[0].devices[1].id: duplicate device id 'ox'" in found
    assert any(p.startswith("beds[0].devices[1].driver: unknown driver 'bogus'") for p in found)
