"""Alert delivery under faults, against a real Mosquitto: nothing lost, nothing doubled, ordered per alert.

Each test starts its own broker (tests/conftest.py) and runs the daemon in-process (or as a
``vitalwatch run`` subprocess for the SIGKILL test). The nurse station is a paho client on
its own thread: after a broker restart the test reconnects it *while the event loop is
blocked*, so the station is subscribed before the daemon can publish again - exactly what a
station with a persistent session on a persistent broker gets, without racing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.fakes.alerts import transition
from tests.helpers import wait_until
from vitalwatch.config import Config, parse_config
from vitalwatch.continuity.statestore import decode_snapshot
from vitalwatch.engine.baseline import Baseline
from vitalwatch.engine.outputs import AlertState, AlertTransition, Priority
from vitalwatch.engine.session import BedEngine
from vitalwatch.ops.daemon import Daemon
from vitalwatch.testing import Mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.asyncio]

SITE = "test-site"
BED = "chair-1"
PREFIX = "vitalwatch/v1"
BASE = f"{PREFIX}/{SITE}/{BED}"


class Station:
    """A nurse station: subscribes to alerts and the retained alarm set, records every message."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.alerts: list[dict[str, Any]] = []
        self.alarms: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None

    def connect(self, timeout: float = 5.0) -> None:
        """Connect and subscribe; returns once the broker confirmed the subscription."""
        subscribed = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.on_message = self._on_message
        client.on_subscribe = lambda *args: subscribed.set()
        client.connect("127.0.0.1", self.port, keepalive=60)
        client.subscribe([(f"{BASE}/alerts", 1), (f"{BASE}/alarms/+", 1)])
        client.loop_start()
        if not subscribed.wait(timeout):
            raise AssertionError("station could not subscribe")
        self._client = client

    def disconnect(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None

    def reconnect(self) -> None:
        self.disconnect()
        with self._lock:
            self.alarms.clear()  # a fresh view, built only from what the broker now holds
        self.connect()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            if msg.topic.endswith("/alerts"):
                self.alerts.append(json.loads(msg.payload))
            else:
                alert_id = msg.topic.rsplit("/", 1)[1]
                if msg.payload:
                    self.alarms[alert_id] = msg.payload
                else:
                    self.alarms.pop(alert_id, None)

    def unique(self) -> dict[tuple[str, int], dict[str, Any]]:
        """De-duplicated on (alert_id, seq), as a receiver must."""
        with self._lock:
            seen: dict[tuple[str, int], dict[str, Any]] = {}
            for a in self.alerts:
                seen.setdefault((a["alert_id"], a["seq"]), a)
            return seen

    def check(self, expected: list[AlertTransition]) -> None:
        """Every expected transition arrived, in seq order per alert; duplicates are true copies."""
        with self._lock:
            received = list(self.alerts)
        first: dict[tuple[str, int], dict[str, Any]] = {}
        order: dict[str, list[int]] = {}
        for a in received:
            key = (a["alert_id"], a["seq"])
            if key in first:
                same = {k: v for k, v in a.items() if k != "sent_utc"}
                assert {k: v for k, v in first[key].items() if k != "sent_utc"} == same
                continue
            first[key] = a
            order.setdefault(a["alert_id"], []).append(a["seq"])
        want = {(t.alert_id, t.seq) for t in expected}
        assert sorted(want - set(first)) == [], "transitions lost"
        assert sorted(set(first) - want) == [], "transitions nobody raised"
        for alert_id, seqs in order.items():
            assert sorted(seqs) == seqs, f"{alert_id} out of order: {seqs}"
        for t in expected:
            assert t.state.value == first[(t.alert_id, t.seq)]["state"]


def make_config(
    port: int, state_dir: Path, *, device_url: str = "/nonexistent/vitalwatch-test-tty"
) -> Config:
    return parse_config(
        {
            "site": SITE,
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "heartbeat_s": 0.5,
                "publish_timeout_s": 1.0,
                "unreachable_alarm_s": 2.0,
                "keepalive_s": 5,
            },
            "logging": {"level": "warning"},
            "state": {"directory": str(state_dir), "restore_grace_s": 60.0},
            "beds": [{"id": BED, "devices": [{"id": "oximeter", "driver": "masimo", "url": device_url}]}],
        }
    )


_PRIORITIES = (Priority.LOW, Priority.MEDIUM, Priority.HIGH)


def burst_transition(i: int, seq: int, state: AlertState) -> AlertTransition:
    """Alert ``burst-{i}``: injected straight into the bed session like an engine output."""
    return transition(
        f"burst-{i:03d}",
        seq,
        state,
        priority=_PRIORITIES[i % 3],
        bed=BED,
        t=float(seq),
        value=85.0,
        message=f"burst alert {i}",
    )


async def burst(
    daemon: Daemon,
    alerts: int,
    *,
    first_seq: int = 1_000_000,
    pause: float = 0.01,
    raised: list[AlertTransition],
) -> None:
    """Raise ``alerts`` alarms, acknowledge each, clear every other one: 2-3 transitions per alert.

    Each transition is appended to ``raised`` as it is handed to the bed session: that list, not
    the session's own debug buffer, is what a station must end up with.
    """
    session = daemon.beds[BED]
    seq = first_seq
    for i in range(alerts):
        for state in (AlertState.RAISED, AlertState.ACKNOWLEDGED, AlertState.CLEARED)[: 2 + i % 2]:
            tr = burst_transition(i, seq, state)
            session.dispatch([tr])
            raised.append(tr)
            seq += 1
            # The subject, not a wait: alarms come one after another over time, so the fault
            # below lands in the middle of the burst rather than after it.
            await asyncio.sleep(pause)


class Running:
    """The daemon as a task, stopped (cancelled) at the end of the test."""

    def __init__(self, config: Config) -> None:
        self.daemon = Daemon(config)
        self.task = asyncio.create_task(self.daemon.run())

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def run_broker_outage(mosquitto: Mosquitto, tmp_path: Path, fault: Callable[[], Any]) -> Running:
    station = Station(mosquitto.port)
    station.connect()
    run = Running(make_config(mosquitto.port, tmp_path / "state"))
    daemon = run.daemon
    publisher = daemon.publishers[BED]
    try:
        await wait_until(lambda: publisher.connected, 10, "daemon connected")
        raised: list[AlertTransition] = []
        sender = asyncio.create_task(burst(daemon, 60, raised=raised))
        await wait_until(
            lambda: len(station.unique()) >= 10, 10, "part of the burst at the station before the fault"
        )
        await fault()
        await station_after(fault, station)
        await sender
        await wait_until(lambda: publisher.pending == 0, 30, "outbox drained")
        await wait_until(lambda: len(station.unique()) >= len(raised), 10, "station caught up")
        station.check(raised)
        await wait_until(lambda: not publisher.unreachable, 5, "unreachable alarm cleared")
        history = daemon.local_alarms.history
        assert ("broker_unreachable", BED, True) in history
        assert ("broker_unreachable", BED, False) == history[-1]
        return run
    finally:
        station.disconnect()
        await run.stop()


async def station_after(fault: Any, station: Station) -> None:
    if getattr(fault, "restarted", False):
        station.reconnect()


def kill_and_restart(mosquitto: Mosquitto, down_s: float) -> Callable[[], Any]:
    async def fault() -> None:
        mosquitto.kill()
        await asyncio.sleep(down_s)  # the subject: the broker stays down this long
        mosquitto.start()  # blocks the loop: the station below subscribes before the daemon is back

    fault.restarted = True  # type: ignore[attr-defined]
    return fault


async def test_broker_killed_mid_burst_restarted_after_5_s(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """SIGKILL during a burst, back after 5 s: all alerts arrive once each, in order; unreachable raised."""
    await run_broker_outage(mosquitto, tmp_path, kill_and_restart(mosquitto, 5.0))


@pytest.mark.slow
async def test_broker_killed_mid_burst_restarted_after_20_s(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The issue's 20 s outage: the outbox holds everything and delivers it afterwards."""
    await run_broker_outage(mosquitto, tmp_path, kill_and_restart(mosquitto, 20.0))


def stop_and_continue(mosquitto: Mosquitto, stopped_s: float) -> Callable[[], Any]:
    async def fault() -> None:
        mosquitto.pause()
        await asyncio.sleep(stopped_s)  # the subject: the broker stays hung (SIGSTOP) this long
        mosquitto.resume()

    return fault


async def test_broker_hung_by_sigstop(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """SIGSTOP (TCP open, no PUBACK) for 8 s with a 1 s publish timeout: the same guarantees."""
    await run_broker_outage(mosquitto, tmp_path, stop_and_continue(mosquitto, 8.0))


@pytest.mark.slow
async def test_broker_hung_by_sigstop_for_30_s(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The issue's 30 s hang: nothing is acknowledged, the connection stays open; the same guarantees."""
    await run_broker_outage(mosquitto, tmp_path, stop_and_continue(mosquitto, 30.0))


async def test_broker_restarted_with_empty_retained_store(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """After a restart that lost every retained message, the station's active set is complete again."""
    station = Station(mosquitto.port)
    station.connect()
    run = Running(make_config(mosquitto.port, tmp_path / "state"))
    daemon = run.daemon
    publisher = daemon.publishers[BED]
    try:
        await wait_until(lambda: publisher.connected, 10, "daemon connected")
        # even alerts stay active (acknowledged), odd ones are cleared
        await burst(daemon, 6, pause=0.0, raised=[])
        await wait_until(lambda: publisher.pending == 0, 10, "outbox drained")
        active, ended = {"burst-000", "burst-002", "burst-004"}, {"burst-001", "burst-003", "burst-005"}
        await wait_until(lambda: active <= set(station.alarms), 5, "retained alarms")
        assert not ended & set(station.alarms)
        mosquitto.kill()
        mosquitto.start()  # persistence false: the retained store is empty now
        station.reconnect()
        assert {} == station.alarms  # nothing retained survived
        await wait_until(lambda: active <= set(station.alarms), 15, "the daemon's republish")
        assert "acknowledged" == json.loads(station.alarms["burst-000"])["state"]
        assert not ended & set(station.alarms)
        engine_active = {t.alert_id for t in daemon.beds[BED].engine.active_alarms()}
        assert active | engine_active == set(station.alarms)
    finally:
        station.disconnect()
        await run.stop()


async def test_local_alarm_command_runs_on_raise_and_clear(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """mqtt.local_alarm_command is run with the alarm's name and state when the broker goes away and back."""
    marker = tmp_path / "buzzer.log"
    script = f'echo "$VITALWATCH_ALARM $VITALWATCH_ALARM_STATE $VITALWATCH_BED" >> {marker}'
    cfg = make_config(mosquitto.port, tmp_path / "state")
    mqtt_cfg = dataclasses.replace(cfg.mqtt, local_alarm_command=("/bin/sh", "-c", script))
    run = Running(dataclasses.replace(cfg, mqtt=mqtt_cfg))
    publisher = run.daemon.publishers[BED]
    try:
        await wait_until(lambda: publisher.connected, 10, "daemon connected")
        mosquitto.kill()
        await wait_until(marker.exists, 6, "buzzer raised")
        mosquitto.start()
        await wait_until(lambda: "cleared" in marker.read_text(), 15, "buzzer cleared")
        assert [f"broker_unreachable raised {BED}", f"broker_unreachable cleared {BED}"] == (
            marker.read_text().splitlines()
        )
    finally:
        await run.stop()


# -------------------------------------------------------------------- the daemon killed


def write_config(path: Path, port: int, state_dir: Path, device_url: str) -> None:
    path.write_text(
        f"""site = "{SITE}"
[mqtt]
host = "127.0.0.1"
port = {port}
heartbeat_s = 0.5
publish_timeout_s = 1.0
unreachable_alarm_s = 2.0
[logging]
level = "info"
format = "json"
[state]
directory = "{state_dir}"
restore_grace_s = 60.0
[[beds]]
id = "{BED}"
  [[beds.devices]]
  id = "oximeter"
  driver = "masimo"
  url = "{device_url}"
"""
    )


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "vitalwatch", "run", "--config", str(config)],
        stdout=out,
        stderr=out,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def command(port: int, payload: dict[str, Any], wait_s: float = 3.0) -> dict[str, Any] | None:
    """Send one command like a station and wait for its result (None if none came)."""
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"{BASE}/cmd/result", qos=1)
        await client.publish(f"{BASE}/cmd", json.dumps(payload), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for msg in client.messages:
                    result: dict[str, Any] = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                    if result.get("request_id") == payload.get("request_id"):
                        return result
    return None


def logged_transitions(log: Path) -> set[tuple[str, int]]:
    found = set()
    for line in log.read_text().splitlines():
        if '"alert.transition"' in line:
            event = json.loads(line)
            found.add((event["alert_id"], event["seq"]))
    return found


def stored_engine(state_dir: Path, port: int) -> BedEngine | None:
    """The engine snapshot the daemon last wrote, restored as the daemon would (None: none yet)."""
    with contextlib.closing(sqlite3.connect(state_dir / "vitalwatch.sqlite3")) as db:
        row = db.execute("SELECT state FROM snapshot WHERE bed=?", (BED,)).fetchone()
    table = make_config(port, state_dir).alarms
    return None if row is None else BedEngine.restore(table, decode_snapshot(row[0]), now=0.0)


def stored_baseline(state_dir: Path, port: int) -> Baseline:
    """The baseline of the engine snapshot the daemon last wrote."""
    engine = stored_engine(state_dir, port)
    assert engine is not None, "no engine snapshot stored"
    return engine.baseline


def snapshot_holds(state_dir: Path, port: int, alert_id: str) -> bool:
    """Whether the stored snapshot already has ``alert_id`` active (with its re-notify timer)."""
    with contextlib.suppress(sqlite3.OperationalError):  # the daemon may not have created it yet
        engine = stored_engine(state_dir, port)
        return engine is not None and alert_id in {t.alert_id for t in engine.active_alarms()}
    return False


def utc(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def test_daemon_sigkill_mid_session_resumes_same_session(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """SIGKILL the daemon while an alarm is active: the restarted daemon continues the engine from
    its snapshot - the phase, the frozen baseline, the alert_ids of the alarms still active with
    their re-notify timers, and the seq numbering - and nothing the first one raised is lost."""
    from vitalwatch.simulators import make_simulator
    from vitalwatch.simulators.endpoint import serve_pty
    from vitalwatch.simulators.scenarios import get_scenario

    sim = make_simulator("masimo", get_scenario("desaturation"))
    link = tmp_path / "oximeter-tty"
    station = Station(mosquitto.port)
    station.connect()
    cfg = tmp_path / "vitalwatch.toml"
    state_dir = tmp_path / "state"
    write_config(cfg, mosquitto.port, state_dir, str(link))
    first_log, second_log = tmp_path / "daemon.log", tmp_path / "daemon2.log"

    def spo2_alarm(alarms: dict[str, dict[str, Any]]) -> dict[str, Any]:
        (found,) = [a for a in alarms.values() if a["condition"] == "spo2_low"]
        return found

    async with serve_pty(sim, speed=3.0, link=link):
        proc = start_daemon(cfg, first_log)
        try:
            for attempt in range(10):  # until the daemon is subscribed
                phase_cmd = {
                    "request_id": f"p-{attempt}",
                    "command": "phase",
                    "phase": "infusion",
                    "override_reason": "test: no baseline wait",
                }
                if (result := await command(mosquitto.port, phase_cmd, wait_s=1.0)) is not None:
                    break
            assert result is not None and result["ok"] is True
            # desaturation: SpO2 < 90 % from ~35 s to ~145 s scenario time (12-48 s at 3x); the
            # HIGH alarm latches, so it is still active when its 30 s re-notify falls due.
            await wait_until(
                lambda: any(b'"spo2_low"' in v for v in station.alarms.values()), 45, "an SpO2 alarm"
            )
            # The snapshot is written just after the alert is sent: killed before it is stored,
            # the restart resumes from the journal alone (a later re-notify), which is not what
            # this test is about. The witness: the stored snapshot holds the alarm.
            raised = spo2_alarm({k: json.loads(v) for k, v in station.alarms.items()})["alert_id"]
            await wait_until(lambda: snapshot_holds(state_dir, mosquitto.port, raised), 10, "the snapshot")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=5)
            before = dict(station.unique())
            active_before = {json.loads(v)["alert_id"]: json.loads(v) for v in station.alarms.values()}
            baseline_before = stored_baseline(state_dir, mosquitto.port)
            desat = spo2_alarm(active_before)
            proc = start_daemon(cfg, second_log)
            # Restored from the snapshot, the alarm is not found again: it simply goes on, and its
            # next transition is the re-notify due 30 s after it was raised (HIGH renotify_s).
            await wait_until(
                lambda: any(k[0] == desat["alert_id"] for k in station.unique() if k not in before),
                40,
                "the SpO2 alarm continued by the restarted daemon",
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    station.disconnect()
    after = station.unique()
    assert logged_transitions(first_log) <= set(after), "a transition of the killed daemon was lost"
    new = {k: a for k, a in after.items() if k not in before}
    assert min(k[1] for k in new) > max(k[1] for k in before), "seq numbering restarted"
    assert max(k[1] for k in before) + 1 == min(k[1] for k in new), "seq skipped (or the alarm was re-found)"
    old_conditions = {(a["condition"], json.dumps(a["parameter"])) for a in active_before.values()}
    for a in new.values():
        if a["state"] == "raised":  # a new alarm, never one that was active at the kill
            assert (a["condition"], json.dumps(a["parameter"])) not in old_conditions, a
        if a["alert_id"] in active_before:
            assert "infusion" == a["phase"]
            # The onset survives the restart (to the millisecond: it goes through epoch seconds).
            onset_before = utc(active_before[a["alert_id"]]["onset_utc"])
            assert abs((utc(a["onset_utc"]) - onset_before).total_seconds()) <= 0.002
    first_new = min((a for a in new.values() if a["alert_id"] == desat["alert_id"]), key=lambda a: a["seq"])
    assert "renotified" == first_new["state"]
    # The re-notify timer survived: due 30 s after the raise, outage included (a journal-only
    # resume would adopt it only after a new sustained delay, at another time).
    assert 29.0 <= (utc(first_new["event_utc"]) - utc(desat["onset_utc"])).total_seconds() <= 32.0
    # The frozen baseline (here a few seconds of oximetry: the session entered infusion at once)
    # is the one the first daemon froze, not a fresh empty one.
    assert baseline_before.oximetry_s > 0
    assert baseline_before == stored_baseline(state_dir, mosquitto.port)
    second = second_log.read_text()
    assert "session.resumed" in second
    assert "session.snapshot_restored" in second
    assert "session.snapshot_rejected" not in second


async def test_monitor_cable_pulled_and_replugged(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The pty closes (cable pulled): link_lost is raised within after_s; replugged under the same
    configured name (a fresh pty), the daemon reads it without a restart and link_lost clears."""
    from vitalwatch.simulators import make_simulator
    from vitalwatch.simulators.endpoint import serve_pty
    from vitalwatch.simulators.scenarios import get_scenario

    link_path = tmp_path / "oximeter-tty"
    station = Station(mosquitto.port)
    station.connect()
    async with serve_pty(make_simulator("masimo", get_scenario("normal")), speed=1.0, link=link_path) as ep:
        run = Running(make_config(mosquitto.port, tmp_path / "state", device_url=str(link_path)))
        link = run.daemon.beds[BED].links["oximeter"]
        try:
            await wait_until(lambda: link.readings > 0, 10, "readings from the monitor")
            # link_lost is an infusion/recovery rule (shipped table: after_s = 10; at once when the
            # port vanishes)
            run.daemon.beds[BED].set_phase("infusion", asyncio.get_running_loop().time())

            def link_lost(state: str) -> list[dict[str, Any]]:
                return [
                    a
                    for a in station.unique().values()
                    if a["condition"] == "link_lost" and a["state"] == state
                ]

            pulled = time.monotonic()
            await ep.close()
            await wait_until(lambda: bool(link_lost("raised")), 12, "link_lost raised")
            assert time.monotonic() - pulled < 10.0  # the rule's configured after_s
            await wait_until(lambda: not link.connected, 5, "the daemon's link down")
            await ep.reopen()
            readings = link.readings
            await wait_until(lambda: link.readings > readings, 15, "readings from the new port")
            await wait_until(lambda: bool(link_lost("cleared")), 10, "link_lost cleared")
            assert link_lost("raised")[0]["alert_id"] == link_lost("cleared")[0]["alert_id"]
        finally:
            station.disconnect()
            await run.stop()


async def test_unwritable_database_raises_persistence_degraded_and_alerts_still_flow(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The journal cannot be written (here: a directory where the file should be): the local
    'persistence degraded' alarm is raised and alerts are still published live from memory."""
    state = tmp_path / "state"
    (state / "vitalwatch.sqlite3").mkdir(parents=True)
    station = Station(mosquitto.port)
    station.connect()
    run = Running(make_config(mosquitto.port, state))
    try:
        await wait_until(lambda: run.daemon.publishers[BED].connected, 10, "daemon connected")
        raised: list[AlertTransition] = []
        await burst(run.daemon, 5, pause=0.0, raised=raised)
        await wait_until(lambda: len(station.unique()) >= len(raised), 10, "live alerts")
        station.check(raised)
        assert ("persistence_degraded", "*") in run.daemon.local_alarms.active
    finally:
        station.disconnect()
        await run.stop()
