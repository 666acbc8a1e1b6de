"""Stage tracer: where an alert's time goes inside the daemon, from the pty read to the PUBACK.

Why a launcher and not code in the daemon: the stamps must not cost the shipped daemon anything,
and the stages are the boundaries between modules that already exist, so wrapping those
functions (as ``bench.common run-nodelay`` once did for TCP_NODELAY) marks every stage without
touching the product. ``python -m bench.stagetrace --config PATH`` is ``vitalwatch run`` with
these wrappers; the stamps (CLOCK_MONOTONIC, the clock the benchmark's writer and subscriber
use) go to the JSON file named by ``VW_STAGE_TRACE`` when the daemon exits.

Stages of one alert transition, keyed by ``(alert_id, seq)``, in path order:

.. code-block:: text

    read         SerialPort.read_nowait returned the chunk that completed the line
    decoded      the driver's feed returned its events (DriverGuard.feed)
    engine_out   BedEngine.observe returned the transition (validity, vitals, session record, engine)
    alert_in     BedPublisher.alert called: the bed session's dispatch reached the publisher
    alert_out    BedPublisher.alert returned: the FULL commit submitted to the writer thread
    committed    the writer thread's transaction with this row committed (fsync done)
    commit_seen  the loop saw the record's future resolve
    send_in      the publisher's task entered _send for this entry
    publish      aiomqtt Client.publish called (body encoded)
    sock_write   paho wrote the next packet to the socket after that publish
    puback       Client.publish returned: the broker's PUBACK arrived

Beside the path: ``chunk_done`` - the device link has handed every event of that chunk to the
bed session (the rest of the line's observations, vitals, session record, logs), i.e. when
the loop is free again. The writer thread needs the GIL between its SQLite calls, so a commit
cannot finish much before that.

The benchmark adds ``written`` (its write to the pty) and ``received`` (the subscriber) and
:func:`segments` turns one alert's stamps into the time spent between consecutive stages.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ASIDE",
    "OWNERS",
    "SEGMENTS",
    "STAGES",
    "classify",
    "install",
    "segments",
    "spy_record",
    "spy_shares",
]

STAGES = (
    "read",
    "decoded",
    "engine_out",
    "alert_in",
    "alert_out",
    "committed",
    "commit_seen",
    "send_in",
    "publish",
    "sock_write",
    "puback",
)

# (name, from, to): the path's consecutive pieces. The publisher task may enter _send before
# the commit is seen (it then waits on it), so "ready to publish" is the later of the two.
SEGMENTS: tuple[tuple[str, str, str], ...] = (
    ("pty write -> daemon read", "written", "read"),
    ("driver decode", "read", "decoded"),
    ("observation -> engine returns the alert", "decoded", "engine_out"),
    ("dispatch to publisher.alert", "engine_out", "alert_in"),
    ("publisher.alert (payload, journal submit)", "alert_in", "alert_out"),
    ("journal commit (writer thread, fsync)", "alert_out", "committed"),
    ("commit -> loop sees it", "committed", "commit_seen"),
    ("-> publish called (task wake, encode)", "ready", "publish"),
    ("publish -> socket write", "publish", "sock_write"),
    ("socket write -> subscriber", "sock_write", "received"),
)

# Beside the path (overlapping it): what the loop still does after the submit, and how long
# the commit takes after the loop is free.
ASIDE: tuple[tuple[str, str, str], ...] = (
    ("(aside) rest of the chunk after the submit", "alert_out", "chunk_done"),
    ("(aside) loop free -> commit done", "chunk_done", "committed"),
    ("(aside) submit -> the writer starts the transaction", "alert_out", "txn_start"),
    ("(aside) the transaction (PRAGMA to COMMIT)", "txn_start", "committed"),
)


def segments(stamps: Mapping[str, float]) -> dict[str, float]:
    """Seconds in each of :data:`SEGMENTS`, then :data:`ASIDE`, for one alert (missing stamps: omitted)."""
    s = dict(stamps)
    if "commit_seen" in s or "send_in" in s:
        s["ready"] = max(s.get("commit_seen", 0.0), s.get("send_in", 0.0))
    return {name: s[b] - s[a] for name, a, b in (*SEGMENTS, *ASIDE) if a in s and b in s}


def install(out: Path) -> dict[tuple[str, int], dict[str, float]]:
    """Wrap the stage boundaries; returns the live record (also written to ``out`` at exit)."""
    import aiomqtt
    import paho.mqtt.client as paho

    from vitalwatch.delivery import writer as writer_module
    from vitalwatch.delivery.commit import Commit
    from vitalwatch.delivery.publisher import BedPublisher
    from vitalwatch.delivery.store import Store
    from vitalwatch.delivery.writer import JournalWriter
    from vitalwatch.engine.outputs import AlertTransition
    from vitalwatch.engine.session import BedEngine
    from vitalwatch.link.driver_guard import DriverGuard
    from vitalwatch.link.guarded import GuardedDevice
    from vitalwatch.link.serial_port import SerialPort

    now = time.monotonic  # CLOCK_MONOTONIC on Linux, as bench.common.mono
    rec: dict[tuple[str, int], dict[str, float]] = {}
    last: dict[str, float] = {}
    state: dict[str, Any] = {"key": None, "write_for": None}
    in_txn: list[tuple[str, int]] = []  # writer thread only

    read_nowait = SerialPort.read_nowait

    def traced_read(self: SerialPort) -> bytes:
        data = read_nowait(self)
        if data:
            last["read"] = now()
        return data

    feed = DriverGuard.feed

    def traced_feed(self: DriverGuard, data: bytes, t: float = 0.0) -> list[Any]:
        events = feed(self, data, t)
        last["decoded"] = now()
        return events

    observe = BedEngine.observe

    def traced_observe(self: BedEngine, *a: Any, **kw: Any) -> Any:
        outputs = observe(self, *a, **kw)
        if any(isinstance(o, AlertTransition) for o in outputs):
            last["engine_out"] = now()
        return outputs

    deliver = GuardedDevice._deliver

    def traced_deliver(self: GuardedDevice, events: list[Any], t: float) -> None:
        deliver(self, events, t)
        key = state.get("chunk_key")
        if key is not None and key in rec:
            rec[key]["chunk_done"] = now()
        state["chunk_key"] = None

    alert = BedPublisher.alert

    def traced_alert(self: BedPublisher, transition: Any) -> Any:
        t = now()
        key = (transition.alert_id, transition.seq)
        rec[key] = {"alert_in": t, **last}
        last.pop("engine_out", None)
        state["key"] = key
        try:
            commit = alert(self, transition)  # the bed session waits on it: hand it back
        finally:
            state["key"] = None
        rec[key]["alert_out"] = now()
        state["chunk_key"] = key
        return commit

    record = Store.record
    seen_keys: dict[Any, tuple[str, int]] = {}  # the publisher's Commit of a traced alert -> key

    def traced_record(self: Store, bed: str, **kw: Any) -> Any:
        commit = record(self, bed, **kw)
        key = (kw["alert_id"], kw["seq"])
        if key in rec:
            seen_keys[commit] = key
        return commit

    settle = writer_module._settle

    def traced_settle(commits: Any, result: Any) -> None:
        # The writer's loop callback for a committed record: the loop sees the commit now.
        for commit in commits:
            key = seen_keys.pop(commit, None)
            if key is not None:
                rec[key]["commit_seen"] = now()
        settle(commits, result)

    settle_written = Commit.settle_written

    def traced_settle_written(self: Commit) -> None:
        # The loop that blocked for the writer settles the record itself, before that callback.
        key = seen_keys.pop(self, None)
        if key is not None:
            rec[key]["commit_seen"] = now()
        settle_written(self)

    wrap_record = JournalWriter._record

    def traced_writer_record(self: JournalWriter, work: Any, readers: int = 1) -> Any:
        key = state["key"]
        if key is None:
            return wrap_record(self, work, readers)

        def marked(conn: Any) -> None:
            work(conn)
            in_txn.append(key)

        return wrap_record(self, marked, readers)

    txn = JournalWriter._txn

    def traced_txn(self: JournalWriter, sync: str, body: Any, *, hold: bool = True) -> Any:
        del in_txn[:]
        start = now()
        result = txn(self, sync, body, hold=hold)
        t = now()
        for key in in_txn:
            if key in rec and result is not None:
                rec[key]["txn_start"] = start
                rec[key]["committed"] = t
        del in_txn[:]
        return result

    send = BedPublisher._send

    async def traced_send(self: BedPublisher, client: Any, entry: Any) -> None:
        key = (entry.alert_id, entry.seq)
        if key in rec:
            rec[key]["send_in"] = now()
        await send(self, client, entry)

    publish = aiomqtt.Client.publish

    async def traced_publish(
        self: aiomqtt.Client, topic: str, payload: Any = None, *a: Any, **kw: Any
    ) -> None:
        key = None
        if topic.endswith("/alerts") and isinstance(payload, bytes | str):
            body = json.loads(payload)
            key = (body.get("alert_id"), body.get("seq"))
            if key in rec:
                rec[key]["publish"] = now()
                state["write_for"] = key
        await publish(self, topic, payload, *a, **kw)
        if key in rec:
            rec[key]["puback"] = now()

    loop_write = paho.Client.loop_write

    def traced_loop_write(self: paho.Client) -> Any:
        result = loop_write(self)
        key = state["write_for"]
        if key is not None:
            state["write_for"] = None
            rec[key]["sock_write"] = now()
        return result

    SerialPort.read_nowait = traced_read  # type: ignore[method-assign]
    DriverGuard.feed = traced_feed  # type: ignore[method-assign]
    GuardedDevice._deliver = traced_deliver  # type: ignore[method-assign]
    BedEngine.observe = traced_observe  # type: ignore[method-assign]
    BedPublisher.alert = traced_alert  # type: ignore[method-assign]
    Store.record = traced_record  # type: ignore[method-assign]
    JournalWriter._record = traced_writer_record  # type: ignore[method-assign]
    writer_module._settle = traced_settle
    Commit.settle_written = traced_settle_written  # type: ignore[method-assign]
    JournalWriter._txn = traced_txn  # type: ignore[method-assign]
    BedPublisher._send = traced_send  # type: ignore[method-assign]
    aiomqtt.Client.publish = traced_publish  # type: ignore[method-assign]
    paho.Client.loop_write = traced_loop_write  # type: ignore[method-assign]

    # Garbage-collector pauses (generation, seconds, when): a collection stops the loop too.
    import gc

    pauses: list[tuple[int, float, float]] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - gc_started[0], now()))

    gc.callbacks.append(on_gc)

    def dump() -> None:
        out.write_text(json.dumps([[k[0], k[1], v] for k, v in rec.items()]))
        out.with_suffix(".gc.json").write_text(json.dumps(pauses))

    atexit.register(dump)
    return rec


# ------------------------------------------------------------------------ time by stage under load
# Who owns a sample of the event loop's thread: the innermost frame whose file matches decides
# (so json.dumps called by the publisher counts as the publisher's, and os.read called by the
# serial port as the device link's). First match wins.
OWNERS: tuple[tuple[str, str], ...] = (
    ("structlog/", "logging"),
    ("paho/", "MQTT client (aiomqtt, paho)"),
    ("aiomqtt/", "MQTT client (aiomqtt, paho)"),
    ("drivers/", "driver decode"),
    ("vitalwatch/engine/", "engine"),
    ("vitalwatch/record/", "session record"),
    ("vitalwatch/continuity/", "snapshot, recording"),
    ("vitalwatch/delivery/", "publisher, payloads, journal submit"),
    ("vitalwatch/bed.py", "bed session (validity, dispatch)"),
    ("vitalwatch/link/", "device link (read syscall, callback)"),
    ("vitalwatch/ops/", "daemon (ticker, health)"),
    ("vitalwatch/", "other vitalwatch"),
    ("selectors.py", "idle (waiting in select)"),
    ("asyncio/", "event loop"),
)


def classify(files: list[str]) -> str:
    """The stage of one stack sample, ``files`` innermost frame first (:data:`OWNERS`)."""
    for name in files:
        for pattern, owner in OWNERS:
            if pattern in name:
                return owner
    return "other"


def py_spy() -> str | None:
    """The py-spy executable (beside this Python, or on PATH), or None."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def spy_record(pid: int, seconds: float, out: Path, *, cpu: int | None = None) -> subprocess.Popen[bytes]:
    """Sample ``pid`` with py-spy for ``seconds`` (every thread, idle samples too) into ``out``.

    py-spy reads the daemon's memory from outside without stopping it (``--nonblocking``), so
    a sample lands anywhere the loop is, not only where it lets go of the GIL, as an in-process
    sampler thread's would (it would see mostly system calls).
    """
    exe = py_spy()
    if exe is None:
        raise FileNotFoundError("py-spy")
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "250"]
    cmd += ["--format", "raw", "--nonblocking", "--idle", "--threads", "--output", str(out)]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def spy_shares(path: Path) -> dict[str, float]:
    """Share of the main thread's samples per stage in a py-spy raw (collapsed stacks) file."""
    total: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or not frames[0].endswith("MainThread") or not count.isdigit():
            continue
        files = [f[f.rfind("(") + 1 :] for f in reversed(frames[1:])]
        owner = classify(files)
        total[owner] = total.get(owner, 0) + int(count)
    n_all = sum(total.values()) or 1
    return {k: round(v / n_all, 3) for k, v in sorted(total.items(), key=lambda kv: -kv[1])}


def load(path: Path) -> dict[tuple[str, int], dict[str, float]]:
    """The stamps a traced daemon wrote, keyed by ``(alert_id, seq)``."""
    return {(a, s): v for a, s, v in json.loads(path.read_text())}


def main(argv: list[str]) -> int:
    """``vitalwatch run`` with the stage wrappers installed (``VW_STAGE_TRACE``: where to write)."""
    install(Path(os.environ.get("VW_STAGE_TRACE", "stagetrace.json")))
    from vitalwatch.cli import main as cli_main

    return cli_main(["run", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
