"""The Triton path on a real GPU: through the custom op, autograd and torch.compile.

Skipped without CUDA. Reuses the case list of ``test_kernels_triton.py`` (the same shapes and
dtypes the interpreter covers) and adds GPU-sized shapes.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from test_kernels_triton import CASES, IDS, NAMES, Case, _tolerance, make_inputs

from vectorgate import GatedResidual
from vectorgate.functional import exp_gated_residual
from vectorgate.kernels import dispatch

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
    reason="needs a CUDA GPU and triton",
)

BIG = [
    Case((4096, 1024), torch.bfloat16),
    Case((8, 512, 768), torch.bfloat16, delta=True),
    Case((1000, 4097), torch.float16, c_scalar=True),
    Case((2048, 1024), torch.float32, noncontiguous=True),
    Case((4096, 768), torch.float32, f_dtype=torch.bfloat16, z_dtype=torch.bfloat16),
]


def _through_op(case: Case, seed: int, force_reference: bool, monkeypatch) -> tuple[torch.Tensor, ...]:
    dy, *inputs = (t.cuda() for t in make_inputs(case, seed))
    leaves = [t.detach().requires_grad_() for t in inputs]
    if force_reference:
        monkeypatch.setenv("VECTORGATE_FORCE_REFERENCE", "1")
    else:
        monkeypatch.delenv("VECTORGATE_FORCE_REFERENCE", raising=False)
        assert dispatch.backend(dy, *leaves) == "triton"
    y = exp_gated_residual(*leaves, delta=case.delta)
    y.backward(dy)
    monkeypatch.delenv("VECTORGATE_FORCE_REFERENCE", raising=False)
    return y.detach(), *(t.grad for t in leaves)


@pytest.mark.parametrize("case", CASES + BIG, ids=IDS + [c.id for c in BIG])
def test_triton_op_matches_reference(case: Case, monkeypatch) -> None:
    got = _through_op(case, 0, False, monkeypatch)
    ref = _through_op(case, 0, True, monkeypatch)
    for name, g, r in zip(NAMES, got, ref, strict=True):
        assert g.dtype == r.dtype and g.shape == r.shape, name
        assert torch.isfinite(g).all(), f"{name} has non-finite values"
        torch.testing.assert_close(g, r, **_tolerance(g.dtype, r, name), msg=lambda m, n=name: f"{n}: {m}")


def test_dc_is_bitwise_deterministic() -> None:
    from vectorgate.kernels import triton_kernels

    dy, x, f_x, z, c = (t.cuda() for t in make_inputs(Case((32768, 1024), torch.bfloat16), 1))
    first = triton_kernels.backward(dy, x, f_x, z, c, False)[3]
    for _ in range(3):
        assert torch.equal(triton_kernels.backward(dy, x, f_x, z, c, False)[3], first)


def test_saves_only_inputs() -> None:
    # The op keeps x, f_x, z (and c) for backward and nothing else of x's size.
    x, f_x, z = (torch.randn(64, 256, device="cuda", requires_grad=True) for _ in range(3))
    c = torch.zeros(256, device="cuda", requires_grad=True)
    saved: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.data_ptr()) or t, lambda t: t):
        exp_gated_residual(x, f_x, z, c)
    assert set(saved) <= {x.data_ptr(), f_x.data_ptr(), z.data_ptr(), c.data_ptr()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compile_fullgraph_matches_eager(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    block = GatedResidual(torch.nn.Linear(128, 128), 128, init_curvature=0.3).cuda().to(dtype)
    x = torch.randn(4, 33, 128, device="cuda", dtype=dtype)
    compiled = torch.compile(block, fullgraph=True)
    eager_y = block(x)
    eager_y.float().square().sum().backward()
    eager_grads = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    compiled_y = compiled(x)
    compiled_y.float().square().sum().backward()
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(compiled_y, eager_y, **tol)
    for p, g in zip(block.parameters(), eager_grads, strict=True):
        torch.testing.assert_close(p.grad, g, **tol)


def test_autocast_bf16_on_cuda() -> None:
    torch.manual_seed(0)
    block = GatedResidual(torch.nn.Linear(64, 64), 64, init_curvature=0.3).cuda()
    x = torch.randn(8, 64, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = block(x)
    y.float().sum().backward()
    assert y.dtype == torch.float32
    assert torch.isfinite(x.grad).all() and torch.isfinite(block.gate.curvature.grad).all()
