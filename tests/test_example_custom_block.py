"""examples/custom_block.py trains a gated char-LM on the real Shakespeare text."""

from __future__ import annotations

import importlib.util
import math
import pathlib

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "custom_block.py"


def load_example():
    spec = importlib.util.spec_from_file_location("custom_block_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_block_example_learns():
    result = load_example().main(["--steps", "12", "--batch-size", "8", "--context", "32", "--dim", "32"])
    assert math.isfinite(result["last_loss"])
    assert result["last_loss"] < result["first_loss"] - 0.5


def test_custom_block_example_rejects_bad_flags():
    with pytest.raises(SystemExit):
        load_example().main(["--steps", "0"])
