"""Real parts for tests: a Mosquitto broker on a free loopback port, and a config builder.

Shipped (like structlog's ``testing``) so integration tests and benchmarks start the same
real broker the same way. Nothing here mocks MQTT or serial.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BridgedRegion",
    "ConfiguredMosquitto",
    "Mosquitto",
    "PostgreSQL",
    "adapt_bridge_config",
    "adapt_mosquitto_config",
    "free_port",
    "mosquitto_binary",
    "postgres_bindir",
    "start_bridged_region",
    "write_passwd",
]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mosquitto_binary() -> str | None:
    """Debian installs mosquitto in /usr/sbin, which is not on every user's PATH."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


@dataclass
class Mosquitto:
    """A real Mosquitto process with a temporary configuration; restartable on the same port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_config: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        return (
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n" + self.extra_config
        )

    def start(self, timeout: float = 10.0) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed: apt-get install mosquitto")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}; see {self.workdir}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening in time")

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: TCP stays open but nothing is acknowledged (a hung broker)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


# --- a broker started from a shipped configuration file (config/mosquitto/) -----------------------

SHIPPED_ETC_DIR = "/etc/mosquitto/vitalwatch"


def adapt_mosquitto_config(text: str, *, ports: dict[int, int], etc_dir: Path, workdir: Path) -> str:
    """The shipped ``mosquitto.conf`` made runnable by a test, changing only where things live.

    Each ``listener PORT [ADDR]`` becomes ``listener ports[PORT] 127.0.0.1`` (a listener the test
    did not map is a KeyError, so a new listener in the shipped file cannot slip by untested);
    ``/etc/mosquitto/vitalwatch`` becomes ``etc_dir``; persistence goes to ``workdir``; logs to
    stderr. Authentication, ACL and TLS options are kept exactly as shipped.
    """
    return _rewrite(
        text,
        etc_dir,
        {
            "listener": lambda words: f"listener {ports[int(words[1])]} 127.0.0.1",
            "persistence_location": lambda _: f"persistence_location {workdir}/",
            "log_dest": lambda _: "log_dest stderr",
        },
    )


def _rewrite(text: str, etc_dir: Path, options: dict[str, Callable[[list[str]], str]]) -> str:
    """Each line whose first word is in ``options`` replaced by what its rule gives for the line's
    words; ``/etc/mosquitto/vitalwatch`` moved to ``etc_dir`` everywhere."""
    out: list[str] = []
    for original in text.splitlines():
        words = original.split()
        line = options[words[0]](words) if words and words[0] in options else original
        out.append(line.replace(SHIPPED_ETC_DIR, str(etc_dir)))
    return "\n".join(out) + "\n"


@dataclass
class ConfiguredMosquitto(Mosquitto):
    """A real Mosquitto run from a given configuration text (see :func:`adapt_mosquitto_config`).

    ``port`` must be one of its listeners: ``start`` waits until it accepts TCP connections.
    """

    text: str = ""

    def config_text(self) -> str:
        return self.text + self.extra_config


# --- a clinic's bridge to the central broker (config/mosquitto/bridge.conf.example) ---------------

SHIPPED_BRIDGE_SITE = "clinic-a"


def adapt_bridge_config(
    text: str,
    *,
    site: str,
    central_port: int,
    etc_dir: Path,
    keepalive_s: int = 5,
    restart_s: int = 1,
) -> str:
    """The shipped bridge example for ``site``, pointed at a central broker on loopback.

    As an operator does: the example's site ``clinic-a`` becomes ``site`` everywhere (connection
    name, client ids, topics). For a test: ``address`` becomes ``127.0.0.1:central_port``,
    ``/etc/mosquitto/vitalwatch`` becomes ``etc_dir``, and the keepalive and reconnect delay are
    shortened (Mosquitto's minimum keepalive is 5 s) so an outage is noticed within test time.
    TLS, client ids, sessions, QoS and topics are kept as shipped.
    """
    return _rewrite(
        text.replace(SHIPPED_BRIDGE_SITE, site),
        etc_dir,
        {
            "address": lambda _: f"address 127.0.0.1:{central_port}",
            "keepalive_interval": lambda _: f"keepalive_interval {keepalive_s}",
            "restart_timeout": lambda _: f"restart_timeout {restart_s}",
        },
    )


# --- a real PostgreSQL server in a temporary directory (the registry's tests and benchmark) -------


def postgres_bindir() -> Path | None:
    """Debian keeps the server programs in /usr/lib/postgresql/VERSION/bin (newest wins)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return versions[-1].parent if versions else None


@dataclass
class PostgreSQL:
    """A PostgreSQL server of its own: initdb in a fresh directory, loopback only, trust auth.

    initdb and postgres refuse to run as root (CI runs as root), so as root both run as the
    unprivileged ``postgres`` user Debian's package creates (``runuser``), in a directory that
    user owns. ``fsync=off`` unless ``durable``: tests use throwaway clusters (the registry's own
    transactions are what is tested, not the disk); a benchmark measures with fsync on.
    ``stop`` removes everything.
    """

    port: int = field(default_factory=free_port)
    user: str = "registry"
    durable: bool = False
    directory: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", "postgres", "--", *argv]

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> None:
        import tempfile

        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        self.directory = Path(tempfile.mkdtemp(prefix="vitalwatch-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        data = self.directory / "data"
        subprocess.run(
            self._as_owner(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--locale=C",
                ]
            ),
            check=True,
            capture_output=True,
        )
        log = (self.directory / "postgres.log").open("ab")
        argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.directory)]
        argv += ["-c", "listen_addresses=127.0.0.1"]
        if not self.durable:
            argv += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        self.process = subprocess.Popen(
            self._as_owner(argv),
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}; see {self.directory}")
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not accept connections in time")

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # To the postmaster itself ("fast" shutdown): runuser does not pass SIGINT on.
            assert self.directory is not None
            pid_file = self.directory / "data" / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError, IndexError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


# --- clinic brokers bridged to a central one, from the shipped files (tests and bench/bridge.py) ---


@dataclass
class BridgedRegion:
    """Running brokers: ``central`` (client-certificate listener ``central_mtls``) and one per clinic.

    Clinic brokers take their gateways and stations on their loopback listener (``.port``, user
    name and password); clients of the central broker use a certificate from ``region_certs``
    whose CN is their user name in the central ACL.
    """

    central: ConfiguredMosquitto
    central_mtls: int
    clinics: dict[str, ConfiguredMosquitto]
    region_certs: Path

    def stop(self) -> None:
        for broker in self.clinics.values():
            broker.stop()
        self.central.stop()


def write_passwd(path: Path, passwords: dict[str, str]) -> None:
    """A Mosquitto password file (mosquitto_passwd, PBKDF2-SHA512) with these users."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    for i, (user, password) in enumerate(passwords.items()):
        flags = ["-c", "-b"] if i == 0 else ["-b"]
        subprocess.run([tool, *flags, str(path), user, password], check=True, capture_output=True)


def start_bridged_region(
    base: Path,
    *,
    repo: Path,
    sites: tuple[str, ...],
    passwords: dict[str, str],
    region_clients: tuple[str, ...] = (),
    clinic_acl: str | None = None,
) -> BridgedRegion:
    """Central + one broker per site, each run from the repository's shipped files.

    ``repo`` is the source tree (``config/mosquitto/``, ``scripts/make-test-ca.sh``; neither is
    installed with the package). Every broker runs ``mosquitto.conf`` as shipped (ports and paths
    adapted); the clinics with ``acl`` (or ``clinic_acl``) and ``bridge.conf.example`` for their
    site, the central one with ``central-acl.example``. A clinic CA signs the clinic brokers; a
    region CA the central broker, a ``bridge-{site}`` certificate per site and ``region_clients``.
    """
    shipped, make_ca = repo / "config" / "mosquitto", repo / "scripts" / "make-test-ca.sh"
    clinic_certs, region_certs = base / "clinic-ca", base / "region-ca"
    subprocess.run(["bash", str(make_ca), str(clinic_certs), "localhost"], check=True, capture_output=True)
    bridges = tuple(f"bridge-{site}" for site in sites)
    subprocess.run(
        ["bash", str(make_ca), str(region_certs), "localhost", *bridges, *region_clients],
        check=True,
        capture_output=True,
    )
    conf = (shipped / "mosquitto.conf").read_text()

    def etc_for(work: Path, certs: Path, acl: str) -> Path:
        etc = work / "etc"
        shutil.copytree(certs, etc / "certs")
        (etc / "acl").write_text(acl)
        write_passwd(etc / "passwd", passwords)
        return etc

    def broker(work: Path, etc: Path, extra: str = "") -> tuple[ConfiguredMosquitto, dict[int, int]]:
        ports = {1883: free_port(), 8883: free_port(), 8884: free_port()}
        text = adapt_mosquitto_config(conf, ports=ports, etc_dir=etc, workdir=work) + extra
        # As root, Mosquitto would switch to user "mosquitto", who cannot read private temp dirs.
        return ConfiguredMosquitto(
            workdir=work, port=ports[1883], text=text, extra_config="user root\n"
        ), ports

    cwork = base / "central"
    cwork.mkdir()
    central, cports = broker(
        cwork, etc_for(cwork, region_certs, (shipped / "central-acl.example").read_text())
    )
    central.start()
    clinics: dict[str, ConfiguredMosquitto] = {}
    try:
        for site in sites:
            work = base / site
            work.mkdir()
            etc = etc_for(work, clinic_certs, clinic_acl or (shipped / "acl").read_text())
            (etc / "central").mkdir()
            shutil.copy(region_certs / "ca.crt", etc / "central" / "ca.crt")
            shutil.copy(region_certs / f"bridge-{site}.crt", etc / "central" / "bridge.crt")
            shutil.copy(region_certs / f"bridge-{site}.key", etc / "central" / "bridge.key")
            bridge = adapt_bridge_config(
                (shipped / "bridge.conf.example").read_text(),
                site=site,
                central_port=cports[8883],
                etc_dir=etc,
            )
            clinics[site], _ = broker(work, etc, bridge)
            clinics[site].start()
    except BaseException:
        BridgedRegion(central, cports[8883], clinics, region_certs).stop()
        raise
    return BridgedRegion(central, cports[8883], clinics, region_certs)
