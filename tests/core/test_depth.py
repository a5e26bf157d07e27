"""The depth-aware default: the gates of a stream of n sites keep its compound gain within
``e^log_gain_budget`` by design (vectorgate.depth), at any depth."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import vectorgate
from vectorgate import GateConfig, GatedResidual, VectorGate
from vectorgate.depth import DEFAULT_LOG_GAIN_BUDGET, depth_curvature
from vectorgate.stability import UnstableGateWarning, check_gates

transformers = pytest.importorskip("transformers")


def tiny_llama(layers: int, hidden: int = 32, vocab: int = 64) -> nn.Module:
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64))


def test_budget_is_float16_range():
    assert DEFAULT_LOG_GAIN_BUDGET == pytest.approx(math.log(65504))


@pytest.mark.parametrize(("depth", "cap", "init"), [(1, 11.09, 1.0), (4, 2.772, 1.0), (12, 0.924, 0.462), (64, 0.1733, 0.0866)])
def test_depth_curvature_caps_at_budget_over_depth_and_starts_at_half(depth, cap, init):
    got_cap, got_init = depth_curvature(depth)
    assert got_cap == pytest.approx(cap, abs=1e-3)
    assert got_init == pytest.approx(init, abs=1e-3)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None])
def test_depth_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="depth must be a positive int"):
        depth_curvature(bad)


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, "big"])
def test_budget_must_be_positive_and_finite(bad):
    with pytest.raises(ValueError, match="log_gain_budget must be a positive number"):
        VectorGate(8, depth=4, log_gain_budget=bad)


def test_gate_with_depth_is_capped_and_exactly_the_identity():
    gate = VectorGate(16, depth=32)
    assert gate.max_curvature == pytest.approx(DEFAULT_LOG_GAIN_BUDGET / 32)
    torch.testing.assert_close(gate.effective_curvature(), torch.full((16,), DEFAULT_LOG_GAIN_BUDGET / 64))
    x, f = torch.randn(3, 16), torch.randn(3, 16)
    assert torch.equal(gate.residual(x, f), x + f)
    assert "depth=32" in repr(gate)


def test_explicit_cap_wins_over_depth_and_a_c_above_the_depth_cap_is_refused():
    assert VectorGate(8, depth=32, max_curvature=2.0).max_curvature == 2.0
    with pytest.raises(ValueError, match=r"init_curvature\| must be below max_curvature.*the depth cap: log_gain_budget 11.09 / depth 32"):
        VectorGate(8, depth=32, init_curvature=0.5)


def test_the_cap_holds_however_far_training_pushes_c():
    stack = nn.ModuleList(VectorGate(4, depth=64) for _ in range(64))
    with torch.no_grad():
        for gate in stack:
            gate.curvature.fill_(1e4)
    with torch.no_grad():
        total = sum(float(g.effective_curvature().abs().max()) for g in stack)
    assert total <= DEFAULT_LOG_GAIN_BUDGET * (1 + 1e-6)  # tanh reaches 1.0 in float32: at most the budget


def test_gated_residual_takes_the_depth():
    block = GatedResidual(nn.Linear(8, 8), 8, depth=16)
    assert block.gate.max_curvature == pytest.approx(DEFAULT_LOG_GAIN_BUDGET / 16)


def test_patch_counts_the_gated_sites_and_stays_bit_exact():
    model = tiny_llama(6).eval()
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        before = model(ids).logits
        vectorgate.patch(model)
        after = model(ids).logits
    assert torch.equal(before, after)
    found = list(vectorgate.gates(model))
    assert len(found) == 12
    assert {g.depth for _, g in found} == {12}
    assert all(g.max_curvature == pytest.approx(DEFAULT_LOG_GAIN_BUDGET / 12) for _, g in found)
    assert vectorgate.patching.gate_config(model).log_gain_budget == pytest.approx(DEFAULT_LOG_GAIN_BUDGET)


def test_patch_counts_only_the_sites_it_gates():
    model = vectorgate.patch(tiny_llama(6), sites="mlp", layers=[0, 1, 2])
    assert {g.depth for _, g in vectorgate.gates(model)} == {3}


def test_no_budget_is_the_old_default_and_an_explicit_cap_is_kept():
    old = vectorgate.patch(tiny_llama(3), log_gain_budget=None)
    assert all(g.max_curvature is None and g.depth is None for _, g in vectorgate.gates(old))
    assert all(float(g.effective_curvature().detach()[0]) == 1.0 for _, g in vectorgate.gates(old))
    mine = vectorgate.patch(tiny_llama(3), max_curvature=0.5)
    assert all(g.max_curvature == 0.5 for _, g in vectorgate.gates(mine))


def test_other_variants_do_not_take_a_depth():
    model = vectorgate.patch(tiny_llama(2), variant="rezero")
    assert len(list(vectorgate.gates(model))) == 4


def test_a_config_without_the_budget_field_loads_as_0_4_did():
    data = GateConfig().to_dict()
    del data["log_gain_budget"]
    assert GateConfig.from_dict(data).log_gain_budget is None


@pytest.mark.parametrize("bad", [0, -2, "inf", math.nan])
def test_config_rejects_a_bad_budget(bad):
    with pytest.raises(ValueError, match="log_gain_budget must be None or a positive number"):
        GateConfig(log_gain_budget=bad)


def test_check_gates_is_quiet_on_a_deep_default_model_at_init():
    model = vectorgate.patch(tiny_llama(16))  # 32 gates: the uncapped default warned here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = check_gates(model)
    assert report.log_amplification_bound < DEFAULT_LOG_GAIN_BUDGET


def _train(model: nn.Module, steps: int, lr: float) -> list:
    from vectorgate.compound_gain import CompoundGainMonitor
    from vectorgate_lab.assets import load_shakespeare

    text = load_shakespeare(50_000)
    lookup = {ch: i % 64 for i, ch in enumerate(sorted(set(text)))}
    data = torch.tensor([lookup[ch] for ch in text])
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    monitor = CompoundGainMonitor(model)
    reports = []
    for _ in range(steps):
        starts = torch.randint(len(data) - 33, (8,), generator=gen)
        batch = torch.stack([data[s : s + 33] for s in starts])
        with monitor:
            loss = nn.functional.cross_entropy(model(batch[:, :-1]).logits.flatten(0, 1), batch[:, 1:].flatten())
            opt.zero_grad()
            loss.backward()
        reports.append(monitor.report())
        opt.step()
    return reports


def test_a_32_layer_default_model_keeps_its_compound_gain_within_budget_where_the_old_default_leaves_it():
    # benchmarks/depth_probe.py at CI size: a 32-layer Llama-like char-LM, AdamW at 3e-3.
    old = _train(vectorgate.patch(tiny_llama(32), log_gain_budget=None), steps=6, lr=3e-3)
    new = _train(vectorgate.patch(tiny_llama(32)), steps=6, lr=3e-3)
    assert not old[-1].within_budget, old[-1].summary()
    assert all(r.within_budget for r in new), [r.summary() for r in new]
    assert all(len(r.sites) == 64 for r in new)
    assert new[-1].grad_norms and all(math.isfinite(v) for v in new[-1].grad_norms.values())
    with pytest.warns(UnstableGateWarning, match="measured compound gain .* left its budget"):
        check_gates(vectorgate.patch(tiny_llama(2)), gain=old[-1])
