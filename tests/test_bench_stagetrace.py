"""The latency benchmark's stage tracer: structure only (speed is measured by the benchmarks).

The tracer wraps the daemon's own functions; if one of them is renamed or moved, the benchmark
would silently lose a stage. These tests install the wrappers in-process, drive one alert
through a real bed session, publisher and journal (no broker: the publisher's client is not
involved until the send), and check every stage up to the commit is stamped, in path order.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
from pathlib import Path

import pytest

from bench.stagetrace import ASIDE, OWNERS, SEGMENTS, STAGES, classify, install, segments, spy_shares


def test_segments_cover_the_path_in_order() -> None:
    stamps = {name: float(i) for i, name in enumerate(("written", *STAGES, "received"))}
    stamps["chunk_done"] = stamps["alert_out"] + 0.5
    stamps["txn_start"] = stamps["alert_out"] + 0.2
    got = segments(stamps)
    assert list(got) == [name for name, _, _ in (*SEGMENTS, *ASIDE)]
    assert all(v >= 0 for v in got.values())
    # The publisher may be waiting before the commit is seen: the later of the two counts.
    stamps["send_in"] = stamps["publish"] - 0.5
    stamps["commit_seen"] = stamps["send_in"] - 1.0
    assert segments(stamps)["-> publish called (task wake, encode)"] == pytest.approx(0.5)


def test_every_owner_is_reachable_and_innermost_frame_decides() -> None:
    assert classify(["/x/structlog/_log.py", "/x/vitalwatch/bed.py"]) == "logging"
    assert classify(["/usr/lib/python3/json/encoder.py", "/x/vitalwatch/delivery/publisher.py"]) == (
        "publisher, payloads, journal submit"
    )
    assert classify(["/usr/lib/python3/selectors.py", "/usr/lib/python3/asyncio/base_events.py"]) == (
        "idle (waiting in select)"
    )
    assert classify(["/nowhere.py"]) == "other"
    # py-spy's shortened paths as well as absolute ones
    assert classify(["vitalwatch/engine/session.py:124)"]) == "engine"
    for pattern, owner in OWNERS:
        assert classify([f"/x{pattern}y.py"]) in {o for _, o in OWNERS}
        assert owner


def test_py_spy_stacks_are_attributed_to_the_main_thread_only(tmp_path: Path) -> None:
    raw = tmp_path / "spy.txt"
    raw.write_text(
        "thread (1): MainThread;run (asyncio/base_events.py:607);"
        "on_readable (vitalwatch/link/device_link.py:190);feed (drivers/nonin.py:267) 3\n"
        "thread (1): MainThread;run (asyncio/base_events.py:607);select (selectors.py:468) 1\n"
        "thread (2): vitalwatch-db;_worker (concurrent/futures/thread.py:81) 50\n"
    )
    assert spy_shares(raw) == {"driver decode": 0.75, "idle (waiting in select)": 0.25}


def test_tracer_stamps_every_stage_to_the_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitalwatch.delivery.publisher import BedPublisher
    from vitalwatch.delivery.store import Store
    from vitalwatch.delivery.writer import JournalWriter
    from vitalwatch.engine.session import BedEngine
    from vitalwatch.link.driver_guard import DriverGuard
    from vitalwatch.link.guarded import GuardedDevice
    from vitalwatch.link.serial_port import SerialPort

    # Undo the class patches after the test (install() patches the classes themselves).
    for cls, attr in (
        (SerialPort, "read_nowait"),
        (DriverGuard, "feed"),
        (GuardedDevice, "_deliver"),
        (BedEngine, "observe"),
        (BedPublisher, "alert"),
        (BedPublisher, "_send"),
        (Store, "record"),
        (JournalWriter, "_record"),
        (JournalWriter, "_txn"),
    ):
        monkeypatch.setattr(cls, attr, getattr(cls, attr))
    import aiomqtt
    import paho.mqtt.client as paho

    monkeypatch.setattr(aiomqtt.Client, "publish", aiomqtt.Client.publish)
    monkeypatch.setattr(paho.Client, "loop_write", paho.Client.loop_write)
    # install() is meant for a daemon process: keep its exit dump and GC callback out of pytest's.
    monkeypatch.setattr(atexit, "register", lambda fn: fn)
    callbacks = list(gc.callbacks)
    rec = install(tmp_path / "trace.json")
    assert len(gc.callbacks) == len(callbacks) + 1
    gc.callbacks[:] = callbacks

    async def one_alert() -> None:
        from bench.common import masimo_line, write_config, zero_delay_alarms
        from vitalwatch.config import load_config
        from vitalwatch.delivery.payloads import WallClock
        from vitalwatch.drivers import make_driver
        from vitalwatch.ops.bed_runtime import make_engine

        cfg = load_config(
            write_config(
                tmp_path / "vw.toml",
                broker_port=1883,
                state_dir=tmp_path / "state",
                beds={"bed-1": [("oximeter", "masimo", "/dev/null")]},
                alarms=zero_delay_alarms(),
            )
        )
        loop = asyncio.get_running_loop()
        store = Store(tmp_path / "vw.sqlite3")

        class Port:
            def status(self, state: str, heartbeat: int) -> dict[str, object]:
                return {}

            def command(self, payload: bytes, *, retained: bool = False) -> dict[str, object]:
                return {}

            def unreachable(self, stuck: bool) -> None: ...

            def alert_sent(self) -> None: ...

        publisher = BedPublisher(
            cfg.mqtt, site="bench", bed="bed-1", wall=WallClock(loop.time()), port=Port(), store=store
        )
        engine = make_engine(cfg, cfg.beds[0])
        guard = DriverGuard(lambda: make_driver("masimo"))
        guard.start(0.0)
        for i, spo2 in enumerate((97, 84)):
            now = loop.time()
            for event in guard.feed(masimo_line(spo2, 72, i), now):
                for out in engine.observe("oximeter", event, now):
                    if type(out).__name__ == "AlertTransition":
                        publisher.alert(out)
        (entry,) = publisher.pending_entries()
        assert entry.persisted is not None
        await entry.persisted
        await asyncio.sleep(0)  # the done callback that stamps commit_seen
        store.close()

    asyncio.run(one_alert())
    (stamps,) = rec.values()
    expected = ["decoded", "engine_out", "alert_in", "alert_out", "committed", "commit_seen"]
    assert [s for s in STAGES if s in stamps] == expected
    assert [stamps[s] for s in expected] == sorted(stamps[s] for s in expected)
