"""``python -m bench NAME --option`` hands the option to that benchmark.

``bench/__main__.py`` sets ``sys.argv`` and calls the module's ``main()`` without arguments; a
module that parsed ``[]`` in that case ignored its options (``engine_identity --record``
compared instead of recording the goldens).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import bench.__main__ as bench_main
from bench import engine_identity


def test_engine_identity_record_option_reaches_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[str] = []

    def one_case() -> list[tuple[str, Callable[[], list[dict[str, Any]]]]]:
        return [("case-x", lambda: [{"t": 0}])]

    monkeypatch.setattr(engine_identity, "golden_cases", one_case)
    monkeypatch.setattr(engine_identity, "write_golden", lambda stem, records: written.append(stem))
    assert 0 == bench_main.main(["engine_identity", "--record"])
    assert ["case-x"] == written
