"""Bounded fuzz of every driver (part of ``make test``; the long run is ``make fuzz``).

Each driver gets the same fixed seeds every run: messages built with its own encoder from values
over the whole wire range (SpO2 127, pulse 999, systolic 65535, shifted HL7 fields ...), mutated,
mixed with noise and fed in random chunks with timers, starts and EOF. Only events may come out,
nothing may raise, and every observation value is None or inside its plausible range.
"""

from __future__ import annotations

import pytest

from vitalwatch.drivers import DRIVERS, plausibility
from vitalwatch.drivers.testing import fuzz_driver, fuzz_violations

SEEDS = range(300)  # about 0.1-0.5 s per driver on the 2-core development machine


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_fuzz_only_events_and_plausible_values(name: str) -> None:
    for seed in SEEDS:
        events = fuzz_driver(name, seed)
        assert fuzz_violations(list(events)) == [], f"driver {name} seed {seed}"


@pytest.mark.parametrize("name", ["masimo", "suntech", "hl7"])
def test_fuzz_would_catch_an_unscreened_driver(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fuzz can fail: with the plausibility screen switched off it finds impossible values."""
    monkeypatch.setattr(plausibility, "screen", lambda events: events)
    assert any(fuzz_violations(list(fuzz_driver(name, seed))) for seed in SEEDS)
