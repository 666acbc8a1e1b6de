"""The daemon's configuration: one TOML file, validated once into frozen, typed objects.

Every problem is collected and reported with its dotted key and the reason
(``mqtt.port: must be 1-65535, got 70000``), so an engineer fixes a file in one pass and a
bad file never starts a half-configured daemon. Unknown keys are errors too: a misspelt
``link_timout_s`` silently ignored is a limit nobody set.

Layout (``config/example.toml`` is the documented example)::

    site = "clinic-a"
    [mqtt]      host, port, client_id, username, password_file, keepalive_s, topic_prefix,
                heartbeat_s, publish_timeout_s, unreachable_alarm_s, local_alarm_command,
                [mqtt.tls] ca_file, cert_file, key_file, verify_hostname
    [logging]   level, format
    [state]     directory, restore_grace_s
    [metrics]   enabled, address, port, restore_grace_s
    [registry]  receipts, reoffer_s  (session records offered to the regional registry until receipted),
                alert_receipts, alert_reoffer_s  (alert transitions kept until a consumer receipts them)
    [alarms]    the alarm table (see vitalwatch.engine.table)
    [[beds]]    id, [[beds.devices]] id, driver, url, role, baudrate, bytesize, parity, stopbits, options,
                eui64, location (an ``mllp://HOST:PORT`` url: a network HL7 sender, routed by one of them)
    [[alert_reporters]]  id, host, port, sending_application, sending_facility, eui64,
                receiving_application, receiving_facility, processing_id, profile_id, point_of_care,
                facility, ack_timeout_s, unreachable_alarm_s, [alert_reporters.patient_ids] (bed = id),
                [alert_reporters.tls] as [mqtt.tls]  (IHE PCD-04 to a hospital alarm manager; none by default)
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitalwatch.drivers import DRIVERS, driver_class
from vitalwatch.drivers.base import OptionError, Parity, SerialSettings
from vitalwatch.engine.roles import ROLES, role_for_driver
from vitalwatch.errors import ConfigError, ConfigProblem
from vitalwatch.link.mllp_routing import is_mllp_url, normalise_eui64, normalise_location, parse_mllp_url

__all__ = [
    "AlertReporterConfig",
    "BedConfig",
    "Config",
    "DeviceConfig",
    "LoggingConfig",
    "MetricsConfig",
    "MqttConfig",
    "StateConfig",
    "TlsConfig",
    "load_config",
    "parse_config",
]

# Names that become MQTT topic levels: no '/', '+', '#', spaces, nor a leading '$'.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LEVELS = ("debug", "info", "warning", "error")
_FORMATS = ("auto", "json", "console")


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify_hostname: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    keepalive_s: int = 30
    topic_prefix: str = "vitalwatch/v1"
    heartbeat_s: float = 5.0
    tls: TlsConfig | None = None
    # A publish (or connect) not acknowledged within this time counts as failed: a hung
    # broker keeps its TCP connection open, so only a timeout tells.
    publish_timeout_s: float = 5.0
    # Alerts undeliverable this long raise the local "broker unreachable" technical alarm.
    unreachable_alarm_s: float = 15.0
    # Run (argv list, no shell) when a local technical alarm is raised or cleared, e.g. a
    # buzzer; VITALWATCH_ALARM, VITALWATCH_ALARM_STATE (raised|cleared) and VITALWATCH_BED
    # are set in its environment.
    local_alarm_command: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class StateConfig:
    directory: Path = Path("/var/lib/vitalwatch")
    # After a restart, a journalled alarm the engine does not find again within this time is
    # cleared (latching unacknowledged ones stay until acknowledged).
    restore_grace_s: float = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """Prometheus endpoint; loopback only unless an engineer opens it on purpose."""

    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 9108


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryConfig:
    """The regional registry (docs/registry.md): off unless a clinic takes part in one."""

    # Offer each ended session's de-identified record on {prefix}/{site}/{bed}/record and keep
    # it until the registry's receipt arrives.
    receipts: bool = False
    # A record offered (and PUBACKed) but not receipted within this time is offered again.
    reoffer_s: float = 300.0
    # Keep each alert transition in the outbox until a downstream consumer (the registry, a
    # central station) receipts its (alert_id, seq) on {prefix}/{site}/{bed}/alerts/receipt.
    alert_receipts: bool = False
    # An alert transition PUBACKed but not receipted within this time is published again.
    alert_reoffer_s: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    id: str
    driver: str
    url: str
    role: str
    serial: SerialSettings
    options: Mapping[str, Any] = field(default_factory=dict)
    # Network HL7 (``mllp://`` url) only: the key a message must carry to be routed here, the
    # sender's EUI-64 from MSH-3 (16 upper-case hex digits) or the PV1-3 location ("A^B^C").
    eui64: str | None = None
    location: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BedConfig:
    id: str
    devices: tuple[DeviceConfig, ...]
    # The chair's default age band (never a date of birth): ``older_adult`` (>= 65 years) moves the
    # start gate's SBP limit; a phase command may set it per session.
    age_band: str = "adult"


# The IHE PCD ACM profile of PCD-04 (MSH-21): IHE's OID arc for PCD transactions, .4 = PCD-04.
PCD04_PROFILE_ID = "IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.4.4^ISO"
_EUI64_RE = re.compile(r"^[0-9A-Fa-f]{16}$")
# HL7 text we put in a field as is: no delimiters, no control characters (a typo is refused, not escaped).
_HL7_TEXT_RE = re.compile(r"^[^|^~\\&\x00-\x1f\x7f]{0,64}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertReporterConfig:
    """One hospital alarm manager that receives every alert transition as IHE PCD-04 (ORU^R40).

    Off unless configured. ``patient_ids`` maps a bed to the identifier the clinic chose to send
    in PID-3; a bed without one is sent with no patient identifier at all (the default).
    """

    id: str
    host: str
    port: int = 2575
    tls: TlsConfig | None = None
    sending_application: str = "VITALWATCH"
    sending_facility: str = ""  # default: the site
    eui64: str | None = None  # the gateway's EUI-64 (MSH-3, OBR-3), upper-case hex
    receiving_application: str = ""
    receiving_facility: str = ""
    processing_id: str = "P"
    profile_id: str = PCD04_PROFILE_ID
    point_of_care: str = ""  # PV1-3.1; default: the site
    facility: str = ""  # PV1-3.4
    ack_timeout_s: float = 5.0
    unreachable_alarm_s: float = 15.0
    patient_ids: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    site: str
    mqtt: MqttConfig
    logging: LoggingConfig
    state: StateConfig
    beds: tuple[BedConfig, ...]
    metrics: MetricsConfig = MetricsConfig()
    alert_reporters: tuple[AlertReporterConfig, ...] = ()
    registry: RegistryConfig = RegistryConfig()
    alarms: Any  # vitalwatch.engine.table.AlarmTable, typed loosely to keep import order simple
    source: Path | None = None


class _Reader:
    """Reads one TOML table, collecting problems instead of stopping at the first."""

    def __init__(self, data: Mapping[str, Any], key: str, problems: list[ConfigProblem]) -> None:
        self.data = data
        self.key = key
        self.problems = problems
        self.seen: set[str] = set()

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def problem(self, name: str, reason: str) -> None:
        self.problems.append(ConfigProblem(self.path(name), reason))

    def _get(self, name: str, types: tuple[type, ...], what: str) -> Any:
        self.seen.add(name)
        if name not in self.data:
            return None
        value = self.data[name]
        # bool is an int in Python; a "port = true" is still a mistake.
        if isinstance(value, bool) and bool not in types:
            self.problem(name, f"must be {what}, got {value!r}")
            return None
        if not isinstance(value, types):
            self.problem(name, f"must be {what}, got {value!r}")
            return None
        return value

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._get(name, (str,), "a string")
        if value is None:
            if required and name not in self.data:
                self.problem(name, "is required")
            return default
        return str(value)

    def ident(self, name: str) -> str | None:
        value = self.string(name, required=True)
        if value is not None and not _ID_RE.match(value):
            self.problem(
                name,
                f"must be 1-64 letters, digits, '_', '.' or '-' (it becomes a topic level), got {value!r}",
            )
            return None
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._get(name, (int,), "an integer")
        if value is None:
            return default
        if not low <= value <= high:
            self.problem(name, f"must be {low}-{high}, got {value}")
            return default
        return int(value)

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self._get(name, (int, float), "a number")
        if value is None:
            return default
        if not low <= value <= high:
            self.problem(name, f"must be {low:g}-{high:g}, got {value}")
            return default
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, (bool,), "true or false")
        return default if value is None else bool(value)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(name)
        if value is None:
            return default
        if value not in choices:
            self.problem(name, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def file(self, name: str, base: Path | None, *, must_exist: bool = False) -> Path | None:
        """A path, relative to the configuration file's folder; ``must_exist`` checks it is a file.

        Checked here so ``check-config`` finds a missing certificate or password file, instead of
        ``run`` failing on it under systemd (a restart loop). Readability is checked at run time:
        check-config is often run by another user than the daemon's.
        """
        value = self.string(name)
        if value is None:
            return None
        if not value:
            self.problem(name, "must not be empty")
            return None
        path = Path(value)
        if not path.is_absolute() and base is not None:
            path = base / path
        if must_exist and not path.is_file():
            self.problem(name, f"no such file: {path}" if not path.exists() else f"not a file: {path}")
        return path

    def table(self, name: str) -> Mapping[str, Any] | None:
        return self._get(name, (dict,), "a table")  # type: ignore[no-any-return]

    def tables(self, name: str) -> list[Mapping[str, Any]]:
        value = self._get(name, (list,), "an array of tables ([[...]])")
        if value is None:
            return []
        good: list[Mapping[str, Any]] = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                good.append(item)
            else:
                self.problems.append(ConfigProblem(f"{self.path(name)}[{i}]", "must be a table"))
        return good

    def finish(self) -> None:
        for name in sorted(set(self.data) - self.seen):
            self.problem(name, "unknown key")


def _tls(
    data: Mapping[str, Any], problems: list[ConfigProblem], base: Path | None, key: str = "mqtt.tls"
) -> TlsConfig:
    r = _Reader(data, key, problems)
    tls = TlsConfig(
        ca_file=r.file("ca_file", base, must_exist=True),
        cert_file=r.file("cert_file", base, must_exist=True),
        key_file=r.file("key_file", base, must_exist=True),
        verify_hostname=r.boolean("verify_hostname", True),
    )
    if (tls.cert_file is None) != (tls.key_file is None):
        r.problem("key_file", "cert_file and key_file go together")
    r.finish()
    return tls


def _mqtt(data: Mapping[str, Any], problems: list[ConfigProblem], base: Path | None) -> MqttConfig:
    r = _Reader(data, "mqtt", problems)
    tls_data = r.table("tls")
    prefix = r.string("topic_prefix", "vitalwatch/v1") or "vitalwatch/v1"
    if any(c in prefix for c in "+#") or prefix.startswith("/") or prefix.endswith("/"):
        r.problem("topic_prefix", f"must be topic levels without '+', '#' or outer '/', got {prefix!r}")
    cfg = MqttConfig(
        host=r.string("host", "127.0.0.1") or "127.0.0.1",
        port=r.integer("port", 1883, 1, 65535),
        client_id=r.string("client_id"),
        username=r.string("username"),
        password_file=r.file("password_file", base, must_exist=True),
        keepalive_s=r.integer("keepalive_s", 30, 5, 3600),
        topic_prefix=prefix,
        heartbeat_s=r.number("heartbeat_s", 5.0, 0.5, 600.0),
        tls=_tls(tls_data, problems, base) if tls_data is not None else None,
        publish_timeout_s=r.number("publish_timeout_s", 5.0, 0.1, 120.0),
        unreachable_alarm_s=r.number("unreachable_alarm_s", 15.0, 0.5, 3600.0),
        local_alarm_command=_command(r, "local_alarm_command"),
    )
    if "password" in data:
        # Passwords never sit in the main file (it is world-readable on many installs) nor on a command line.
        r.seen.add("password")
        r.problem("password", "not allowed here: use password_file (or a systemd credential)")
    r.finish()
    return cfg


def _command(r: _Reader, name: str) -> tuple[str, ...] | None:
    value = r._get(name, (list,), "a list of strings (program and arguments)")
    if value is None:
        return None
    if not value or not all(isinstance(v, str) and v for v in value):
        r.problem(name, "must be a non-empty list of non-empty strings (program and arguments)")
        return None
    return tuple(value)


def _hl7_text(r: _Reader, name: str, default: str) -> str:
    """A short HL7 field value written as is: no ``|^~\\&`` delimiters and no control characters."""
    value = r.string(name)
    if value is None:
        return default
    if not _HL7_TEXT_RE.match(value):
        r.problem(
            name, f"must be at most 64 characters without | ^ ~ \\ & or control characters, got {value!r}"
        )
        return default
    return value


def _alert_reporter(
    data: Mapping[str, Any],
    key: str,
    problems: list[ConfigProblem],
    base: Path | None,
    beds: tuple[BedConfig, ...],
) -> AlertReporterConfig | None:
    r = _Reader(data, key, problems)
    before = len(problems)
    rep_id = r.ident("id")
    host = r.string("host", required=True)
    if host is not None and not host.strip():
        r.problem("host", "must not be empty (the alarm manager's name or address)")
    tls_data = r.table("tls")
    eui64 = r.string("eui64")
    if eui64 is not None and not _EUI64_RE.match(eui64):
        r.problem("eui64", f"must be 16 hex digits (the gateway's EUI-64), got {eui64!r}")
    profile_id = r.string("profile_id", PCD04_PROFILE_ID) or ""
    if not profile_id or any(c in profile_id for c in "|~\\&\r\n"):
        r.problem("profile_id", f"must be an HL7 EI (components split by ^), got {profile_id!r}")
    ids: dict[str, str] = {}
    known = {b.id for b in beds}
    for bed, value in (r.table("patient_ids") or {}).items():
        if bed not in known:
            problems.append(ConfigProblem(f"{key}.patient_ids.{bed}", "no such bed"))
        elif not isinstance(value, str) or not _HL7_TEXT_RE.match(value) or not value:
            problems.append(
                ConfigProblem(
                    f"{key}.patient_ids.{bed}",
                    f"must be 1-64 characters without | ^ ~ \\ & or control characters, got {value!r}",
                )
            )
        else:
            ids[bed] = value
    cfg = AlertReporterConfig(
        id=rep_id or "",
        host=(host or "").strip(),
        port=r.integer("port", 2575, 1, 65535),
        tls=_tls(tls_data, problems, base, f"{key}.tls") if tls_data is not None else None,
        sending_application=_hl7_text(r, "sending_application", "VITALWATCH"),
        sending_facility=_hl7_text(r, "sending_facility", ""),
        eui64=eui64.upper() if eui64 is not None else None,
        receiving_application=_hl7_text(r, "receiving_application", ""),
        receiving_facility=_hl7_text(r, "receiving_facility", ""),
        processing_id=r.choice("processing_id", "P", ("P", "D", "T")),
        profile_id=profile_id,
        point_of_care=_hl7_text(r, "point_of_care", ""),
        facility=_hl7_text(r, "facility", ""),
        ack_timeout_s=r.number("ack_timeout_s", 5.0, 0.1, 120.0),
        unreachable_alarm_s=r.number("unreachable_alarm_s", 15.0, 0.5, 3600.0),
        patient_ids=ids,
    )
    r.finish()
    return cfg if len(problems) == before else None


def _alert_reporters(
    r: _Reader, problems: list[ConfigProblem], base: Path | None, beds: tuple[BedConfig, ...]
) -> tuple[AlertReporterConfig, ...]:
    reporters: list[AlertReporterConfig] = []
    seen: set[str] = set()
    for i, data in enumerate(r.tables("alert_reporters")):
        key = f"alert_reporters[{i}]"
        raw_id = data.get("id")
        if isinstance(raw_id, str) and raw_id in seen:
            problems.append(ConfigProblem(f"{key}.id", f"duplicate alert reporter id {raw_id!r}"))
            continue
        if isinstance(raw_id, str):
            seen.add(raw_id)
        cfg = _alert_reporter(data, key, problems, base, beds)
        if cfg is not None:
            reporters.append(cfg)
    return tuple(reporters)


def _serial(r: _Reader, defaults: SerialSettings) -> SerialSettings:
    parity_text = r.choice("parity", defaults.parity.value, tuple(p.value for p in Parity))
    return SerialSettings(
        baudrate=r.integer("baudrate", defaults.baudrate, 50, 4_000_000),
        bytesize=r.integer("bytesize", defaults.bytesize, 5, 8),
        parity=Parity(parity_text),
        stopbits=r.integer("stopbits", defaults.stopbits, 1, 2),
    )


def _device(data: Mapping[str, Any], key: str, problems: list[ConfigProblem]) -> DeviceConfig | None:
    r = _Reader(data, key, problems)
    before = len(problems)
    dev_id = r.ident("id")
    driver = r.string("driver", required=True)
    url = r.string("url", required=True)
    if url is not None and not url.strip():
        r.problem("url", "must not be empty (a device path such as /dev/ttyUSB0 or a pyserial URL)")
        url = None
    options = dict(r.table("options") or {})
    defaults = SerialSettings()
    if driver is not None:
        if driver not in DRIVERS:
            r.problem("driver", f"unknown driver {driver!r} (known: {', '.join(sorted(DRIVERS))})")
            driver = None
        else:
            cls = driver_class(driver)
            defaults = cls.serial
            try:
                cls(**options)
            except OptionError as exc:  # names the option: beds[0].devices[0].options.encoding
                r.problem(f"options.{exc.option}", f"rejected by the {driver} driver: {exc.reason}")
            except Exception as exc:  # TypeError for an unknown option, ValueError, and any other refusal
                r.problem("options", f"rejected by the {driver} driver: {exc}")
            else:
                # A family whose line settings depend on an option (Contec old: 19200 odd parity).
                serial_for = getattr(cls, "serial_for", None)
                if callable(serial_for) and "protocol" in options:
                    defaults = serial_for(options["protocol"])
    role = r.choice("role", role_for_driver(driver or ""), ROLES)
    serial = _serial(r, defaults)
    eui64, location = _route_keys(r, url, driver, options)
    r.finish()
    if len(problems) > before or dev_id is None or driver is None or url is None:
        return None
    return DeviceConfig(
        id=dev_id,
        driver=driver,
        url=url,
        role=role,
        serial=serial,
        options=options,
        eui64=eui64,
        location=location,
    )


def _route_keys(
    r: _Reader, url: str | None, driver: str | None, options: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """``eui64`` / ``location`` of a network HL7 device: exactly one, only with an ``mllp://`` url."""
    eui64_text = r.string("eui64")
    location_text = r.string("location")
    if url is None or not is_mllp_url(url):
        for name, value in (("eui64", eui64_text), ("location", location_text)):
            if value is not None:
                r.problem(name, 'only for a network HL7 device (url = "mllp://HOST:PORT")')
        return None, None
    try:
        if parse_mllp_url(url)[1] == 0:
            r.problem("url", "port must be 1-65535, got 0")
    except ValueError as exc:
        r.problem("url", str(exc))
    if driver is not None and driver != "hl7":
        r.problem("driver", f"an mllp:// url needs the hl7 driver, got {driver!r}")
    if options.get("framing") == "none":
        r.problem("options", 'framing = "none" cannot be used with an mllp:// url (MLLP is the framing)')
    eui64 = location = None
    if eui64_text is not None:
        eui64 = normalise_eui64(eui64_text)
        if eui64 is None:
            r.problem("eui64", f"must be 16 hex digits (an EUI-64, as in MSH-3), got {eui64_text!r}")
    if location_text is not None:
        location = normalise_location(location_text)
        if location is None:
            r.problem("location", 'must not be empty (the PV1-3 point of care, e.g. "ICU^^BED3")')
    if eui64_text is None and location_text is None:
        r.problem("url", "an mllp:// device needs eui64 or location: the key its messages are routed by")
    elif eui64_text is not None and location_text is not None:
        r.problem("location", "give eui64 or location, not both (one key per device)")
    return eui64, location


def _mllp_routes(beds: tuple[BedConfig, ...], problems: list[ConfigProblem]) -> None:
    """No routing key twice on one listener port, and one listen address per port."""
    owners: dict[tuple[int, str, str], str] = {}
    hosts: dict[int, tuple[str, str]] = {}
    for i, bed in enumerate(beds):
        for j, dev in enumerate(bed.devices):
            if not is_mllp_url(dev.url):
                continue
            host, port = parse_mllp_url(dev.url)
            key = f"beds[{i}].devices[{j}]"
            first = hosts.setdefault(port, (host, key))
            if first[0] != host:
                problems.append(
                    ConfigProblem(
                        f"{key}.url", f"port {port} is already a listener on {first[0]} ({first[1]}.url)"
                    )
                )
            for name, value in (("eui64", dev.eui64), ("location", dev.location)):
                if value is None:
                    continue
                owner = owners.setdefault((port, name, value), key)
                if owner != key:
                    problems.append(
                        ConfigProblem(f"{key}.{name}", f"{value!r} already routes to {owner} on port {port}")
                    )


def _beds(r: _Reader, problems: list[ConfigProblem]) -> tuple[BedConfig, ...]:
    beds: list[BedConfig] = []
    tables = r.tables("beds")
    if not tables and "beds" not in r.data:
        r.problem("beds", "at least one [[beds]] table is required")
    seen_beds: set[str] = set()
    for i, bed_data in enumerate(tables):
        br = _Reader(bed_data, f"beds[{i}]", problems)
        bed_id = br.ident("id")
        age_band = br.choice("age_band", "adult", ("adult", "older_adult"))
        if bed_id is not None and bed_id in seen_beds:
            br.problem("id", f"duplicate bed id {bed_id!r}")
        devices: list[DeviceConfig] = []
        device_tables = br.tables("devices")
        if not device_tables:
            br.problem("devices", "at least one [[beds.devices]] table is required")
        seen_devices: set[str] = set()
        for j, dev_data in enumerate(device_tables):
            # Judged on the raw id, so a duplicate is reported with the device's other problems,
            # not only once those are fixed.
            raw_id = dev_data.get("id")
            duplicate = isinstance(raw_id, str) and raw_id in seen_devices
            if duplicate:
                problems.append(
                    ConfigProblem(f"beds[{i}].devices[{j}].id", f"duplicate device id {raw_id!r}")
                )
            if isinstance(raw_id, str):
                seen_devices.add(raw_id)
            dev = _device(dev_data, f"beds[{i}].devices[{j}]", problems)
            if dev is not None and not duplicate:
                devices.append(dev)
        br.finish()
        if bed_id is not None:
            seen_beds.add(bed_id)
            beds.append(BedConfig(id=bed_id, devices=tuple(devices), age_band=age_band))
    return tuple(beds)


def _alarms(data: Mapping[str, Any] | None, problems: list[ConfigProblem]) -> Any:
    from vitalwatch.engine.table import load_alarm_table

    try:
        return load_alarm_table(data, key="alarms")
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None


def _state_directory(r: _Reader, base: Path | None) -> Path:
    directory = r.file("directory", base) or Path("/var/lib/vitalwatch")
    if directory.exists() and not directory.is_dir():
        r.problem("directory", f"must be a directory, {directory} is a file")
    return directory


def parse_config(data: Mapping[str, Any], *, source: Path | None = None) -> Config:
    """Validate a parsed TOML document; raises ConfigError listing every problem."""
    problems: list[ConfigProblem] = []
    base = source.parent if source is not None else None
    r = _Reader(data, "", problems)
    site = r.ident("site")
    mqtt = _mqtt(r.table("mqtt") or {}, problems, base)
    lr = _Reader(r.table("logging") or {}, "logging", problems)
    logging_cfg = LoggingConfig(
        level=lr.choice("level", "info", _LEVELS), format=lr.choice("format", "auto", _FORMATS)
    )
    lr.finish()
    sr = _Reader(r.table("state") or {}, "state", problems)
    state = StateConfig(
        directory=_state_directory(sr, base),
        restore_grace_s=sr.number("restore_grace_s", 120.0, 0.0, 86400.0),
    )
    sr.finish()
    mr = _Reader(r.table("metrics") or {}, "metrics", problems)
    metrics = MetricsConfig(
        enabled=mr.boolean("enabled", False),
        address=mr.string("address", "127.0.0.1") or "127.0.0.1",
        port=mr.integer("port", 9108, 1, 65535),
    )
    mr.finish()
    rr = _Reader(r.table("registry") or {}, "registry", problems)
    registry = RegistryConfig(
        receipts=rr.boolean("receipts", False),
        reoffer_s=rr.number("reoffer_s", 300.0, 1.0, 7 * 86400.0),
        alert_receipts=rr.boolean("alert_receipts", False),
        alert_reoffer_s=rr.number("alert_reoffer_s", 60.0, 1.0, 86400.0),
    )
    rr.finish()
    if registry.alert_receipts and registry.alert_reoffer_s <= mqtt.publish_timeout_s:
        # A re-offer while the first offer may still be waiting for its PUBACK would only add load.
        problems.append(
            ConfigProblem(
                "registry.alert_reoffer_s",
                f"must be longer than mqtt.publish_timeout_s ({mqtt.publish_timeout_s:g} s)",
            )
        )
    alarms = _alarms(r.table("alarms"), problems)
    beds = _beds(r, problems)
    _mllp_routes(beds, problems)
    reporters = _alert_reporters(r, problems, base, beds)
    r.finish()
    if problems:
        raise ConfigError(problems)
    assert site is not None  # a missing site is a problem above
    return Config(
        site=site,
        mqtt=mqtt,
        logging=logging_cfg,
        state=state,
        beds=beds,
        alarms=alarms,
        metrics=metrics,
        alert_reporters=reporters,
        registry=registry,
        source=source,
    )


def unreadable_files(config: Config) -> list[ConfigProblem]:
    """The configured secret and certificate files this process cannot read, each with its key.

    ``vitalwatch run`` checks this before it starts anything, so a key file readable by root but
    not by the daemon's user is one line naming ``mqtt.tls.key_file``, not a traceback.
    """
    files: list[tuple[str, Path | None]] = [("mqtt.password_file", config.mqtt.password_file)]
    if config.mqtt.tls is not None:
        tls = config.mqtt.tls
        files += [
            ("mqtt.tls.ca_file", tls.ca_file),
            ("mqtt.tls.cert_file", tls.cert_file),
            ("mqtt.tls.key_file", tls.key_file),
        ]
    for i, rep in enumerate(config.alert_reporters):
        if rep.tls is not None:
            files += [
                (f"alert_reporters[{i}].tls.ca_file", rep.tls.ca_file),
                (f"alert_reporters[{i}].tls.cert_file", rep.tls.cert_file),
                (f"alert_reporters[{i}].tls.key_file", rep.tls.key_file),
            ]
    problems: list[ConfigProblem] = []
    for key, path in files:
        if path is None:
            continue
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            problems.append(ConfigProblem(key, f"cannot read {path}: {exc.strerror or exc}"))
    return problems


def load_config(path: Path) -> Config:
    """Read and validate a TOML file; unreadable or malformed files are ConfigErrors too."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), f"cannot read: {exc.strerror or exc}")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(str(path), "not UTF-8 text")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(str(path), f"not valid TOML: {exc}")]) from None
    return parse_config(data, source=path.resolve())
