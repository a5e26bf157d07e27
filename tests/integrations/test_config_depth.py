"""GatedBertOutput(config) / GatedBertSelfOutput(config) take the stream's depth from the config."""

from __future__ import annotations

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from vectorgate.compound_gain import compound_gain  # noqa: E402
from vectorgate.depth import DEFAULT_LOG_GAIN_BUDGET  # noqa: E402
from vectorgate.integrations.transformers import GatedBertOutput, GatedBertSelfOutput  # noqa: E402


def _config(layers: int, **extra) -> transformers.BertConfig:
    return transformers.BertConfig(num_hidden_layers=layers, hidden_size=16, intermediate_size=32,
                                   num_attention_heads=2, vocab_size=64, **extra)


@pytest.mark.parametrize(("layers", "cross", "sites"), [(2, False, 4), (24, False, 48), (6, True, 18)])
def test_the_gates_get_the_depth_patch_would_count(layers, cross, sites):
    config = _config(layers, is_decoder=cross, add_cross_attention=cross)
    for module in (GatedBertOutput(config), GatedBertSelfOutput(config)):
        gate = module.gate
        cap = DEFAULT_LOG_GAIN_BUDGET / sites
        assert gate.depth == sites
        assert gate.init_curvature == pytest.approx(min(1.0, cap / 2))
        assert float(gate.effective_curvature().detach().abs().max()) < cap


def test_an_explicit_depth_or_max_curvature_is_kept():
    config = _config(24)
    assert GatedBertOutput(config, depth=3).gate.depth == 3
    gate = GatedBertOutput(config, max_curvature=2.0).gate
    assert gate.depth is None and gate.max_curvature == 2.0
    assert GatedBertOutput(config, variant="highway").gate.dim == 16  # a variant without depth


def test_a_deep_bert_built_from_the_drop_ins_starts_within_its_budget():
    config = _config(32)
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    for layer in model.encoder.layer:
        layer.attention.output = GatedBertSelfOutput(config, init="random")
        layer.output = GatedBertOutput(config, init="random")
    report = compound_gain(model, torch.randint(0, 64, (2, 12)))
    worst = max(max(abs(s.max_log_gain), abs(s.min_log_gain)) for s in report.sites)
    assert len(report.sites) == 64
    assert worst < DEFAULT_LOG_GAIN_BUDGET
    assert math.isfinite(worst)
