"""``vitalwatch tail``: what a nurse station gets, printed for an engineer.

Subscribes like a nurse station (docs/mqtt.md): first the retained ``alarms/+`` (the current
active set, printed as one snapshot) and ``prompts`` (what each bed asks of the nurse), then every
transition on ``alerts`` and every prompt opened or closed as it happens, and the
beds' ``status`` with the station's heartbeat rule ("gateway silent" after ``silent_after_s``
without a status, measured on our monotonic clock, never from the payload's time).

:class:`TailView` is the sans-I/O part (topic + payload in, lines out) and de-duplicates on
``(alert_id, seq)`` exactly as the contract tells receivers to; :func:`tail` is the MQTT loop.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiomqtt

from vitalwatch import strict_json
from vitalwatch.delivery.payloads import priority_rank
from vitalwatch.station.nurse_view import format_alert

__all__ = [
    "TailOptions",
    "TailView",
    "format_active_alarm",
    "parse_broker_url",
    "tail",
]

# Longest wait between reconnect attempts once the broker was lost: a restarted broker is back in
# the view within a few seconds.
RECONNECT_MAX_S = 5.0
# Remembered (alert_id, seq) pairs: far more than one shift's transitions, and bounded.
_MAX_SEEN = 10_000


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]`` -> (host, port, tls); ValueError if neither."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"--broker must look like mqtt://HOST:PORT or mqtts://HOST:PORT, got {url!r}")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"--broker has a bad port: {url!r}") from None
    return parts.hostname, port or (8883 if tls else 1883), tls


def _clock(iso: Any) -> str:
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return "--:--:--"


def format_active_alarm(payload: dict[str, Any]) -> str:
    """A snapshot line: ``chair-1 HIGH   SpO2 86 % below 90 % for 15 s  (since 10:15:02, raised)``."""
    priority = str(payload.get("priority", "?")).upper()
    state = str(payload.get("state", "?"))
    notes = [f"since {_clock(payload.get('onset_utc'))}", state]
    if payload.get("acknowledged_by"):
        notes.append(f"by {payload['acknowledged_by']}")
    if payload.get("escalation_level"):
        notes.append(f"escalation {payload['escalation_level']}")
    return f"  {payload.get('bed', '?')} {priority:<6} {payload.get('message', '')}  ({', '.join(notes)})"


@dataclass
class _Bed:
    state: str = "unknown"
    last_seen: float = 0.0
    silent: bool = False


@dataclass
class TailView:
    """Turns received messages into output lines; no I/O, no clock of its own (``now`` is passed)."""

    prefix: str = "vitalwatch/v1"
    json_lines: bool = False
    silent_after_s: float = 15.0
    _active: dict[str, dict[str, Any]] = field(default_factory=dict)
    _seen: set[tuple[str, int]] = field(default_factory=set)
    _seen_order: deque[tuple[str, int]] = field(default_factory=deque)
    _beds: dict[tuple[str, str], _Bed] = field(default_factory=dict)
    _prompts: dict[tuple[str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    in_snapshot: bool = True
    duplicates: int = 0

    def _split(self, topic: str) -> tuple[str, str, str, str | None] | None:
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        levels = topic[len(head) :].split("/")
        if len(levels) < 3:
            return None
        return levels[0], levels[1], levels[2], levels[3] if len(levels) > 3 else None

    def _json(self, event: str, **fields: Any) -> str:
        doc = {"event": event, **fields}
        return strict_json.dumps(doc, what="tail", sort_keys=True, separators=(",", ":"))

    def _remember(self, payload: dict[str, Any]) -> bool:
        """True if (alert_id, seq) is new; repeats are what QoS 1 and outbox resends produce."""
        key = (str(payload.get("alert_id")), int(payload.get("seq", -1)))
        if key in self._seen:
            return False
        self._seen.add(key)
        self._seen_order.append(key)
        if len(self._seen_order) > _MAX_SEEN:
            self._seen.discard(self._seen_order.popleft())
        return True

    def feed(self, topic: str, payload: bytes, now: float) -> list[str]:
        """Lines to print for one message (none for a repeat, a heartbeat or a foreign topic)."""
        parts = self._split(topic)
        if parts is None:
            return []
        site, bed, kind, rest = parts
        doc: dict[str, Any] | None = None
        if payload:
            try:
                loaded = json.loads(payload)
            except (UnicodeDecodeError, ValueError) as exc:
                return [self._malformed(topic, f"not JSON: {exc}")]
            if not isinstance(loaded, dict):
                return [self._malformed(topic, "not a JSON object")]
            doc = loaded
        if kind == "alarms" and rest is not None:
            self._alarm(rest, doc)
            return []
        if kind == "alerts" and doc is not None:
            return self._alert(topic, doc)
        if kind == "status" and rest is None and doc is not None:
            return self._status(topic, site, bed, doc, now)
        if kind == "prompts" and rest is None and doc is not None:
            return self._prompt_lines(site, bed, doc)
        return []

    def _prompt_lines(self, site: str, bed: str, doc: dict[str, Any]) -> list[str]:
        """Prompts opened and closed since the bed's last prompts document (none in the snapshot)."""
        listed = doc.get("prompts")
        now_open = {
            str(p.get("prompt_id")): p
            for p in (listed if isinstance(listed, list) else [])
            if isinstance(p, dict)
        }
        before = self._prompts.get((site, bed), {})
        self._prompts[(site, bed)] = now_open
        if self.in_snapshot:
            return []
        lines: list[str] = []
        for pid, prompt in now_open.items():
            if pid not in before:
                lines.append(self._prompt_line(bed, prompt))
        for pid in before:
            if pid not in now_open:
                lines.append(
                    self._json("prompt_closed", bed=bed, prompt_id=pid)
                    if self.json_lines
                    else f"-- {bed} prompt {pid} done"
                )
        return lines

    def _prompt_line(self, bed: str, prompt: dict[str, Any]) -> str:
        if self.json_lines:
            return self._json("prompt", bed=bed, payload=prompt)
        return (
            f"?? {bed} PROMPT {prompt.get('prompt_id')} ({_clock(prompt.get('opened_utc'))}): "
            f"{prompt.get('text')}"
        )

    def _malformed(self, topic: str, why: str) -> str:
        return self._json("malformed", topic=topic, error=why) if self.json_lines else f"?? {topic}: {why}"

    def _alarm(self, alert_id: str, doc: dict[str, Any] | None) -> None:
        """Keep the active set; nothing to print (the transition itself comes on ``alerts``)."""
        if doc is None:
            self._active.pop(alert_id, None)  # an empty retained message: the alarm ended
            return
        self._active[alert_id] = doc
        self._remember(doc)

    def _alert(self, topic: str, doc: dict[str, Any]) -> list[str]:
        if not self._remember(doc):
            self.duplicates += 1
            return []
        if str(doc.get("state")) == "cleared":
            self._active.pop(str(doc.get("alert_id")), None)
        else:
            self._active[str(doc.get("alert_id"))] = doc
        return [self._json("alert", topic=topic, payload=doc) if self.json_lines else format_alert(doc)]

    def _status(self, topic: str, site: str, bed: str, doc: dict[str, Any], now: float) -> list[str]:
        state = str(doc.get("state"))
        info = self._beds.setdefault((site, bed), _Bed())
        changed = state != info.state or info.silent
        info.state, info.last_seen, info.silent = state, now, False
        if not changed or self.in_snapshot:
            return []
        if self.json_lines:
            return [self._json("status", topic=topic, payload=doc)]
        links = ", ".join(f"{k} {v}" for k, v in sorted((doc.get("links") or {}).items()))
        return [f"{_clock(doc.get('sent_utc'))} {bed} gateway {state} (phase {doc.get('phase')}; {links})"]

    def begin_snapshot(self) -> None:
        """A new connection: the retained set that follows is the whole truth, so start it afresh.

        An alarm that ended while we were disconnected left no retained message to tell us; the
        seen (alert_id, seq) pairs are kept, so the outbox's resends after an outage print once.
        """
        self.in_snapshot = True
        self._active.clear()

    def connection(self, state: str, detail: str = "") -> list[str]:
        """A line saying the broker connection was lost or is back (the view may be stale between)."""
        if self.json_lines:
            return [self._json("broker", state=state, detail=detail)]
        if state == "lost":
            return [f"!! broker connection lost ({detail}); alerts are NOT being received; reconnecting"]
        return ["-- broker connection back; re-reading the active alarms --"]

    def end_snapshot(self, now: float) -> list[str]:
        """The snapshot, once the retained messages stopped coming; later messages print live."""
        self.in_snapshot = False
        for info in self._beds.values():
            info.last_seen = now  # a retained "online" proves nothing about now: start the timer here
        alarms = sorted(
            self._active.values(),
            key=lambda d: (-priority_rank(d.get("priority")), str(d.get("onset_utc")), str(d.get("bed"))),
        )
        prompts = [
            self._prompt_line(bed, prompt)
            for (_, bed), open_ in sorted(self._prompts.items())
            for prompt in open_.values()
        ]
        if self.json_lines:
            return [
                *(self._json("active", payload=d) for d in alarms),
                *prompts,
                self._json("snapshot_end", active=len(alarms)),
            ]
        beds = ", ".join(f"{bed} {b.state}" for (_, bed), b in sorted(self._beds.items()))
        head = [f"beds: {beds}"] if beds else []
        head += prompts
        if not alarms:
            return [*head, "no active alarms", "-- live --"]
        return [*head, f"active alarms ({len(alarms)}):", *map(format_active_alarm, alarms), "-- live --"]

    def tick(self, now: float) -> list[str]:
        """The heartbeat rule: an online bed with no status for ``silent_after_s`` is 'gateway silent'."""
        lines: list[str] = []
        for (site, bed), info in sorted(self._beds.items()):
            if info.state != "online" or info.silent or now - info.last_seen < self.silent_after_s:
                continue
            info.silent = True
            seconds = round(now - info.last_seen)
            if self.json_lines:
                lines.append(self._json("silent", site=site, bed=bed, seconds=seconds))
            else:
                lines.append(
                    f"!! {bed} GATEWAY SILENT: no status for {seconds} s; bed is NOT being monitored"
                )
        return lines


@dataclass(frozen=True, slots=True, kw_only=True)
class TailOptions:
    host: str
    port: int
    site: str = "+"
    bed: str = "+"
    prefix: str = "vitalwatch/v1"
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    json_lines: bool = False
    silent_after_s: float = 15.0
    # Retained messages follow the SUBACK at once; this much quiet ends the snapshot.
    settle_s: float = 0.5


async def tail(opts: TailOptions, out: TextIO, *, ready: asyncio.Event | None = None) -> None:
    """Print the snapshot, then live transitions, until cancelled.

    If the first connection fails, MqttError propagates (a wrong address should end the command).
    Once connected, a lost broker is said on ``out`` and retried until it is back, with capped,
    jittered backoff; the snapshot is then read again, so what is shown is the broker's truth.
    """
    view = TailView(prefix=opts.prefix, json_lines=opts.json_lines, silent_after_s=opts.silent_after_s)
    rng = random.Random()

    def emit(lines: list[str]) -> None:
        for line in lines:
            print(line, file=out, flush=True)

    connected_once = False
    attempt = 0
    while True:
        try:
            async with _client(opts) as client:
                if connected_once:
                    emit(view.connection("back"))
                connected_once, attempt = True, 0
                await _follow(client, view, opts, emit, ready)
        except aiomqtt.MqttError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # aiomqtt can turn a cancellation during its disconnect into MqttError: we are
                # being stopped (Ctrl-C, SIGTERM), not losing the broker.
                raise asyncio.CancelledError from exc
            if not connected_once:
                raise
            if attempt == 0:
                emit(view.connection("lost", str(exc)))
        await asyncio.sleep(rng.uniform(0.0, min(RECONNECT_MAX_S, 0.25 * 2.0**attempt)))
        attempt += 1


def _client(opts: TailOptions) -> aiomqtt.Client:
    return aiomqtt.Client(
        opts.host,
        opts.port,
        username=opts.username,
        password=opts.password,
        tls_context=opts.tls,
        timeout=10,
    )


async def _follow(
    client: aiomqtt.Client,
    view: TailView,
    opts: TailOptions,
    emit: Callable[[list[str]], None],
    ready: asyncio.Event | None,
) -> None:
    """One connection: subscribe, print the retained snapshot, then live messages until it fails."""
    loop = asyncio.get_running_loop()
    base = f"{opts.prefix}/{opts.site}/{opts.bed}"
    view.begin_snapshot()
    # Non-overlapping filters, so no message is delivered twice by the broker.
    for topic in (f"{base}/status", f"{base}/alarms/+", f"{base}/alerts", f"{base}/prompts"):
        await client.subscribe(topic, qos=1)
    messages = aiter(client.messages)
    pending: list[tuple[str, bytes]] = []
    while True:
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow the Ctrl-C
            # cancellation when the message and the cancel arrive together.
            async with asyncio.timeout(opts.settle_s):
                msg = await anext(messages)
        except TimeoutError:
            break
        if msg.retain:
            emit(view.feed(str(msg.topic), _bytes(msg.payload), loop.time()))
        else:
            pending.append((str(msg.topic), _bytes(msg.payload)))
    emit(view.end_snapshot(loop.time()))
    for topic, payload in pending:
        emit(view.feed(topic, payload, loop.time()))
    if ready is not None:
        ready.set()
    while True:
        try:
            async with asyncio.timeout(1.0):
                msg = await anext(messages)
        except TimeoutError:
            emit(view.tick(loop.time()))
            continue
        emit(view.feed(str(msg.topic), _bytes(msg.payload), loop.time()))
        emit(view.tick(loop.time()))


def _bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()
