"""gates(), mark_only_gates_trainable(), make_gate_adapter() and param_groups() on patched HF models."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from vectorgate import VectorGate, load_gates, save_gates  # noqa: E402
from vectorgate.patching import (  # noqa: E402
    gate_parameter_names,
    gates,
    make_gate_adapter,
    mark_only_gates_trainable,
    param_groups,
    patch,
    patch_state,
)

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
    # The default gate (g's output zero, c = 1) trains its projection from the first step.
    assert all(g.proj.weight.abs().min() > 0 for _, g in gates(model))


def test_gates_are_not_decayed_by_default_and_can_be():
    model = _patched_classifier()
    groups = {g["name"]: g for g in param_groups(model, weight_decay=0.1, lr=1e-4)}
    assert groups["gates/decay"]["weight_decay"] == 0.0 and groups["backbone/decay"]["weight_decay"] == 0.1
    groups = {g["name"]: g for g in param_groups(model, weight_decay=0.1, lr=1e-4, gate_weight_decay=None)}
    assert groups["gates/decay"]["weight_decay"] == 0.1


def test_width_aware_gate_lr_scales_only_the_gate_matrices():
    model = _patched_classifier()  # d = 32
    groups = {g["name"]: g for g in param_groups(model, lr=1e-4, gate_lr=1e-2, gate_lr_width_ref=384)}
    assert set(groups) == {"backbone/decay", "backbone/no_decay", "gates/decay/d=32", "gates/no_decay"}
    assert groups["gates/decay/d=32"]["lr"] == pytest.approx(1e-2 * 384 / 32)
    assert groups["gates/no_decay"]["lr"] == 1e-2 and groups["backbone/decay"]["lr"] == 1e-4
    with pytest.raises(ValueError, match="positive int"):
        param_groups(model, lr=1e-4, gate_lr_width_ref=0)
    with pytest.raises(ValueError, match="pass gate_lr"):
        param_groups(model, gate_lr_width_ref=384)


def _first_step_change_of_z(dim: int, width_ref: int | None) -> float:
    """RMS change of the gate pre-activation z = g(x) after one AdamW step (unit-scale x)."""
    torch.manual_seed(0)
    gate = VectorGate(dim)
    x = torch.randn(1, dim)
    opt = torch.optim.AdamW(param_groups(gate, gate_lr=1e-3, gate_lr_width_ref=width_ref))
    (gate.pre_activation(x) * torch.randn(1, dim)).sum().backward()
    opt.step()
    with torch.no_grad():
        return float(gate.pre_activation(x).pow(2).mean().sqrt())


def test_width_aware_gate_lr_makes_the_first_update_of_z_width_independent():
    """Adam moves each weight by ~lr, so z = W x moves ~lr * d: 1/d scaling removes the d."""
    plain = _first_step_change_of_z(1536, None) / _first_step_change_of_z(384, None)
    scaled = _first_step_change_of_z(1536, 384) / _first_step_change_of_z(384, 384)
    assert plain == pytest.approx(4.0, rel=0.25)
    assert scaled == pytest.approx(1.0, rel=0.25)


def test_make_gate_adapter_trains_gates_and_head_and_saves_both(tmp_path):
    model = make_gate_adapter(_patched_classifier_unpatched(), rank=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"classifier.weight", "classifier.bias"} <= trainable
    assert all(".gate." in n or n.startswith("classifier.") for n in trainable)
    assert patch_state(model).modules_to_save == ("classifier",)
    opt = torch.optim.AdamW(param_groups(model, lr=1e-2))
    ids = torch.randint(0, 128, (4, 6))
    for _ in range(3):
        model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    expected = model(input_ids=ids).logits
    save_gates(model, tmp_path)
    fresh = _patched_classifier_unpatched()  # same seed: same backbone, untrained head
    assert not torch.equal(fresh.eval()(input_ids=ids).logits, expected)
    load_gates(fresh, tmp_path)
    assert torch.equal(fresh.eval()(input_ids=ids).logits, expected)  # gates and head restored


def test_make_gate_adapter_errors():
    model = _patched_classifier()
    with pytest.raises(ValueError, match="already patched"):
        make_gate_adapter(model, rank=4)
    with pytest.raises(ValueError, match="no module named"):
        make_gate_adapter(model, modules_to_save=("lm_head",))


def _patched_classifier_unpatched():
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(CONFIG)


# --------------------------------------------------------------------------- default heads

TINY_DECODER = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                "num_key_value_heads": 2, "vocab_size": 128}
TINY_GPT2 = {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 128}


def _build(cls: str, config: str, kwargs: dict, **extra):
    torch.manual_seed(0)
    return getattr(transformers, cls)(getattr(transformers, config)(**kwargs, **extra))


HEADS = [  # model class, config class, config kwargs, the task head kept by default
    ("LlamaForCausalLM", "LlamaConfig", TINY_DECODER, ()),
    ("LlamaForCausalLM", "LlamaConfig", {**TINY_DECODER, "tie_word_embeddings": True}, ()),
    ("GPT2LMHeadModel", "GPT2Config", TINY_GPT2, ()),  # lm_head tied to the input embeddings
    ("LlamaForSequenceClassification", "LlamaConfig", {**TINY_DECODER, "pad_token_id": 0}, ("score",)),
    ("GPT2ForTokenClassification", "GPT2Config", TINY_GPT2, ("classifier",)),
    ("BertForQuestionAnswering", "BertConfig", CONFIG.to_dict(), ("qa_outputs",)),
    ("DistilBertForSequenceClassification", "DistilBertConfig",
     {"n_layers": 2, "dim": 32, "hidden_dim": 64, "n_heads": 4, "vocab_size": 128}, ("pre_classifier", "classifier")),
    ("BertModel", "BertConfig", CONFIG.to_dict(), ()),
]


@pytest.mark.parametrize(("cls", "config", "kwargs", "heads"), HEADS, ids=[f"{h[0]}-{i}" for i, h in enumerate(HEADS)])
def test_make_gate_adapter_defaults_to_the_heads_the_model_has(cls, config, kwargs, heads, caplog):
    model = _build(cls, config, kwargs)
    with caplog.at_level("INFO", logger="vectorgate.patching.training"):
        make_gate_adapter(model, rank=4)
    assert patch_state(model).modules_to_save == heads
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    gate_params = gate_parameter_names(model)
    assert trainable == {n for n, _ in model.named_parameters() if n in gate_params or n.split(".")[0] in heads}
    assert f"trains its gates and {f'the task head(s) {list(heads)}' if heads else 'no other module'}" in caplog.text


def test_a_causal_lm_adapter_saves_and_loads_its_gates_alone(tmp_path):
    model = make_gate_adapter(_build("LlamaForCausalLM", "LlamaConfig", TINY_DECODER), rank=4)
    with torch.no_grad():
        for _, g in gates(model):
            g.curvature.mul_(0.5)
    save_gates(model, tmp_path)
    fresh = load_gates(_build("LlamaForCausalLM", "LlamaConfig", TINY_DECODER), tmp_path)
    ids = torch.randint(0, 128, (2, 5))
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, model(ids).logits)


def test_an_explicit_head_that_is_not_there_names_what_is_and_leaves_the_model_alone():
    model = _build("GPT2LMHeadModel", "GPT2Config", TINY_GPT2)
    with pytest.raises(ValueError, match=r"no module named \['classifier'\] .*its modules with parameters: "
                                         r"\['transformer'\], task heads found: \[\]"):
        make_gate_adapter(model, modules_to_save=("classifier",))
    assert patch_state(model) is None and all(p.requires_grad for p in model.parameters())
    # the tied lm_head holds no parameter of its own, so it cannot be saved on its own either
    with pytest.raises(ValueError, match=r"no module named \['lm_head'\]"):
        make_gate_adapter(model, modules_to_save="lm_head")


def test_mark_only_gates_trainable_defaults_to_the_task_heads_without_a_warning():
    import warnings

    causal = patch(_build("LlamaForCausalLM", "LlamaConfig", TINY_DECODER))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        n = mark_only_gates_trainable(causal)
    assert n == sum(p.numel() for _, g in gates(causal) for p in g.parameters())
    classifier = _patched_classifier()
    mark_only_gates_trainable(classifier)
    assert classifier.classifier.weight.requires_grad and not classifier.bert.pooler.dense.weight.requires_grad
    with pytest.warns(UserWarning, match=r"named \['score'\]; those stay frozen \(its modules with parameters: "
                                         r"\['bert', 'classifier'\]\)"):
        mark_only_gates_trainable(classifier, extra=("score",))
