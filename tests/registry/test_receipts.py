"""Session records end to end: gateway offer -> real Mosquitto -> registry -> database -> receipt.

The gateway side (RecordLedger on a ReceiptLink) reads a real session record (sessions.sqlite3 written by
SessionLog); the registry (RegistryService) stores into SQLite or a real PostgreSQL. A record is
done only on the registry's receipt; without one it is offered again, and repeats are harmless.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from tests.fakes.example_session import record_example_session
from tests.helpers import wait_until
from vitalwatch.config import MqttConfig
from vitalwatch.record.export import export_row, load_session, summarise
from vitalwatch.record.sessionlog import SessionDb, SessionLog, connect_readonly
from vitalwatch.registry.database import RegistryDb, open_registry
from vitalwatch.registry.offer import OfferBook, RecordLedger
from vitalwatch.registry.receipting import ReceiptLink
from vitalwatch.registry.service import RegistryService
from vitalwatch.registry.wire import RECEIPT_SCHEMA
from vitalwatch.testing import Mosquitto, free_port, mosquitto_binary

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.asyncio,
    pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed"),
]

PREFIX = "vitalwatch/v1"
SITE = "clinic-a"
BEDS = ("chair-1", "chair-2")


def session_record(state: Path) -> Path:
    """Two ended sessions (the scripted example) on two chairs, as a gateway's daemon writes them."""
    path = state / "sessions.sqlite3"
    db = SessionDb(path)
    for i, bed in enumerate(BEDS):
        start = datetime(2026, 3, 2 + i, 9, 0, tzinfo=UTC)
        record_example_session(SessionLog(db, bed, wall=lambda t, s=start: s + timedelta(seconds=t - 1000.0)))
    db.close()
    return path


def record_ids(path: Path) -> dict[str, str]:
    conn = connect_readonly(path)
    try:
        return {str(r[0]): str(r[1]) for r in conn.execute("SELECT bed, record_id FROM sessions")}
    finally:
        conn.close()


@asynccontextmanager
async def running_registry(db: RegistryDb, port: int) -> AsyncIterator[RegistryService]:
    service = RegistryService(db, MqttConfig(port=port, client_id="registry-test"))
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await wait_until(service.subscribed.is_set, 10, "the registry subscribed")
        yield service
    finally:
        stop.set()
        await task


@asynccontextmanager
async def offering(sessions: Path, port: int, reoffer_s: float) -> AsyncIterator[RecordLedger]:
    mqtt = MqttConfig(port=port, client_id="gw-test")
    ledger = RecordLedger(mqtt=mqtt, site=SITE, beds=BEDS, sessions_db=sessions, reoffer_s=reoffer_s)
    stop = asyncio.Event()
    task = asyncio.create_task(ReceiptLink(mqtt, [ledger], poll_s=0.1).run(stop))
    try:
        yield ledger
    finally:
        stop.set()
        await task


@asynccontextmanager
async def listening(port: int, topic: str) -> AsyncIterator[list[tuple[str, dict[str, object]]]]:
    got: list[tuple[str, dict[str, object]]] = []
    async with aiomqtt.Client("127.0.0.1", port, timeout=5) as client:
        await client.subscribe(topic, qos=1)

        async def pump() -> None:
            async for m in client.messages:
                got.append((str(m.topic), json.loads(bytes(m.payload))))  # type: ignore[arg-type]

        task = asyncio.create_task(pump())
        try:
            yield got
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def unreceipted(sessions: Path) -> int:
    book = OfferBook(sessions)
    try:
        return book.unreceipted(datetime.now(UTC).timestamp()).count
    finally:
        book.close()


async def test_each_ended_session_is_offered_stored_once_and_receipted(
    mosquitto: Mosquitto, registry_db: RegistryDb, tmp_path: Path
) -> None:
    sessions = session_record(tmp_path)
    ids = record_ids(sessions)
    assert 2 == unreceipted(sessions)
    async with (
        listening(mosquitto.port, f"{PREFIX}/{SITE}/+/receipt") as receipts,
        running_registry(registry_db, mosquitto.port),
        offering(sessions, mosquitto.port, reoffer_s=60) as offerer,
    ):
        await wait_until(lambda: offerer.receipts == 2, 10, "both records receipted")
        assert 0 == (await offerer.measure()).count
    assert {(f"{PREFIX}/{SITE}/{bed}/receipt", ids[bed], "stored") for bed in BEDS} == {
        (t, r["record_id"], r["status"]) for t, r in receipts
    }
    assert all(RECEIPT_SCHEMA == r["schema"] for _, r in receipts)
    # The registry holds exactly what `vitalwatch export` says about each session.
    conn = connect_readonly(sessions)
    try:
        expected = {
            ids[bed]: export_row(summarise(load_session(conn, sid)))
            for bed, sid in conn.execute("SELECT bed, session_id FROM sessions")
        }
    finally:
        conn.close()
    stored = {r.row["record_id"]: r for r in registry_db.records()}
    assert expected == {k: v.row for k, v in stored.items()}
    assert {(SITE, "chair-1", "2026-03"), (SITE, "chair-2", "2026-03")} == {
        (r.site, r.bed, r.month) for r in stored.values()
    }
    assert 0 == unreceipted(sessions)


async def test_without_a_receipt_the_record_is_offered_again_and_repeats_are_harmless(
    mosquitto: Mosquitto, registry_db: RegistryDb, tmp_path: Path
) -> None:
    """No registry at first: the broker PUBACKs every offer, yet the records stay unreceipted and are
    offered again; once the registry runs they are stored once, and a late repeat is receipted as
    a duplicate without a second row."""
    sessions = session_record(tmp_path)
    async with offering(sessions, mosquitto.port, reoffer_s=0.3) as offerer:
        await wait_until(lambda: offerer.offers >= 4, 10, "each record offered at least twice")
        state = await offerer.measure()
        assert (2, 2) == (state.count, state.offered)
        async with (
            listening(mosquitto.port, f"{PREFIX}/{SITE}/+/receipt") as receipts,
            running_registry(registry_db, mosquitto.port) as registry,
        ):
            await wait_until(lambda: offerer.receipts == 2, 10, "both records receipted")
            # A copy that was on its way (a bridge's repeat): stored nothing, receipted again.
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as gw:
                book = OfferBook(sessions)
                try:
                    sid = next(
                        iter(book.conn.execute("SELECT session_id FROM sessions WHERE bed='chair-1'"))
                    )[0]
                    payload = book.payload(sid, SITE, datetime.now(UTC))
                finally:
                    book.close()
                await gw.publish(f"{PREFIX}/{SITE}/chair-1/record", payload, qos=1)
            await wait_until(lambda: registry.stats.duplicates >= 1, 10, "the repeat was receipted")
            await wait_until(lambda: any(r["status"] == "duplicate" for _, r in receipts), 10)
    assert 2 == registry_db.count()
    assert 0 == unreceipted(sessions)
    assert {r.row["record_id"] for r in registry_db.records()} == set(record_ids(sessions).values())


async def test_bad_records_are_rejected_without_a_receipt(mosquitto: Mosquitto, registry_url: str) -> None:
    db = open_registry(registry_url)
    db.migrate()
    good = {
        "schema": "vitalwatch.session_record/1",
        "record_id": "r-good",
        "site": SITE,
        "bed": "chair-1",
        "month": "2026-03",
        "sent_utc": "2026-03-02T10:00:00.000Z",
        "record": {"schema": "vitalwatch-session-record/1", "record_id": "r-good"},
    }
    bad = [
        b"not json",
        json.dumps({**good, "site": "clinic-b"}).encode(),  # payload claims another site than its topic
        json.dumps({**good, "record_id": "r-x"}).encode(),  # row of another record
        json.dumps({**good, "month": "2026-13"}).encode(),
    ]
    try:
        async with (
            listening(mosquitto.port, f"{PREFIX}/+/+/receipt") as receipts,
            running_registry(db, mosquitto.port) as registry,
            aiomqtt.Client("127.0.0.1", mosquitto.port) as gw,
        ):
            for payload in bad:
                await gw.publish(f"{PREFIX}/{SITE}/chair-1/record", payload, qos=1)
            await gw.publish(f"{PREFIX}/{SITE}/chair-1/record", json.dumps(good).encode(), qos=1)
            await wait_until(lambda: receipts, 10, "the good record's receipt")
            assert 4 == registry.stats.rejected
        assert [("r-good", "stored")] == [(r["record_id"], r["status"]) for _, r in receipts]
        assert 1 == db.count()
    finally:
        db.close()


async def test_records_sent_while_the_registry_was_away_wait_in_its_persistent_session(
    mosquitto: Mosquitto, registry_db: RegistryDb, tmp_path: Path
) -> None:
    sessions = session_record(tmp_path)
    async with running_registry(registry_db, mosquitto.port):
        pass  # its session (and subscription) now exists on the broker
    async with offering(sessions, mosquitto.port, reoffer_s=3600) as offerer:
        await wait_until(lambda: offerer.offers == 2, 10, "both records offered once")
        async with running_registry(registry_db, mosquitto.port):
            await wait_until(lambda: offerer.receipts == 2, 10, "receipted from the queued copies")
        assert 2 == offerer.offers  # no re-offer was needed
    assert 2 == registry_db.count()


async def test_the_daemon_offers_its_ended_sessions_when_receipts_are_configured(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """`[registry] receipts = true`: the running daemon offers a session that ended in an earlier run."""
    from vitalwatch.config import parse_config
    from vitalwatch.ops.daemon import Daemon

    sessions = session_record(tmp_path)
    quiet = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # a monitor that never sends
    port = quiet.sockets[0].getsockname()[1]
    config = parse_config(
        {
            "site": SITE,
            "mqtt": {"port": mosquitto.port, "client_id": "gw-daemon"},
            "state": {"directory": str(tmp_path)},
            "registry": {"receipts": True},
            "beds": [
                {
                    "id": bed,
                    "devices": [{"id": "ox", "driver": "masimo", "url": f"socket://127.0.0.1:{port}"}],
                }
                for bed in BEDS
            ],
        }
    )
    db = open_registry(str(tmp_path / "registry.sqlite3"))
    db.migrate()
    try:
        async with running_registry(db, mosquitto.port):
            runner = asyncio.create_task(Daemon(config).run())
            try:
                await wait_until(lambda: db.count() == 2, 15, "the daemon's records in the registry")
                await wait_until(lambda: unreceipted(sessions) == 0, 10, "both receipts back at the gateway")
            finally:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
    finally:
        db.close()
        quiet.close()
        await quiet.wait_closed()


async def test_vitalwatch_registry_runs_as_its_own_process_and_stops_on_sigterm(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    import signal
    import sys

    db_path = tmp_path / "registry.sqlite3"
    page_port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vitalwatch",
        "registry",
        "--db",
        str(db_path),
        "--port",
        str(mosquitto.port),
        "--listen",
        f"127.0.0.1:{page_port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        record = {
            "schema": "vitalwatch.session_record/1",
            "record_id": "r-proc",
            "site": SITE,
            "bed": "chair-1",
            "month": "2026-03",
            "sent_utc": "2026-03-02T10:00:00.000Z",
            "record": {"schema": "vitalwatch-session-record/1", "record_id": "r-proc"},
        }
        async with (
            listening(mosquitto.port, f"{PREFIX}/{SITE}/+/receipt") as receipts,
            aiomqtt.Client("127.0.0.1", mosquitto.port) as gw,
        ):
            # Offered again until receipted, as a gateway does: the registry may still be starting.
            async def offer_until_receipted() -> bool:
                await gw.publish(f"{PREFIX}/{SITE}/chair-1/record", json.dumps(record).encode(), qos=1)
                return bool(receipts)

            await wait_until(offer_until_receipted, 20, "a receipt from the registry process", poll_s=0.5)
        assert "r-proc" == receipts[0][1]["record_id"]
        # The same process serves the registry page, which counts the stored record.
        reader, writer = await asyncio.open_connection("127.0.0.1", page_port)
        writer.write(b"GET /summary.json?by=site HTTP/1.1\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        rows = json.loads(reply.partition(b"\r\n\r\n")[2])["rows"]
        assert [(SITE, "2026-03", 1)] == [(r["site"], r["month"], r["sessions"]) for r in rows]
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert 0 == proc.returncode, output.decode(errors="replace")
    db = open_registry(str(db_path))
    try:
        assert 1 == db.count()
    finally:
        db.close()
