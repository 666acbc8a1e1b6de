"""Start-up refusals that are one clear line, never a traceback.

One daemon per state directory: the second refuses at once, naming the holder; a killed holder
frees it. A metrics port in use names the setting.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vitalwatch.ops.statelock import StateDirectoryLocked, StateLock

HOLDER = """
import sys
from pathlib import Path
from vitalwatch.ops.statelock import StateLock
lock = StateLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def start_holder(directory: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert "locked" == proc.stdout.readline().strip()  # waits for the condition, not a sleep
    return proc


def test_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(StateDirectoryLocked) as info:
            StateLock(tmp_path).acquire()
        assert holder.pid == info.value.holder_pid
        assert str(holder.pid) in str(info.value)
        assert str(tmp_path) in str(info.value)
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = start_holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with StateLock(tmp_path) as lock:  # the kernel dropped the lock with the process
        assert str(os.getpid()) == lock.path.read_text().strip()


def test_release_lets_the_next_daemon_in(tmp_path: Path) -> None:
    first = StateLock(tmp_path)
    assert first.acquire()
    with pytest.raises(StateDirectoryLocked):
        StateLock(tmp_path).acquire()
    first.release()
    with StateLock(tmp_path):
        pass


def write_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "vw.toml"
    config.write_text(
        f"""
site = "clinic"
[mqtt]
host = "127.0.0.1"
port = 1
[state]
directory = "{tmp_path}"
[[beds]]
id = "chair1"
[[beds.devices]]
id = "oximeter"
driver = "masimo"
url = "socket://127.0.0.1:1"
"""
        + extra
    )
    return config


def run_daemon_cli(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vitalwatch", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_refuses_a_locked_state_directory_in_one_line(tmp_path: Path) -> None:
    """`vitalwatch run` on a held directory: exit 1 at once, the holder's pid, no traceback."""
    config = write_config(tmp_path)
    holder = start_holder(tmp_path)
    try:
        proc = run_daemon_cli(config)
    finally:
        holder.kill()
        holder.wait()
    assert 1 == proc.returncode
    assert f"process {holder.pid}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unusable_state_directory_is_reported_not_fatal(tmp_path: Path) -> None:
    """A state directory the lock file cannot be made in runs degraded (as the journal does)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    assert not StateLock(blocker / "state").acquire()


def test_a_metrics_port_in_use_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, f"[metrics]\nenabled = true\nport = {port}\n")
        proc = run_daemon_cli(config)
    assert 1 == proc.returncode, proc.stderr
    assert f"metrics.port: cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
