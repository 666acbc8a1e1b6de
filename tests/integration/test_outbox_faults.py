"""The alert journal under storage faults: a full disk (F12), kills in commits (F13), a read-only directory.

Operations note §11.1: F12 "disk full on the outbox/state fs" (tmpfs ``size=1M`` filled up)
must leave alerts published live, raise the local technical alarm "persistence degraded",
and recover when space returns; F13 "power loss during outbox commit" is approximated in CI by
SIGKILL at random points while a child process commits, then ``PRAGMA integrity_check`` and a
check that every transition the child saw committed is still there. (SIGKILL keeps the page
cache, so it tests SQLite's crash consistency, not the card's; the relay rig does the rest.)

The tmpfs tests need root (``mount``); they skip with the reason when mounting is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from structlog.testing import capture_logs

from tests.helpers import wait_until
from vitalwatch.config import Config, parse_config
from vitalwatch.delivery.store import DB_NAME, Store
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Priority
from vitalwatch.ops.daemon import Daemon
from vitalwatch.testing import Mosquitto

SITE = "test-site"
BED = "chair-1"
BASE = f"vitalwatch/v1/{SITE}/{BED}"


# ------------------------------------------------------------------ helpers


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` (skips the test when mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (os.geteuid() != 0)")
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs refused: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    """The tmpfs at ``path`` read-only (``ro``) or writable again (``rw``)."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Write zeros to a file until the filesystem is full; returns the file (delete it to free)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert errno.ENOSPC == exc.errno
    finally:
        os.close(fd)
    return filler


class Station:
    """A nurse station: every alert message, on paho's thread."""

    def __init__(self, port: int) -> None:
        self.alerts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *args: subscribed.set()
        self._client.connect("127.0.0.1", port, keepalive=60)
        self._client.subscribe(f"{BASE}/alerts", 1)
        self._client.loop_start()
        assert subscribed.wait(5), "station could not subscribe"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.alerts.append(json.loads(msg.payload))

    def keys(self) -> set[tuple[str, int]]:
        with self._lock:
            return {(a["alert_id"], a["seq"]) for a in self.alerts}

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def make_config(port: int, state_dir: Path) -> Config:
    return parse_config(
        {
            "site": SITE,
            "mqtt": {"host": "127.0.0.1", "port": port, "heartbeat_s": 0.5, "publish_timeout_s": 1.0},
            "logging": {"level": "warning"},
            "state": {"directory": str(state_dir)},
            "beds": [{"id": BED, "devices": [{"id": "ox", "driver": "masimo", "url": "/nonexistent/tty"}]}],
        }
    )


def alert(i: int, seq: int, state: AlertState) -> AlertTransition:
    return AlertTransition(
        t=float(seq), bed=BED, alert_id=f"full-{i:03d}", seq=seq, state=state, priority=Priority.HIGH,
        category=Category.PHYSIOLOGICAL, condition="spo2_low", parameter="spo2", value=85.0, unit="%",
        limit=90.0, phase="infusion", phase_elapsed_s=10.0, onset_t=float(seq), message=f"alert {i}",
    )  # fmt: skip


async def raise_alerts(daemon: Daemon, first: int, count: int) -> list[tuple[str, int]]:
    """``count`` alarms raised and cleared through the bed session (as engine outputs would be)."""
    sent = []
    seq = 1000 + 2 * first
    for i in range(first, first + count):
        for state in (AlertState.RAISED, AlertState.CLEARED):
            daemon.beds[BED].dispatch([alert(i, seq, state)])
            sent.append((f"full-{i:03d}", seq))
            seq += 1
        # The subject, not a wait: alarms come over time, so the store sees a run of separate
        # commits (each refused while the disk is full), not one batch.
        await asyncio.sleep(0.02)
    return sent


def journalled(db: Path) -> list[tuple[str, int]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [
            (a, s) for a, s in conn.execute("SELECT alert_id, seq FROM outbox WHERE seq >= 1000 ORDER BY id")
        ]


# ------------------------------------------------------------------ F12 disk full


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_disk_full_alerts_flow_alarm_raised_and_journal_completed_when_space_returns(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """F12: on a full 1 MiB tmpfs alerts still reach the station live and persistence_degraded is
    raised; once space is freed the alarm clears and the rows refused meanwhile are in the journal,
    in seq order, without a new alert having to come along."""
    with tmpfs(tmp_path / "state") as state:
        station = Station(mosquitto.port)
        daemon = Daemon(make_config(mosquitto.port, state))
        task = asyncio.create_task(daemon.run())
        filler: Path | None = None
        try:
            publisher = daemon.publishers[BED]
            await wait_until(lambda: publisher.connected, 10, "daemon connected")
            before = await raise_alerts(daemon, 0, 3)
            await wait_until(lambda: set(before) <= station.keys(), 10, "alerts before the fill")
            filler = fill(state)
            during = await raise_alerts(daemon, 3, 30)
            await wait_until(lambda: set(during) <= station.keys(), 10, "alerts while the disk is full")
            raised = ("persistence_degraded", "*", True)
            await wait_until(lambda: raised in daemon.local_alarms.history, 5, "persistence_degraded")
            assert not task.done()
            assert set(during) - set(journalled(state / DB_NAME)), "the disk never refused a row"
            filler.unlink()
            filler = None
            cleared = ("persistence_degraded", "*", False)
            await wait_until(lambda: daemon.local_alarms.history[-1] == cleared, 10, "the alarm cleared")
            await wait_until(lambda: daemon.store.healthy and daemon.store.held == 0, 10, "held rows written")
            assert daemon.store.replayed > 0
            assert before + during == journalled(state / DB_NAME)
            assert not task.done()
        finally:
            if filler is not None:
                filler.unlink()
            station.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# ------------------------------------------------------------------ F13 killed during commits

CHILD = """
import asyncio, sys
from pathlib import Path
from vitalwatch.delivery.store import DB_NAME, Store

async def main(directory: str) -> None:
    store = Store(Path(directory) / DB_NAME, defer_s=0.01)
    seq = int(store.meta("bed").get("seq", 0))
    print("ready", flush=True)
    while True:
        seq += 1
        alert_id = f"a-{seq // 3}"
        fut = store.record("bed", alert_id=alert_id, seq=seq, rank=3, clears=seq % 3 == 2,
                           payload={"alert_id": alert_id, "seq": seq, "pad": "x" * (seq % 700)},
                           transition={"alert_id": alert_id, "seq": seq})
        if seq % 4 == 0:
            store.put_snapshot("bed", bytes(seq % 251 for _ in range(1500 + seq % 900)), written=seq)
        if await fut is not True:
            raise SystemExit(f"record {seq} failed")
        print(seq, flush=True)
        if seq % 2:
            store.delivered("bed", alert_id, seq)

asyncio.run(main(sys.argv[1]))
"""


def test_sigkill_during_commits_keeps_every_committed_transition(tmp_path: Path) -> None:
    """F13 (CI form): a child committing transitions as fast as it can is SIGKILLed at random
    moments, 8 rounds on the same file (fixed seed). Each reopening passes integrity_check, and
    every seq the child printed after its commit resolved is there, pending or delivered, in order."""
    rng = random.Random(13)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    durable: list[int] = []
    db = tmp_path / DB_NAME
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert "ready" == child.stdout.readline().strip(), child.stderr.read() if child.stderr else ""
        time.sleep(rng.uniform(0.02, 0.3))  # the subject: the kill lands at a random moment of the commits
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=10)
        assert -signal.SIGKILL == child.returncode, err
        lines = out.split("\n")
        durable += [int(line) for line in lines[:-1] if line]  # the last line may be cut mid-write
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert [("ok",)] == conn.execute("PRAGMA integrity_check").fetchall()
            found = [s for (s,) in conn.execute("SELECT seq FROM outbox WHERE bed='bed' ORDER BY id")]
            states = {s: d for s, d in conn.execute("SELECT seq, delivered IS NOT NULL FROM outbox")}
        assert sorted(found) == found, "rows out of seq order"
        assert [] == sorted(set(durable) - set(found)), "a committed transition was lost"
        assert [] == [s for s, marked in states.items() if marked and s % 2 == 0], "a mark hit the wrong row"
    assert len(durable) > 50, "the child hardly committed anything: the test proves nothing"


# ------------------------------------------------------------------ read-only state directory


@pytest.mark.asyncio
async def test_read_only_journal_degrades_names_the_file_and_keeps_the_old_rows_readable(
    tmp_path: Path,
) -> None:
    """A state directory remounted read-only: the store opens the existing journal read-only, so
    the undelivered alerts and active alarms of before are still loaded and sent; writes fail
    with persistence.degraded naming the file, and are held for when it is writable again."""
    with tmpfs(tmp_path / "state") as state:
        store = Store(state / DB_NAME)
        ok = await store.record(
            BED, alert_id="old", seq=7, rank=3, clears=False, payload={"seq": 7}, transition={"seq": 7}
        )
        assert ok is True
        store.close()
        remount(state, "ro")
        news: list[bool] = []
        with capture_logs() as logs:
            store = Store(state / DB_NAME, on_health=lambda up, reason: news.append(up), retry_s=60.0)
            assert [7] == [r.seq for r in store.pending(BED)]
            assert 7 == store.meta(BED)["seq"]
            written = await store.record(
                BED, alert_id="new", seq=8, rank=3, clears=False, payload={"seq": 8}, transition={"seq": 8}
            )
        assert written is None
        assert store.healthy is False
        degraded = [e for e in logs if e["event"] == "persistence.degraded"]
        assert degraded and str(state / DB_NAME) == degraded[0]["path"]
        remount(state, "rw")
        await store.flush()
        assert store.healthy is True
        store.close()
        assert [("old", 7), ("new", 8)] == journalled_all(state / DB_NAME)


def journalled_all(db: Path) -> list[tuple[str, int]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [(a, s) for a, s in conn.execute("SELECT alert_id, seq FROM outbox ORDER BY id")]


@pytest.mark.mqtt
@pytest.mark.asyncio
async def test_daemon_on_read_only_state_directory_runs_and_publishes_with_persistence_degraded(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Chosen behaviour: a running monitor with a local technical alarm beats none. The daemon
    starts on a read-only state directory, publishes alerts live and raises persistence_degraded."""
    with tmpfs(tmp_path / "state") as state:
        remount(state, "ro")
        station = Station(mosquitto.port)
        try:
            daemon = Daemon(make_config(mosquitto.port, state))
            task = asyncio.create_task(daemon.run())
            try:
                await wait_until(lambda: daemon.publishers[BED].connected, 10, "daemon connected")
                sent = await raise_alerts(daemon, 0, 3)
                await wait_until(lambda: set(sent) <= station.keys(), 10, "live alerts")
                assert ("persistence_degraded", "*") in daemon.local_alarms.active
                assert not task.done()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            station.close()
