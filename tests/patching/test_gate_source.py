"""GateConfig(gate_source="normed"): in pre-norm layers the gate reads norm(x), and
stack_gate_projections then computes it in one GEMM with the branch's first projection
(GPT-2's Conv1D, Llama's q_proj/gate_proj, HF ViT's q_proj/fc1, timm's qkv/fc1)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

from live_gates import liven_gates  # noqa: E402

import vectorgate  # noqa: E402
from vectorgate import GateConfig  # noqa: E402
from vectorgate.patching import gates, patch, read_gate_config, stack_gate_projections  # noqa: E402
from vectorgate.patching.stacking import StackedProjection  # noqa: E402


def _text(vocab: int = 64) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, vocab, (2, 7), generator=torch.Generator().manual_seed(1))}


def _image() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _gpt2() -> nn.Module:
    return transformers.GPT2Model(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64,
                                                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def _llama() -> nn.Module:
    return transformers.LlamaModel(transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=64))


def _hf_vit() -> nn.Module:
    return transformers.ViTModel(transformers.ViTConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        image_size=16, patch_size=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        add_pooling_layer=False)


def _timm_vit() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    import vectorgate.integrations.timm  # noqa: F401  (registers the timm family)

    return VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5)


# id, builder, input builder, how to call, the modules the gates of layer 0 should read (norm names)
CASES = [
    ("gpt2", _gpt2, _text, ("ln_1", "ln_2")),
    ("llama", _llama, _text, ("input_layernorm", "post_attention_layernorm")),
    ("hf_vit", _hf_vit, _image, ("layernorm_before", "layernorm_after")),
    ("timm_vit", _timm_vit, _image, ("norm1", "norm2")),
]


def _build(builder, **config) -> nn.Module:
    torch.manual_seed(0)
    model = builder().eval()
    return model if not config else patch(model, GateConfig(**config))


def _out(model: nn.Module, make_input) -> torch.Tensor:
    inputs = make_input()
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out if isinstance(out, torch.Tensor) else out[0]


def _liven(model: nn.Module) -> None:
    liven_gates(model, 0.7, seed=2)


def _first_layer(model: nn.Module) -> nn.Module:
    return model.get_submodule(vectorgate.patching.patch_state(model).layer_names[0])


@pytest.mark.parametrize(("builder", "make_input", "norms"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_normed_gate_reads_the_pre_norm_output_and_is_exact_at_init(builder, make_input, norms):
    reference = _out(_build(builder), make_input)
    model = _build(builder, gate_source="normed")
    torch.testing.assert_close(_out(model, make_input), reference, rtol=0, atol=0)  # identity at init
    assert vectorgate.patching.gate_config(model).gate_source == "normed"
    _liven(model)
    layer = _first_layer(model)
    seen: dict[str, torch.Tensor] = {}
    site_gates = [g for _, g in gates(layer)]
    handles = [getattr(layer, n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, o)) for n in norms]
    handles += [g.proj.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(f"gate{i}", a[0]))
                for i, g in enumerate(site_gates)]
    live = _out(model, make_input)
    for h in handles:
        h.remove()
    for i, norm in enumerate(norms):
        assert seen[f"gate{i}"] is seen[norm]  # the very tensor the pre-norm returned
    # and it is not the same model as the one whose gates read x
    x_model = _build(builder, gate_source="x")
    x_model.load_state_dict(model.state_dict())
    assert not torch.allclose(_out(x_model, make_input), live)


@pytest.mark.parametrize("rank", [None, 4])
@pytest.mark.parametrize(("builder", "make_input"), [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_stacked_normed_equals_unstacked_forward_and_backward(builder, make_input, rank):
    # float64, so that "equal up to the GEMM's summation order" can be checked tightly
    model = _build(builder, gate_source="normed", **({"rank": rank} if rank else {})).double()
    _liven(model)
    if make_input is _image:
        make_input = lambda: _image().double()  # noqa: E731
    stacked = copy.deepcopy(model)
    keys = list(stacked.state_dict())
    assert stack_gate_projections(stacked) == 4  # 2 layers x (attention, mlp)
    assert list(stacked.state_dict()) == keys
    assert sum(isinstance(m, StackedProjection) for m in stacked.modules()) == 4
    first = [g.proj if rank is None else g.proj.down for _, g in gates(stacked)]
    calls: list[int] = []
    handles = [f.register_forward_hook(lambda *a: calls.append(1)) for f in first]
    results = []
    for m in (model, stacked):
        m.zero_grad(set_to_none=True)
        y = _out(m, make_input)
        y.square().mean().backward()
        results.append((y.detach(), {n: p.grad for n, p in m.named_parameters()}))
    for h in handles:
        h.remove()
    assert calls == []  # the gate's first projection ran inside the stacked GEMM only
    (y0, g0), (y1, g1) = results
    torch.testing.assert_close(y1, y0, rtol=1e-10, atol=1e-12)
    for name, grad in g0.items():
        if grad is not None:
            torch.testing.assert_close(g1[name], grad, rtol=1e-9, atol=1e-14, msg=lambda m, n=name: f"{n}: {m}")
    vectorgate.unpatch(stacked)  # undoes the stacking too: the backbone as it was built
    assert not any(isinstance(m, StackedProjection) for m in stacked.modules())
    torch.testing.assert_close(_out(stacked, make_input), _out(_build(builder).double(), make_input), rtol=0, atol=0)


def test_gate_source_travels_with_the_gate_file(tmp_path):
    model = _build(_gpt2, gate_source="normed", rank=4)
    _liven(model)
    stack_gate_projections(model)
    vectorgate.save_gates(model, tmp_path / "g")
    assert read_gate_config(tmp_path / "g").config.gate_source == "normed"
    fresh = _build(_gpt2)
    vectorgate.load_gates(fresh, tmp_path / "g")  # patches it the same way, unstacked
    assert vectorgate.patching.gate_config(fresh).gate_source == "normed"
    torch.testing.assert_close(_out(fresh, _text), _out(model, _text), rtol=1e-5, atol=1e-5)


def test_a_config_written_before_gate_source_reads_as_x():
    data = GateConfig().to_dict()
    del data["gate_source"]  # what 0.3.0 wrote
    assert GateConfig.from_dict(data).gate_source == "x"


def test_refusals():
    with pytest.raises(ValueError, match="gate_source must be one of"):
        GateConfig(gate_source="norm")
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                                          num_attention_heads=4, intermediate_size=64))
    with pytest.raises(ValueError, match=r"not available for family 'bert'.*post-LN"):
        patch(bert, gate_source="normed")
    assert not vectorgate.patching.is_patched(bert)
    with pytest.raises(ValueError, match="needs a gate whose projection reads one tensor"):
        patch(_gpt2(), variant="rezero", gate_source="normed")
    x_model = _build(_gpt2, gate_source="x")
    with pytest.raises(ValueError, match="patch with gate_source='normed'"):
        stack_gate_projections(x_model)
    assert not any(isinstance(m, StackedProjection) for m in x_model.modules())  # nothing half-done
    stacked = _build(_gpt2, gate_source="normed")
    stack_gate_projections(stacked)
    with pytest.raises(ValueError, match="stacked already"):
        stack_gate_projections(stacked)
    with pytest.raises(ValueError, match="token skipping needs unstacked"):
        vectorgate.skip.enable_skipping(stacked)
    with pytest.raises(ValueError, match="nothing to stack"):
        stack_gate_projections(_build(_gpt2, variant="rezero"))


def test_skipping_decides_from_the_normed_input():
    model = _build(_gpt2, gate_source="normed", init_curvature=0.5, init="random")
    layer = _first_layer(model)
    seen: dict[str, torch.Tensor] = {}
    gate = layer.residual_gates["mlp"]
    h1 = layer.ln_2.register_forward_hook(lambda m, a, o: seen.__setitem__("norm", o))
    h2 = gate.proj.register_forward_hook(lambda m, a, o: seen.__setitem__("gate", a[0]))
    dense = _out(model, _text)
    vectorgate.skip.enable_skipping(model)  # threshold -inf: nothing skipped, the dense result
    vectorgate.skip.calibrate_skipping(model, [_text()["input_ids"]], 0.5, forward=lambda m, b: m(input_ids=b))
    skipped = _out(model, _text)
    h1.remove()
    h2.remove()
    assert seen["gate"] is seen["norm"]
    assert not torch.allclose(skipped, dense)  # half the MLP tokens skipped
    vectorgate.skip.disable_skipping(model)
    torch.testing.assert_close(_out(model, _text), dense, rtol=0, atol=0)


def test_the_recorder_refuses_a_stacked_model_instead_of_recording_nothing():
    model = _build(_gpt2, gate_source="normed")
    vectorgate.GateRecorder(model)  # unstacked: fine
    stack_gate_projections(model)
    with pytest.raises(ValueError, match="stacked projections"):
        vectorgate.GateRecorder(model)
