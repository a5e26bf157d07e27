"""Optional dependencies are imported one way: vectorgate._optional.require, which names the extra."""

from __future__ import annotations

import pathlib

import pytest

from vectorgate._optional import require

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "vectorgate"


def test_require_returns_the_module():
    import json

    assert require("json", extra="plot", needed_by="a test") is json


def test_require_names_what_needs_it_and_the_extra():
    with pytest.raises(ImportError, match=r"a plot needs vectorgate_no_such_pkg: `pip install vectorgate\[plot\]`"):
        require("vectorgate_no_such_pkg.sub", extra="plot", needed_by="a plot")


def test_no_other_module_writes_its_own_install_hint():
    hints = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
             if "pip install vectorgate[" in p.read_text() and p.name != "_optional.py"]
    assert not hints, f"use vectorgate._optional.require instead of an own ImportError in {hints}"
