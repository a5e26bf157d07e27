"""Residual variants: one interface, forward/backward, identity at init, their formulas, errors."""

from __future__ import annotations

import pytest
import torch

from vectorgate.base import ResidualGate
from vectorgate.variants import VARIANTS, build_gate, register_variant

DIM = 8
# A registered stream-expanding variant is not an (x, f) -> y gate (Hyper-Connections / mHC are
# lab peers, not in VARIANTS: tests/lab/test_peers_hyper.py).
STREAM = {name for name, factory in VARIANTS.items() if getattr(factory, "expands_stream", False)}
ALL = sorted(set(VARIANTS) - STREAM)
# Variants that are exactly the plain residual x + f at init.
IDENTITY_AT_INIT = ["plain", "vectorgate", "vectorgate_scalar", "vectorgate_lowrank", "laurel_lr"]
EXPECTED_PARAMS = {
    "plain": 0,
    "vectorgate": DIM * DIM + 2 * DIM,
    "vectorgate_scalar": DIM * DIM + DIM + 1,
    "vectorgate_lowrank": DIM * DIM + 2 * DIM,  # rank 16 >= d here: g is full rank
    "highway": DIM * DIM + DIM,
    "rezero": 1,
    "layerscale": DIM,
    "gateskip": DIM * DIM + DIM,
    "mod_router": DIM + 1,
    "laurel_rw": 2,
    "laurel_lr": 2 * DIM * DIM,  # rank min(16, d) = d here
    "laurel_rw_lr": 2 * DIM * DIM + 2,
}


def _pair(seed: int = 0, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 5, DIM, generator=g, dtype=dtype), torch.randn(3, 5, DIM, generator=g, dtype=dtype)


def _moved(gate: ResidualGate) -> ResidualGate:
    """The gate with every parameter perturbed, so no variant sits at a special point."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in gate.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return gate


def test_every_documented_variant_is_registered():
    assert set(EXPECTED_PARAMS) <= set(VARIANTS)
    # Other modules may register more (the lab's bench registers its naive reference gate
    # for a while); nothing else may appear undocumented.
    assert set(VARIANTS) - set(EXPECTED_PARAMS) - STREAM <= {"vectorgate_naive"}
    assert not {"hc", "hc_dynamic", "mhc"} & set(VARIANTS)  # lab-only peers since 0.6


@pytest.mark.parametrize("name", ALL)
def test_build_gate_gives_a_residual_gate_with_stated_parameter_count(name):
    gate = build_gate(name, DIM)
    assert isinstance(gate, ResidualGate)
    assert gate.dim == DIM
    assert sum(p.numel() for p in gate.parameters()) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_shapes_and_gradients(name):
    gate = _moved(build_gate(name, DIM))
    x, f = _pair()
    x.requires_grad_(True)
    f.requires_grad_(True)
    y = gate.residual(x, f)
    assert y.shape == x.shape and y.dtype == x.dtype
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    for pname, p in gate.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}.{pname} got no gradient"


@pytest.mark.parametrize("name", ALL)
def test_residual_delta_is_residual_minus_x(name):
    gate = _moved(build_gate(name, DIM))
    x, f = _pair(2)
    torch.testing.assert_close(x + gate.residual_delta(x, f), gate.residual(x, f))


@pytest.mark.parametrize("name", IDENTITY_AT_INIT)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_identity_at_init_is_bit_exact(name, dtype):
    gate = build_gate(name, DIM).to(dtype)
    x, f = _pair(3, dtype)
    assert torch.equal(gate.residual(x, f), x + f)
    assert torch.equal(gate.residual_delta(x, f), f)


def test_rezero_is_the_identity_map_at_init():
    x, f = _pair(4)
    gate = build_gate("rezero", DIM)
    assert torch.equal(gate.residual(x, f), x)
    assert torch.equal(gate.residual_delta(x, f), torch.zeros_like(f))


@pytest.mark.parametrize("init", [0.1, 1e-5])
def test_layerscale_scales_the_branch_per_dimension(init):
    x, f = _pair(5)
    gate = build_gate("layerscale", DIM, init=init)
    assert torch.equal(gate.residual_delta(x, f), gate.scale * f)
    with torch.no_grad():
        gate.scale.copy_(torch.arange(DIM, dtype=torch.float32))
    torch.testing.assert_close(gate.residual(x, f), x + torch.arange(DIM) * f)


def test_highway_is_a_convex_mix_that_starts_mostly_carrying():
    x, f = _pair(6)
    gate = build_gate("highway", DIM, carry_bias=2.0)
    t = torch.sigmoid(gate.proj(x))
    torch.testing.assert_close(gate.residual(x, f), t * f + (1 - t) * x)
    assert torch.equal(gate.proj.bias, torch.full((DIM,), -2.0))
    # carry bias 2 on a fresh gate: the transform gate averages well under one half
    assert t.mean() < 0.3


def test_gateskip_gates_the_branch_from_the_branch():
    x, f = _pair(7)
    gate = _moved(build_gate("gateskip", DIM))
    torch.testing.assert_close(gate.residual(x, f), x + torch.sigmoid(gate.proj(f)) * f)
    # a large bias opens the gate: the plain residual up to sigmoid's saturation
    wide = build_gate("gateskip", DIM, init_bias=30.0)
    torch.testing.assert_close(wide.residual(x, f), x + f)


def test_vectorgate_variants_keep_their_configuration():
    assert build_gate("vectorgate_scalar", DIM).curvature.numel() == 1
    low = build_gate("vectorgate_lowrank", 32, rank=4)
    assert low.rank == 4 and low.proj.down.weight.shape == (4, 32)
    assert build_gate("vectorgate", DIM, init_curvature=0.5).curvature.eq(0.5).all()


@pytest.mark.parametrize("name", ALL)
def test_torch_compile_fullgraph_matches_eager(name):
    gate = _moved(build_gate(name, DIM))
    x, f = _pair(8)
    compiled = torch.compile(gate.residual, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, f), gate.residual(x, f))


@pytest.mark.parametrize("name", ALL)
def test_bad_inputs_get_clear_errors(name):
    gate = build_gate(name, DIM)
    x, f = _pair(9)
    with pytest.raises(ValueError, match=str(DIM)):
        gate.residual(x[..., :-1], f[..., :-1])
    with pytest.raises(ValueError, match="shape"):
        gate.residual(x, f[:1])
    with pytest.raises(TypeError, match="float"):
        gate.residual(x.long(), f)


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown variant 'nope'.*plain"):
        build_gate("nope", DIM)
    with pytest.raises(TypeError, match="'rezero' does not accept"):
        build_gate("rezero", DIM, rank=4)
    with pytest.raises(ValueError, match="already registered"):
        register_variant("plain", VARIANTS["plain"])
    with pytest.raises(ValueError, match="dim"):
        build_gate("layerscale", 0)


def test_a_registered_variant_builds_by_name():
    name = "test_half_residual"
    register_variant(name, lambda dim, **kw: build_gate("layerscale", dim, init=0.5, **kw))
    try:
        x, f = _pair(10)
        torch.testing.assert_close(build_gate(name, DIM).residual(x, f), x + 0.5 * f)
    finally:
        del VARIANTS[name]


@pytest.mark.parametrize("name", ALL)
def test_patch_accepts_every_variant(name):
    transformers = pytest.importorskip("transformers")
    from vectorgate.patching import gates, patch

    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, 50, (2, 6))
    before = model(input_ids=ids).last_hidden_state
    patch(model, variant=name)
    found = list(gates(model))
    assert len(found) == 4 and all(type(g) is type(build_gate(name, 16)) for _, g in found)
    after = model(input_ids=ids).last_hidden_state
    if name in IDENTITY_AT_INIT:
        assert torch.equal(after, before)
    else:
        assert not torch.equal(after, before)
    after.sum().backward()
    assert all(p.grad is not None for _, g in found for p in g.parameters())


@pytest.mark.parametrize(("name", "c", "identity"), [("default", 1.0, True), ("v0.1", 0.0, True),
                                                    ("from_scratch", 0.5, False)])
def test_presets_build_gates_and_patch(name, c, identity):
    from vectorgate.presets import preset

    kwargs = preset(name)
    gate = build_gate("vectorgate", DIM, **kwargs)
    assert torch.equal(gate.effective_curvature(), torch.full((DIM,), c))
    x, f = _pair(11)
    if identity:
        assert torch.equal(gate.residual(x, f), x + f)
    else:
        assert not torch.equal(gate.residual(x, f), x + f)
    kwargs["init_curvature"] = 9.0  # a copy: the preset itself is unchanged
    assert "init_curvature" not in preset(name) or preset(name)["init_curvature"] == c


def test_unknown_preset_lists_the_known_ones():
    from vectorgate.presets import preset

    with pytest.raises(ValueError, match=r"unknown preset 'fast'.*from_scratch"):
        preset("fast")
