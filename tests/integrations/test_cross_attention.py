"""The ``"cross_attention"`` site: BERT-like decoders and GPT-2 built with ``add_cross_attention``.

Gated by default wherever a layer has it (layers without it are simply left alone), the
identity at init to the bit, gradients reach its gate, and its gates save and load.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import vectorgate  # noqa: E402
from vectorgate.patching import gates, patch, patch_state  # noqa: E402

BERT = {"vocab_size": 96, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 32}
GPT2 = {"vocab_size": 96, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 32}


def _bert_decoder() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(**BERT, is_decoder=True, add_cross_attention=True)
    return transformers.BertLMHeadModel(config).eval()


def _gpt2_with_cross_attention() -> torch.nn.Module:
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2, add_cross_attention=True)).eval()


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, 96, (2, 7), generator=g),
            "encoder_hidden_states": torch.randn(2, 5, 32, generator=g)}


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def _make_live(named_gates, seed: int = 0) -> None:
    """c = 0.5 and a random g: the gates now change the residual."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, gate in named_gates:
            gate.curvature.fill_(0.5)
            for p in gate.proj.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


CASES = [
    ("bert", _bert_decoder, "bert.encoder.layer.{i}.crossattention.output.gate"),
    ("gpt2", _gpt2_with_cross_attention, "transformer.h.{i}.residual_gates.cross_attention"),
]


@pytest.mark.parametrize(("family", "build", "cross_name"), CASES, ids=[c[0] for c in CASES])
def test_cross_attention_is_gated_by_default_and_exact_at_init(family, build, cross_name):
    model = build()
    inputs = _inputs()
    reference = _logits(model, inputs)
    patch(model)
    state = patch_state(model)
    assert state.family == family
    assert state.sites == ("attention", "cross_attention", "mlp")
    names = [n for n, _ in gates(model)]
    assert len(names) == 3 * 2
    assert all(cross_name.format(i=i) in names for i in range(2))
    assert torch.equal(_logits(model, inputs), reference)

    cross = [(n, g) for n, g in gates(model) if n in {cross_name.format(i=i) for i in range(2)}]
    _make_live(cross)
    assert not torch.equal(_logits(model, inputs), reference), "the cross-attention gates have no effect"


@pytest.mark.parametrize(("family", "build", "cross_name"), CASES, ids=[c[0] for c in CASES])
def test_gradients_reach_the_cross_attention_gates(family, build, cross_name):
    model = build()
    patch(model)
    model.train()
    inputs = _inputs()
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    for i in range(2):
        gate = model.get_submodule(cross_name.format(i=i))
        # zero-output init: g gets a gradient at step 0 (c's is tanh(g(x)) = 0 until g moves)
        assert gate.proj.weight.grad is not None and gate.proj.weight.grad.abs().sum() > 0
        assert gate.curvature.grad is not None and torch.isfinite(gate.curvature.grad).all()


@pytest.mark.parametrize(("family", "build", "cross_name"), CASES, ids=[c[0] for c in CASES])
def test_cross_attention_gates_save_and_load(family, build, cross_name, tmp_path):
    model = patch(build())
    _make_live(gates(model), seed=3)
    inputs = _inputs(1)
    trained = _logits(model, inputs)
    vectorgate.save_gates(model, tmp_path)

    fresh = build()
    vectorgate.load_gates(fresh, tmp_path)
    assert patch_state(fresh).sites == ("attention", "cross_attention", "mlp")
    assert torch.equal(_logits(fresh, inputs), trained)


@pytest.mark.parametrize(("family", "build", "cross_name"), CASES, ids=[c[0] for c in CASES])
def test_cross_attention_alone(family, build, cross_name):
    model = build()
    patch(model, sites="cross_attention")
    assert [n for n, _ in gates(model)] == [cross_name.format(i=i) for i in range(2)]
    state = patch_state(model)
    site = state.gate_site(state.layer_names[0], "cross_attention")
    assert site.gate is model.get_submodule(cross_name.format(i=0))
    assert site.name == f"{state.layer_names[0]}.cross_attention"


def test_layers_without_cross_attention_are_skipped_for_that_site():
    """An encoder-decoder of BERTs: encoder layers have two sites, decoder layers three."""
    torch.manual_seed(0)
    encoder = transformers.BertModel(transformers.BertConfig(**BERT))
    decoder = transformers.BertLMHeadModel(transformers.BertConfig(**BERT, is_decoder=True, add_cross_attention=True))
    model = transformers.EncoderDecoderModel(encoder=encoder, decoder=decoder).eval()
    g = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(0, 96, (2, 6), generator=g),
              "decoder_input_ids": torch.randint(0, 96, (2, 5), generator=g)}
    reference = _logits(model, inputs)
    patch(model)
    names = [n for n, _ in gates(model)]
    assert sum(".crossattention." in n for n in names) == 2
    assert sum(n.startswith("encoder.") for n in names) == 2 * 2
    assert sum(n.startswith("decoder.") for n in names) == 2 * 3
    assert torch.equal(_logits(model, inputs), reference)


@pytest.mark.parametrize("build", [
    lambda: transformers.BertModel(transformers.BertConfig(**BERT)),
    lambda: transformers.GPT2Model(transformers.GPT2Config(**GPT2)),
], ids=["bert", "gpt2"])
def test_a_model_without_cross_attention_has_two_sites(build):
    model = patch(build())
    assert patch_state(model).sites == ("attention", "mlp")
    assert len(list(gates(model))) == 2 * 2
    with pytest.raises(ValueError, match="cross_attention"):
        patch(build(), sites="cross_attention")
