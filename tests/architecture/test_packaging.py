"""The package builds as a wheel carrying its typing marker and console script, and the library only:
the lab (lab/, vectorgate_lab) is not in it, and its old commands say where they went."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

import vectorgate

ROOT = pathlib.Path(__file__).resolve().parents[2]
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


@pytest.mark.slow
def test_wheel_builds_with_py_typed_and_entry_point(tmp_path):
    pytest.importorskip("build")
    # Built from a copy of what the library's build reads, so that a stale build/ folder of the
    # checkout (setuptools packs whatever build/lib holds) cannot add or hide a module.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob(f"vectorgate-{VERSION}-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(f"vectorgate-{VERSION}.dist-info/entry_points.txt").decode()
    assert "vectorgate/py.typed" in names
    assert {"vectorgate/gate.py", "vectorgate/patching/core.py", "vectorgate/recorder.py"} <= names
    assert not any(n.startswith("tests/") for n in names)
    assert "vectorgate = vectorgate.cli:main" in entry_points
    # The library only: the lab's modules (moved to lab/ in 0.6) are not in the wheel.
    lab = sorted(n for n in names if n.startswith(("vectorgate/compare/", "vectorgate/bench/", "vectorgate_lab/",
                                                     "lab/", "vectorgate/cli/compare.py", "vectorgate/cli/bench.py",
                                                     "vectorgate/variants/hyper.py"))
                 or n == "vectorgate/assets.py")
    assert lab == []
    assert "vectorgate-lab" not in entry_points


def test_version_and_public_api():
    assert vectorgate.__version__ == VERSION
    for name in ("VectorGate", "GatedResidual", "gated_residual", "GateOutput", "GatedBertOutput", "patch",
                 "unpatch", "gates", "save_gates", "load_gates", "mark_only_gates_trainable", "make_gate_adapter",
                 "GateConfig", "param_groups", "check_gates", "GateRecorder", "write_report"):
        assert name in vectorgate.__all__ and hasattr(vectorgate, name)


def test_the_top_level_is_small_and_every_name_resolves():
    assert len(vectorgate.__all__) <= 18  # what the README's path uses; the rest lives in subpackages
    for name in vectorgate.__all__:
        getattr(vectorgate, name)
    for sub in ("skip", "patching", "variants", "presets", "recorder", "stability", "compound_gain"):
        assert getattr(vectorgate, sub).__name__ == f"vectorgate.{sub}"  # subpackages need no import of their own


@pytest.mark.parametrize("name", sorted(vectorgate._MOVED_NAMES))
def test_names_that_left_the_top_level_still_resolve_with_the_new_place(name):
    import importlib

    new = vectorgate._MOVED_NAMES[name]
    with pytest.warns(DeprecationWarning, match=rf"vectorgate\.{name} is now {new}\.{name}"):
        obj = getattr(vectorgate, name)
    assert obj is getattr(importlib.import_module(new), name)
    assert name not in vectorgate.__all__


@pytest.mark.parametrize(("old", "new"), [("vectorgate.compare", "vectorgate_lab.compare"),
                                          ("vectorgate.assets", "vectorgate_lab.assets"),
                                          ("vectorgate.bench", "vectorgate_lab.bench"),
                                          ("vectorgate.variants.hyper", "vectorgate_lab.peers")])
def test_modules_that_moved_to_the_lab_fail_naming_the_new_place(old, new):
    import importlib

    with pytest.raises(ModuleNotFoundError, match=rf"{old} left the library in 0\.6: it is {new} "):
        importlib.import_module(old)


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "vectorgate.cli", "demo", "--dim", "4"], check=True, capture_output=True, text=True
    )
    assert "alpha in [" in out.stdout


@pytest.mark.parametrize("command", ["compare", "bench"])
def test_the_lab_commands_say_where_they_went(command):
    out = subprocess.run(
        [sys.executable, "-m", "vectorgate.cli", command, "--tasks", "rt_full", "--quick"],
        capture_output=True, text=True,
    )
    assert out.returncode == 2 and out.stdout == ""
    (line,) = out.stderr.splitlines()
    assert f"vectorgate-lab {command}" in line and "pip install -e lab" in line


@pytest.mark.parametrize(("old", "new"), [("inspect", "vectorgate.recorder"), ("io", "vectorgate.patching.files")])
def test_modules_renamed_in_0_3_are_reachable_with_a_deprecation_warning(old, new):
    import importlib

    with pytest.warns(DeprecationWarning, match=rf"vectorgate\.{old} is now {new}"):
        module = getattr(vectorgate, old)
    assert module is importlib.import_module(new)
