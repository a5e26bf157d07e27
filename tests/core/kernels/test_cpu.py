"""The default CPU path (kernels/cpu_eager.py) against the reference, through the op.

Every case of the shared kernel case list (odd sizes, bf16/fp16, mixed dtypes as under
autocast, non-contiguous inputs, shared c, delta, saturated tanh, empty inputs) runs forward
and backward through :func:`exp_gated_residual` on the CPU, once by the default rule and once
with ``VECTORGATE_FORCE_REFERENCE=1``, with the tolerances the Triton kernels are held to.
"""

from __future__ import annotations

import pytest
import torch

from vectorgate.functional import exp_gated_residual
from vectorgate.kernels import dispatch
from vectorgate_lab.bench.kernel_check import CASES, Case, make_inputs, problems


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("VECTORGATE_FORCE_REFERENCE", raising=False)
    monkeypatch.delenv("VECTORGATE_CPU_COMPILE", raising=False)


def _through_op(case: Case, monkeypatch, force_reference: bool, seed: int = 0) -> tuple[torch.Tensor, ...]:
    dy, *inputs = make_inputs(case, seed)
    leaves = [t.detach().requires_grad_() for t in inputs]
    if force_reference:
        monkeypatch.setenv("VECTORGATE_FORCE_REFERENCE", "1")
    assert dispatch.backend(dy, *leaves) == ("reference" if force_reference else "cpu_eager")
    y = exp_gated_residual(*leaves, delta=case.delta)
    y.backward(dy)
    monkeypatch.delenv("VECTORGATE_FORCE_REFERENCE", raising=False)
    return y.detach(), *(t.grad for t in leaves)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cpu_eager_matches_reference(case: Case, monkeypatch) -> None:
    got = _through_op(case, monkeypatch, False)
    ref = _through_op(case, monkeypatch, True)
    assert problems(got, ref) == []


def test_backward_uses_what_forward_kept(monkeypatch) -> None:
    # Forward on the default path keeps exp(s); a backward run after the environment changed
    # must still use it (and give the reference's gradients), not mix the two paths.
    dy, *inputs = make_inputs(Case((6, 33), delta=True), 1)
    leaves = [t.detach().requires_grad_() for t in inputs]
    y = exp_gated_residual(*leaves, delta=True)
    monkeypatch.setenv("VECTORGATE_FORCE_REFERENCE", "1")
    y.backward(dy)
    got = (y.detach(), *(t.grad for t in leaves))
    ref = _through_op(Case((6, 33), delta=True), monkeypatch, True, seed=1)
    assert problems(got, ref) == []


def test_expanded_grad_is_not_copied_and_still_right() -> None:
    # y.sum().backward() hands the op a stride-0 gradient; the CPU path reads it as it is.
    x, f_x, z = (torch.randn(5, 9, requires_grad=True) for _ in range(3))
    c = torch.full((9,), 0.4, requires_grad=True)
    exp_gated_residual(x, f_x, z, c).sum().backward()
    s = c.detach() * torch.tanh(z.detach())
    torch.testing.assert_close(x.grad, torch.exp(s))
    torch.testing.assert_close(f_x.grad, torch.exp(-s))


def test_compiled_graph_with_the_cpu_path_matches_eager() -> None:
    # The op's fake implementation must promise the extra output the CPU path returns.
    from vectorgate import GatedResidual

    torch.manual_seed(0)
    block = GatedResidual(torch.nn.Linear(16, 16), 16, init_curvature=0.3)
    x = torch.randn(3, 16)
    block(x).square().sum().backward()
    eager = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    torch.compile(block, backend="aot_eager", fullgraph=True)(x).square().sum().backward()
    for p, g in zip(block.parameters(), eager, strict=True):
        torch.testing.assert_close(p.grad, g)
