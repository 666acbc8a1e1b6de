"""The trend document (vitalwatch/delivery/trend.py): downsampling, bounds, latest values, the seed
read back from a real session record file (vitalwatch/record/recent.py), and the retained documents
that carry it (one document at a time between alerts; None empties the topic)."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.fakes.alerts import transition
from tests.fakes.example_session import record_example_session
from tests.fakes.mqtt import FakeBroker
from tests.service.test_publisher import BASE, publisher, running
from vitalwatch.delivery.documents import RetainedDocuments
from vitalwatch.delivery.payloads import encode
from vitalwatch.delivery.trend import MAX_POINTS, STEP_S, WINDOW_S, SeedLatest, SeedPoint, TrendBook
from vitalwatch.drivers.events import Observation
from vitalwatch.engine.outputs import PhaseChanged
from vitalwatch.record.recent import recent_trend
from vitalwatch.record.sessionlog import SessionDb, SessionLog

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "trend.schema.json").read_text(encoding="utf-8"))
START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
T0 = 5000.0  # monotonic seconds at START


def utc(t: float) -> datetime:
    return START + timedelta(seconds=t - T0)


def document(book: TrendBook, now: float) -> dict[str, Any]:
    doc = book.document(site="clinic-a", bed="chair-1", now=now, utc=utc, sent_at=utc(now))
    assert doc is not None
    # What a receiver gets: the strict encoding, parsed, valid against the schema.
    received: dict[str, Any] = json.loads(encode(doc))
    Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(received)
    return received


def test_one_point_per_step_with_mean_min_max_and_the_latest_value() -> None:
    """60 s at 1 Hz are 6 points of 10 samples each, aged from the document's time; latest is the last."""
    book = TrendBook()
    for i in range(60):
        book.observation("ox", "spo2", 90.0 + i % 10, True, T0 + i)  # 90..99 in every step
    doc = document(book, T0 + 60)
    points = doc["series"]["spo2"]
    assert 6 == len(points)
    assert [[55.5, 94.5, 90.0, 99.0]] == points[:1]  # the samples 0..9 s: middle 4.5 s, 55.5 s ago
    assert [5.5, 94.5, 90.0, 99.0] == points[-1]
    latest = doc["latest"]["spo2"]
    assert (99.0, "valid", "%", "ox", 1.0) == (
        latest["value"], latest["quality"], latest["unit"], latest["device"], latest["age_s"]
    )  # fmt: skip
    assert "2026-03-01T10:00:59.000Z" == latest["measured_utc"]
    assert {"spo2"} == set(doc["series"]) == set(doc["latest"])
    assert (int(STEP_S), int(WINDOW_S)) == (doc["step_s"], doc["window_s"])


def test_invalid_and_non_finite_values_are_latest_but_never_on_the_line() -> None:
    """A probe-off value is shown as invalid (null); NaN or infinity never reaches a point."""
    book = TrendBook()
    assert book.observation("ox", "pulse_rate", 70.0, True, T0)  # the kind's first value: publish now
    assert not book.observation("ox", "pulse_rate", 71.0, True, T0 + 1)
    book.observation("ox", "pulse_rate", math.nan, True, T0 + 2)
    book.observation("ox", "pulse_rate", math.inf, True, T0 + 3)
    book.observation("ox", "pulse_rate", 250.0, False, T0 + 4)  # under an unreliable status
    assert not book.observation("ox", "cuff_pressure", 120.0, True, T0 + 4)  # not a trend kind
    doc = document(book, T0 + 5)
    assert [[4.5, 70.5, 70.0, 71.0]] == doc["series"]["pulse_rate"]
    assert (None, "invalid") == (doc["latest"]["pulse_rate"]["value"], doc["latest"]["pulse_rate"]["quality"])
    assert {"pulse_rate"} == set(doc["latest"])


def test_bounded_by_the_window_and_the_point_count_and_small_enough_to_send() -> None:
    """Two hours at 1 Hz of every kind: at most MAX_POINTS per kind, none older than the window."""
    book = TrendBook()
    kinds = ("spo2", "pulse_rate", "nibp_systolic", "nibp_diastolic", "nibp_mean")
    for i in range(7200):
        for kind in kinds:
            book.observation("dev", kind, 100.0 + (i % 7) / 3, True, T0 + i)
    now = T0 + 7200
    doc = document(book, now)
    for kind in kinds:
        points = doc["series"][kind]
        assert len(points) <= MAX_POINTS == SCHEMA["properties"]["series"]["properties"][kind]["maxItems"]
        assert points[0][0] <= WINDOW_S and [p[0] for p in points] == sorted(
            (p[0] for p in points), reverse=True
        )
    assert len(encode(doc)) < 32 * 1024  # the broker's packet limit is 64 KiB (config/mosquitto)
    # Everything older than the window goes, and with it the document.
    assert book.document(site="s", bed="b", now=now + WINDOW_S + 1, utc=utc, sent_at=START) is None


def test_seed_goes_before_live_points_and_live_latest_values_win() -> None:
    """Seeded points and values are placed by age; a seed older than the newest point is not mixed in."""
    book = TrendBook()
    book.seed(
        [SeedPoint("spo2", 120.0, 95.0, 94.0, 96.0), SeedPoint("spo2", 60.0, 97.0, 96.0, 98.0)],
        [SeedLatest("spo2", 60.0, 97.0, "valid"), SeedLatest("nibp_systolic", 90.0, None, "invalid")],
        T0,
    )
    book.observation("ox", "spo2", 99.0, True, T0 + 5)
    book.seed([SeedPoint("spo2", 30.0, 50.0, 50.0, 50.0)], [SeedLatest("spo2", 1.0, 50.0, "valid")], T0 + 5)
    doc = document(book, T0 + 10)
    assert [[130.0, 95.0, 94.0, 96.0], [70.0, 97.0, 96.0, 98.0], [5.0, 99.0, 99.0, 99.0]] == doc["series"][
        "spo2"
    ]
    assert (99.0, "ox") == (doc["latest"]["spo2"]["value"], doc["latest"]["spo2"]["device"])
    assert (None, "invalid", None, 100.0) == tuple(
        doc["latest"]["nibp_systolic"][k] for k in ("value", "quality", "device", "age_s")
    )
    book.clear()
    assert not book and book.document(site="s", bed="b", now=T0 + 10, utc=utc, sent_at=START) is None


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SessionDb(tmp_path / "sessions.sqlite3")
    yield store
    store.close()


def seeded(db: SessionDb, bed: str, now: float, window_s: float = WINDOW_S) -> TrendBook:
    db.flush()
    conn = db.read()
    try:
        found = recent_trend(conn, bed, epoch_now=utc(now).timestamp(), window_s=window_s)
    finally:
        conn.close()
    book = TrendBook()
    book.seed(found.points, found.latest, now)
    return book


def test_seed_from_a_session_record_file_minutes_and_nibp_readings(db: SessionDb) -> None:
    """An open session written by SessionLog: one point per recorded minute, every NIBP reading, the
    last values, as of a restart 30 s after the record's last minute."""
    log = SessionLog(db, "chair-1", wall=utc)
    log.output(PhaseChanged(t=T0, bed="chair-1", phase="baseline", previous="ended"))
    for i in range(300):  # 5 min at 1 Hz
        log.observation("ox", Observation("spo2", 95.0 + (i // 60), "%"), T0 + i, True)
        log.observation("ox", Observation("pulse_rate", 70.0, "/min"), T0 + i, True)
    for t, sys_v, dia_v in ((T0 + 30, 120.0, 80.0), (T0 + 200, 130.0, 85.0)):
        for kind, value in (("nibp_systolic", sys_v), ("nibp_diastolic", dia_v), ("nibp_mean", 95.0)):
            log.observation("cuff", Observation(kind, value, "mm[Hg]"), t, True)
    log.tick(T0 + 300)  # the fifth minute closes
    now = T0 + 330
    doc = document(seeded(db, "chair-1", now), now)
    spo2 = doc["series"]["spo2"]
    assert [300.0, 240.0, 180.0, 120.0, 60.0] == [p[0] for p in spo2]  # minute middles, from the record
    assert [95.0, 96.0, 97.0, 98.0, 99.0] == [p[1] for p in spo2]
    assert [[300.0, 120.0, 120.0, 120.0], [130.0, 130.0, 130.0, 130.0]] == doc["series"]["nibp_systolic"]
    latest = doc["latest"]
    assert (99.0, None) == (latest["spo2"]["value"], latest["spo2"]["device"])
    assert 90.0 == latest["spo2"]["age_s"]  # the start of its minute: never newer than it was
    assert (130.0, 85.0, 130.0) == (
        latest["nibp_systolic"]["value"], latest["nibp_diastolic"]["value"], latest["nibp_systolic"]["age_s"]
    )  # fmt: skip
    # A shorter window takes only the minutes that still reach into it.
    assert 2 == len(document(seeded(db, "chair-1", now, window_s=100.0), now)["series"]["spo2"])
    assert not seeded(db, "chair-2", now)  # another bed has no session


def test_an_ended_session_seeds_nothing(db: SessionDb) -> None:
    """A bed whose last session ended has no trend to show after a restart."""
    log = SessionLog(db, "chair-2", wall=utc)
    record_example_session(log, t0=T0)
    assert not seeded(db, "chair-2", T0 + 6010)


class Recorder:
    """An MqttClient that only records publishes."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    async def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool = False, **_: Any) -> None:
        self.sent.append((topic, payload, retain))


@pytest.mark.asyncio
async def test_documents_go_one_per_call_and_none_empties_the_topic() -> None:
    docs = RetainedDocuments(timeout=1.0)
    assert docs.put("t/a", {"x": 1}) and docs.put("t/b", None)
    assert not docs.put("t/b", None)  # unchanged: not sent again
    client = Recorder()
    await docs.publish(client)  # type: ignore[arg-type]
    assert [("t/a", b'{"x":1}', True)] == client.sent and docs
    await docs.publish(client)  # type: ignore[arg-type]
    assert ("t/b", b"", True) == client.sent[-1] and not docs
    docs.all_due()  # a reconnect: both again
    assert docs


@pytest.mark.asyncio
async def test_an_alert_goes_before_the_documents_still_waiting() -> None:
    """While one retained document is in flight an alert arrives: it is sent next, not after the rest."""
    broker = FakeBroker()
    broker.ack_delay = 0.05
    pub = publisher(broker)
    async with running(pub):
        await broker.wait_for(lambda: broker.connected == 1, what="connected")
        for name in ("prompts", "readiness", "trend"):
            pub.document(f"{BASE}/{name}", {"n": name}, compare={"n": name})
        await broker.wait_for(lambda: any(a.topic.endswith("/prompts") for a in broker.attempts), what="doc")
        pub.alert(transition("a1", 1, bed="chair-1", t=asyncio.get_running_loop().time()))
        await broker.wait_for(lambda: f"{BASE}/trend" in broker.retained, what="every document sent")
    order = [a.topic.rsplit("/", 1)[-1] for a in broker.accepted if not a.topic.endswith("/status")]
    assert ["prompts", "alerts", "a1", "readiness", "trend"] == order, order
