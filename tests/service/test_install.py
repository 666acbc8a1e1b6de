"""Install into a staging root (DESTDIR) and check the layout; uninstall keeps state and configuration.

The virtual environment step is skipped (--skip-venv) for speed: it only runs pip on
requirements.lock, whose shape is checked here separately. Everything else is the real script.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "scripts" / "install.sh"
UNINSTALL = ROOT / "scripts" / "uninstall.sh"
PREFIX = "/opt/vitalwatch"


def run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, timeout=60, check=False
    )
    return done


def install(destdir: Path, *args: str) -> str:
    done = run(INSTALL, "--destdir", str(destdir), "--skip-venv", *args)
    assert 0 == done.returncode, done.stderr
    return done.stdout


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_layout(tmp_path: Path) -> None:
    out = install(tmp_path)
    opt = tmp_path / "opt" / "vitalwatch"
    etc = tmp_path / "etc"
    assert 0o755 == mode(opt / "libexec" / "vitalwatch-failsafe")
    shipped_failsafe = (ROOT / "vitalwatch" / "ops" / "failsafe.py").read_bytes()
    assert shipped_failsafe == (opt / "libexec" / "vitalwatch-failsafe").read_bytes()
    assert (ROOT / "requirements.lock").read_bytes() == (opt / "share" / "requirements.lock").read_bytes()
    assert (opt / "share" / "vitalwatch.toml.example").is_file()
    assert (opt / "docs" / "operations.md").is_file()  # the units' Documentation=
    # Configuration from the example, readable by the service's dynamic user.
    config = etc / "vitalwatch" / "vitalwatch.toml"
    assert (ROOT / "config" / "example.toml").read_bytes() == config.read_bytes()
    assert 0o644 == mode(config)
    # The credential source exists (LoadCredential= would fail the unit otherwise) and is private.
    assert 0o700 == mode(etc / "vitalwatch" / "credentials")
    password = etc / "vitalwatch" / "credentials" / "mqtt-password"
    assert 0o600 == mode(password) and b"" == password.read_bytes()
    units = etc / "systemd" / "system"
    for name in ("vitalwatch.service", "vitalwatch-failsafe.service"):
        assert (ROOT / "systemd" / name).read_bytes() == (units / name).read_bytes()
        assert 0o644 == mode(units / name)
    rules = etc / "udev" / "rules.d" / "99-vitalwatch-serial.rules"
    assert (ROOT / "systemd" / "99-vitalwatch-serial.rules").read_bytes() == rules.read_bytes()
    modules = (etc / "modules-load.d" / "vitalwatch.conf").read_text().split()
    assert {"ftdi_sio", "cp210x", "pl2303", "cdc_acm"} <= set(modules)
    # State belongs to systemd (StateDirectory=, DynamicUser= makes it /var/lib/private/...).
    assert not (tmp_path / "var").exists()
    assert "StateDirectory=vitalwatch" in (units / "vitalwatch.service").read_text()
    # Staging never enables anything.
    assert "not enabling: staged into" in out


def test_nothing_outside_destdir_is_touched(tmp_path: Path) -> None:
    """Every path the script writes lies under DESTDIR (a staging root is a sandbox)."""
    stage = tmp_path / "stage"
    install(stage)
    assert ["stage"] == [p.name for p in tmp_path.iterdir()]
    assert {"etc", "opt"} == {p.name for p in stage.iterdir()}


def test_reinstall_keeps_configuration_and_rules(tmp_path: Path) -> None:
    install(tmp_path)
    config = tmp_path / "etc" / "vitalwatch" / "vitalwatch.toml"
    rules = tmp_path / "etc" / "udev" / "rules.d" / "99-vitalwatch-serial.rules"
    password = tmp_path / "etc" / "vitalwatch" / "credentials" / "mqtt-password"
    config.write_text('site = "ours"\n')
    rules.write_text("# our adapters\n")
    password.write_text("s3cret")
    out = install(tmp_path)
    assert 'site = "ours"\n' == config.read_text()
    assert "# our adapters\n" == rules.read_text()
    assert "s3cret" == password.read_text()
    assert "keeping /etc/vitalwatch/vitalwatch.toml" in out


def test_prefix_is_followed_by_the_units(tmp_path: Path) -> None:
    install(tmp_path, "--prefix", "/srv/vw")
    unit = (tmp_path / "etc" / "systemd" / "system" / "vitalwatch.service").read_text()
    assert "ExecStart=/srv/vw/venv/bin/vitalwatch run" in unit
    failsafe = (tmp_path / "etc" / "systemd" / "system" / "vitalwatch-failsafe.service").read_text()
    assert "/srv/vw/libexec/vitalwatch-failsafe" in failsafe
    assert "/opt/vitalwatch" not in unit + failsafe
    assert (tmp_path / "srv" / "vw" / "libexec" / "vitalwatch-failsafe").is_file()


def test_relative_prefix_is_refused(tmp_path: Path) -> None:
    done = run(INSTALL, "--destdir", str(tmp_path), "--skip-venv", "--prefix", "opt/vw")
    assert 2 == done.returncode
    assert not any(tmp_path.iterdir())


def test_uninstall_keeps_state_and_configuration(tmp_path: Path) -> None:
    install(tmp_path)
    state = tmp_path / "var" / "lib" / "private" / "vitalwatch"
    state.mkdir(parents=True)
    (state / "vitalwatch.sqlite3").write_bytes(b"audit trail")
    done = run(UNINSTALL, "--destdir", str(tmp_path))
    assert 0 == done.returncode, done.stderr
    assert not (tmp_path / "opt" / "vitalwatch").exists()
    assert not (tmp_path / "etc" / "systemd" / "system" / "vitalwatch.service").exists()
    assert not (tmp_path / "etc" / "systemd" / "system" / "vitalwatch-failsafe.service").exists()
    assert not (tmp_path / "etc" / "modules-load.d" / "vitalwatch.conf").exists()
    # The unedited example rules go; the configuration, the credential and the state stay.
    assert not (tmp_path / "etc" / "udev" / "rules.d" / "99-vitalwatch-serial.rules").exists()
    assert (tmp_path / "etc" / "vitalwatch" / "vitalwatch.toml").is_file()
    assert (tmp_path / "etc" / "vitalwatch" / "credentials" / "mqtt-password").is_file()
    assert b"audit trail" == (state / "vitalwatch.sqlite3").read_bytes()


def test_uninstall_keeps_edited_udev_rules(tmp_path: Path) -> None:
    install(tmp_path)
    rules = tmp_path / "etc" / "udev" / "rules.d" / "99-vitalwatch-serial.rules"
    rules.write_text('SUBSYSTEM=="tty", ATTRS{serial}=="A1", SYMLINK+="vitalwatch/chair-1-oximeter"\n')
    done = run(UNINSTALL, "--destdir", str(tmp_path))
    assert 0 == done.returncode, done.stderr
    assert rules.is_file()
    assert "keeping" in done.stdout


def test_uninstall_refuses_a_foreign_prefix(tmp_path: Path) -> None:
    """A wrong --prefix must not rm -rf someone else's directory."""
    foreign = tmp_path / "srv" / "data"
    foreign.mkdir(parents=True)
    (foreign / "precious").write_text("x")
    done = run(UNINSTALL, "--destdir", str(tmp_path), "--prefix", "/srv/data")
    assert 1 == done.returncode
    assert (foreign / "precious").is_file()
    assert 2 == run(UNINSTALL, "--destdir", str(tmp_path), "--prefix", "/").returncode


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_install_and_uninstall_with_destdir(tmp_path: Path) -> None:
    """mk/install.mk passes DESTDIR/PREFIX through (as `include`d by the top-level Makefile)."""
    stage = tmp_path / "root"
    args = ["make", "--no-print-directory", "-f", str(ROOT / "mk" / "install.mk"), "-C", str(ROOT)]
    common = [f"DESTDIR={stage}", "PREFIX=/opt/vw", "INSTALL_FLAGS=--skip-venv"]
    done = subprocess.run([*args, "install", *common], check=False, capture_output=True, text=True)
    assert 0 == done.returncode, done.stderr
    assert (stage / "opt" / "vw" / "libexec" / "vitalwatch-failsafe").is_file()
    done = subprocess.run([*args, "uninstall", *common], check=False, capture_output=True, text=True)
    assert 0 == done.returncode, done.stderr
    assert not (stage / "opt" / "vw").exists()
    assert (stage / "etc" / "vitalwatch" / "vitalwatch.toml").is_file()


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    """requirements.lock: every pyproject dependency pinned with ==, every pin hash-checked."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_requirement_name(spec) for spec in project["dependencies"]}
    text = (ROOT / "requirements.lock").read_text()
    pin = r"^([A-Za-z0-9_.\-]+)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)"
    entries = re.findall(pin, text, re.M)
    pinned = {name.lower(): hashes for name, _, hashes in entries}
    assert wanted <= set(pinned), f"not in the lock: {sorted(wanted - set(pinned))}"
    requirement_lines = [line for line in text.splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    assert len(requirement_lines) == len(entries)  # nothing unpinned or unhashed
    assert "--find-links" not in text and "--index-url" not in text  # no machine-local sources


RULE_KEY = re.compile(r'^\s*(?:[A-Z_]+(?:\{[A-Za-z0-9_]+\})?)\s*(?:==|!=|\+=|=|:=)\s*"[^"]*"\s*$')


def test_udev_examples_are_well_formed() -> None:
    """Each commented example, once uncommented, is a rule of KEY op "value" pairs with a SYMLINK."""
    text = (ROOT / "systemd" / "99-vitalwatch-serial.rules").read_text()
    blocks = re.findall(r"^# (SUBSYSTEM==.*?)(?=\n#\s*\n|\n# -)", text, re.M | re.S)
    assert len(blocks) >= 4
    for block in blocks:
        rule = re.sub(r"\\\n#\s*", " ", block)
        assert "\n" not in rule, rule
        for pair in rule.split(", "):
            assert RULE_KEY.match(pair), (pair, rule)
        assert 'SYMLINK+="vitalwatch/' in rule
        assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in rule
    # Active lines (not comments) are none: the shipped file names no adapter of ours.
    assert [] == [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
