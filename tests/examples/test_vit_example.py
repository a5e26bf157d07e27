"""examples/vit_example.py: plain vs gated timm ViT on real MNIST, run with tiny settings."""

from __future__ import annotations

import json
import math

import pytest
import torch
from example_loader import load_example

pytest.importorskip("timm")
pytest.importorskip("matplotlib")


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the example sets its own thread count


def test_vit_example_runs_and_writes_results(tmp_path, keep_threads):
    result = load_example("vit_example.py").main([
        "--steps", "8", "--eval-every", "4", "--dim", "16", "--depth", "1", "--heads", "2",
        "--batch-size", "16", "--out", str(tmp_path),
    ])
    plain, gated = result["histories"]["plain"], result["histories"]["gated"]
    # Same weights, same batches, exact identity at c = 0: the first step is identical.
    assert plain["test_acc"][0] == gated["test_acc"][0]
    assert plain["loss"][0] == gated["loss"][0]
    assert all(math.isfinite(v) for v in plain["loss"] + gated["loss"])
    assert gated["params"] > plain["params"]
    assert plain["curvature"][-1] == {}  # the plain model has no gates
    assert max(gated["curvature"][-1].values()) > 0  # training moved c
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [row["model"] for row in saved["table"]] == ["plain", "gated"]
    for png in ("curves.png", "curvature.png"):
        assert (tmp_path / png).stat().st_size > 10_000


@pytest.mark.parametrize("flags", [["--steps", "0"], ["--patch-size", "5"], ["--dim", "30", "--heads", "4"]])
def test_vit_example_rejects_bad_flags(flags):
    with pytest.raises(SystemExit):
        load_example("vit_example.py").main(flags)
