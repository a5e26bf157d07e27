"""Gates built in a PreTrainedModel's own ``__init__`` survive ``from_pretrained``.

transformers 5.x builds the model on the meta device, materialises the parameters missing
from the checkpoint with ``torch.empty`` and runs ``initialize_weights``: without help the
gates' curvature stays uninitialised (garbage, NaN) and their projection gets the
backbone's normal init. The gates must come out with their own init instead (g's output
zero, c = 1: the model is exactly the plain BERT), with no call to ``reset_gates``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from vectorgate.integrations.transformers import GatedBertOutput, GatedBertSelfOutput  # noqa: E402
from vectorgate.patching import gates  # noqa: E402

CONFIG = {"vocab_size": 96, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 64, "max_position_embeddings": 32, "num_labels": 3}


def _c_at_init(gate) -> bool:
    """The gate's effective curvature is its init_curvature (1 here; a built-in model's gates
    take the config's depth, whose cap 11.09 / 4 leaves c = 1 as it is)."""
    c = gate.effective_curvature().detach()
    return bool(torch.allclose(c, torch.full_like(c, gate.init_curvature))) and gate.init_curvature == 1


class GatedBert(transformers.BertForSequenceClassification):
    """A user's model: BERT with both residuals of every layer gated, built in ``__init__``."""

    gate_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(self, config):
        super().__init__(config)
        for layer in self.bert.encoder.layer:
            layer.attention.output = GatedBertSelfOutput(config, **self.gate_kwargs)
            layer.output = GatedBertOutput(config, **self.gate_kwargs)
        self.post_init()


class LowRankGatedBert(GatedBert):
    gate_kwargs: ClassVar[dict[str, Any]] = {"rank": 4}


class ReZeroGatedBert(GatedBert):
    gate_kwargs: ClassVar[dict[str, Any]] = {"variant": "rezero"}


def _quiet_from_pretrained(cls, path, **kwargs):
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the "newly initialised" report for the gates is expected
    try:
        return cls.from_pretrained(path, **kwargs).eval()
    finally:
        logging.set_verbosity(verbosity)


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    """A tiny random BERT classifier saved with save_pretrained (no gates in the checkpoint)."""
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(**CONFIG)).eval()
    path = tmp_path_factory.mktemp("plain_bert")
    model.save_pretrained(path)
    return path


def _inputs(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, CONFIG["vocab_size"], (3, 9), generator=g),
            "attention_mask": torch.ones(3, 9, dtype=torch.long)}


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gates_get_their_own_init_and_the_model_is_the_plain_one(plain_dir, seed):
    plain = _quiet_from_pretrained(transformers.BertForSequenceClassification, plain_dir)
    torch.manual_seed(seed)
    model = _quiet_from_pretrained(GatedBert, plain_dir)
    found = list(gates(model))
    assert len(found) == 4
    for name, gate in found:
        for p_name, p in gate.named_parameters():
            assert torch.isfinite(p).all(), f"{name}.{p_name} is not finite"
        assert _c_at_init(gate), name  # the gate's own init_curvature, not garbage
        assert not gate.proj.weight.any() and not gate.proj.bias.any(), name  # zero output, not N(0, 0.02)
    inputs = _inputs(seed)
    assert torch.equal(_logits(model, inputs), _logits(plain, inputs))


def test_low_rank_gates_keep_their_own_factor_init(plain_dir):
    plain = _quiet_from_pretrained(transformers.BertForSequenceClassification, plain_dir)
    model = _quiet_from_pretrained(LowRankGatedBert, plain_dir)
    for name, gate in gates(model):
        assert _c_at_init(gate), name
        assert not gate.proj.up.weight.any(), name  # LoRA's B = 0
        down = gate.proj.down.weight
        bound = 1 / down.shape[1] ** 0.5  # nn.Linear's kaiming-uniform bound, not N(0, 0.02)
        assert torch.isfinite(down).all() and down.abs().max() <= bound and down.std() > 0.05, name
    inputs = _inputs(0)
    assert torch.equal(_logits(model, inputs), _logits(plain, inputs))


def test_a_peer_variant_gets_its_own_init_too(plain_dir):
    model = _quiet_from_pretrained(ReZeroGatedBert, plain_dir)
    found = list(gates(model))
    assert len(found) == 4 and all(g.scale.eq(0).all() for _, g in found)


def test_gates_saved_in_the_checkpoint_are_loaded_not_reset(plain_dir, tmp_path):
    model = _quiet_from_pretrained(GatedBert, plain_dir)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # as if trained
        for _, gate in gates(model):
            for p in gate.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    model.save_pretrained(tmp_path)
    trained = {f"{n}.{k}": v.clone() for n, g in gates(model) for k, v in g.state_dict().items()}

    loaded = _quiet_from_pretrained(GatedBert, tmp_path)
    got = {f"{n}.{k}": v for n, g in gates(loaded) for k, v in g.state_dict().items()}
    assert got.keys() == trained.keys()
    for key, value in trained.items():
        assert torch.equal(got[key], value), key
    inputs = _inputs(0)
    assert torch.equal(_logits(loaded, inputs), _logits(model, inputs))


def test_a_gate_half_in_the_checkpoint_keeps_the_loaded_half(plain_dir, tmp_path):
    """Only the curvature is missing: it gets the gate's init, the loaded projection stays."""
    from safetensors.torch import load_file, save_file

    model = _quiet_from_pretrained(GatedBert, plain_dir)
    with torch.no_grad():
        for _, gate in gates(model):
            gate.proj.weight.fill_(0.125)
            gate.curvature.fill_(3.0)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    tensors = {k: v for k, v in load_file(weights).items() if not k.endswith(".gate.curvature")}
    save_file(tensors, weights, metadata={"format": "pt"})

    loaded = _quiet_from_pretrained(GatedBert, tmp_path)
    for name, gate in gates(loaded):
        assert _c_at_init(gate), name
        assert gate.proj.weight.eq(0.125).all(), name


def test_a_model_built_directly_keeps_the_gate_init():
    """post_init() on a model built with its config (no from_pretrained) leaves the gates alone."""
    torch.manual_seed(0)
    model = GatedBert(transformers.BertConfig(**CONFIG))
    for name, gate in gates(model):
        assert _c_at_init(gate) and not gate.proj.weight.any(), name
    model.init_weights()  # and again: still the gate's init
    assert all(_c_at_init(g) and not g.proj.weight.any() for _, g in gates(model))
