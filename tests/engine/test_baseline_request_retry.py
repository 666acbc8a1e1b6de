"""A baseline cuff reading asked for and not come is not asked for again at every evaluation."""

from __future__ import annotations

import dataclasses

from vitalwatch.drivers.events import Observation
from vitalwatch.engine.outputs import NibpRequest, Output
from vitalwatch.engine.session import BASELINE_RETRY_S, BedEngine
from vitalwatch.engine.table import default_table


def requests(outputs: list[Output]) -> list[float]:
    return [o.t for o in outputs if isinstance(o, NibpRequest)]


def test_with_no_spacing_an_unanswered_request_is_repeated_once_a_cuff_cycle_could_have_ended() -> None:
    table = default_table()
    table = dataclasses.replace(table, baseline=dataclasses.replace(table.baseline, nibp_spacing_s=0.0))
    engine = BedEngine(table, "chair-1", {"ox": "spo2", "cuff": "nibp"})
    asked: list[float] = []
    asked += requests(engine.set_phase("baseline", 0.0))
    for t in range(1, 150):
        asked += requests(engine.observe("ox", Observation("spo2", 97.0, "%"), float(t)))
        asked += requests(engine.tick(float(t) + 0.5))
    assert [0.0, BASELINE_RETRY_S, 2 * BASELINE_RETRY_S] == asked
