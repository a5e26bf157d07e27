"""The lab builds as its own wheel (vectorgate-lab), versioned with the library, holding the lab only."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAB = ROOT / "lab"


def _version(pyproject: pathlib.Path) -> str:
    return re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M).group(1)


def test_the_lab_is_versioned_with_the_library_and_depends_on_it():
    version = _version(ROOT / "pyproject.toml")
    assert _version(LAB / "pyproject.toml") == version
    assert f'"vectorgate=={version}"' in (LAB / "pyproject.toml").read_text()


@pytest.mark.slow
def test_the_lab_wheel_holds_the_lab_and_its_command(tmp_path):
    pytest.importorskip("build")
    source = tmp_path / "lab"  # a copy, so that no build/ folder of the checkout adds to it
    shutil.copytree(LAB, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    version = _version(LAB / "pyproject.toml")
    (wheel,) = tmp_path.glob(f"vectorgate_lab-{version}-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(f"vectorgate_lab-{version}.dist-info/entry_points.txt").decode()
    assert {"vectorgate_lab/compare/runner.py", "vectorgate_lab/bench/ops.py", "vectorgate_lab/assets.py",
            "vectorgate_lab/peers/hyper.py", "vectorgate_lab/cli/__init__.py"} <= names
    assert not any(n.startswith("vectorgate/") for n in names)
    assert "vectorgate-lab = vectorgate_lab.cli:main" in entry_points
