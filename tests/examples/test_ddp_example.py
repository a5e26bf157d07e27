"""examples/ddp_example.py in one process (its torchrun path is the one tests/integrations/test_distributed.py checks)."""

from __future__ import annotations

import math

import pytest
import torch
from example_loader import load_example

pytest.importorskip("timm")
pytest.importorskip("safetensors")


def test_ddp_example_single_process_trains_gates_and_saves_loadable_gates(tmp_path, monkeypatch):
    from vectorgate.patching import gates, load_gates, unpatch

    monkeypatch.delenv("RANK", raising=False)  # not under torchrun
    example = load_example("ddp_example.py")
    flags = ["--steps", "6", "--dim", "16", "--depth", "1", "--global-batch-size", "16",
             "--init-curvature", "0.1", "--out", str(tmp_path)]
    result = example.main([*flags, "--gates-only"])
    assert result["world_size"] == 1 and all(math.isfinite(v) for v in result["losses"])
    # The saved gates load onto a fresh, unpatched ViT of the same shape.
    args = example.parse_args(flags)
    fresh = example.build(args, torch.device("cpu"))
    unpatch(fresh)
    load_gates(fresh, tmp_path)
    curvatures = [g.curvature for _, g in gates(fresh)]
    assert len(curvatures) == 2 and all(not torch.allclose(c, torch.full_like(c, 0.1)) for c in curvatures)


def test_ddp_example_rejects_bad_flags():
    with pytest.raises(SystemExit):
        load_example("ddp_example.py").main(["--steps", "0"])
