"""The gateway's offer state, its `[registry]` configuration and what `vitalwatch status` says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes.example_session import record_example_session
from vitalwatch.cli.status import _registry, _registry_line
from vitalwatch.config import parse_config
from vitalwatch.errors import ConfigError
from vitalwatch.record.sessionlog import SessionDb, SessionLog
from vitalwatch.registry.offer import OfferBook

BED = {"id": "chair-1", "devices": [{"id": "ox", "driver": "masimo", "url": "socket://127.0.0.1:1"}]}


def ended_session(state: Path, bed: str = "chair-1") -> str:
    db = SessionDb(state / "sessions.sqlite3")
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    log = SessionLog(db, bed, wall=lambda t: start + timedelta(seconds=t - 1000.0))
    record_example_session(log)
    db.close()
    book = OfferBook(state / "sessions.sqlite3")
    try:
        return str(book.conn.execute("SELECT record_id FROM sessions").fetchone()[0])
    finally:
        book.close()


def test_registry_configuration_defaults_off_and_bad_values_are_named() -> None:
    cfg = parse_config({"site": "clinic-a", "beds": [BED]})
    assert (False, 300.0) == (cfg.registry.receipts, cfg.registry.reoffer_s)
    cfg = parse_config({"site": "clinic-a", "beds": [BED], "registry": {"receipts": True, "reoffer_s": 60}})
    assert (True, 60.0) == (cfg.registry.receipts, cfg.registry.reoffer_s)
    with pytest.raises(ConfigError) as info:
        parse_config({"site": "c", "beds": [BED], "registry": {"receipts": "yes", "reoffer_s": 0, "x": 1}})
    keys = sorted(p.key for p in info.value.problems)
    assert ["registry.receipts", "registry.reoffer_s", "registry.x"] == keys


def test_a_record_is_due_until_receipted_and_again_after_the_reoffer_time(tmp_path: Path) -> None:
    record_id = ended_session(tmp_path)
    book = OfferBook(tmp_path / "sessions.sqlite3")
    try:
        assert [record_id] == [r for _, r, _ in book.due(1000.0, 300.0)]
        book.offered(record_id, 1000.0)
        assert [] == book.due(1299.0, 300.0)
        assert [record_id] == [r for _, r, _ in book.due(1300.0, 300.0)]
        state = book.unreceipted(datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp())
        assert (1, 1) == (state.count, state.offered)
        # The example session ends 100 min after it started (09:00 + 100 min = 10:40).
        assert 80 * 60 == pytest.approx(state.oldest_age_s, abs=60)
        assert not book.receipted(record_id, "chair-2", "stored", 1400.0)  # not that bed's record
        assert book.receipted(record_id, "chair-1", "stored", 1400.0)
        assert not book.receipted(record_id, "chair-1", "duplicate", 1500.0)  # already done
        assert [] == book.due(99999.0, 300.0)
        assert 0 == book.unreceipted(99999.0).count
    finally:
        book.close()


def test_status_reports_unreceipted_records(tmp_path: Path) -> None:
    record_id = ended_session(tmp_path)
    config = parse_config(
        {
            "site": "clinic-a",
            "state": {"directory": str(tmp_path)},
            "registry": {"receipts": True},
            "beds": [BED],
        }
    )
    report = _registry(config)
    assert report is not None
    assert (1, 0) == (report["unreceipted"], report["offered_unreceipted"])
    assert _registry_line(report).startswith("registry: 1 session record(s) awaiting the registry's receipt")
    book = OfferBook(tmp_path / "sessions.sqlite3")
    try:
        book.receipted(record_id, "chair-1", "stored", 0.0)
    finally:
        book.close()
    done = _registry(config)
    assert done is not None and 0 == done["unreceipted"]
    assert "every ended session's record is receipted" in _registry_line(done)
    off = parse_config({"site": "clinic-a", "state": {"directory": str(tmp_path)}, "beds": [BED]})
    assert _registry(off) is None
