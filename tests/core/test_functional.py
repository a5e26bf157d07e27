"""gated_residual and the fused exp_gated_residual op: values, gradients, dtypes."""

from __future__ import annotations

import pytest
import torch

from vectorgate import gated_residual
from vectorgate.functional import exp_gated_residual
from vectorgate.kernels import reference


def naive(x, f_x, z, c, delta=False):
    s = c * torch.tanh(z)
    return torch.exp(s) * x + torch.exp(-s) * f_x - (x if delta else 0)


def make_inputs(shape, dtype, c_size=None, scale=1.0, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = shape[-1]
    x, f_x, z = (torch.randn(shape, generator=g, dtype=dtype) for _ in range(3))
    c = torch.randn(c_size or d, generator=g, dtype=dtype) * scale
    tensors = [x, f_x, z, c]
    if requires_grad:
        tensors = [t.requires_grad_() for t in tensors]
    return tensors


@pytest.mark.parametrize("shape", [(1,), (7,), (4, 7), (2, 3, 33), (2, 2, 2, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shared_c", [False, True])
@pytest.mark.parametrize("delta", [False, True])
def test_fused_forward_equals_formula(shape, dtype, shared_c, delta):
    x, f_x, z, c = make_inputs(shape, dtype, c_size=1 if shared_c else None, scale=2.0)
    y = exp_gated_residual(x, f_x, z, c, delta=delta)
    assert y.shape == x.shape and y.dtype == dtype
    torch.testing.assert_close(y, naive(x, f_x, z, c, delta))


@pytest.mark.parametrize("shape", [(5,), (3, 6), (2, 2, 4)])
@pytest.mark.parametrize("shared_c", [False, True])
@pytest.mark.parametrize("delta", [False, True])
def test_fused_op_passes_gradcheck(shape, shared_c, delta):
    inputs = make_inputs(shape, torch.float64, c_size=1 if shared_c else None, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, f, z, c: exp_gated_residual(x, f, z, c, delta=delta), inputs
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_gradients_equal_autograd_of_formula(dtype):
    inputs = make_inputs((3, 4, 9), dtype, scale=1.5, requires_grad=True)
    grad_y = torch.randn(3, 4, 9, dtype=dtype)
    fused = torch.autograd.grad(exp_gated_residual(*inputs), inputs, grad_y)
    expected = torch.autograd.grad(naive(*inputs), inputs, grad_y)
    for got, want in zip(fused, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_only_the_needed_gradients_are_returned():
    x, f_x, z, c = make_inputs((4, 6), torch.float32)
    z.requires_grad_()
    exp_gated_residual(x, f_x, z, c).sum().backward()
    assert z.grad is not None and x.grad is None and c.grad is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("delta", [False, True])
def test_backward_saves_at_most_one_tensor_beyond_the_inputs(dtype, delta):
    # The rule of issue 13: the op's inputs and at most one more tensor of x's size (the CPU
    # path keeps exp(s)), never the three the naive formula keeps.
    x, f_x, z, c = make_inputs((16, 8), dtype, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        exp_gated_residual(x, f_x, z, c, delta=delta)
    extra = [t for t in saved if not any(t is s for s in (x, f_x, z, c))]
    assert len([t for t in extra if t.numel() == x.numel()]) <= 1
    assert sum(t.numel() for t in extra) <= x.numel()


def test_cpu_path_keeps_exp_s():
    x, f_x, z, c = make_inputs((16, 8), torch.float32, scale=0.7, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        exp_gated_residual(x, f_x, z, c)
    extra = [t for t in saved if not any(t is s for s in (x, f_x, z, c))]
    assert len(extra) == 1 and extra[0].dtype == torch.float32
    torch.testing.assert_close(extra[0], torch.exp(c * torch.tanh(z)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("delta", [False, True])
def test_zero_curvature_is_exact_forward_and_backward(dtype, delta):
    # At c = 0 the op is the identity residual bit for bit: y = x + f_x (delta: f_x),
    # dx = dy (delta: 0), df_x = dy, dz = 0.
    x, f_x, z, _ = make_inputs((6, 10), dtype, requires_grad=True)
    c = torch.zeros(10, requires_grad=True)
    y = exp_gated_residual(x, f_x, z, c, delta=delta)
    expected = f_x if delta else x + f_x
    assert torch.equal(y, expected.detach())
    dy = torch.randn(6, 10).to(dtype)
    dx, df, dz = torch.autograd.grad(y, (x, f_x, z), dy)
    assert torch.equal(dx, torch.zeros_like(dy) if delta else dy)
    assert torch.equal(df, dy) and torch.equal(dz, torch.zeros_like(dz))


def test_mixed_dtypes_compute_in_float32_and_promote_output():
    # Under autocast the residual stream stays fp32 while f_x and z arrive in bf16.
    x = torch.randn(4, 8)
    f_x = torch.randn(4, 8).bfloat16()
    z = (torch.randn(4, 8) * 3).bfloat16()
    c = torch.full((8,), 2.0)
    y = exp_gated_residual(x, f_x, z, c)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, naive(x, f_x.float(), z.float(), c))
    y_low = exp_gated_residual(x.bfloat16(), f_x, z, c.bfloat16())
    assert y_low.dtype == torch.bfloat16


def test_non_contiguous_inputs_give_the_same_result():
    x, f_x, z, c = make_inputs((6, 10), torch.float32)
    xt, ft, zt = (t.t().contiguous().t() for t in (x, f_x, z))  # same values, transposed strides
    assert not xt.is_contiguous()
    torch.testing.assert_close(exp_gated_residual(xt, ft, zt, c), exp_gated_residual(x, f_x, z, c))
    sliced = torch.randn(6, 20)[:, ::2]
    torch.testing.assert_close(
        exp_gated_residual(sliced, f_x, z, c), naive(sliced, f_x, z, c)
    )


def test_reference_backward_reduces_shared_curvature_to_one_value():
    x, f_x, z, c = make_inputs((5, 4), torch.float64, c_size=1)
    grads = reference.exp_gated_residual_backward(torch.ones(5, 4, dtype=torch.float64), x, f_x, z, c)
    assert grads[3].shape == (1,)


@pytest.mark.parametrize(
    ("alpha_shape", "ok"), [((2, 3, 4), True), ((4,), True), ((3, 1), True), ((1, 1, 1, 4), False)]
)
def test_gated_residual_formula_and_broadcasting(alpha_shape, ok):
    x, f_x = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    alpha = torch.rand(alpha_shape) + 0.5
    beta = 1 / alpha
    if ok:
        torch.testing.assert_close(gated_residual(x, f_x, alpha, beta), alpha * x + beta * f_x)
    else:  # would silently enlarge the output: refused
        with pytest.raises(ValueError, match="broadcast"):
            gated_residual(x, f_x, alpha, beta)
