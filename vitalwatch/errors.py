"""VitalWatch's exceptions: a short tree with structured attributes.

.. code-block:: text

    VitalwatchError
     ├── ConfigError          bad configuration; .problems lists (key, reason) pairs
     ├── DeviceError          a serial link failed; .device_id, .port
     │    └── DeviceUnavailable   the port could not be opened or vanished
     └── StartupError         the daemon cannot start (a port in use, a state directory held)

Malformed device bytes are *not* exceptions: drivers report them as ``DecodeProblem``
events. Exceptions are for misuse and for the edges where I/O fails. A silent port is not an
exception either (the engine's silent-link rule raises a technical alarm), nor is a broker that
does not acknowledge (``aiomqtt.MqttError`` inside the publisher, which reconnects and resends).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "DeviceError",
    "DeviceUnavailable",
    "StartupError",
    "VitalwatchError",
]


class VitalwatchError(Exception):
    """Base of every error VitalWatch raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One configuration problem: the dotted key and why it is wrong."""

    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


class ConfigError(VitalwatchError):
    """The configuration is invalid; every problem found is listed, not only the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class DeviceError(VitalwatchError):
    """A serial link failed."""

    def __init__(self, message: str, *, device_id: str, port: str) -> None:
        self.device_id = device_id
        self.port = port
        super().__init__(f"{device_id} ({port}): {message}")


class DeviceUnavailable(DeviceError):
    """The port could not be opened, or it vanished (adapter unplugged)."""


class StartupError(VitalwatchError):
    """The daemon cannot start for a reason outside the configuration file (a port in use, ...).

    The message names the setting to change, so ``vitalwatch run`` prints it as one line instead
    of a traceback, and systemd's journal says why the unit failed.
    """
