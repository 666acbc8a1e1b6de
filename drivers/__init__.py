"""Sans-I/O protocol drivers, one module per device family, and the registry naming them.

The registry maps the names used in configuration and on the command line
(``--driver masimo``) to classes, imported lazily so one broken optional family cannot stop
the others from loading.
"""

from __future__ import annotations

import importlib
from typing import Any

from vitalwatch.drivers.base import Driver, MeasurementStarter, SerialSettings
from vitalwatch.drivers.events import DecodeProblem, DeviceStatus, Event, Observation

__all__ = [
    "DRIVERS",
    "DecodeProblem",
    "DeviceStatus",
    "Driver",
    "Event",
    "MeasurementStarter",
    "Observation",
    "SerialSettings",
    "driver_class",
    "make_driver",
    "sends_waveform_rate",
]

# name -> "module:Class" inside vitalwatch.drivers
DRIVERS: dict[str, str] = {
    "masimo": "masimo:MasimoDriver",
    "nonin": "nonin:NoninDriver",
    "nonin-ascii": "nonin_ascii:NoninAsciiDriver",
    "nellcor": "nellcor:NellcorDriver",
    "bci": "bci:BciDriver",
    "contec": "contec:ContecDriver",
    "suntech": "suntech:SuntechDriver",
    "accutorr": "accutorr:AccutorrDriver",
    "hl7": "hl7:Hl7Driver",
}


def driver_class(name: str) -> type[Driver]:
    """The driver class registered under ``name``; KeyError names the known drivers."""
    try:
        target = DRIVERS[name]
    except KeyError:
        known = ", ".join(sorted(DRIVERS))
        raise KeyError(f"unknown driver {name!r} (known: {known})") from None
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(f"vitalwatch.drivers.{module_name}")
    cls: type[Driver] = getattr(module, class_name)
    return cls


def sends_waveform_rate(name: str) -> bool:
    """Whether the family streams frames many times a second by design (a waveform-rate oximeter:
    Nonin 75 frames/s, Contec 60 packets/s), declared by its driver class as ``waveform_rate``.

    The link reads such a port in longer batches: the family's own values change only a few
    times a second, so waiting a fraction of that costs an alarm nothing measurable, where the
    same wait on a monitor that sends one line at a time would delay the line itself.
    """
    return bool(getattr(driver_class(name), "waveform_rate", False))


def make_driver(name: str, **options: Any) -> Driver:
    """Build a driver; options are its keyword-only constructor arguments.

    Raises KeyError for an unknown name and TypeError/ValueError for bad options, which the
    configuration loader turns into a message naming the key.
    """
    return driver_class(name)(**options)
