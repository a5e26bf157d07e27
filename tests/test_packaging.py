"""The package builds as a wheel carrying its typing marker and console script."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

import pytest

import vectorgate

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_builds_with_py_typed_and_entry_point(tmp_path):
    pytest.importorskip("build")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("vectorgate-0.2.0-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read("vectorgate-0.2.0.dist-info/entry_points.txt").decode()
    assert "vectorgate/py.typed" in names
    assert "vectorgate/gate.py" in names
    assert not any(n.startswith("tests/") for n in names)
    assert "vectorgate = vectorgate.cli:main" in entry_points


def test_version_and_public_api():
    assert vectorgate.__version__ == "0.2.0"
    for name in ("VectorGate", "GatedResidual", "gated_residual", "exp_gated_residual", "GateOutput",
                 "GatedBertOutput", "patch", "gates", "save_gates", "load_gates", "mark_only_gates_trainable", "make_gate_adapter"):
        assert name in vectorgate.__all__ and hasattr(vectorgate, name)


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "vectorgate.cli", "demo", "--dim", "4"], check=True, capture_output=True, text=True
    )
    assert "alpha in [" in out.stdout
