"""Resume from the engine snapshot reconciled with the alert journal (continuity.statestore), and when
snapshots are written; plus the daemon's fallback to the journal-only resume on a bad snapshot.

The engine runs in virtual time (EngineHarness): infusion from t=300, SpO2 86 % from 300 (HIGH
spo2_low raised at 315, latched). "The journal" is what the publisher would have recorded: the
engine's last transition of every active alarm.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.helpers import wait_until
from vitalwatch.config import parse_config
from vitalwatch.continuity.statestore import (
    MAX_OUTAGE_S,
    SnapshotRejected,
    SnapshotWriter,
    decode_snapshot,
    encode_snapshot,
    outage_s,
    resume_from_snapshot,
    transition_to_json,
)
from vitalwatch.delivery.payloads import WallClock
from vitalwatch.delivery.store import DB_NAME, Store
from vitalwatch.drivers.events import Observation
from vitalwatch.engine.outputs import AlertState, AlertTransition, Output, PhaseChanged, Priority
from vitalwatch.engine.testing import EngineHarness

DEVICES = {"oximeter": "spo2", "nibp": "nibp"}
EPOCH = 1_800_000_000.0  # wall clock when the snapshot was written


def desaturated(until: float = 340.0) -> EngineHarness:
    """Baseline, infusion at 300, SpO2 86 % from 300 to ``until``: HIGH spo2_low raised at 315."""
    h = EngineHarness()
    h.standard_baseline()
    h.run(300.0, until, spo2=86.0)
    return h


def resume(h: EngineHarness, blob: bytes, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "bed": "bed-1",
        "devices": DEVICES,
        "id_factory": None,
        "now": 10_000.0,
        "written_epoch": EPOCH,
        "epoch_now": EPOCH + 5.0,
        "journal_active": h.engine.active_alarms(),
        "journal_seq": max(o.seq for o in h.alerts()),
    }
    args.update(kw)
    return resume_from_snapshot(h.engine.table, blob, **args)


def feed(engine: Any, start: float, end: float, spo2: float) -> list[AlertTransition]:
    out: list[Output] = []
    t = start
    while t < end:
        out += engine.observe("oximeter", Observation("spo2", spo2, "%"), t)
        engine.bytes_seen("nibp", t)
        out += engine.tick(t)
        t += 1.0
    return [o for o in out if isinstance(o, AlertTransition)]


def test_valid_snapshot_restores_alarm_baseline_and_timers() -> None:
    """Same alarm, same seq, same baseline; seq continues after the journal's when that is larger."""
    h = desaturated()
    (alarm,) = h.engine.active_alarms()
    r = resume(h, encode_snapshot(h.engine.snapshot(340.0)), journal_seq=alarm.seq + 7)
    assert ([], [], 5.0) == (r.orphans, r.dropped, r.outage_s)
    (restored,) = r.engine.active_alarms()
    assert (alarm.alert_id, alarm.seq, AlertState.RAISED) == (restored.alert_id, restored.seq, restored.state)
    assert h.engine.baseline == r.engine.baseline
    assert "infusion" == r.engine.phase
    assert alarm.seq + 7 == r.seq
    # HIGH re-notifies 30 s after 315 = at 345; restored at 10_000 for taken_at 340 + 5 s outage:
    # due at once, as the same alarm (no new raise), numbered after the journal's seq.
    (renotified,) = feed(r.engine, 10_000.0, 10_001.0, 86.0)
    assert (alarm.alert_id, AlertState.RENOTIFIED, alarm.seq + 8) == (
        renotified.alert_id,
        renotified.state,
        renotified.seq,
    )


def without_onset(state: dict[str, Any]) -> dict[str, Any]:
    occ = {k: v for k, v in state["alarms"]["active"][0].items() if k != "onset_t"}
    return {**state, "alarms": {**state["alarms"], "active": [occ]}}


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda s: b"not zlib at all", "undecodable"),
        (lambda s: zlib.compress(b"{truncated"), "undecodable"),
        (lambda s: encode_snapshot({**s, "version": 99}), "version"),
        (lambda s: encode_snapshot(without_onset(s)), "alarms.active[0].onset_t: missing"),
        (lambda s: encode_snapshot({**s, "devices": {"oximeter": "spo2"}}), "devices changed"),
        (lambda s: encode_snapshot({**s, "bed": "bed-2"}), "bed changed"),
    ],
)  # fmt: skip
def test_unusable_snapshot_is_rejected_with_its_reason(mangle: Any, reason: str) -> None:
    """Corrupt, another version, another bed or other devices: SnapshotRejected naming why."""
    h = desaturated()
    with pytest.raises(SnapshotRejected) as info:
        resume(h, mangle(h.engine.snapshot(340.0)))
    assert reason in info.value.reason


def test_journal_newer_ack_wins_and_is_adopted_by_the_restored_engine() -> None:
    """An ack journalled after the snapshot: the alarm leaves the snapshot and becomes an orphan;
    the restored engine finds it at once (its sustain timer survived) and it continues acked."""
    h = desaturated()
    blob = encode_snapshot(h.engine.snapshot(340.0))
    (acked,) = [
        o for o in h.ack(h.engine.active_alarms()[0].alert_id, 341.0) if isinstance(o, AlertTransition)
    ]
    r = resume(h, blob, journal_active=[acked], journal_seq=acked.seq)
    assert ([acked], [], []) == (r.orphans, r.dropped, r.engine.active_alarms())
    r.engine.adopt(r.orphans, now=10_000.0, grace_s=60.0)
    out = feed(r.engine, 10_000.0, 10_002.0, 86.0)
    assert [(acked.alert_id, AlertState.RENOTIFIED), (acked.alert_id, AlertState.ACKNOWLEDGED)] == [
        (o.alert_id, o.state) for o in out
    ]
    assert [acked.seq + 1, acked.seq + 2] == [o.seq for o in out]


def test_journal_only_alarm_is_orphaned_and_cleared_one_dropped() -> None:
    """Active only in the journal: an orphan. Active only in the snapshot: cleared since, dropped."""
    h = desaturated()
    (alarm,) = h.engine.active_alarms()
    other = replace(alarm, alert_id="bed-1-other", seq=alarm.seq + 1, condition="pulse_high")
    r = resume(h, encode_snapshot(h.engine.snapshot(340.0)), journal_active=[other], journal_seq=other.seq)
    assert ([other], [alarm.alert_id], []) == (r.orphans, r.dropped, r.engine.active_alarms())
    assert other.seq == r.seq


def test_outage_counts_and_is_clamped() -> None:
    """200 s of wall-clock gap escalate the HIGH alarm at once (due 120 s after 315); steps are clamped."""
    h = desaturated()
    r = resume(h, encode_snapshot(h.engine.snapshot(340.0)), epoch_now=EPOCH + 200.0)
    assert 200.0 == r.outage_s
    states = [o.state for o in feed(r.engine, 10_000.0, 10_001.0, 86.0)]
    assert AlertState.ESCALATED in states
    assert 0.0 == outage_s(EPOCH, EPOCH - 3600.0)  # the clock stepped back
    assert MAX_OUTAGE_S == outage_s(EPOCH, EPOCH + 10 * 365 * 86400.0)  # RTC-less boot, then NTP


def test_snapshot_names_adopted_alarm_as_published() -> None:
    """After an adoption, the snapshot carries the published alert_id and onset, not the engine's."""
    h = desaturated()
    (alarm,) = h.engine.active_alarms()
    published = replace(alarm, alert_id="bed-1-20250101T000000-0001", onset_t=290.0)
    fresh = EngineHarness()
    fresh.standard_baseline()
    fresh.engine.adopt([published], now=300.0, grace_s=60.0)
    assert AlertState.RENOTIFIED in [o.state for o in feed(fresh.engine, 300.0, 330.0, 86.0)]
    state = json.loads(json.dumps(fresh.engine.snapshot(330.0)))
    (occ,) = state["alarms"]["active"]
    assert (published.alert_id, 290.0) == (occ["alert_id"], occ["onset_t"])
    assert (published.alert_id, 290.0) == (occ["last"]["alert_id"], occ["last"]["onset_t"])


class FakePut:
    """A store whose writes finish when the test says so."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []
        self.epochs: list[float] = []
        self.futures: list[asyncio.Future[bool | None]] = []

    def __call__(self, blob: bytes, epoch: float) -> asyncio.Future[bool | None]:
        self.blobs.append(blob)
        self.epochs.append(epoch)
        fut: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut

    def finish(self) -> None:
        for f in self.futures:
            if not f.done():
                f.set_result(True)


@pytest.mark.asyncio
async def test_writer_labels_a_snapshot_with_the_epoch_of_the_instant_it_was_taken() -> None:
    """The snapshot's times are ages as of ``now``: a slow take/encode (the clock moves on meanwhile)
    must not make the written epoch later, or every restored onset moves by that delay."""
    clock = [100.0]
    put = FakePut()

    def slow_take(now: float) -> dict[str, Any]:
        clock[0] += 0.5  # the encoding took half a second under load
        return {"now": now}

    w = SnapshotWriter("bed-1", slow_take, put, clock=lambda: clock[0], epoch=lambda t: 1_000_000.0 + t)
    w.fed([PhaseChanged(t=100.0, bed="bed-1", phase="infusion", previous="baseline")])
    await asyncio.sleep(0)  # one loop turn: the write after the batch is the subject
    assert [1_000_100.0] == put.epochs
    put.finish()
    # Without a mapping, the wall clock now minus the time the take and encoding took.
    clock[0] = 200.0
    w2 = SnapshotWriter("bed-1", slow_take, put, clock=lambda: clock[0])
    before = time.time()
    w2.fed([PhaseChanged(t=200.0, bed="bed-1", phase="infusion", previous="baseline")])
    await asyncio.sleep(0)
    assert before - 0.5 - 0.1 <= put.epochs[-1] <= before - 0.4
    put.finish()


@pytest.mark.asyncio
async def test_writer_writes_after_alarm_batches_else_once_a_minute_and_at_close() -> None:
    """An alarm/phase batch is written on the next loop turn, one write at a time; readings alone wait
    for 60 s; a tick with nothing fed writes nothing; close writes the last state."""
    clock = [0.0]
    put = FakePut()
    taken: list[float] = []

    def take(now: float) -> dict[str, Any]:
        taken.append(now)
        return {"n": len(taken)}

    w = SnapshotWriter("bed-1", take, put, clock=lambda: clock[0])
    phase = PhaseChanged(t=0.0, bed="bed-1", phase="infusion", previous="baseline")
    w.fed([phase])
    w.fed([phase])  # same loop turn: one write
    assert [] == put.blobs  # not before the session has dispatched the batch
    # Each zero sleep below is one loop turn, not a wait for time: "on the next turn" is the subject.
    await asyncio.sleep(0)
    assert 1 == len(put.blobs)
    w.fed([phase])  # while the first write is in flight: remembered, not queued
    await asyncio.sleep(0)
    assert 1 == len(put.blobs)
    put.finish()
    await asyncio.sleep(0)
    assert 2 == len(put.blobs)
    put.finish()
    w.fed([])  # readings only
    clock[0] = 59.0
    w.tick(59.0)
    assert 2 == len(put.blobs)
    clock[0] = 60.0
    w.tick(60.0)
    assert 3 == len(put.blobs)
    put.finish()
    w.tick(200.0)  # nothing fed since
    assert 3 == len(put.blobs)
    closing = asyncio.ensure_future(w.close())
    await wait_until(lambda: 4 == len(put.blobs), 2, "the closing write handed to the store")
    put.finish()
    await asyncio.wait_for(closing, 1.0)
    assert 4 == len(put.blobs)
    assert {"n": 4} == decode_snapshot(put.blobs[-1])


# -------------------------------------------------------------------- the daemon's fallback


def daemon_config(state: Path, devices: list[dict[str, str]]) -> Any:
    return parse_config(
        {
            "site": "test-site",
            "mqtt": {"host": "127.0.0.1", "port": 1},
            "state": {"directory": str(state)},
            "beds": [{"id": "bed-1", "devices": devices}],
        }
    )


OXIMETER = {"id": "oximeter", "driver": "masimo", "url": "/nonexistent/tty"}


async def start_daemon_with(
    state: Path, h: EngineHarness, snapshot: bytes, devices: list[dict[str, str]]
) -> Any:
    """A Daemon built (not run) over a journal holding the harness's active alarm and ``snapshot``."""
    from vitalwatch.ops.daemon import Daemon

    (alarm,) = h.engine.active_alarms()
    wall = WallClock(0.0, datetime.now(UTC))
    store = Store(state / DB_NAME)
    await store.record(
        "bed-1",
        alert_id=alarm.alert_id,
        seq=alarm.seq,
        rank=alarm.priority.rank,
        clears=False,
        payload={"alert_id": alarm.alert_id},
        transition=transition_to_json(alarm, utc=wall.utc),
    )
    await store.delivered("bed-1", alarm.alert_id, alarm.seq)
    await store.put_snapshot("bed-1", snapshot, written=EPOCH)
    store.close()
    with capture_logs() as logs:
        daemon = Daemon(daemon_config(state, devices))
    return daemon, logs, alarm


async def close(daemon: Any) -> None:
    await daemon.store.flush()  # the journal writes of the start, queued before this, are done
    for record in daemon.records.values():
        record.close(0.0)
    daemon.sessions.close()
    daemon.store.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("snapshot", "devices", "reason"),
    [
        (b"\x78\x9c garbage", [OXIMETER], "undecodable"),
        (
            b"same",  # the harness's own snapshot (two devices)
            [OXIMETER, {"id": "nibp", "driver": "masimo", "url": "/nonexistent/tty2"}],
            "devices changed",
        ),
    ],
)
async def test_daemon_falls_back_to_journal_resume_on_rejected_snapshot(
    tmp_path: Path, snapshot: bytes, devices: list[dict[str, str]], reason: str
) -> None:
    """session.snapshot_rejected with the reason; the journal's active alarm is still shown under its id."""
    h = desaturated()
    blob = encode_snapshot(h.engine.snapshot(340.0)) if snapshot == b"same" else snapshot
    daemon, logs, alarm = await start_daemon_with(tmp_path, h, blob, devices)
    try:
        rejected = [e for e in logs if e["event"] == "session.snapshot_rejected"]
        assert 1 == len(rejected) and reason in rejected[0]["reason"]
        engine = daemon.beds["bed-1"].engine
        assert [alarm.alert_id] == [t.alert_id for t in engine.active_alarms()]
        assert [alarm.alert_id] == [t.alert_id for t in engine.orphans]  # held for adoption
        assert "baseline" == engine.phase  # a fresh engine: the journal had no phase
    finally:
        await close(daemon)


@pytest.mark.asyncio
async def test_daemon_resumes_from_a_valid_snapshot(tmp_path: Path) -> None:
    """A valid snapshot of the same devices: the alarm is the engine's own again (not an orphan)."""
    h = EngineHarness(devices={"oximeter": "spo2"})
    h.standard_baseline()
    h.run(300.0, 340.0, spo2=86.0)
    blob = encode_snapshot(h.engine.snapshot(340.0))
    daemon, logs, alarm = await start_daemon_with(tmp_path, h, blob, [OXIMETER])
    try:
        assert "session.snapshot_restored" in [e["event"] for e in logs]
        engine = daemon.beds["bed-1"].engine
        assert [] == engine.orphans
        assert [alarm.alert_id] == [t.alert_id for t in engine.active_alarms()]
        assert h.engine.baseline == engine.baseline
        assert "infusion" == engine.phase
        assert Priority.HIGH == engine.active_alarms()[0].priority
    finally:
        await close(daemon)
