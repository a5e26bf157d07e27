"""gates(), mark_only_gates_trainable() and param_groups() on patched HF models."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from vectorgate.patching import gates, mark_only_gates_trainable, param_groups, patch  # noqa: E402

CONFIG = transformers.BertConfig(
    num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4, vocab_size=128
)


def _patched_classifier():
    torch.manual_seed(0)
    return patch(transformers.BertForSequenceClassification(CONFIG))


def test_mark_only_gates_trainable_keeps_gates_and_head():
    model = _patched_classifier()
    n = mark_only_gates_trainable(model, extra=("classifier",))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if ".gate." in n or n.startswith("classifier.")}
    assert {"classifier.weight", "classifier.bias"} <= trainable
    assert sum(".curvature" in name for name in trainable) == 4
    gate_params = sum(p.numel() for _, g in gates(model) for p in g.parameters())
    assert n == gate_params + 32 * 2 + 2


def test_mark_only_gates_trainable_warns_on_unknown_extra_and_needs_gates():
    model = _patched_classifier()
    with pytest.warns(UserWarning, match=r"\['lm_head'\]"):
        mark_only_gates_trainable(model, extra=("lm_head",))
    assert not model.classifier.weight.requires_grad
    with pytest.raises(ValueError, match="holds no vectorgate gate"):
        mark_only_gates_trainable(transformers.BertModel(CONFIG))


def test_param_groups_decay_only_matrices_and_give_gates_their_lr():
    model = _patched_classifier()
    groups = {g["name"]: g for g in param_groups(model, weight_decay=0.1, lr=1e-4, gate_lr=1e-2)}
    assert set(groups) == {"backbone/decay", "backbone/no_decay", "gates/decay", "gates/no_decay"}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    named = dict(model.named_parameters())
    curvature = id(named["bert.encoder.layer.0.output.gate.curvature"])
    assert curvature in ids["gates/no_decay"]
    assert id(named["bert.encoder.layer.0.output.gate.proj.weight"]) in ids["gates/decay"]
    assert id(named["bert.encoder.layer.0.output.LayerNorm.weight"]) in ids["backbone/no_decay"]
    assert id(named["bert.encoder.layer.0.output.dense.bias"]) in ids["backbone/no_decay"]
    assert id(named["bert.encoder.layer.0.output.dense.weight"]) in ids["backbone/decay"]
    assert groups["gates/no_decay"]["weight_decay"] == 0.0 and groups["backbone/decay"]["weight_decay"] == 0.1
    assert groups["gates/decay"]["lr"] == 1e-2 and groups["backbone/decay"]["lr"] == 1e-4
    all_ids = [i for s in ids.values() for i in s]
    assert sorted(all_ids) == sorted(id(p) for p in model.parameters())  # each parameter once


def test_param_groups_skip_frozen_parameters_and_train_the_curvature():
    model = _patched_classifier()
    mark_only_gates_trainable(model)
    groups = param_groups(model, gate_lr=1e-2)
    assert {g["name"] for g in groups} == {"backbone/decay", "backbone/no_decay", "gates/decay", "gates/no_decay"}
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    opt = torch.optim.AdamW(groups)
    ids = torch.randint(0, 128, (4, 6))
    model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    opt.step()
    # At c = 0 the curvature still gets a gradient (the projection does not, until c moves).
    assert all(g.curvature.abs().min() > 0 for _, g in gates(model))
