"""Broker security with the shipped configuration: a real Mosquitto run from config/mosquitto/
(mosquitto.conf and acl exactly as shipped; only ports and paths adapted) with certificates from
scripts/make-test-ca.sh and passwords from mosquitto_passwd.

Denied publishes are silent in MQTT 3.1.1 (the broker still sends PUBACK), so each "cannot" is
checked from a legitimate subscriber's side: after the forbidden attempts, a legitimate
*sentinel* message is published; the broker handles messages in order, so when the sentinel
arrives, anything the broker let through would have arrived before it. Every test also has a
positive control, so a broken setup (nothing delivered at all) fails instead of passing.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.helpers import wait_until
from vitalwatch.cli import build_parser
from vitalwatch.cli.tail import build_options
from vitalwatch.config import MqttConfig, TlsConfig, parse_config
from vitalwatch.delivery.broker import read_password, tls_context
from vitalwatch.ops.daemon import Daemon
from vitalwatch.station.tail_view import tail
from vitalwatch.testing import ConfiguredMosquitto, adapt_mosquitto_config, free_port, mosquitto_binary

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.asyncio,
    pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "mosquitto"
MAKE_CA = ROOT / "scripts" / "make-test-ca.sh"
PREFIX = "vitalwatch/v1"
A1 = f"{PREFIX}/clinic-a/chair-1"  # served by gw-clinic-a-1
B1 = f"{PREFIX}/clinic-b/chair-1"  # served by gw-clinic-b-1
PASSWORDS = {
    "station-clinic-a": "pw-station-a",
    "station-clinic-a-2": "pw-station-a-2",
    "station-clinic-b": "pw-station-b",
    "gw-clinic-a-1": "pw-gw-a",
}
CLIENTS = ("gw-clinic-a-1", "gw-clinic-b-1", "station-clinic-a", "station-clinic-b")


@dataclass
class Clinic:
    """The running broker and where its certificates are."""

    broker: ConfiguredMosquitto
    certs: Path
    rogue: Path  # another CA, with a client certificate claiming to be gw-clinic-a-1
    plain: int  # loopback listener
    mtls: int  # client certificates
    tls: int  # TLS + password


def _passwd(path: Path) -> None:
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        flags = ["-c", "-b"] if i == 0 else ["-b"]
        subprocess.run([tool, *flags, str(path), user, password], check=True, capture_output=True)


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clinic]:
    work = tmp_path_factory.mktemp("clinic")
    etc = work / "etc"
    certs = etc / "certs"
    subprocess.run(["bash", str(MAKE_CA), str(certs), "localhost", *CLIENTS], check=True, capture_output=True)
    rogue = work / "rogue"
    subprocess.run(
        ["bash", str(MAKE_CA), str(rogue), "localhost", "gw-clinic-a-1"], check=True, capture_output=True
    )
    shutil.copy(SHIPPED / "acl", etc / "acl")
    _passwd(etc / "passwd")
    ports = {1883: free_port(), 8883: free_port(), 8884: free_port()}
    text = adapt_mosquitto_config(
        (SHIPPED / "mosquitto.conf").read_text(), ports=ports, etc_dir=etc, workdir=work
    )
    # Tests run as whoever runs pytest; as root, Mosquitto would switch to user "mosquitto",
    # who cannot read the test's private temp directory.
    broker = ConfiguredMosquitto(workdir=work, port=ports[1883], text=text, extra_config="user root\n")
    broker.start()
    try:
        yield Clinic(broker, certs, rogue, ports[1883], ports[8883], ports[8884])
    finally:
        broker.stop()


def context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """What a client uses: the daemon's own tls_context (hostname verification on by default)."""
    ctx = tls_context(MqttConfig(tls=TlsConfig(ca_file=ca, cert_file=cert, key_file=key)))
    assert ctx is not None
    return ctx


def gateway(clinic: Clinic, name: str = "gw-clinic-a-1") -> aiomqtt.Client:
    """A bed gateway on the client-certificate listener; its CN is its user name."""
    ctx = context(clinic.certs / "ca.crt", clinic.certs / f"{name}.crt", clinic.certs / f"{name}.key")
    return aiomqtt.Client("localhost", clinic.mtls, tls_context=ctx, timeout=5)


def station(clinic: Clinic, name: str = "station-clinic-a", password: str | None = None) -> aiomqtt.Client:
    """A nurse station on the TLS + password listener."""
    return aiomqtt.Client(
        "localhost",
        clinic.tls,
        username=name,
        password=PASSWORDS[name] if password is None else password,
        tls_context=context(clinic.certs / "ca.crt"),
        timeout=5,
    )


@asynccontextmanager
async def watching(client: aiomqtt.Client, *topics: str) -> AsyncIterator[asyncio.Queue[tuple[str, bytes]]]:
    """Subscribe and collect (topic, payload) in a queue while the block runs."""
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    async with client:
        for topic in topics:
            await client.subscribe(topic, qos=1)

        async def pump() -> None:
            async for message in client.messages:
                queue.put_nowait((str(message.topic), bytes(message.payload)))

        task = asyncio.create_task(pump())
        try:
            yield queue
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def until_sentinel(queue: asyncio.Queue[tuple[str, bytes]], sentinel: bytes) -> list[tuple[str, bytes]]:
    """Everything received up to and including the sentinel payload (retained ones included)."""
    got: list[tuple[str, bytes]] = []
    async with asyncio.timeout(10):
        while True:
            item = await queue.get()
            got.append(item)
            if item[1] == sentinel:
                return got


async def attempt_publishes(client: aiomqtt.Client, topics: list[str], payload: bytes) -> None:
    """Try each publish; a refusal by the broker (any MqttError) is fine, and so is silence."""
    try:
        async with client:
            for topic in topics:
                await client.publish(topic, payload, qos=1)
    except aiomqtt.MqttError:
        pass


async def test_anonymous_and_wrong_password_clients_are_refused_on_every_listener(clinic: Clinic) -> None:
    """No user name, a wrong password, or no client certificate: the connection is refused."""
    attempts = [
        aiomqtt.Client("127.0.0.1", clinic.plain, timeout=3),
        aiomqtt.Client("localhost", clinic.tls, tls_context=context(clinic.certs / "ca.crt"), timeout=3),
        station(clinic, password="guess"),
        aiomqtt.Client("127.0.0.1", clinic.plain, username="station-clinic-a", password="guess", timeout=3),
        aiomqtt.Client("localhost", clinic.mtls, tls_context=context(clinic.certs / "ca.crt"), timeout=3),
    ]
    for client in attempts:
        with pytest.raises(aiomqtt.MqttError):
            async with client:
                await client.publish(f"{A1}/cmd", b"{}", qos=1)
    # Positive control: the right password on the loopback listener works.
    async with aiomqtt.Client(
        "127.0.0.1", clinic.plain, username="gw-clinic-a-1", password=PASSWORDS["gw-clinic-a-1"], timeout=3
    ) as ok:
        await ok.publish(f"{A1}/status", b"online", qos=1)


async def test_nurse_station_cannot_publish_alerts_status_alarms_vitals_or_results(clinic: Clinic) -> None:
    """A station's credentials write only cmd: forged alerts or status never reach anybody."""
    forged = b'{"forged":true}'
    async with watching(station(clinic), f"{A1}/#") as seen:
        await attempt_publishes(
            station(clinic, "station-clinic-a-2"),
            [
                f"{A1}/alerts",
                f"{A1}/status",
                f"{A1}/alarms/01FORGED",
                f"{A1}/vitals/spo2",
                f"{A1}/cmd/result",
            ],
            forged,
        )
        async with gateway(clinic) as gw:
            await gw.publish(f"{A1}/alerts", b"sentinel-1", qos=1)
        got = await until_sentinel(seen, b"sentinel-1")
    assert [] == [item for item in got if item[1] == forged]
    assert (f"{A1}/alerts", b"sentinel-1") in got


async def test_bed_gateway_writes_only_its_own_beds_and_never_commands(clinic: Clinic) -> None:
    """gw-clinic-a-1 cannot write clinic-b's alerts nor forge an ack on its own bed's cmd topic."""
    forged = b'{"request_id":"x","command":"ack","alert_id":"*","by":"gateway"}'
    async with watching(station(clinic, "station-clinic-b"), f"{B1}/#") as seen_b:
        await attempt_publishes(gateway(clinic, "gw-clinic-a-1"), [f"{B1}/alerts", f"{B1}/status"], forged)
        async with gateway(clinic, "gw-clinic-b-1") as gw_b:
            await gw_b.publish(f"{B1}/alerts", b"sentinel-b", qos=1)
        got_b = await until_sentinel(seen_b, b"sentinel-b")
    assert [] == [item for item in got_b if item[1] == forged]
    async with watching(station(clinic), f"{A1}/cmd") as seen_cmd:
        await attempt_publishes(gateway(clinic, "gw-clinic-a-1"), [f"{A1}/cmd"], forged)
        await attempt_publishes(gateway(clinic, "gw-clinic-b-1"), [f"{A1}/alerts", f"{A1}/cmd"], forged)
        async with station(clinic, "station-clinic-a-2") as st:
            await st.publish(f"{A1}/cmd", b"sentinel-cmd", qos=1)
        got_cmd = await until_sentinel(seen_cmd, b"sentinel-cmd")
    assert [(f"{A1}/cmd", b"sentinel-cmd")] == got_cmd


async def test_station_cannot_read_another_site(clinic: Clinic) -> None:
    """station-clinic-a subscribed to clinic-b gets nothing of it; station-clinic-b does (control)."""
    async with (
        watching(station(clinic, "station-clinic-a"), f"{PREFIX}/clinic-b/#", f"{A1}/alerts") as seen_a,
        watching(station(clinic, "station-clinic-b"), f"{PREFIX}/clinic-b/#") as seen_b,
    ):
        async with gateway(clinic, "gw-clinic-b-1") as gw_b:
            await gw_b.publish(f"{B1}/alerts", b"clinic-b-alert", qos=1)
            await gw_b.publish(f"{B1}/alarms/01SECRET", b"clinic-b-alarm", qos=1, retain=True)
        async with gateway(clinic, "gw-clinic-a-1") as gw_a:
            await gw_a.publish(f"{A1}/alerts", b"sentinel-a", qos=1)
        got_a = await until_sentinel(seen_a, b"sentinel-a")
        got_b = await until_sentinel(seen_b, b"clinic-b-alarm")
    assert [(f"{A1}/alerts", b"sentinel-a")] == got_a
    assert (f"{B1}/alerts", b"clinic-b-alert") in got_b
    # A later subscription by the wrong site does not get the retained alarm either.
    async with watching(
        station(clinic, "station-clinic-a"), f"{PREFIX}/+/+/alarms/+", f"{A1}/alerts"
    ) as late:
        async with gateway(clinic, "gw-clinic-a-1") as gw_a:
            await gw_a.publish(f"{A1}/alerts", b"sentinel-late", qos=1)
        assert [(f"{A1}/alerts", b"sentinel-late")] == await until_sentinel(late, b"sentinel-late")


async def test_unauthenticated_or_unauthorised_ack_never_reaches_the_gateway(clinic: Clinic) -> None:
    """The gateway's cmd subscription gets only the legitimate station's ack, nothing forged."""
    forged = b'{"request_id":"evil","command":"ack","alert_id":"*","by":"intruder"}'
    async with watching(gateway(clinic, "gw-clinic-a-1"), f"{A1}/cmd") as cmd:
        for client in (
            aiomqtt.Client("127.0.0.1", clinic.plain, timeout=3),  # anonymous
            station(clinic, password="guess"),  # wrong password
            station(clinic, "station-clinic-b"),  # a nurse of another site
            gateway(clinic, "gw-clinic-b-1"),  # another site's gateway
        ):
            await attempt_publishes(client, [f"{A1}/cmd"], forged)
        async with station(clinic) as st:
            await st.publish(f"{A1}/cmd", b"sentinel-ack", qos=1)
        got = await until_sentinel(cmd, b"sentinel-ack")
    assert [(f"{A1}/cmd", b"sentinel-ack")] == got


async def test_tls_with_hostname_verification_works_with_the_clinic_ca_and_fails_with_another(
    clinic: Clinic,
) -> None:
    """The daemon's TLS context connects with the generated certificates and refuses a wrong CA."""
    async with gateway(clinic) as gw:
        await gw.publish(f"{A1}/status", b"online", qos=1)
    wrong_ca = context(
        clinic.rogue / "ca.crt", clinic.certs / "gw-clinic-a-1.crt", clinic.certs / "gw-clinic-a-1.key"
    )
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("localhost", clinic.mtls, tls_context=wrong_ca, timeout=3):
            pass


async def test_broker_certificate_is_checked_against_the_host_name(clinic: Clinic) -> None:
    """Hostname verification is on by default: the same certificate is refused for another name."""
    ctx = context(clinic.certs / "ca.crt")
    assert ctx.check_hostname
    with (
        socket.create_connection(("127.0.0.1", clinic.tls), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with (
        socket.create_connection(("127.0.0.1", clinic.tls), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="match"),
    ):
        ctx.wrap_socket(raw, server_hostname="broker.elsewhere.invalid")


async def test_client_certificate_from_another_ca_is_refused(clinic: Clinic) -> None:
    """A certificate claiming CN=gw-clinic-a-1 but signed by another CA gets no connection."""
    forged = context(
        clinic.certs / "ca.crt", clinic.rogue / "gw-clinic-a-1.crt", clinic.rogue / "gw-clinic-a-1.key"
    )
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("localhost", clinic.mtls, tls_context=forged, timeout=3) as client:
            await client.publish(f"{A1}/alerts", b"forged", qos=1)


async def test_tail_reads_its_site_as_a_nurse_station_over_tls(clinic: Clinic, tmp_path: Path) -> None:
    """`vitalwatch tail` with a station's password file and the clinic CA sees its site's alarms only."""
    (tmp_path / "pw").write_text(PASSWORDS["station-clinic-a"] + "\n")
    async with gateway(clinic, "gw-clinic-a-1") as gw:
        await gw.publish(f"{A1}/alarms/01TAILA", b'{"alert_id":"01TAILA","seq":1}', qos=1, retain=True)
    async with gateway(clinic, "gw-clinic-b-1") as gw:
        await gw.publish(f"{B1}/alarms/01TAILB", b'{"alert_id":"01TAILB","seq":1}', qos=1, retain=True)
    args = build_parser().parse_args(
        [
            *("tail", "--broker", f"mqtts://localhost:{clinic.tls}", "--json"),
            *("--username", "station-clinic-a", "--password-file", str(tmp_path / "pw")),
            *("--cafile", str(clinic.certs / "ca.crt")),
        ]
    )
    out = io.StringIO()
    ready = asyncio.Event()
    task = asyncio.create_task(tail(build_options(args), out, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert ["01TAILA"] == [e["payload"]["alert_id"] for e in events if e["event"] == "active"]


async def test_bed_gateway_may_do_everything_the_daemon_does_for_its_beds(clinic: Clinic) -> None:
    """The ACL is not too strict: with its last will, per-bed client id, the gateway publishes
    alerts, retained alarms (and clears them), status, vitals and command results for both of its
    beds, and receives its beds' commands; a station sees all of it."""
    a2 = f"{PREFIX}/clinic-a/chair-2"
    ctx = context(
        clinic.certs / "ca.crt", clinic.certs / "gw-clinic-a-1.crt", clinic.certs / "gw-clinic-a-1.key"
    )
    async with watching(station(clinic), f"{PREFIX}/clinic-a/#") as seen:
        for bed in (A1, a2):
            will = aiomqtt.Will(f"{bed}/status", b'{"state":"offline"}', qos=1, retain=True)
            gw = aiomqtt.Client(
                "localhost",
                clinic.mtls,
                tls_context=ctx,
                identifier=f"vw-gw-{bed[-7:]}",
                will=will,
                timeout=5,
            )
            async with watching(gw, f"{bed}/cmd") as commands:
                async with gw_publish(clinic, ctx) as publish:
                    await publish(f"{bed}/status", b"t-status", True)
                    await publish(f"{bed}/alerts", b"t-alert", False)
                    await publish(f"{bed}/alarms/01OK", b"t-alarm", True)
                    await publish(f"{bed}/alarms/01OK", b"", True)
                    await publish(f"{bed}/vitals/spo2", b"t-vital", False)
                async with station(clinic, "station-clinic-a-2") as st:
                    await st.publish(f"{bed}/cmd", b"t-cmd", qos=1)
                assert [(f"{bed}/cmd", b"t-cmd")] == await until_sentinel(commands, b"t-cmd")
                await gw.publish(f"{bed}/cmd/result", b"t-result", qos=1)
            got = await until_sentinel(seen, b"t-result")
            expected = [
                ("status", b"t-status"),
                ("alerts", b"t-alert"),
                ("alarms/01OK", b"t-alarm"),
                ("alarms/01OK", b""),
                ("vitals/spo2", b"t-vital"),
                ("cmd", b"t-cmd"),
                ("cmd/result", b"t-result"),
            ]
            ours = [(t, p) for t, p in got if t.startswith(bed + "/") and (p == b"" or p.startswith(b"t-"))]
            assert [(f"{bed}/{t}", p) for t, p in expected] == ours


@asynccontextmanager
async def gw_publish(clinic: Clinic, ctx: ssl.SSLContext) -> AsyncIterator[Any]:
    """A second gateway connection (the daemon has one per bed) with a publish shortcut."""
    async with aiomqtt.Client("localhost", clinic.mtls, tls_context=ctx, timeout=5) as client:

        async def publish(topic: str, payload: bytes, retain: bool) -> None:
            await client.publish(topic, payload, qos=1, retain=retain)

        yield publish


# --- the daemon itself against the secured broker -----------------------------------------------


def daemon_config(clinic: Clinic, tmp_path: Path, *, local: bool = False) -> dict[str, Any]:
    """Bed chair-1 of clinic-a as gw-clinic-a-1: over TLS with its client certificate, hostname
    verified ("localhost"), as a gateway on another host; or ``local``ly on the loopback listener
    with its user name and the password from the systemd credential, as a daemon on the broker's host."""
    mqtt: dict[str, Any] = {"client_id": "vw-gw-a", "heartbeat_s": 0.5, "publish_timeout_s": 2.0}
    if local:
        mqtt |= {"host": "127.0.0.1", "port": clinic.plain, "username": "gw-clinic-a-1"}
    else:
        mqtt |= {
            "host": "localhost",
            "port": clinic.mtls,
            "tls": {
                "ca_file": str(clinic.certs / "ca.crt"),
                "cert_file": str(clinic.certs / "gw-clinic-a-1.crt"),
                "key_file": str(clinic.certs / "gw-clinic-a-1.key"),
            },
        }
    return {
        "site": "clinic-a",
        "mqtt": mqtt,
        "logging": {"level": "warning"},
        "state": {"directory": str(tmp_path / "state")},
        "beds": [
            {"id": "chair-1", "devices": [{"id": "oximeter", "driver": "masimo", "url": "/nonexistent/tty"}]}
        ],
    }


async def next_json(queue: asyncio.Queue[tuple[str, bytes]], topic: str, **match: Any) -> dict[str, Any]:
    """The next message on ``topic`` whose JSON has the given fields (others are skipped)."""
    async with asyncio.timeout(10):
        while True:
            got_topic, body = await queue.get()
            if got_topic == topic and body:
                doc: dict[str, Any] = json.loads(body)
                if all(doc.get(k) == v for k, v in match.items()):
                    return doc


async def test_daemon_over_tls_delivers_alerts_and_applies_a_station_ack(
    clinic: Clinic, tmp_path: Path
) -> None:
    """The real daemon as gw-clinic-a-1 (TLS with its client certificate, hostname verified): a nurse
    station receives its alert, the station's ack is applied, and gw-clinic-b-1 cannot forge this bed's
    alerts."""
    daemon = Daemon(parse_config(daemon_config(clinic, tmp_path)))
    runner = asyncio.create_task(daemon.run())
    try:
        async with watching(station(clinic), f"{A1}/alerts", f"{A1}/cmd/result") as seen:
            await wait_until(lambda: daemon.publishers["chair-1"].connected, 10, "the daemon connected")
            # In infusion without a baseline, baseline_incomplete is raised at once.
            daemon.beds["chair-1"].set_phase("infusion", asyncio.get_running_loop().time())
            raised = await next_json(seen, f"{A1}/alerts", state="raised")
            assert ("clinic-a", "chair-1") == (raised["site"], raised["bed"])
            ack = {
                "request_id": "sec-ack-1",
                "command": "ack",
                "alert_id": raised["alert_id"],
                "by": "RN Kim",
            }
            async with station(clinic, "station-clinic-a-2") as st:
                await st.publish(f"{A1}/cmd", json.dumps(ack).encode(), qos=1)
            result = await next_json(seen, f"{A1}/cmd/result", request_id="sec-ack-1")
            assert (True, None) == (result["ok"], result["error"])
            acked = await next_json(seen, f"{A1}/alerts", alert_id=raised["alert_id"], state="acknowledged")
            assert "RN Kim" == acked["acknowledged_by"]
            # Another bed's gateway cannot publish this bed's alerts (nor its retained alarms).
            forged = json.dumps(raised | {"state": "cleared", "seq": raised["seq"] + 100}).encode()
            await attempt_publishes(
                gateway(clinic, "gw-clinic-b-1"),
                [f"{A1}/alerts", f"{A1}/alarms/{raised['alert_id']}"],
                forged,
            )
            async with gateway(clinic, "gw-clinic-a-1") as gw:
                await gw.publish(f"{A1}/alerts", b"sentinel-daemon", qos=1)
            got = await until_sentinel(seen, b"sentinel-daemon")
        assert [] == [item for item in got if item[1] == forged]
        active = {t.alert_id: t for t in daemon.beds["chair-1"].engine.active_alarms()}
        assert "RN Kim" == active[raised["alert_id"]].acknowledged_by
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_daemon_logs_in_with_the_systemd_credential(
    clinic: Clinic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No password_file: the daemon reads $CREDENTIALS_DIRECTORY/mqtt-password and the broker lets it in."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mqtt-password").write_text(PASSWORDS["gw-clinic-a-1"] + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    daemon = Daemon(parse_config(daemon_config(clinic, tmp_path, local=True)))
    runner = asyncio.create_task(daemon.run())
    try:
        async with watching(station(clinic), f"{A1}/status") as seen:
            online = await next_json(seen, f"{A1}/status", state="online")  # any beat
        assert "chair-1" == online["bed"]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


# --- where the password comes from --------------------------------------------------------------


async def test_read_password_from_file_first_line_and_empty_means_none(tmp_path: Path) -> None:
    """First line without its newline; an empty file (install's placeholder) means no password."""
    (tmp_path / "pw").write_text("s3cret\r\nignored\n")
    (tmp_path / "empty").write_text("")
    (tmp_path / "blank").write_text("\n")
    assert "s3cret" == read_password(tmp_path / "pw", {})
    assert read_password(tmp_path / "empty", {}) is None
    assert read_password(tmp_path / "blank", {}) is None
    assert read_password(None, {}) is None


async def test_read_password_falls_back_to_the_systemd_credential(tmp_path: Path) -> None:
    """Without password_file: $CREDENTIALS_DIRECTORY/mqtt-password if it exists; the file wins if set."""
    creds = tmp_path / "creds"
    creds.mkdir()
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert read_password(None, env) is None  # directory without the credential
    (creds / "mqtt-password").write_text("")
    assert read_password(None, env) is None  # the empty placeholder
    (creds / "mqtt-password").write_text("from-systemd\n")
    assert "from-systemd" == read_password(None, env)
    (tmp_path / "pw").write_text("from-file\n")
    assert "from-file" == read_password(tmp_path / "pw", env)


async def test_no_password_on_the_command_line_or_in_the_config() -> None:
    """`vitalwatch run` has no password option, and the configuration refuses a password key."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--password", "s3cret"])
    with pytest.raises(Exception, match="password_file"):
        parse_config({"site": "s", "mqtt": {"password": "s3cret"}, "beds": []})


async def test_a_station_cannot_push_a_gateway_off_by_taking_its_client_id(clinic: Clinic) -> None:
    """A station that connects with the gateway's client id gets its own (its user name) instead:
    the gateway stays connected, its last will is not published and its next alert gets through."""
    ctx = context(
        clinic.certs / "ca.crt", clinic.certs / "gw-clinic-a-1.crt", clinic.certs / "gw-clinic-a-1.key"
    )
    will = aiomqtt.Will(f"{A1}/status", b'{"state":"offline","will":"taken-over"}', qos=1, retain=False)
    gw = aiomqtt.Client(
        "localhost", clinic.mtls, tls_context=ctx, identifier="vw-gw-a-chair-1", will=will, timeout=5
    )
    intruder = aiomqtt.Client(
        "localhost",
        clinic.tls,
        username="station-clinic-a",
        password=PASSWORDS["station-clinic-a"],
        tls_context=context(clinic.certs / "ca.crt"),
        identifier="vw-gw-a-chair-1",
        timeout=5,
    )
    async with watching(station(clinic, "station-clinic-a-2"), f"{A1}/status", f"{A1}/alerts") as seen:
        async with gw, intruder:
            await intruder.publish(f"{A1}/cmd", b"intruder-connected", qos=1)  # its session is up
            await gw.publish(f"{A1}/alerts", b"sentinel-still-here", qos=1, timeout=5)
        got = await until_sentinel(seen, b"sentinel-still-here")
    assert [] == [item for item in got if b"taken-over" in item[1]]
