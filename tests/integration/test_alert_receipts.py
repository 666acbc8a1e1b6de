"""Alert receipts end to end: a ``vitalwatch run`` daemon, a real Mosquitto and the real
``vitalwatch registry`` process (SQLite), each its own process.

One scenario, in the order a clinic lives it: the registry is down, so an alert the broker
PUBACKed stays unreceipted and is offered again; the daemon is SIGKILLed between PUBACK and
receipt (its delivery mark on disk, no receipt); the restarted daemon offers it again; the
registry comes back and stores it once, receipts it, and the gateway's count of unreceipted alerts
falls to 0. The registry has never connected before, so no broker session kept a copy for it:
what it stores came from the gateway's re-offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.integration.test_delivery_faults import command, start_daemon
from tests.integration.test_journal_loss import silent_pty
from vitalwatch.registry.database import open_registry
from vitalwatch.testing import Mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.asyncio]

SITE, BED = "test-site", "chair-1"  # the site and bed test_delivery_faults.command talks to


def write_config(path: Path, port: int, state: Path, device: str) -> None:
    path.write_text(
        f"""site = "{SITE}"
[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "gw-receipts"
heartbeat_s = 1.0
publish_timeout_s = 1.0
[logging]
level = "info"
format = "json"
[state]
directory = "{state}"
[registry]
alert_receipts = true
alert_reoffer_s = 1.5
[alarms]
table = "default"
[alarms.rules.link_lost]
after_s = 2
[[beds]]
id = "{BED}"
  [[beds.devices]]
  id = "oximeter"
  driver = "masimo"
  url = "{device}"
"""
    )


def events(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if doc.get("event") == name:
                found.append(doc)
    return found


def outbox(state: Path) -> dict[tuple[str, int], tuple[float | None, float | None]]:
    """(alert_id, seq) -> (delivered, receipted) as the journal on disk has them."""
    conn = sqlite3.connect(f"{(state / 'vitalwatch.sqlite3').as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT alert_id, seq, delivered, receipted FROM outbox").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    return {(a, s): (d, r) for a, s, d, r in rows}


@contextlib.contextmanager
def process(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_registry(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    argv = [sys.executable, "-m", "vitalwatch", "registry", "--db", str(db), "--port", str(port)]
    return subprocess.Popen(
        [*argv, "--listen", "off"],  # no page: its default port is one per machine, not this test's subject
        stdout=out,
        stderr=out,
    )


async def status_of(config: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vitalwatch", "status", "--config", str(config), "--json",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    answer: dict[str, Any] = json.loads(out)
    return answer


async def test_alert_kept_across_registry_outage_and_sigkill_then_stored_once(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    cfg, state = tmp_path / "vitalwatch.toml", tmp_path / "state"
    first_log, second_log, registry_log = tmp_path / "d1.log", tmp_path / "d2.log", tmp_path / "reg.log"
    db_path = tmp_path / "registry.sqlite3"
    with silent_pty() as silent:
        write_config(cfg, mosquitto.port, state, silent)
        # 1. No registry: the alert is PUBACKed, stays unreceipted and is offered again.
        with process(start_daemon(cfg, first_log)) as daemon:
            for attempt in range(20):  # until the daemon is subscribed to its commands
                phase = {"request_id": f"p-{attempt}", "command": "phase", "phase": "infusion",
                         "override_reason": "test: no baseline wait"}  # fmt: skip
                if (result := await command(mosquitto.port, phase, wait_s=1.0)) is not None:
                    break
            assert result is not None and result["ok"] is True, result
            await wait_until(lambda: events(first_log, "alert_receipts.reoffered"), 20, "a re-offer")
            first = events(first_log, "alert.published")[0]
            key = (first["alert_id"], first["seq"])
            status = await status_of(cfg)
            alerts = status["receipts"]["alerts"]
            assert alerts["unreceipted"] >= 1 and alerts["offered_unreceipted"] >= 1, status
            # A command's transaction carries the deferred delivery mark to disk: PUBACKed, not receipted.
            assert (await command(mosquitto.port, {"request_id": "n-1", "command": "nibp"})) is not None
            await wait_until(lambda: outbox(state).get(key, (None, None))[0] is not None, 10, "mark on disk")
            assert outbox(state)[key][1] is None
            # 2. SIGKILL between the PUBACK and a receipt.
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=10)
        assert not [e for e in events(first_log, "alert_receipts.receipted")]
        # 3. The restarted daemon offers it again (the registry still down), from the receipts link.
        with process(start_daemon(cfg, second_log)):
            await wait_until(
                lambda: any(
                    (e["alert_id"], e["seq"]) == key for e in events(second_log, "alert_receipts.reoffered")
                ),
                20,
                "the PUBACKed, unreceipted alert re-offered after the restart",
            )
            # 4. The registry comes back: everything is stored once and receipted.
            with process(start_registry(db_path, mosquitto.port, registry_log)):
                await wait_until(lambda: outbox(state).get(key, (None, None))[1] is not None or any(
                    (e["alert_id"], e["seq"]) == key for e in events(second_log, "alert_receipts.receipted")
                ), 30, "the receipt at the gateway")  # fmt: skip

                async def none_waiting() -> bool:
                    return 0 == (await status_of(cfg))["receipts"]["alerts"]["unreceipted"]

                await wait_until(none_waiting, 30, "no unreceipted alert left", poll_s=0.5)
    db = open_registry(str(db_path))
    try:
        stored = db.alert_count()
        assert stored >= 1
        assert db.alert_repeats(SITE, BED, *key) is not None  # stored, exactly one row (primary key)
        reoffers = len(events(first_log, "alert_receipts.reoffered")) + len(
            events(second_log, "alert_receipts.reoffered")
        )
        assert reoffers >= 2
    finally:
        db.close()
