"""Every registry test runs twice: on SQLite (the embedded default) and on a real PostgreSQL."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty registry database of each kind."""
    if request.param == "sqlite":
        return str(tmp_path / "registry.sqlite3")
    server = request.getfixturevalue("postgresql")
    return str(server.create_database(f"registry_{next(_names)}"))
