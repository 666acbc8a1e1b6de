"""The wheel installs drivers and simulators under the vitalwatch namespace, never as top-level packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("vitalwatch-*.whl")
    return found


def test_wheel_has_no_generic_top_level_packages(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert "drivers" not in tops and "simulators" not in tops
    assert "vitalwatch/drivers/masimo.py" in names
    assert "vitalwatch/simulators/masimo.py" in names
    assert "vitalwatch/data/alarm-table.toml" in names
    assert "vitalwatch/py.typed" in names


def test_installed_wheel_imports_under_the_namespace(wheel: Path, tmp_path: Path) -> None:
    """Installed into a fresh target (dependencies from this environment), the names resolve there."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    assert not (target / "drivers").exists() and not (target / "simulators").exists()
    code = (
        "import vitalwatch.drivers.masimo as m, vitalwatch.simulators.masimo as s;"
        "import vitalwatch.engine.table as t;"
        "print(m.__file__); print(s.__file__); print(len(t.default_table().rules))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    lines = result.stdout.split()
    assert lines[0].startswith(str(target)) and lines[1].startswith(str(target))
    assert int(lines[2]) > 20
