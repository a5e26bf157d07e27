"""vectorgate.patch on Hugging Face models: exactness at init, live gates, selection, errors."""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

from live_gates import liven_gates  # noqa: E402

from vectorgate.base import ResidualGate  # noqa: E402
from vectorgate.patching import (  # noqa: E402
    FAMILIES,
    ReplaceModule,
    gates,
    is_patched,
    patch,
    patch_state,
    unpatch,
)

TINY = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}
TINY_DECODER = {**TINY, "num_key_value_heads": 2, "vocab_size": 128}


def _text_input() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, 100, (2, 7), generator=g)}


def _image_input() -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))}


# (id, model class name, config class name, config kwargs, input builder, family)
CASES = [
    ("bert-base", "BertModel", "BertConfig", {**TINY, "vocab_size": 128}, _text_input, "bert"),
    ("bert-cls", "BertForSequenceClassification", "BertConfig", {**TINY, "vocab_size": 128}, _text_input, "bert"),
    ("roberta-mlm", "RobertaForMaskedLM", "RobertaConfig", {**TINY, "vocab_size": 128}, _text_input, "bert"),
    ("electra-cls", "ElectraForSequenceClassification", "ElectraConfig", {**TINY, "vocab_size": 128, "embedding_size": 16}, _text_input, "bert"),
    ("xlmr-base", "XLMRobertaModel", "XLMRobertaConfig", {**TINY, "vocab_size": 128}, _text_input, "bert"),
    ("distilbert-base", "DistilBertModel", "DistilBertConfig", {"n_layers": 2, "dim": 32, "hidden_dim": 64, "n_heads": 4, "vocab_size": 128}, _text_input, "distilbert"),
    ("distilbert-cls", "DistilBertForSequenceClassification", "DistilBertConfig", {"n_layers": 2, "dim": 32, "hidden_dim": 64, "n_heads": 4, "vocab_size": 128}, _text_input, "distilbert"),
    ("vit-cls", "ViTForImageClassification", "ViTConfig", {**TINY, "image_size": 16, "patch_size": 8}, _image_input, "vit"),
    ("gpt2-base", "GPT2Model", "GPT2Config", {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 128}, _text_input, "gpt2"),
    ("gpt2-lm", "GPT2LMHeadModel", "GPT2Config", {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 128}, _text_input, "gpt2"),
    ("llama-base", "LlamaModel", "LlamaConfig", TINY_DECODER, _text_input, "llama"),
    ("llama-lm", "LlamaForCausalLM", "LlamaConfig", TINY_DECODER, _text_input, "llama"),
    ("mistral-lm", "MistralForCausalLM", "MistralConfig", TINY_DECODER, _text_input, "llama"),
    ("qwen2-lm", "Qwen2ForCausalLM", "Qwen2Config", TINY_DECODER, _text_input, "llama"),
    ("qwen3-lm", "Qwen3ForCausalLM", "Qwen3Config", {**TINY_DECODER, "head_dim": 8}, _text_input, "llama"),
    ("gemma-lm", "GemmaForCausalLM", "GemmaConfig", {**TINY_DECODER, "head_dim": 8}, _text_input, "llama"),
]


def _build(model_cls: str, config_cls: str, kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**kwargs)
    return getattr(transformers, model_cls)(config).eval()


def _first_output(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs)[0]


def _set_curvature(model: torch.nn.Module, value: float) -> None:
    """Make the gates live: c = ``value`` and a random g (the default init starts g's output at zero)."""
    liven_gates(model, value)


@pytest.mark.parametrize(("model_cls", "config_cls", "kwargs", "make_input", "family"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_patch_is_exact_at_init_and_gates_are_live(model_cls, config_cls, kwargs, make_input, family):
    model = _build(model_cls, config_cls, kwargs)
    inputs = make_input()
    reference = _first_output(model, inputs)
    keys_before = set(model.state_dict())

    assert patch(model) is model
    state = patch_state(model)
    assert state.family == family
    assert len(list(gates(model))) == 2 * 2  # two sites in each of two layers
    assert keys_before <= set(model.state_dict()), "pretrained state-dict keys must not change"
    assert torch.equal(_first_output(model, inputs), reference)

    _set_curvature(model, 0.5)
    assert not torch.equal(_first_output(model, inputs), reference), "gates have no effect"


def test_minilm_patch_is_bit_exact(minilm_classifier, minilm_batch):
    inputs = {k: minilm_batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        reference = minilm_classifier(**inputs, output_hidden_states=True)
    patch(minilm_classifier)
    assert len(list(gates(minilm_classifier))) == 12
    with torch.no_grad():
        out = minilm_classifier(**inputs, output_hidden_states=True)
    assert torch.equal(out.logits, reference.logits)
    for got, want in zip(out.hidden_states, reference.hidden_states, strict=True):
        assert torch.equal(got, want)


def test_minilm_gates_receive_gradients(minilm_classifier, minilm_batch):
    patch(minilm_classifier, layers=[0, -1], init="random", init_curvature=0.1)
    minilm_classifier.train()
    minilm_classifier(**minilm_batch).loss.backward()
    for name, gate in gates(minilm_classifier):
        assert gate.curvature.grad is not None and gate.curvature.grad.abs().sum() > 0, name
        assert torch.isfinite(gate.proj.weight.grad).all(), name


@pytest.mark.parametrize(("sites", "layers", "expected"), [
    (("mlp",), [-1], ["bert.encoder.layer.1.output.gate"]),
    (("attention",), 0, ["bert.encoder.layer.0.attention.output.gate"]),
    (("mlp", "attention"), None, [
        "bert.encoder.layer.0.attention.output.gate", "bert.encoder.layer.0.output.gate",
        "bert.encoder.layer.1.attention.output.gate", "bert.encoder.layer.1.output.gate",
    ]),
])
def test_sites_and_layers_select_the_gates(sites, layers, expected):
    model = _build("BertForSequenceClassification", "BertConfig", {**TINY, "vocab_size": 128})
    patch(model, sites=sites, layers=layers)
    assert [n for n, _ in gates(model)] == expected


def test_pre_norm_gates_live_on_the_layer():
    model = _build("LlamaForCausalLM", "LlamaConfig", TINY_DECODER)
    patch(model, sites="mlp", rank=4)
    names = [n for n, _ in gates(model)]
    assert names == ["model.layers.0.residual_gates.mlp", "model.layers.1.residual_gates.mlp"]
    assert all(g.rank == 4 for _, g in gates(model))


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"sites": ("ffn",)}, ValueError, "sites must be"),
    ({"layers": [5]}, ValueError, "out of range"),
    ({"layers": [0, 0]}, ValueError, "duplicates"),
    ({"layers": ["0"]}, TypeError, "must be ints"),
    ({"variant": "nope"}, ValueError, "unknown variant"),
    ({"family": "nope"}, ValueError, "unknown family"),
    ({"rank": 0}, ValueError, "rank"),
])
def test_bad_arguments_raise_and_leave_the_model_alone(kwargs, error, match):
    model = _build("GPT2LMHeadModel", "GPT2Config", {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 128})
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=match):
        patch(model, **kwargs)
    assert not is_patched(model)
    assert model.state_dict().keys() == before.keys()


def test_unsupported_model_error_names_the_families_briefly_and_points_to_the_docs():
    with pytest.raises(ValueError, match="Supported families") as info:
        patch(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    message = str(info.value)
    for name in ("bert", "distilbert", "gpt2", "llama", "vit"):
        assert name in FAMILIES and name in message
    # the names on one line, not every family's description (that was 2,000 characters)
    assert "\n" not in message and len(message) < 600, message
    assert "docs/transformers.md" in message and "describe_families()" in message


def test_second_patch_is_an_error_not_a_double_gate():
    model = _build("BertModel", "BertConfig", {**TINY, "vocab_size": 128})
    patch(model)
    with pytest.raises(ValueError, match="already patched"):
        patch(model)
    assert len(list(gates(model))) == 4


def test_patch_refuses_a_model_that_already_holds_gates():
    from vectorgate.integrations.transformers import GatedBertOutput

    model = _build("BertModel", "BertConfig", {**TINY, "vocab_size": 128})
    model.encoder.layer[0].output = GatedBertOutput.from_module(model.encoder.layer[0].output)
    with pytest.raises(ValueError, match="already holds a gate"):
        patch(model)


@pytest.mark.parametrize(("model_cls", "config_cls", "kwargs"), [
    ("BertModel", "BertConfig", {**TINY, "vocab_size": 128}),
    ("LlamaModel", "LlamaConfig", TINY_DECODER),
])
def test_failure_half_way_leaves_the_model_exactly_as_it_was(monkeypatch, model_cls, config_cls, kwargs):
    from vectorgate.patching import AddModule, GateBranchOutput

    model = _build(model_cls, config_cls, kwargs)
    inputs = _text_input()
    reference = _first_output(model, inputs)
    modules_before = dict(model.named_modules())
    calls = {"n": 0}
    original = {cls: cls.apply for cls in (ReplaceModule, AddModule, GateBranchOutput)}

    def failing_apply(self):
        calls["n"] += 1
        if calls["n"] == 3:  # after earlier changes of the same patch were applied
            raise RuntimeError("injected failure")
        original[type(self)](self)

    for cls in original:
        monkeypatch.setattr(cls, "apply", failing_apply)
    with pytest.raises(RuntimeError, match="injected failure"):
        patch(model)
    assert calls["n"] == 3
    assert not is_patched(model)
    assert dict(model.named_modules()) == modules_before  # same module objects at the same names
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.equal(_first_output(model, inputs), reference)


@pytest.mark.parametrize(("model_cls", "config_cls", "kwargs"), [
    ("BertModel", "BertConfig", {**TINY, "vocab_size": 128}),
    ("GPT2Model", "GPT2Config", {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 128}),
])
def test_unpatch_restores_the_original_modules(model_cls, config_cls, kwargs):
    model = _build(model_cls, config_cls, kwargs)
    modules_before = dict(model.named_modules())
    patch(model, init="random", init_curvature=0.3)
    unpatch(model)
    assert dict(model.named_modules()) == modules_before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    patch(model)  # and it can be patched again
    assert len(list(gates(model))) == 4


def test_no_residual_stream_is_kept_alive_after_a_forward():
    model = _build("GPT2Model", "GPT2Config", {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 128})
    patch(model)
    _first_output(model, _text_input())
    state = patch_state(model)
    held = [c.hooks.x for c in state.changes if hasattr(c, "hooks")]
    assert held and all(x is None for x in held)
    assert state.gate_sites and all(site.inflight is None for site in state.gate_sites.values())


@pytest.mark.parametrize(("model_cls", "config_cls", "kwargs"), [
    ("GPT2LMHeadModel", "GPT2Config", {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 128}),
    ("LlamaForCausalLM", "LlamaConfig", TINY_DECODER),
    ("BertForMaskedLM", "BertConfig", {**TINY, "vocab_size": 128}),
])
def test_gradient_checkpointing_gives_the_same_gradients(model_cls, config_cls, kwargs):
    """Checkpointing re-runs each layer's forward in backward: the hooks must read that call's x."""
    base = _build(model_cls, config_cls, kwargs)
    patch(base, init="random", init_curvature=0.2)
    base.train()
    for m in base.modules():  # dropout off: both runs must see the same function
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    ckpt = copy.deepcopy(base)
    ckpt.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = _text_input()["input_ids"]
    grads = []
    for model in (base, ckpt):
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: g.curvature.grad.clone() for n, g in gates(model)})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name])


def test_deepcopy_of_a_patched_model_is_independent():
    model = _build("LlamaModel", "LlamaConfig", TINY_DECODER)
    patch(model)
    clone = copy.deepcopy(model)
    init_c = {name: g.curvature.detach().clone() for name, g in gates(model)}
    _set_curvature(clone, 0.5)
    inputs = _text_input()
    assert not torch.equal(_first_output(clone, inputs), _first_output(model, inputs))
    assert all(isinstance(g, ResidualGate) for _, g in gates(clone))
    assert all(torch.equal(g.curvature, init_c[name]) and not g.proj.weight.any() for name, g in gates(model))


def test_patched_decoder_traces_as_one_graph_under_torch_compile():
    """The hooks (capture x, replace the branch output) must not break dynamo's graph."""
    model = _build("LlamaForCausalLM", "LlamaConfig", TINY_DECODER)
    patch(model, init="random", init_curvature=0.3)
    inputs = _text_input()
    reference = _first_output(model, inputs)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    assert torch.equal(_first_output(compiled, inputs), reference)


@pytest.mark.parametrize(("model_cls", "config_cls", "kwargs"), [
    ("BertModel", "BertConfig", {**TINY, "vocab_size": 128}),
    ("LlamaModel", "LlamaConfig", TINY_DECODER),
])
def test_bf16_model_gets_bf16_gates_and_stays_exact(model_cls, config_cls, kwargs):
    model = _build(model_cls, config_cls, kwargs).to(torch.bfloat16)
    inputs = _text_input()
    reference = _first_output(model, inputs)
    patch(model)
    assert all(g.curvature.dtype == torch.bfloat16 for _, g in gates(model))
    assert torch.equal(_first_output(model, inputs), reference)


def test_a_deep_copy_of_a_patched_model_unpatches_cleanly():
    model = _build("GPT2Model", "GPT2Config", {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 128})
    reference = _first_output(model, _text_input())
    copied = copy.deepcopy(patch(model))
    unpatch(copied)
    assert not any("forward" in m.__dict__ for m in copied.modules())  # nothing left on the instances
    torch.testing.assert_close(_first_output(copied, _text_input()), reference, rtol=0, atol=0)
