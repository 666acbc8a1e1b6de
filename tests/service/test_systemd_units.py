"""The systemd units: `systemd-analyze verify` clean, sandbox exposure <= 2.0, MDWE-safe imports.

systemd-analyze works offline (no systemd as PID 1 needed). verify refuses a unit whose ExecStart
binary does not exist, so the units are verified as copies whose /opt/vitalwatch paths point at
this checkout's files; everything else in them is verified as shipped.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
ANALYZE = shutil.which("systemd-analyze")
# Not a silent pass: the reason is printed by -ra, and CI hosts have systemd (Debian: apt install systemd).
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt install systemd)"
)
MAX_EXPOSURE = 2.0


def unit(name: str) -> configparser.ConfigParser:
    """A unit file as sections of (possibly repeated) keys; repeated keys are joined with newlines."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(_join_repeats((UNITS / name).read_text()))
    return parser


def _join_repeats(text: str) -> str:
    """configparser forbids repeated keys; systemd allows them (DeviceAllow=); number them."""
    seen: dict[str, int] = {}
    out = []
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if match:
            key = match.group(1)
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:
                out.append(f"{key}#{seen[key]}={match.group(2)}")
                continue
        elif line.startswith("["):
            seen = {}
        out.append(line)
    return "\n".join(out)


def values(parser: configparser.ConfigParser, section: str, key: str) -> list[str]:
    return [v for k, v in parser.items(section) if k == key or k.startswith(key + "#")]


@pytest.fixture
def resolvable_units(tmp_path: Path) -> Path:
    """Copies of both units whose program paths exist on this machine."""
    fake_daemon = tmp_path / "vitalwatch"
    fake_daemon.write_text("#!/bin/sh\nexit 0\n")
    fake_daemon.chmod(0o755)
    replacements = {
        "/opt/vitalwatch/venv/bin/vitalwatch": str(fake_daemon),
        "/opt/vitalwatch/libexec/vitalwatch-failsafe": str(ROOT / "vitalwatch" / "ops" / "failsafe.py"),
        "/usr/bin/python3": sys.executable,
    }
    for name in ("vitalwatch.service", "vitalwatch-failsafe.service"):
        text = (UNITS / name).read_text()
        for old, new in replacements.items():
            text = text.replace(old, new)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_unit_requirements_are_present() -> None:
    """The issue 7 §1 contract, read from the shipped file (catches a lost line in an edit)."""
    svc = unit("vitalwatch.service")
    assert "notify" == svc["Service"]["Type"]
    assert "15s" == svc["Service"]["WatchdogSec"]
    assert "always" == svc["Service"]["Restart"]
    assert "vitalwatch-failsafe.service" == svc["Unit"]["OnFailure"]
    # A bounded start limit: 0 would disable it and the fail-safe would never run.
    assert int(svc["Unit"]["StartLimitIntervalSec"]) > 0
    assert int(svc["Unit"]["StartLimitBurst"]) > 0
    service = svc["Service"]
    assert "yes" == service["DynamicUser"]
    assert "strict" == service["ProtectSystem"]
    assert "vitalwatch" == service["StateDirectory"]
    assert "yes" == service["NoNewPrivileges"] == service["PrivateTmp"]
    assert "PrivateDevices" not in service  # it would hide /dev/ttyUSB*
    assert "closed" == service["DevicePolicy"]
    assert ["char-ttyUSB rw", "char-ttyACM rw"] == values(svc, "Service", "DeviceAllow")
    assert "dialout" == service["SupplementaryGroups"]
    assert service["LoadCredential"].startswith("mqtt-password:")
    assert "AF_UNIX AF_INET AF_INET6" == service["RestrictAddressFamilies"]
    assert "" == service["CapabilityBoundingSet"]
    assert "vitalwatch" == service["SyslogIdentifier"]


def test_failsafe_unit_raises_and_the_daemon_clears() -> None:
    failsafe = unit("vitalwatch-failsafe.service")["Service"]
    assert "oneshot" == failsafe["Type"]
    # Not RemainAfterExit: an active fail-safe unit would swallow every later OnFailure=.
    assert "RemainAfterExit" not in failsafe
    assert failsafe["ExecStart"].endswith(" raise")
    assert "-I" in failsafe["ExecStart"].split()  # isolated: no user site, no cwd on sys.path
    svc = unit("vitalwatch.service")
    # No Conflicts=: on systemd >= 254 OnFailure= fires between auto-restarts, and a conflict
    # would then cancel the restart.
    assert "Conflicts" not in svc["Unit"]
    pre = svc["Service"]["ExecStartPre"]
    assert pre.startswith("-+/usr/bin/python3 -I ") and pre.endswith(" clear")


@needs_analyze
def test_units_verify_without_warnings(resolvable_units: Path) -> None:
    """`systemd-analyze verify` exits 0 even for unknown keys, so any output counts as a failure."""
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", "--man=no", "vitalwatch.service", "vitalwatch-failsafe.service"],
        cwd=resolvable_units,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    assert "" == done.stdout + done.stderr


@needs_analyze
def test_verify_catches_a_broken_unit(resolvable_units: Path) -> None:
    """The check above can fail: a typo in a key is reported."""
    assert ANALYZE is not None
    path = resolvable_units / "vitalwatch.service"
    path.write_text(path.read_text().replace("WatchdogSec=15s", "WatchdogSecs=15s"))
    done = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "WatchdogSecs" in done.stderr


@needs_analyze
def test_exposure_score_is_at_most_two(resolvable_units: Path) -> None:
    """`systemd-analyze security --offline=yes` rates the shipped sandbox "OK" at <= 2.0."""
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(resolvable_units / "vitalwatch.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, done.stdout


PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def _mdwe_supported() -> bool:
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl({PR_SET_MDWE}, "
            f"{PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0)",
        ],
        check=False,
    )
    return probe.returncode == 0


def test_daemon_imports_survive_memory_deny_write_execute() -> None:
    """MemoryDenyWriteExecute=yes must not break the daemon: the same rule via prctl(PR_SET_MDWE).

    Imports every runtime dependency and exercises numpy, the ctypes adjtimex call and an asyncio
    loop with a subprocess; a W+X mapping would kill the process (SIGSEGV) or raise.
    """
    if not _mdwe_supported():
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3): cannot emulate MemoryDenyWriteExecute")
    script = textwrap.dedent(
        f"""
        import ctypes, sys
        assert ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0
        import mmap
        try:  # the rule is really in force: a W+X mapping is refused
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            sys.exit("W+X mapping allowed: MDWE not in force")
        except OSError:
            pass
        import asyncio, numpy, structlog, serial, aiomqtt, prometheus_client, hl7
        import vitalwatch.ops.daemon, vitalwatch.cli
        from vitalwatch.ops.clocksync import adjtimex_synchronized
        assert adjtimex_synchronized() in (True, False)
        assert float(numpy.mean(numpy.arange(100.0))) == 49.5
        async def main():
            proc = await asyncio.create_subprocess_exec("true")
            return await proc.wait()
        assert asyncio.run(main()) == 0
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert 0 == done.returncode, done.stderr
    assert "ok" == done.stdout.strip()
