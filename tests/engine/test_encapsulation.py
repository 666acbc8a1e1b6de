"""No module outside ``vitalwatch/engine/`` touches an engine private name.

A write like ``engine._phase_start = ...`` from outside silently becomes a no-op the day the
field is renamed; continuity goes through the engine's public methods (``seed``, ``adopt``,
``snapshot``/``restore``) instead. This walks the syntax tree of every other module and fails
on any ``x._name`` where ``_name`` is a private attribute of an engine class and ``x`` is not
the module's own ``self``/``cls``, and on ``getattr``/``hasattr``/``setattr`` with such a name.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "vitalwatch" / "engine"
OUTSIDE = [
    p
    for top in ("vitalwatch", "bench", "drivers", "simulators")
    for p in sorted((ROOT / top).rglob("*.py"))
    if ENGINE not in p.parents
]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def engine_private_names() -> set[str]:
    """Every ``self._name`` an engine class sets, and every private name in a class body."""
    names: set[str] = set()
    for path in ENGINE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "self" and isinstance(node.ctx, ast.Store) and _private(node.attr):
                    names.add(node.attr)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    target = item.target if isinstance(item, ast.AnnAssign) else None
                    if isinstance(target, ast.Name) and _private(target.id):
                        names.add(target.id)
    return names


def pokes(source: str, filename: str, private: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            # getattr(engine, "_book", None) is the same poke, spelt so a rename cannot break it
            if node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Constant) and name.value in private:
                    found.append(f"{filename}:{node.lineno}: {node.func.id} {name.value}")
            continue
        if not isinstance(node, ast.Attribute) or node.attr not in private:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        found.append(f"{filename}:{node.lineno}: .{node.attr}")
    return found


def test_the_engine_has_private_names_to_protect() -> None:
    """The check would pass by default if it found no names: it must know the engine's fields."""
    names = engine_private_names()
    assert {"_phase_start", "_book", "_seq", "_statuses", "_sustain"} <= names
    assert len(OUTSIDE) > 50


def test_the_check_catches_a_poke() -> None:
    private = engine_private_names()
    assert ["x.py:1: ._seq"] == pokes("book._seq = 3\n", "x.py", private)
    assert ["x.py:1: ._phase_start"] == pokes("engine._phase_start = 5\n", "x.py", private)
    assert [] == pokes("self._phase_start = 5\n", "x.py", private)
    assert ["x.py:1: getattr _book"] == pokes("getattr(engine, '_book', None)\n", "x.py", private)


def test_no_module_outside_the_engine_touches_an_engine_private_name() -> None:
    private = engine_private_names()
    found = [hit for path in OUTSIDE for hit in pokes(path.read_text(), str(path.relative_to(ROOT)), private)]
    assert [] == found
