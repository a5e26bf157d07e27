"""GatedResidual around real branches: identity at init, gates, pre-norm, torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vectorgate import GatedResidual, GateOutput


def mlp(dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


@pytest.mark.parametrize("prenorm", [False, True])
def test_identity_at_init_equals_plain_residual(prenorm):
    torch.manual_seed(0)
    branch = nn.Sequential(nn.LayerNorm(16), mlp(16)) if prenorm else mlp(16)
    block = GatedResidual(branch, 16)
    x = torch.randn(3, 5, 16)
    assert torch.equal(block(x), x + branch(x))


def test_gated_residual_matches_the_definition():
    torch.manual_seed(0)
    block = GatedResidual(mlp(8), 8, init="random", init_curvature=0.8, return_gates=True)
    x = torch.randn(4, 8)
    y, gates = block(x)
    assert isinstance(gates, GateOutput)
    torch.testing.assert_close(y, gates.alpha * x + gates.beta * block.fn(x))
    assert not torch.allclose(y, x + block.fn(x))  # the gate really changes y


def test_branch_arguments_are_passed_through():
    class Scaled(nn.Module):
        def forward(self, x, scale, *, shift=0.0):
            return x * scale + shift

    block = GatedResidual(Scaled(), 4)
    x = torch.randn(2, 4)
    assert torch.equal(block(x, 3.0, shift=1.0), x + (x * 3.0 + 1.0))


def test_branch_returning_wrong_type_is_rejected():
    class ReturnsTuple(nn.Module):  # e.g. an HF attention module: (output, weights)
        def forward(self, x):
            return x, None

    block = GatedResidual(ReturnsTuple(), 4)
    with pytest.raises(TypeError, match="must return a Tensor"):
        block(torch.randn(2, 4))


def test_training_moves_curvature_and_projection():
    torch.manual_seed(0)
    block = GatedResidual(mlp(8), 8)
    opt = torch.optim.SGD(block.parameters(), lr=0.1)
    x, target = torch.randn(32, 8), torch.randn(32, 8)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(block(x), target).backward()
        opt.step()
    # c moves first (g gets no gradient while c == 0), then g follows.
    assert block.gate.curvature.abs().max() > 0
    assert block.gate.proj.weight.grad.abs().max() > 0


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    block = GatedResidual(nn.Sequential(nn.LayerNorm(16), mlp(16)), 16, init="random", init_curvature=0.5)
    x = torch.randn(4, 16, requires_grad=True)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    y_c = compiled(x)
    y_c.sum().backward()
    grad_c = x.grad.clone()
    x.grad = None
    y_e = block(x)
    y_e.sum().backward()
    torch.testing.assert_close(y_c, y_e)
    torch.testing.assert_close(grad_c, x.grad)


def test_torch_compile_inductor_fullgraph_matches_eager():
    torch.manual_seed(0)
    block = GatedResidual(mlp(8), 8, init="random", init_curvature=0.5)
    x = torch.randn(4, 8)
    compiled = torch.compile(block, fullgraph=True)
    torch.testing.assert_close(compiled(x), block(x))
