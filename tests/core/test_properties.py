"""Property-based tests (hypothesis) of the gate's math over random shapes, dtypes, ranks and c.

Properties: alpha * beta == 1 and exp(-|c|) <= alpha <= exp(|c|) within the dtype's rounding;
exact identity at c = 0; the fused op equal to the float64 formula, forward and backward;
finite gradients for finite inputs. Sized for CI: the whole file runs in well under 40 s.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vectorgate import VectorGate, gated_residual
from vectorgate.functional import exp_gated_residual

CI = settings(
    max_examples=40, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# Unit roundoff of each dtype: one rounding of a value to it is off by at most this, relatively.
EPS = {dt: torch.finfo(dt).eps / 2 for dt in DTYPES}


@st.composite
def gate_cases(draw, *, zero_curvature: bool = False):
    """A gate configuration, its curvature values and an input shape ``(..., dim)``."""
    dim = draw(st.integers(1, 24))
    lead = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))
    rank = draw(st.none() if dim == 1 else st.one_of(st.none(), st.integers(1, dim - 1)))  # low rank: below d
    mode = draw(st.sampled_from(["vector", "scalar"]))
    cap = draw(st.one_of(st.none(), st.floats(0.1, 6.0)))
    n_c = dim if mode == "vector" else 1
    limit = 0.99 * cap if cap is not None else 6.0
    c = [0.0] * n_c if zero_curvature else draw(
        st.lists(st.floats(-limit, limit, allow_subnormal=False), min_size=n_c, max_size=n_c)
    )
    return {
        "dim": dim,
        "shape": (*lead, dim),
        "kwargs": {"rank": rank, "curvature": mode, "max_curvature": cap, "init": "random"},
        "c": c,
        "dtype": draw(st.sampled_from(DTYPES)),
        "seed": draw(st.integers(0, 2**16)),
        "scale": draw(st.sampled_from([1e-3, 1.0, 30.0])),
    }


def _build(case) -> tuple[VectorGate, torch.Tensor, torch.Tensor]:
    torch.manual_seed(case["seed"])
    gate = VectorGate(case["dim"], dtype=case["dtype"], **case["kwargs"])
    c = torch.tensor(case["c"], dtype=torch.float64)
    cap = case["kwargs"]["max_curvature"]
    raw = c if cap is None else cap * torch.atanh(c / cap)  # so effective_curvature() == c
    with torch.no_grad():
        gate.curvature.copy_(raw)
    x = (torch.randn(case["shape"], dtype=torch.float64) * case["scale"]).to(case["dtype"])
    f_x = torch.randn(case["shape"], dtype=torch.float64).to(case["dtype"])
    return gate, x, f_x


@CI
@given(gate_cases())
def test_gates_are_reciprocal_and_bounded(case):
    gate, x, _ = _build(case)
    alpha, beta, s = gate(x)
    assert alpha.dtype == beta.dtype == s.dtype == x.dtype
    assert alpha.shape == beta.shape == s.shape == x.shape
    a, b = alpha.double(), beta.double()
    eps = EPS[x.dtype]
    # alpha and beta are exact reciprocals in float32, each then rounded once to x's dtype.
    assert ((a * b - 1).abs() <= 3 * eps).all()
    bound = gate.effective_curvature().detach().double().abs()
    assert (s.double().abs() <= bound * (1 + 2 * eps) + 1e-12).all()
    assert (a <= torch.exp(bound) * (1 + 3 * eps)).all()
    assert (a >= torch.exp(-bound) * (1 - 3 * eps)).all()
    assert torch.isfinite(a).all() and torch.isfinite(b).all()


@CI
@given(gate_cases(zero_curvature=True))
def test_identity_at_zero_curvature_is_exact(case):
    gate, x, f_x = _build(case)
    alpha, beta, s = gate(x)
    assert torch.equal(alpha, torch.ones_like(x))
    assert torch.equal(beta, torch.ones_like(x))
    assert not s.any()
    assert torch.equal(gate.residual(x, f_x), x + f_x)
    assert torch.equal(x + gate.residual_delta(x, f_x), x + f_x)


def _reference(x, f_x, z, c):
    """The formula, written naively in float64: the ground truth for the fused op."""
    s = c * torch.tanh(z)
    return torch.exp(s) * x + torch.exp(-s) * f_x


def _error_scales(grad_y, x, f_x, z, c):
    """Float64 sums of the absolute values of the terms behind y, dx, df, dz and dc.

    A rounding error is relative to the size of the terms summed, not to the (possibly
    cancelled) result; these are those sizes, same shapes as y, x, f_x, z and c.
    """
    t = torch.tanh(z)
    a, b = torch.exp(c * t), torch.exp(-c * t)
    g = grad_y.abs()
    terms = a * x.abs() + b * f_x.abs()
    ds = g * terms
    dc = (ds * t.abs()).reshape(-1, x.shape[-1]).sum(0)
    return terms, g * a, g * b, ds * c.abs(), dc.sum().reshape(1) if c.numel() == 1 else dc


@CI
@given(gate_cases(), st.booleans())
def test_fused_op_matches_float64_formula_forward_and_backward(case, delta):
    gate, x, f_x = _build(case)
    z = gate.pre_activation(x).detach()
    c = gate.effective_curvature().detach()
    inputs = [t.clone().requires_grad_(True) for t in (x, f_x, z, c)]
    y = exp_gated_residual(*inputs, delta=delta)
    assert y.dtype == x.dtype and y.shape == x.shape

    ref_inputs = [t.detach().double().requires_grad_(True) for t in (x, f_x, z, c)]
    y_ref = _reference(*ref_inputs)
    if delta:
        y_ref = y_ref - ref_inputs[0]
    grad_y = torch.randn(x.shape, dtype=torch.float64).to(y.dtype)
    y.backward(grad_y)
    y_ref.backward(grad_y.double())

    # The op computes in float32 (float64 for float64): exp(s) of |s| <= |c| is then off by
    # about (|c| + 2) roundings; the result is rounded once more to the output dtype.
    compute_eps = EPS[torch.float64 if x.dtype == torch.float64 else torch.float32]
    slack = 4 * (float(c.abs().max()) + 4) * compute_eps
    scales = _error_scales(grad_y.double(), *(t.detach() for t in ref_inputs))
    got_all = [y, *(t.grad for t in inputs)]
    ref_all = [y_ref.detach(), *(t.grad for t in ref_inputs)]
    names = ["y", "dx", "df_x", "dz", "dc"]
    for name, got, ref, scale, inp in zip(names, got_all, ref_all, scales, [x, *inputs], strict=True):
        assert got is not None and got.dtype == inp.dtype and got.shape == inp.shape, name
        err = (got.double() - ref).abs()
        # y's sum also holds x itself when delta=True (y - x): count it in the scale.
        size = scale + ref_inputs[0].detach().abs() if name == "y" else scale
        allowed = slack * size + 2 * EPS[got.dtype] * ref.abs()
        # Below the smallest normal of the compute or output dtype, precision is absolute.
        underflow = max(1e4 * torch.finfo(torch.float32).tiny, torch.finfo(got.dtype).smallest_normal)
        # A true value beyond the dtype's range correctly rounds to +-Inf (e.g. fp16 dc).
        fits = ref.abs() < torch.finfo(got.dtype).max * (1 - EPS[got.dtype])
        assert torch.isfinite(got[fits]).all(), name
        assert torch.equal(got[~fits].double(), ref[~fits].sign() * math.inf), name
        assert (err[fits] <= allowed[fits] + underflow).all(), f"{name}: max error {err.max():.3g} > allowed"


def _absmax(t: torch.Tensor) -> float:
    return float(t.detach().abs().max()) if t.numel() else 0.0


def _block_grads(gate, branch, x, f_x, amp_dtype):
    x = x.detach().clone().requires_grad_(True)
    for p in (*gate.parameters(), *branch.parameters()):
        p.grad = None
    with torch.autocast("cpu", dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        y = gate.residual(x, branch(x) + f_x)
    y.float().square().mean().backward()
    named = [("x", x), *gate.named_parameters(), *branch.named_parameters()]
    return y, {name: p.grad for name, p in named}


@CI
@given(gate_cases())
def test_gradients_of_a_gated_block_are_finite(case):
    # Parameters in float32 (float64) as in mixed-precision training; half precision enters
    # through autocast. (Pure-fp16 parameters can receive gradients beyond 65504: that is
    # what loss scaling and fp32 master weights exist for, not a property of the gate.)
    amp_dtype = case["dtype"] if case["dtype"] in (torch.float16, torch.bfloat16) else None
    case = {**case, "dtype": torch.float64 if case["dtype"] == torch.float64 else torch.float32}
    gate, x, f_x = _build(case)
    branch = torch.nn.Linear(case["dim"], case["dim"], dtype=case["dtype"])
    y, grads = _block_grads(gate, branch, x, f_x, None)
    if amp_dtype == torch.float16:
        # fp16 activations and gradients hold |v| < 65504; keep to cases whose exact values
        # (with headroom for the matmuls' partial sums) fit, as a GradScaler would.
        peak = max(_absmax(t) for t in (y, *grads.values()))
        assume(peak * max(1.0, _absmax(x)) < 1e3)
        y, grads = _block_grads(gate, branch, x, f_x, amp_dtype)
    elif amp_dtype is not None:
        y, grads = _block_grads(gate, branch, x, f_x, amp_dtype)
    assert torch.isfinite(y).all()
    for name, grad in grads.items():
        assert grad is not None and torch.isfinite(grad).all(), name


@CI
@given(gate_cases())
def test_gated_residual_with_the_gates_equals_the_fused_op(case):
    gate, x, f_x = _build(case)
    alpha, beta, _ = gate(x)
    unfused = gated_residual(x, f_x, alpha, beta)
    fused = gate.residual(x, f_x)
    # Unfused rounds alpha, beta and each product to x's dtype; fused rounds once.
    scale = alpha.double().abs() * x.double().abs() + beta.double().abs() * f_x.double().abs()
    assert ((unfused.double() - fused.double()).abs() <= 6 * EPS[x.dtype] * scale + 1e-30).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@given(c=st.floats(0.0, 8.0), seed=st.integers(0, 2**16))
@CI
def test_half_precision_output_is_finite_while_exp_c_fits(dtype, c, seed):
    torch.manual_seed(seed)
    gate = VectorGate(16, init="random", init_curvature=c, dtype=dtype)
    x = torch.randn(8, 16, dtype=dtype)
    f_x = torch.randn(8, 16, dtype=dtype)
    # |y| <= e^|c| (|x| + |f_x|): representable as long as that product is.
    assume(math.exp(c) * float(x.abs().max() + f_x.abs().max()) < torch.finfo(dtype).max)
    y = gate.residual(x, f_x)
    alpha, beta, _ = gate(x)
    assert torch.isfinite(y).all()
    assert torch.isfinite(alpha).all() and torch.isfinite(beta).all()
