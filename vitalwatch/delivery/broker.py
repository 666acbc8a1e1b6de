"""How VitalWatch reaches the broker: password, TLS, and the MQTT client a publisher uses.

Everything that knows aiomqtt's concrete client lives here, so the move to aiomqtt 3 changes
this file, and a unit test can hand a :class:`vitalwatch.delivery.publisher.BedPublisher` a fake
client through a :data:`ClientFactory` instead of a broker. The password is read by one
function, :func:`read_password`, for the daemon and for every command that logs in
(``vitalwatch tail``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import aiomqtt

from vitalwatch.config import MqttConfig, TlsConfig

__all__ = [
    "CREDENTIAL_NAME",
    "ClientFactory",
    "MqttClient",
    "aiomqtt_factory",
    "client_tls_context",
    "cut_connection",
    "message_bytes",
    "no_delay",
    "read_password",
    "tls_context",
]

# The systemd credential name (``LoadCredential=mqtt-password:...`` in systemd/vitalwatch.service).
CREDENTIAL_NAME = "mqtt-password"


class MqttClient(Protocol):
    """What a publisher needs of an MQTT client (``aiomqtt.Client`` 2.x has it; so do test fakes).

    ``publish(qos=1)`` returns once the broker acknowledged (PUBACK) and raises
    ``aiomqtt.MqttError`` when the connection fails or ``timeout`` passes first.
    """

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Any: ...

    # ``timeout`` as aiomqtt spells it: the bound on waiting for the broker's answer.
    async def subscribe(self, topic: str, qos: int = 0, *, timeout: float | None = None) -> Any: ...  # noqa: ASYNC109

    async def publish(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> None: ...

    @property
    def messages(self) -> AsyncIterator[aiomqtt.Message]: ...


# Builds a fresh client (never reused: see BedPublisher) carrying the given last will.
ClientFactory = Callable[[aiomqtt.Will], MqttClient]


def read_password(path: Path | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The broker password: from ``path``, else from the systemd credential, else None.

    Never from the command line or the main configuration (``ps``, shell history, a config
    copied into a ticket). Without a password file the credential
    ``$CREDENTIALS_DIRECTORY/mqtt-password`` is used if systemd put it there (``LoadCredential=``).
    First line only, without its newline. An EMPTY file means "no password": install.sh
    creates an empty placeholder because ``LoadCredential=`` refuses to start the unit when
    the source is missing, and sending an empty password would fail the login instead.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        path = candidate if candidate.is_file() else None
    if path is None:
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0] if lines and lines[0] else None


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    """TLS to the broker with hostname verification on unless the configuration turns it off."""
    return client_tls_context(cfg.tls)


def client_tls_context(tls: TlsConfig | None) -> ssl.SSLContext | None:
    """A TLS 1.2+ client context from a ``[...tls]`` table (broker or alarm manager); None without one."""
    if tls is None:
        return None
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None and tls.key_file is not None:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    ctx.check_hostname = tls.verify_hostname
    return ctx


def aiomqtt_factory(cfg: MqttConfig, *, bed: str) -> ClientFactory:
    """Real clients for one bed's connection (``{client_id}-{bed}``); the password is read now, once."""
    password = read_password(cfg.password_file)

    def new_client(will: aiomqtt.Will) -> MqttClient:
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=cfg.client_id and f"{cfg.client_id}-{bed}",
            username=cfg.username,
            password=password,
            will=will,
            keepalive=cfg.keepalive_s,
            tls_context=tls_context(cfg),
            timeout=cfg.publish_timeout_s,
        )

    return new_client


def no_delay(client: MqttClient) -> None:
    """Set TCP_NODELAY on the broker connection.

    Alerts are small writes that follow QoS 0 vitals the broker never answers: without
    TCP_NODELAY, Nagle holds an alert until the broker's delayed ACK arrives (up to 40 ms on
    Linux; measured 10-20 ms per alert, docs/performance.md section 1).
    """
    if not isinstance(client, aiomqtt.Client):
        return  # a test double has no socket
    sock = client._client.socket()  # paho's socket; aiomqtt 2.x has no public accessor
    if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def write_at_once(client: MqttClient) -> None:
    """Write each queued packet (an alert's PUBLISH) to the socket at once, on the loop thread.

    aiomqtt registers a writer with the event loop when paho queues a packet (through
    ``call_soon_threadsafe``), so a publish went out two loop turns and a self-pipe wake-up
    later: 0.27 ms median on the alarm path (docs/performance.md, alarm latency stages). paho
    writes at once itself when no event loop is registered; this does the same on the loop's
    thread and leaves aiomqtt's writer in charge of what the socket would not take now (a full
    send buffer) and of packets queued from another thread (the connect runs in an executor).
    """
    if not isinstance(client, aiomqtt.Client):
        return  # a test double has no socket
    paho = client._client
    register = paho.on_socket_register_write  # aiomqtt's: add_writer on the loop
    if register is None:
        return
    loop_thread = threading.get_ident()

    def register_write(mqttc: Any, userdata: Any, sock: Any) -> None:
        # Like paho's own direct write: never from another thread, nor inside one of its callbacks.
        if threading.get_ident() != loop_thread or not mqttc._in_callback_mutex.acquire(False):
            register(mqttc, userdata, sock)
            return
        mqttc._in_callback_mutex.release()
        # Inside paho's queueing, on the loop thread: write now. What the socket did not take
        # stays queued and goes out when the loop reports the socket writable.
        mqttc.loop_write()
        if mqttc.want_write():
            register(mqttc, userdata, sock)

    paho.on_socket_register_write = register_write


def cut_connection(client: MqttClient) -> None:
    """Drop the connection under a task that ignored its cancellation (it wakes with an error)."""
    if isinstance(client, aiomqtt.Client):
        with contextlib.suppress(Exception):
            client._client.disconnect()  # wakes a message iterator that ignored the cancel


def message_bytes(message: aiomqtt.Message) -> bytes:
    """A received message's payload as bytes (paho hands bytes; the type also allows str, numbers)."""
    payload: object = message.payload  # typed as bytes | str | numbers | None, paho may add more
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return b"" if payload is None else str(payload).encode()
