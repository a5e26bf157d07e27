"""VectorGate: identity at init, bounds, parameter counts, dtypes, state dicts."""

from __future__ import annotations

import math

import pytest
import torch

from vectorgate import GateOutput, VectorGate

SHAPES = [(8,), (3, 8), (2, 5, 8), (2, 3, 4, 8)]
GATE_CONFIGS = [
    {},
    {"rank": 2},
    {"curvature": "scalar"},
    {"rank": 3, "curvature": "scalar", "bias": False},
    {"max_curvature": 2.0},
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("config", GATE_CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_identity_at_init_is_bit_exact(shape, config, dtype):
    torch.manual_seed(0)
    gate = VectorGate(8, dtype=dtype, **config)
    x = torch.randn(shape, dtype=dtype) * 10
    f_x = torch.randn(shape, dtype=dtype)
    alpha, beta, s = gate(x)
    assert torch.equal(alpha, torch.ones_like(x))
    assert torch.equal(beta, torch.ones_like(x))
    assert torch.equal(s.abs(), torch.zeros_like(x))
    assert torch.equal(gate.residual(x, f_x), x + f_x)
    assert torch.equal(x + gate.residual_delta(x, f_x), x + f_x)


@pytest.mark.parametrize("config", GATE_CONFIGS, ids=str)
@pytest.mark.parametrize("init_curvature", [0.3, -1.5])
def test_gates_are_reciprocal_and_bounded(config, init_curvature):
    torch.manual_seed(1)
    gate = VectorGate(16, init="random", init_curvature=init_curvature, **config)
    with torch.no_grad():  # spread c so each dimension has its own bound
        gate.curvature.mul_(torch.linspace(0.1, 1.0, gate.curvature.numel()))
    x = torch.randn(64, 16) * 5
    alpha, beta, s = gate(x)
    bound = gate.effective_curvature().abs().detach()
    torch.testing.assert_close(alpha * beta, torch.ones_like(alpha))
    assert (s.abs() <= bound + 1e-6).all()
    assert (alpha >= torch.exp(-bound) * (1 - 1e-6)).all()
    assert (alpha <= torch.exp(bound) * (1 + 1e-6)).all()
    assert s.abs().max() > 0.5 * bound.min()  # the gate is really active


def test_forward_returns_named_tuple_with_input_shape_and_dtype():
    gate = VectorGate(6, init="random", init_curvature=0.5, dtype=torch.float64)
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    out = gate(x)
    assert isinstance(out, GateOutput)
    assert out._fields == ("alpha", "beta", "s")
    for t in out:
        assert t.shape == x.shape and t.dtype == x.dtype
    torch.testing.assert_close(out.alpha, torch.exp(out.s))
    torch.testing.assert_close(out.s, gate.curvature * torch.tanh(gate.proj(x)))


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, 64 * 64 + 64 + 64),
        ({"bias": False}, 64 * 64 + 64),
        ({"rank": 8}, 64 * 8 + 8 * 64 + 64 + 64),
        ({"curvature": "scalar"}, 64 * 64 + 64 + 1),
        ({"rank": 4, "curvature": "scalar", "bias": False}, 2 * 64 * 4 + 1),
    ],
    ids=str,
)
def test_parameter_counts(config, expected):
    gate = VectorGate(64, **config)
    assert gate.num_parameters == expected
    assert sum(p.numel() for p in gate.parameters()) == expected
    assert gate.curvature.shape == ((1,) if config.get("curvature") == "scalar" else (64,))


def test_no_parameter_is_named_gamma_or_beta():
    # transformers' from_pretrained renames keys containing gamma/beta and drops them.
    for config in GATE_CONFIGS:
        for name, _ in VectorGate(4, **config).named_parameters():
            leaf = name.split(".")[-1]
            assert leaf not in ("gamma", "beta"), name


def test_soft_cap_keeps_effective_curvature_below_cap_and_init_exact():
    gate = VectorGate(4, init="random", init_curvature=1.5, max_curvature=2.0)
    torch.testing.assert_close(gate.effective_curvature().detach(), torch.full((4,), 1.5))
    with torch.no_grad():
        gate.curvature.fill_(1e4)
    c = gate.effective_curvature()
    assert (c <= 2.0).all() and (c > 1.99).all()
    c.sum().backward()  # gradient flows through the cap
    assert gate.curvature.grad is not None and torch.isfinite(gate.curvature.grad).all()


def test_reset_parameters_restores_init_curvature():
    gate = VectorGate(5, init="random", init_curvature=0.25)
    with torch.no_grad():
        gate.curvature.fill_(3.0)
        gate.proj.weight.zero_()
    gate.reset_parameters()
    assert torch.equal(gate.curvature.detach(), torch.full((5,), 0.25))
    assert gate.proj.weight.abs().sum() > 0


def test_extra_repr_names_the_configuration():
    text = repr(VectorGate(32, rank=4, curvature="scalar", max_curvature=3.0))
    for piece in ("dim=32", "rank=4", "curvature=scalar", "max_curvature=3", "params="):
        assert piece in text


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a = VectorGate(12, rank=3, init="random", init_curvature=0.7)
    b = VectorGate(12, rank=3)
    missing, unexpected = b.load_state_dict(a.state_dict())
    assert not missing and not unexpected
    x = torch.randn(4, 12)
    for ta, tb in zip(a(x), b(x), strict=True):
        assert torch.equal(ta, tb)
    assert set(a.state_dict()) == {"proj.down.weight", "proj.up.weight", "proj.up.bias", "curvature"}


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_autocast_computes_gates_in_float32(amp_dtype):
    torch.manual_seed(0)
    gate = VectorGate(16, init="random", init_curvature=4.0)
    x = torch.randn(8, 16) * 50
    with torch.autocast("cpu", dtype=amp_dtype):
        z = gate.proj(x)
        alpha, beta, s = gate(x)
        y = gate.residual(x, torch.randn(8, 16))
    assert z.dtype == amp_dtype  # the projection itself runs in low precision
    assert alpha.dtype == beta.dtype == s.dtype == torch.float32  # returned in x's dtype
    for t in (alpha, beta, s, y):
        assert torch.isfinite(t).all()
    # exp was evaluated in float32 from the low-precision z, not in low precision
    expected = torch.exp(gate.curvature.detach() * torch.tanh(z.float()))
    torch.testing.assert_close(alpha, expected, rtol=1e-6, atol=0)


def test_low_precision_parameters_give_finite_gates():
    gate = VectorGate(16, init="random", init_curvature=5.0, dtype=torch.float16)
    x = torch.randn(4, 16, dtype=torch.float16) * 100
    alpha, beta, _ = gate(x)
    assert alpha.dtype == torch.float16
    assert torch.isfinite(alpha).all() and torch.isfinite(beta).all()
    assert alpha.max() <= math.exp(5.0) * 1.01


def test_meta_device_construction_has_no_storage():
    gate = VectorGate(1024, device="meta")
    assert gate.curvature.is_meta and gate.proj.weight.is_meta
