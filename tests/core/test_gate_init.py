"""Gate initialisation: exact identity at init AND a projection that trains from step 0.

At s = c * tanh(g(x)) = 0 the gate is the plain residual. With ``init="zero_output"`` (the
default) g's output is zero and c = 1: g's gradient c * sech^2(0) * ... is nonzero at step 0,
and c's (tanh(g(x)) = 0) from the first update on. With ``init="random"`` (vectorgate 0.1)
c = 0 and g's gradient is exactly zero: the dead gradient this default removes.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vectorgate import VectorGate, patch
from vectorgate.gate import GATE_INITS, LowRankProjection
from vectorgate.patching import gates


def _one_step(module: nn.Module, loss_fn, lr: float = 1e-2) -> None:
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr)
    loss_fn().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in module.named_parameters()}


@pytest.mark.parametrize("rank", [None, 4])
def test_default_is_zero_output_with_unit_curvature_and_exact_identity(rank):
    torch.manual_seed(0)
    gate = VectorGate(16, rank=rank)
    assert gate.init == "zero_output" and gate.init_curvature == 1.0
    assert torch.equal(gate.effective_curvature().detach(), torch.ones(16))
    x, f = torch.randn(3, 5, 16), torch.randn(3, 5, 16)
    alpha, beta, s = gate(x)
    assert torch.equal(s, torch.zeros_like(s)) and torch.equal(alpha, torch.ones_like(alpha))
    assert torch.equal(beta, torch.ones_like(beta))
    assert torch.equal(gate.residual(x, f), x + f)
    assert torch.equal(gate.residual_delta(x, f), f)
    if rank is None:
        assert not gate.proj.weight.any() and not gate.proj.bias.any()
    else:  # LoRA's B = 0: up is zero, down stays random
        assert isinstance(gate.proj, LowRankProjection)
        assert not gate.proj.up.weight.any() and gate.proj.down.weight.abs().sum() > 0


@pytest.mark.parametrize("rank", [None, 4])
def test_projection_gets_a_gradient_at_step_zero_and_everything_after_one_step(rank):
    torch.manual_seed(0)
    gate = VectorGate(16, rank=rank)
    x, f, target = torch.randn(64, 16), torch.randn(64, 16), torch.randn(64, 16)

    def loss():
        return ((gate.residual(x, f) - target) ** 2).mean()

    loss().backward()
    g = _grads(gate)
    # Step 0: what the output's zero init leaves live gets a gradient; c's is tanh(0) = 0
    # exactly, as LoRA's A (down) gets none while B (up) is zero.
    live = ["proj.weight", "proj.bias"] if rank is None else ["proj.up.weight", "proj.up.bias"]
    for name in live:
        assert g[name].abs().sum() > 0, name
    assert not g["curvature"].any()
    if rank is not None:
        assert not g["proj.down.weight"].any()
    gate.zero_grad(set_to_none=True)
    _one_step(gate, loss)
    loss().backward()
    for name, grad in _grads(gate).items():
        assert grad is not None and grad.abs().sum() > 0, f"{name} has no gradient after one update"


def test_random_init_reproduces_v01_and_its_dead_projection_gradient():
    torch.manual_seed(0)
    gate = VectorGate(16, init="random")
    assert gate.init_curvature == 0.0 and gate.proj.weight.abs().sum() > 0
    x, f = torch.randn(8, 16), torch.randn(8, 16)
    assert torch.equal(gate.residual(x, f), x + f)
    gate.residual(x, f).pow(2).sum().backward()
    assert not gate.proj.weight.grad.any() and not gate.proj.bias.grad.any()  # ds/dz = c sech^2 = 0
    assert gate.curvature.grad.abs().sum() > 0


def test_reset_parameters_restores_the_zero_output_init():
    gate = VectorGate(8, rank=2)
    with torch.no_grad():
        for p in gate.parameters():
            p.normal_()
    gate.reset_parameters()
    assert not gate.proj.up.weight.any() and not gate.proj.up.bias.any()
    assert torch.equal(gate.curvature.detach(), torch.ones(8))


def test_default_curvature_fits_under_a_lower_cap():
    gate = VectorGate(4, max_curvature=0.5)
    torch.testing.assert_close(gate.effective_curvature().detach(), torch.full((4,), 0.25))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"init": "zeros"}, "init must be one of"),
    ({"init_curvature": 0.0}, "would never train"),
    ({"init": "zero_output", "init_curvature": 0}, "would never train"),
    ({"init_curvature": "1"}, "init_curvature must be finite"),
])
def test_bad_init_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VectorGate(8, **kwargs)


def test_gate_inits_table_lists_the_documented_defaults():
    assert GATE_INITS == {"zero_output": 1.0, "random": 0.0}


def test_minilm_default_patch_is_bit_exact_and_every_gate_trains(minilm_classifier, minilm_batch):
    """On the real pretrained MiniLM: the default patch changes no output bit, every gate's
    projection has a nonzero gradient after one backward pass, and after one AdamW update
    every gate tensor (curvature included) has one."""
    batch = {k: v for k, v in minilm_batch.items() if k != "labels"}
    with torch.no_grad():
        before = minilm_classifier(**batch).logits
    model = patch(copy.deepcopy(minilm_classifier))
    model.eval()  # no dropout: the comparison is exact
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)

    def loss():
        return model(**minilm_batch).loss

    loss().backward()
    found = list(gates(model))
    assert len(found) == 12
    for name, gate in found:
        for p_name, p in gate.proj.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.proj.{p_name}: no gradient at step 0"
    model.zero_grad(set_to_none=True)
    opt = torch.optim.AdamW([p for _, g in found for p in g.parameters()], lr=1e-3)
    loss().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    loss().backward()
    for name, gate in found:
        for p_name, p in gate.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.{p_name}: no gradient after one update"
