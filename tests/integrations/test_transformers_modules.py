"""GatedBertOutput / GatedBertSelfOutput: the quickstart, its trap, from_module, HF init."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from vectorgate.integrations.transformers import GatedBertOutput, GatedBertSelfOutput  # noqa: E402
from vectorgate.patching import gates, patch, reset_gates  # noqa: E402

TINY = transformers.BertConfig(
    num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4, vocab_size=128
)


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_quickstart_runs_as_written_and_shows_the_trap(minilm_classifier, minilm_batch):
    """The README quickstart: a config-built module runs, but throws the pretrained weights away."""
    model = minilm_classifier
    reference = _logits(model, minilm_batch)
    pretrained_dense = model.bert.encoder.layer[0].output.dense.weight.detach().clone()

    gated = GatedBertOutput(model.config)
    model.bert.encoder.layer[0].output = gated

    out = _logits(model, minilm_batch)
    assert out.shape == reference.shape and torch.isfinite(out).all()
    assert not torch.equal(gated.dense.weight, pretrained_dense)  # the trap: fresh weights
    assert not torch.equal(out, reference)


def test_from_module_keeps_the_pretrained_weights(minilm_classifier, minilm_batch):
    model = minilm_classifier
    reference = _logits(model, minilm_batch)
    layer = model.bert.encoder.layer[0]
    original = layer.output
    layer.output = GatedBertOutput.from_module(original)
    layer.attention.output = GatedBertSelfOutput.from_module(layer.attention.output, init="random")
    assert layer.output.dense is original.dense and layer.output.LayerNorm is original.LayerNorm
    assert torch.equal(_logits(model, minilm_batch), reference)


@pytest.mark.parametrize("cls", [GatedBertOutput, GatedBertSelfOutput])
def test_config_built_module_matches_transformers_at_init(cls):
    """Same function as transformers' module holding the same dense/LayerNorm weights."""
    torch.manual_seed(0)
    gated = cls(TINY, init="random").eval()
    hf_cls = transformers.models.bert.modeling_bert.BertOutput if cls is GatedBertOutput else (
        transformers.models.bert.modeling_bert.BertSelfOutput
    )
    hf = hf_cls(TINY).eval()
    hf.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("gate.")})
    h = torch.randn(2, 5, gated.dense.in_features)
    x = torch.randn(2, 5, TINY.hidden_size)
    assert torch.equal(gated(h, x), hf(h, x))
    with torch.no_grad():
        gated.gate.curvature.fill_(0.7)
    assert not torch.equal(gated(h, x), hf(h, x))


def test_gated_module_inside_a_from_config_model_is_exact_and_survives_init_weights():
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(TINY).eval()
    ids = {"input_ids": torch.randint(0, 128, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    reference = _logits(model, ids)
    for layer in model.bert.encoder.layer:
        layer.output = GatedBertOutput.from_module(layer.output)
    model.init_weights()  # transformers re-initialises what it has not marked as initialised
    assert all(torch.equal(g.curvature, torch.ones_like(g.curvature)) and not g.proj.weight.any()
               for _, g in gates(model))
    assert torch.equal(_logits(model, ids), reference)


def test_init_weights_after_patch_keeps_identity_and_reset_gates_restores_gate_init():
    torch.manual_seed(0)
    model = transformers.BertModel(TINY).eval()
    patch(model)
    model.init_weights()
    # transformers re-draws every Linear it finds, but the gates mark theirs as initialised:
    # g's output stays zero, c keeps its init, and the model is still the identity it was.
    init_c = {name: g.curvature.detach().clone() for name, g in gates(model)}
    assert all(not g.proj.weight.any() for _, g in gates(model))
    assert all(torch.allclose(g.effective_curvature().detach(), torch.full_like(g.curvature, g.init_curvature))
               for _, g in gates(model))
    with torch.no_grad():  # training moved the gates; reset_gates puts back their own init
        for _, g in gates(model):
            g.proj.weight.normal_()
            g.curvature.fill_(3.0)
    assert reset_gates(model) == 4
    assert all(not g.proj.weight.any() and torch.equal(g.curvature, init_c[name]) for name, g in gates(model))


def test_subclass_built_with_gates_needs_reset_gates_after_from_pretrained(minilm_path, minilm_batch):
    """transformers leaves parameters it does not know uninitialised in from_pretrained."""

    class GatedBert(transformers.BertForSequenceClassification):
        def __init__(self, config):
            super().__init__(config)
            for layer in self.bert.encoder.layer:
                layer.output = GatedBertOutput(config)
            self.post_init()

    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        model = GatedBert.from_pretrained(minilm_path, num_labels=2).eval()
    finally:
        logging.set_verbosity(verbosity)
    assert reset_gates(model) == 6
    # the gates' own init: c at half the depth cap of MiniLM's 12 residuals (11.09 / 12 / 2 = 0.46)
    assert all(g.depth == 12 and torch.allclose(g.effective_curvature().detach(), torch.full_like(g.curvature, g.init_curvature))
               and g.init_curvature == pytest.approx(11.09 / 24, rel=1e-3) and not g.proj.weight.any() for _, g in gates(model))
    assert torch.isfinite(_logits(model, minilm_batch)).all()


@pytest.mark.parametrize(("module", "match"), [
    (torch.nn.Linear(4, 4), "lacks"),
    (torch.nn.Module(), "lacks"),
])
def test_from_module_rejects_other_modules(module, match):
    with pytest.raises(TypeError, match=match):
        GatedBertOutput.from_module(module)


def test_from_module_rejects_a_gate_of_the_wrong_size():
    from vectorgate import VectorGate

    output = transformers.models.bert.modeling_bert.BertOutput(TINY)
    with pytest.raises(ValueError, match=r"dense\.out_features = 32"):
        GatedBertOutput.from_module(output, gate=VectorGate(16))


def test_from_module_builds_the_gate_in_the_dtype_asked_for():
    layer = transformers.BertModel(TINY).encoder.layer[0].output.to(torch.bfloat16)
    assert GatedBertOutput.from_module(layer).gate.curvature.dtype == torch.bfloat16  # the dense layer's
    asked = GatedBertOutput.from_module(layer, dtype=torch.float32)
    assert {p.dtype for p in asked.gate.parameters()} == {torch.float32}
