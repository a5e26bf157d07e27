"""timm ViT integration: GatedBlock as block_fn, vectorgate.patch() on existing timm ViTs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("timm")
from timm.layers import RmsNorm, SwiGLU
from timm.models.vision_transformer import Block, VisionTransformer

from vectorgate import VectorGate
from vectorgate.base import ResidualGate
from vectorgate.integrations.timm import GatedBlock, gated_block_fn
from vectorgate.patching import (
    gates,
    load_gates,
    patch,
    patch_state,
    read_gate_config,
    save_gates,
    unpatch,
)
from vectorgate.variants import VARIANTS


def tiny_vit(**kwargs) -> VisionTransformer:
    cfg = dict(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=2, num_heads=4)
    cfg.update(kwargs)
    return VisionTransformer(**cfg)


BLOCK_OPTIONS = [
    pytest.param({}, id="default"),
    pytest.param({"init_values": 1e-5}, id="layerscale"),
    pytest.param({"norm_layer": RmsNorm}, id="rmsnorm"),
    pytest.param({"mlp_layer": SwiGLU, "mlp_ratio": 2.0}, id="swiglu"),
    pytest.param({"qk_norm": True, "init_values": 0.1}, id="qknorm-layerscale"),
]


@pytest.mark.parametrize("options", BLOCK_OPTIONS)
def test_patch_is_bit_exact_identity_at_init(options):
    torch.manual_seed(0)
    vit = tiny_vit(**options).eval()
    x = torch.randn(3, 1, 28, 28)
    expected = vit(x)
    patch(vit)
    assert patch_state(vit).family == "timm_vit"
    assert [n for n, _ in gates(vit)] == [f"blocks.{i}.gate{j}" for i in range(2) for j in (1, 2)]
    assert torch.equal(vit(x), expected)


def test_patch_identity_holds_in_training_mode_with_drop_path():
    torch.manual_seed(0)
    vit = tiny_vit(drop_path_rate=0.5, init_values=1e-3).train()
    x = torch.randn(8, 1, 28, 28)
    torch.manual_seed(1)
    expected = vit(x)
    patch(vit)
    torch.manual_seed(1)  # the same drop-path masks
    assert torch.equal(vit(x), expected)


def test_patch_keeps_weights_and_state_dict_keys():
    torch.manual_seed(0)
    vit = tiny_vit(init_values=1e-5)
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    qkv = vit.blocks[0].attn.qkv.weight
    patch(vit, rank=4)
    after = vit.state_dict()
    assert vit.blocks[0].attn.qkv.weight is qkv  # shared, not copied
    assert set(before) <= set(after)
    new_keys = set(after) - set(before)
    assert new_keys and all(".gate1." in k or ".gate2." in k for k in new_keys)
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    # An original checkpoint loads into the patched model; only gate keys are missing.
    missing, unexpected = vit.load_state_dict(before, strict=False)
    assert set(missing) == new_keys and not unexpected


@pytest.mark.parametrize("options", BLOCK_OPTIONS)
def test_block_fn_at_init_equals_timm_block_with_same_weights(options):
    torch.manual_seed(0)
    gated = GatedBlock(32, 4, **options).eval()
    plain = Block(32, 4, **options).eval()
    missing, unexpected = plain.load_state_dict(gated.state_dict(), strict=False)
    assert not missing and all(k.startswith(("gate1.", "gate2.")) for k in unexpected)
    x = torch.randn(2, 17, 32)
    assert torch.equal(gated(x), plain(x))


def test_block_fn_keeps_timm_options():
    vit = tiny_vit(block_fn=gated_block_fn(rank=4), init_values=1e-4, drop_path_rate=0.2,
                   mlp_layer=SwiGLU, norm_layer=RmsNorm)
    block = vit.blocks[-1]
    assert isinstance(block, GatedBlock)
    assert torch.allclose(block.ls1.gamma, torch.full((32,), 1e-4))
    assert block.drop_path2.drop_prob == pytest.approx(0.2)
    assert isinstance(block.norm1, RmsNorm) and isinstance(block.mlp, SwiGLU)
    assert isinstance(block.gate1, VectorGate) and block.gate1.rank == 4


def test_gate_init_survives_timm_weight_init():
    # timm's init re-initialises every nn.Linear; the block re-applies the gates' init.
    vit = tiny_vit(block_fn=gated_block_fn(init="random", init_curvature=0.25), weight_init="jax")
    for block in vit.blocks:
        assert torch.equal(block.gate1.curvature, torch.full((32,), 0.25))
    with torch.no_grad():
        vit.blocks[0].gate2.curvature.fill_(3.0)
    vit.init_weights(needs_reset=True)
    assert torch.equal(vit.blocks[0].gate2.curvature, torch.full((32,), 0.25))


def test_gated_block_takes_a_gate_config():
    import vectorgate

    config = vectorgate.GateConfig(variant="vectorgate", rank=4, init="random", init_curvature=0.3)
    block = GatedBlock(16, 2, config=config)
    assert block.gate1.rank == 4 and torch.equal(block.gate2.curvature, torch.full((16,), 0.3))
    with pytest.raises(TypeError, match="GateConfig or variant/gate_kwargs, not both"):
        GatedBlock(16, 2, config=config, gate_kwargs={"rank": 2})


def test_gated_block_computes_the_gated_residual():
    torch.manual_seed(0)
    block = GatedBlock(16, 2, init_values=0.5, gate_kwargs={"init": "random", "init_curvature": 0.7}).eval()
    x = torch.randn(2, 5, 16)
    f1 = block.ls1(block.attn(block.norm1(x)))
    a1, b1, _ = block.gate1(x)
    h = a1 * x + b1 * f1
    f2 = block.ls2(block.mlp(block.norm2(h)))
    a2, b2, _ = block.gate2(h)
    torch.testing.assert_close(block(x), a2 * h + b2 * f2, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(block(x), h + f2)  # the gates do something at c != 0


def test_training_moves_the_gates():
    torch.manual_seed(0)
    vit = patch(tiny_vit())
    opt = torch.optim.AdamW(vit.parameters(), lr=1e-2)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for _ in range(2):
        loss = nn.functional.cross_entropy(vit(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    c = vit.blocks[0].gate1.curvature
    assert c.grad is not None and torch.isfinite(c.grad).all()
    assert c.abs().max() > 0


def test_patch_errors_are_clear():
    with pytest.raises(ValueError, match="does not support"):
        patch(nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(ValueError, match="unknown variant"):
        patch(tiny_vit(), variant="no-such-gate")
    vit = patch(tiny_vit())
    with pytest.raises(ValueError, match="already patched"):
        patch(vit)
    # A ViT built with GatedBlock already has its gates: nothing for patch() to find.
    with pytest.raises(ValueError, match="does not support"):
        patch(tiny_vit(block_fn=gated_block_fn()))


def test_patch_selected_sites_and_layers_then_unpatch():
    torch.manual_seed(0)
    vit = tiny_vit(depth=3).eval()
    x = torch.randn(2, 1, 28, 28)
    expected = vit(x)
    keys = set(vit.state_dict())
    patch(vit, sites=("mlp",), layers=[-1], init="random", init_curvature=0.5)
    assert [n for n, _ in gates(vit)] == ["blocks.2.gate2"]
    assert not torch.allclose(vit(x), expected)
    unpatch(vit)
    assert set(vit.state_dict()) == keys
    assert torch.equal(vit(x), expected)


def test_patched_gates_load_into_a_block_fn_model_and_back(tmp_path):
    # patch() and block_fn name the gates alike, so trained gates move between the two.
    torch.manual_seed(0)
    patched = patch(tiny_vit(init_values=0.1), init="random", init_curvature=0.3, rank=4).eval()
    with torch.no_grad():
        for _, g in gates(patched):
            g.curvature.uniform_(-1, 1)
    # patch() caps c for the depth it gates (2 blocks x 2 sites); the blocks are built alike
    built = tiny_vit(init_values=0.1, block_fn=gated_block_fn(rank=4, depth=4)).eval()
    built.load_state_dict(patched.state_dict())
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(built(x), patched(x), rtol=0, atol=0)
    # save_gates / load_gates onto a fresh copy of the base model
    save_gates(patched, tmp_path)
    fresh = tiny_vit(init_values=0.1).eval()
    fresh.load_state_dict({k: v for k, v in patched.state_dict().items() if ".gate" not in k})
    load_gates(fresh, tmp_path)
    assert torch.equal(fresh(x), patched(x))


class ScaledResidual(ResidualGate):
    """A stand-in peer variant: y = x + w * f with one learnable scalar w (init 0.5)."""

    def __init__(self, dim: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.full((1,), 0.5, device=device, dtype=dtype))

    def residual(self, x, f_x):
        return x + self.weight * f_x


def test_peer_variants_plug_in_by_name(monkeypatch):
    monkeypatch.setitem(VARIANTS, "scaled", ScaledResidual)
    torch.manual_seed(0)
    block = GatedBlock(16, 2, variant="scaled").eval()
    assert isinstance(block.gate1, ScaledResidual) and isinstance(block.gate2, ScaledResidual)
    x = torch.randn(2, 5, 16)
    h = x + 0.5 * block.attn(block.norm1(x))
    torch.testing.assert_close(block(x), h + 0.5 * block.mlp(block.norm2(h)))
    vit = patch(tiny_vit(), variant="scaled")
    assert all(isinstance(g, ScaledResidual) for _, g in gates(vit))


def _live(model) -> None:
    """Move every gate away from its init, as training would."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, gate in gates(model):
            for p in gate.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=g))


def test_a_block_fn_model_saves_its_gates_and_they_load_into_a_plain_vit(tmp_path):
    torch.manual_seed(0)
    built = tiny_vit(init_values=0.1, block_fn=gated_block_fn(rank=4)).eval()
    _live(built)
    save_gates(built, tmp_path)
    saved = read_gate_config(tmp_path)
    assert saved.config.family == "timm_vit" and saved.config.sites == ("attention", "mlp")
    assert saved.config.layers == (0, 1) and saved.config.gate_kwargs == {"rank": 4}
    assert saved.layer_names == ["blocks.0", "blocks.1"] and saved.num_layers == 2

    plain = tiny_vit(init_values=0.1).eval()
    plain.load_state_dict({k: v for k, v in built.state_dict().items() if ".gate" not in k})
    load_gates(plain, tmp_path)  # patched as the blocks were built, gates loaded
    assert patch_state(plain).config.gate_kwargs == {"rank": 4}
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(plain(x), built(x))


def test_patched_gates_load_into_a_fresh_block_fn_model(tmp_path):
    torch.manual_seed(0)
    patched = patch(tiny_vit(init_values=0.1), rank=4, init="random", init_curvature=0.3).eval()
    _live(patched)
    save_gates(patched, tmp_path)
    # patch() caps c for the depth it gates (4 sites); blocks built to match name that depth
    built = tiny_vit(init_values=0.1, block_fn=gated_block_fn(rank=4, depth=4)).eval()
    built.load_state_dict({k: v for k, v in patched.state_dict().items() if ".gate" not in k}, strict=False)
    assert load_gates(built, tmp_path) is built
    assert patch_state(built) is None  # built gated, not patched: nothing to unpatch
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(built(x), patched(x))
    save_gates(built, tmp_path / "again")  # and back out again
    assert read_gate_config(tmp_path / "again").config.layers == (0, 1)


def test_gates_that_do_not_fit_a_block_fn_model_are_refused(tmp_path):
    torch.manual_seed(0)
    save_gates(patch(tiny_vit(), sites="mlp"), tmp_path / "mlp_only")
    built = tiny_vit(block_fn=gated_block_fn())
    before = {k: v.clone() for k, v in built.state_dict().items()}
    with pytest.raises(ValueError, match=r"built with gated layers as .*'attention', 'mlp'.* holds gates for .*\['mlp'\]"):
        load_gates(built, tmp_path / "mlp_only")
    save_gates(patch(tiny_vit()), tmp_path / "depth_capped")  # blocks built without patch()'s depth cap
    with pytest.raises(ValueError, match=r"other gate arguments .*'depth': \(4, None\)"):
        load_gates(built, tmp_path / "depth_capped")
    save_gates(patch(tiny_vit(), max_curvature=2.0), tmp_path / "capped")
    with pytest.raises(ValueError, match=r"other gate arguments .* \{'max_curvature': \(2.0, None\)\}"):
        load_gates(built, tmp_path / "capped")
    save_gates(patch(tiny_vit(), gate_source="normed"), tmp_path / "normed")
    with pytest.raises(ValueError, match=r"read 'normed' \(gate_source\)"):
        load_gates(built, tmp_path / "normed")
    save_gates(patch(tiny_vit(depth=3)), tmp_path / "deeper")
    with pytest.raises(ValueError, match=r"with 3 timm_vit layers .* has 2"):
        load_gates(built, tmp_path / "deeper")
    assert all(torch.equal(v, before[k]) for k, v in built.state_dict().items())


def test_patch_of_a_block_fn_model_says_it_is_gated_already():
    with pytest.raises(ValueError, match=r"already holds vectorgate gates \(e.g. blocks.0.gate1\)"):
        patch(tiny_vit(block_fn=gated_block_fn()))


def test_gated_block_refuses_a_normed_gate_source():
    from vectorgate import GateConfig

    with pytest.raises(ValueError, match="gate_source='normed' is a patch\\(\\) option"):
        GatedBlock(16, 2, config=GateConfig(gate_source="normed"))
