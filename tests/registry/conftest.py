"""Every registry test runs twice: on SQLite (the embedded default) and on a real PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from vitalwatch.registry.database import RegistryDb, open_registry

_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty registry database of each kind."""
    if request.param == "sqlite":
        return str(tmp_path / "registry.sqlite3")
    server = request.getfixturevalue("postgresql")
    return str(server.create_database(f"registry_{next(_names)}"))


@pytest.fixture
def registry_db(registry_url: str) -> Iterator[RegistryDb]:
    """The same database, migrated to the latest version; closed after the test."""
    db = open_registry(registry_url)
    db.migrate()
    try:
        yield db
    finally:
        db.close()
