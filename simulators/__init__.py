"""Hardware simulators that speak the same bytes as the real monitors.

``SIMULATORS`` maps the device names of ``vitalwatch simulate --device`` (the same names as
the driver registry) to simulator classes, imported lazily. Each class is built as
``cls(scenario, seed=0, **options)``.
"""

from __future__ import annotations

import importlib
from typing import Any

from vitalwatch.simulators.base import DeviceSimulator, PatientState, Scenario

__all__ = ["SIMULATORS", "DeviceSimulator", "PatientState", "Scenario", "make_simulator", "simulator_class"]

SIMULATORS: dict[str, str] = {
    "masimo": "masimo:MasimoSimulator",
    "nonin": "nonin:NoninSimulator",
    "nonin-ascii": "nonin_ascii:NoninAsciiSimulator",
    "nellcor": "nellcor:NellcorSimulator",
    "bci": "bci:BciSimulator",
    "contec": "contec:ContecSimulator",
    "suntech": "suntech:SuntechSimulator",
    "accutorr": "accutorr:AccutorrSimulator",
    "hl7": "hl7:Hl7Simulator",
}


def simulator_class(device: str) -> type[DeviceSimulator]:
    """The simulator class for a device name; KeyError names the known devices."""
    try:
        target = SIMULATORS[device]
    except KeyError:
        known = ", ".join(sorted(SIMULATORS))
        raise KeyError(f"unknown device {device!r} (known: {known})") from None
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(f"vitalwatch.simulators.{module_name}")
    cls: type[DeviceSimulator] = getattr(module, class_name)
    return cls


def make_simulator(device: str, scenario: Scenario, seed: int = 0, **options: Any) -> DeviceSimulator:
    """Build a device simulator for a scenario."""
    return simulator_class(device)(scenario, seed=seed, **options)  # type: ignore[call-arg]
