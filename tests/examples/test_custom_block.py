"""examples/custom_block.py trains a gated char-LM on the real Shakespeare text."""

from __future__ import annotations

import math

import pytest
from example_loader import load_example


def test_custom_block_example_learns():
    result = load_example("custom_block.py").main(["--steps", "12", "--batch-size", "8", "--context", "32", "--dim", "32"])
    assert math.isfinite(result["last_loss"])
    assert result["last_loss"] < result["first_loss"] - 0.5


def test_custom_block_example_rejects_bad_flags():
    with pytest.raises(SystemExit):
        load_example("custom_block.py").main(["--steps", "0"])
