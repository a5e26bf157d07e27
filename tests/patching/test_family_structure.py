"""Families recognise layers by module structure, not by class name.

A user's subclass of a supported layer, a layer class of their own with the same structure,
and other libraries' copies of a supported layer are all patched (bit-exact at init, gates
live); look-alikes whose forward adds the residual elsewhere are not, and an unsupported
model's error says what structure each family expects.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from live_gates import liven_gates  # noqa: E402

import vectorgate.integrations.transformers  # noqa: E402  (registers the families)
from vectorgate.patching import FAMILIES, find_family, gates, patch, patch_state, unpatch  # noqa: E402

try:
    import vectorgate.integrations.timm  # noqa: F401
except ImportError:  # timm not installed: its tests skip
    pass

TINY = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}
TINY_DECODER = {**TINY, "num_key_value_heads": 2, "vocab_size": 128}


def _ids(seed: int = 0) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(seed))}


def _pixels() -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))}


def _out(model: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out[0]


def _families_of(model: nn.Module) -> list[str]:
    return [f.name for f in FAMILIES.values() if f.find_layers(model)]


def _make_live(model: nn.Module) -> None:
    liven_gates(model, 0.5)


def _check_patch(model: nn.Module, inputs: dict, family: str, n_gates: int) -> None:
    """Exactly one family, bit-exact at init, gates live, unpatch restores the modules."""
    assert _families_of(model) == [family]
    modules_before = dict(model.named_modules())
    reference = _out(model, inputs)
    patch(model)
    assert patch_state(model).family == family
    assert len(list(gates(model))) == n_gates
    assert _families_of(model) == [family], "a patched layer must still be recognised"
    assert torch.equal(_out(model, inputs), reference)
    _make_live(model)
    assert not torch.equal(_out(model, inputs), reference), "gates have no effect"
    unpatch(model)
    assert dict(model.named_modules()) == modules_before


# ----------------------------------------------------------------------------- subclasses


def test_subclass_of_bert_layer():
    from transformers.models.bert.modeling_bert import BertLayer

    class MyBertLayer(BertLayer):
        """A user's layer: BERT's, with a hook point of their own."""

        def forward(self, hidden_states, *args, **kwargs):
            return super().forward(hidden_states, *args, **kwargs)

    torch.manual_seed(0)
    config = transformers.BertConfig(**TINY, vocab_size=128)
    model = transformers.BertForSequenceClassification(config).eval()
    for i, old in enumerate(model.bert.encoder.layer):
        new = MyBertLayer(config, layer_idx=i)
        new.load_state_dict(old.state_dict())
        model.bert.encoder.layer[i] = new
    _check_patch(model.eval(), _ids(), "bert", 4)


def test_subclass_of_distilbert_block():
    from transformers.models.distilbert.modeling_distilbert import TransformerBlock

    class MyBlock(TransformerBlock):
        pass

    torch.manual_seed(0)
    config = transformers.DistilBertConfig(n_layers=2, dim=32, hidden_dim=64, n_heads=4, vocab_size=128)
    model = transformers.DistilBertModel(config).eval()
    for i, old in enumerate(model.transformer.layer):
        new = MyBlock(config)
        new.load_state_dict(old.state_dict())
        model.transformer.layer[i] = new
    _check_patch(model.eval(), _ids(), "distilbert", 4)


def test_subclass_of_timm_block():
    timm_vit = pytest.importorskip("timm.models.vision_transformer")

    class MyBlock(timm_vit.Block):
        pass

    torch.manual_seed(0)
    vit = timm_vit.VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                                     num_classes=3, block_fn=MyBlock).eval()
    _check_patch(vit, {"x": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))}, "timm_vit", 4)


# ----------------------------------------------------------------------------- user classes


class _SelfOutput(nn.Module):
    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d)
        self.LayerNorm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(0.0)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class _Attention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.output = _SelfOutput(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.output(nn.functional.scaled_dot_product_attention(q, k, v), x)


class _Intermediate(nn.Module):
    def __init__(self, d: int, d_ff: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d, d_ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.dense(x))


class PostLNLayer(nn.Module):
    """Not a transformers class: BERT's layer structure, written by hand."""

    def __init__(self, d: int = 32, d_ff: int = 64) -> None:
        super().__init__()
        self.attention = _Attention(d)
        self.intermediate = _Intermediate(d, d_ff)
        self.output = _SelfOutput(d_ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attention(x)
        return self.output(self.intermediate(a), a)


class PreNormDecoderLayer(nn.Module):
    """Not a transformers class: Llama's layout (names, pre-norms, forward) under another name."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(d)
        self.self_attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.post_attention_layernorm = nn.RMSNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 64), nn.SiLU(), nn.Linear(64, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_layernorm(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT2LikeBlock(nn.Module):
    """Not a transformers class: GPT-2's block layout."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Stack(nn.Module):
    def __init__(self, block: type[nn.Module], n: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([block() for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _x() -> dict[str, torch.Tensor]:
    return {"x": torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))}


@pytest.mark.parametrize(("block", "family"), [
    (PostLNLayer, "bert"),
    (PreNormDecoderLayer, "llama"),
    (GPT2LikeBlock, "gpt2"),
], ids=["bert-like", "llama-like", "gpt2-like"])
def test_a_users_own_layer_class_with_a_supported_structure(block, family):
    _check_patch(Stack(block).eval(), _x(), family, 4)


def test_a_users_llama_like_layer_gates_the_residual_it_reads():
    """The gated layer computes alpha * x + beta * f with x the pre-norm's input."""
    model = Stack(PreNormDecoderLayer, n=1).eval()
    x = _x()["x"]
    patch(model, sites="mlp", init="random", init_curvature=0.4)
    layer = model.layers[0]
    gate = layer.residual_gates["mlp"]
    with torch.no_grad():  # .forward: the layer's parts without the patch's hooks
        h = layer.input_layernorm.forward(x)
        mid = x + layer.self_attn.forward(h, h, h, need_weights=False)[0]
        want = gate.residual(mid, layer.mlp.forward(layer.post_attention_layernorm.forward(mid)))
        torch.testing.assert_close(model(x), want)


# ----------------------------------------------------------------------------- other libraries' copies

COPIES = [
    ("olmo", "OlmoForCausalLM", "OlmoConfig", TINY_DECODER, "llama"),
    ("starcoder2", "Starcoder2ForCausalLM", "Starcoder2Config", TINY_DECODER, "llama"),
    ("gpt-neo", "GPTNeoModel", "GPTNeoConfig", {"num_layers": 2, "hidden_size": 32, "num_heads": 4, "vocab_size": 128,
                                                 "attention_types": [[["global", "local"], 1]], "max_position_embeddings": 32}, "gpt2"),
    ("gpt-bigcode", "GPTBigCodeModel", "GPTBigCodeConfig", {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 128}, "gpt2"),
    ("deberta", "DebertaModel", "DebertaConfig", {**TINY, "vocab_size": 128}, "bert"),
    ("deit", "DeiTModel", "DeiTConfig", {**TINY, "image_size": 16, "patch_size": 8}, "vit"),
]


@pytest.mark.parametrize(("model_cls", "config_cls", "kwargs", "family"), [c[1:] for c in COPIES], ids=[c[0] for c in COPIES])
def test_other_models_built_from_a_supported_layer(model_cls, config_cls, kwargs, family):
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kwargs)).eval()
    _check_patch(model, _pixels() if family == "vit" else _ids(), family, 4)


# ----------------------------------------------------------------------------- look-alikes and errors

LOOKALIKES = [
    # GPT-2's names, post-norm forward
    ("openai-gpt", "OpenAIGPTModel", "OpenAIGPTConfig", {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 128}),
    # Llama's names plus sandwich norms around each branch
    ("gemma2", "Gemma2ForCausalLM", "Gemma2Config", {**TINY_DECODER, "head_dim": 8}),
    # BERT's names, pre-LN output modules without a LayerNorm
    ("megatron-bert", "MegatronBertModel", "MegatronBertConfig", {**TINY, "vocab_size": 128}),
]


@pytest.mark.parametrize(("model_cls", "config_cls", "kwargs"), [c[1:] for c in LOOKALIKES], ids=[c[0] for c in LOOKALIKES])
def test_lookalikes_with_another_residual_layout_are_not_patched(model_cls, config_cls, kwargs):
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kwargs))
    with pytest.raises(ValueError, match="does not support"):
        patch(model)


def test_a_user_layer_with_an_extra_part_in_its_output_module_is_not_bert_like():
    model = Stack(PostLNLayer)
    model.layers[0].output.extra = nn.Linear(32, 32)  # something the gated drop-in would not redo
    assert [n for n, _ in FAMILIES["bert"].find_layers(model)] == ["layers.1"]


def test_timm_lookalike_post_norm_block_is_not_patched():
    timm_vit = pytest.importorskip("timm.models.vision_transformer")
    vit = timm_vit.VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                                     num_classes=3, block_fn=timm_vit.ResPostBlock)
    with pytest.raises(ValueError, match="does not support"):
        patch(vit)


def test_what_each_family_expects_is_one_call_away_from_the_unsupported_model_error():
    from vectorgate.patching import describe_families

    with pytest.raises(ValueError, match="does not support") as info:
        patch(nn.Sequential(nn.Linear(4, 4)))
    assert "vectorgate.patching.describe_families()" in str(info.value)
    message = describe_families()
    for family in ("bert", "distilbert", "gpt2", "llama", "vit"):
        assert FAMILIES[family].expects and FAMILIES[family].expects in message, family
    for words in ("attention.output", "input_layernorm", "ln_1", "sa_layer_norm", "layernorm_before"):
        assert words in message


def test_known_models_still_match_exactly_one_family():
    """Structure must not make a model ambiguous that a class list kept unambiguous."""
    cases = [
        (transformers.BertModel(transformers.BertConfig(**TINY, vocab_size=128)), "bert"),
        (transformers.RobertaModel(transformers.RobertaConfig(**TINY, vocab_size=128)), "bert"),
        (transformers.ViTModel(transformers.ViTConfig(**TINY, image_size=16, patch_size=8)), "vit"),
        (transformers.GPT2Model(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=128)), "gpt2"),
        (transformers.LlamaModel(transformers.LlamaConfig(**TINY_DECODER)), "llama"),
        (transformers.DistilBertModel(transformers.DistilBertConfig(n_layers=2, dim=32, hidden_dim=64, n_heads=4)),
         "distilbert"),
    ]
    for model, family in cases:
        assert _families_of(model) == [family], type(model).__name__
        fam, layers = find_family(model)
        assert fam.name == family and len(layers) == 2


def test_layers_nested_in_a_matching_layer_are_not_gated_twice():
    """Only the outermost match counts: a BERT-like layer wrapping another one is one layer."""

    class Wrapper(PostLNLayer):
        def __init__(self) -> None:
            super().__init__()
            self.inner = PostLNLayer()

    model = Stack(PostLNLayer, n=1)
    model.layers.append(Wrapper())
    assert [n for n, _ in FAMILIES["bert"].find_layers(copy.deepcopy(model))] == ["layers.0", "layers.1"]
