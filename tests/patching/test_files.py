"""save_gates / load_gates and the save_pretrained round trip of patched models."""

from __future__ import annotations

import copy
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from vectorgate.integrations.transformers import from_pretrained_patched, save_pretrained  # noqa: E402
from vectorgate.patching import gates, is_patched, load_gates, patch, save_gates  # noqa: E402
from vectorgate.patching.files import CONFIG_NAME, read_gate_config, weights_path  # noqa: E402


def _as_format_1(directory, version: str = "0.2.0") -> dict:
    """Rewrite a gate directory as vectorgate 0.2 wrote it (format 1: fixed gates.safetensors,
    flat config keys, no hash); returns the config dict it wrote."""
    new = json.loads((directory / CONFIG_NAME).read_text())
    weights_path(directory).rename(directory / "gates.safetensors")
    config = {
        "format_version": 1, "vectorgate_version": version, **{k: new["config"][k] for k in
        ("family", "variant", "sites", "layers", "gate_kwargs", "modules_to_save")},
        **{k: new[k] for k in ("layer_names", "dims", "model_class", "num_parameters", "extra_tensors")},
    }
    (directory / CONFIG_NAME).write_text(json.dumps(config))
    return config


def _train_gates_a_little(model) -> None:
    """Move every gate away from its init, as training would."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, gate in gates(model):
            for p in gate.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _tiny_llama(hidden: int = 32):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=hidden, intermediate_size=64,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    return transformers.LlamaForCausalLM(config).eval()


def test_round_trip_on_a_fresh_minilm_is_bit_exact(tmp_path, minilm_classifier, _minilm_classifier_pristine,
                                                   minilm_batch):
    model = patch(minilm_classifier, layers=[1, 3], sites=("mlp",), rank=8, init="random")
    _train_gates_a_little(model)
    expected = _logits(model, minilm_batch)
    save_gates(model, tmp_path)

    fresh = copy.deepcopy(_minilm_classifier_pristine)  # same base weights and head, never patched
    assert load_gates(fresh, tmp_path) is fresh
    assert torch.equal(_logits(fresh, minilm_batch), expected)
    assert [n for n, _ in gates(fresh)] == [n for n, _ in gates(model)]

    saved = json.loads((tmp_path / CONFIG_NAME).read_text())
    config = saved["config"]
    assert config["family"] == "bert" and config["sites"] == ["mlp"] and config["layers"] == [1, 3]
    assert config["gate_kwargs"] == {"rank": 8, "init": "random"}
    assert saved["dims"] == {"bert.encoder.layer.1.output.gate": 384, "bert.encoder.layer.3.output.gate": 384}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([weights_path(tmp_path).name, CONFIG_NAME])  # no temp files


def test_load_into_an_already_patched_model(tmp_path):
    model = patch(_tiny_llama())
    _train_gates_a_little(model)
    save_gates(model, tmp_path)
    other = patch(_tiny_llama())
    load_gates(other, tmp_path)
    ids = torch.randint(0, 128, (2, 5))
    with torch.no_grad():
        assert torch.equal(other(ids).logits, model(ids).logits)


def test_mismatched_dims_give_a_clear_error_and_leave_the_model_unpatched(tmp_path):
    save_gates(patch(_tiny_llama(hidden=32)), tmp_path)
    wider = _tiny_llama(hidden=48)
    with pytest.raises(ValueError, match=r"do not fit this LlamaForCausalLM.*\(32, 48\)"):
        load_gates(wider, tmp_path)
    assert not is_patched(wider)
    assert not list(gates(wider))


def test_differently_patched_model_is_refused(tmp_path):
    save_gates(patch(_tiny_llama(), sites=("mlp",)), tmp_path)
    with pytest.raises(ValueError, match="holds gates for"):
        load_gates(patch(_tiny_llama()), tmp_path)


def test_other_family_is_refused(tmp_path):
    save_gates(patch(_tiny_llama()), tmp_path)
    torch.manual_seed(0)
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=128))
    with pytest.raises(ValueError, match="family 'llama' found no layers in GPT2Model"):
        load_gates(gpt2, tmp_path)
    assert not is_patched(gpt2)


def test_save_needs_a_patched_model_and_load_needs_a_gate_directory(tmp_path):
    with pytest.raises(ValueError, match="not patched"):
        save_gates(_tiny_llama(), tmp_path)
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        load_gates(_tiny_llama(), tmp_path)


def test_save_replaces_previous_files_atomically(tmp_path):
    model = patch(_tiny_llama())
    save_gates(model, tmp_path)
    _train_gates_a_little(model)
    save_gates(model, tmp_path)
    fresh = _tiny_llama()
    load_gates(fresh, tmp_path)
    for (_, a), (_, b) in zip(gates(fresh), gates(model), strict=True):
        assert torch.equal(a.curvature, b.curvature)
    # one weights file: the one the config names (the first save's file is gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([weights_path(tmp_path).name, CONFIG_NAME])


def test_save_pretrained_round_trip_and_what_plain_from_pretrained_does(tmp_path, minilm_classifier, minilm_batch):
    model = patch(minilm_classifier)
    _train_gates_a_little(model)
    expected = _logits(model, minilm_batch)
    save_pretrained(model, tmp_path)

    # The documented way: base weights, then the gates, bit-exact.
    restored = from_pretrained_patched(transformers.AutoModelForSequenceClassification, tmp_path).eval()
    assert torch.equal(_logits(restored, minilm_batch), expected)

    # Plain from_pretrained builds the unpatched class: the gate keys come back as
    # unexpected (reported, not silently dropped) and the model is the ungated one.
    plain, info = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    gate_keys = {f"{n}.{k}" for n, g in gates(model) for k in g.state_dict()}
    assert set(info["unexpected_keys"]) == gate_keys
    assert not info["missing_keys"]
    # ... and patch-then-load_state_dict restores everything from model.safetensors too.
    from safetensors.torch import load_file

    patch(plain.eval())
    plain.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    assert torch.equal(_logits(plain, minilm_batch), expected)


def test_a_v01_gate_file_without_init_still_loads(tmp_path):
    """0.1 saved ``{"init_curvature": 0.0}`` and no init; the 0.2 default would refuse c = 0."""
    model = patch(_tiny_llama(), init="random", init_curvature=0.0)
    with torch.no_grad():
        for _, g in gates(model):
            g.curvature.fill_(0.3)
    save_gates(model, tmp_path)
    config = _as_format_1(tmp_path, version="0.1.0")
    config["gate_kwargs"] = {"init_curvature": 0.0}
    for key in ("modules_to_save", "extra_tensors"):
        config.pop(key)
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    fresh = load_gates(_tiny_llama(), tmp_path)
    loaded = list(gates(fresh))
    assert loaded and all(g.init == "random" and torch.equal(g.curvature, torch.full_like(g.curvature, 0.3))
                          for _, g in loaded)


# --------------------------------------------------------------------------- depth and architecture


def _llama(layers: int, *, qwen: bool = False, head: bool = True):
    torch.manual_seed(0)
    kwargs = dict(num_hidden_layers=layers, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=128)
    if qwen:
        config = transformers.Qwen2Config(**kwargs)
        return (transformers.Qwen2ForCausalLM if head else transformers.Qwen2Model)(config).eval()
    config = transformers.LlamaConfig(**kwargs)
    return (transformers.LlamaForCausalLM if head else transformers.LlamaModel)(config).eval()


def test_gates_of_the_last_layer_do_not_land_on_another_layer_of_a_deeper_model(tmp_path):
    save_gates(patch(_llama(2), layers=[-1]), tmp_path)
    deeper = _llama(4)
    with pytest.raises(ValueError, match=r"saved from a LlamaForCausalLM with 2 llama layers \(gated: layer\(s\) \[1\]\), "
                                         r"but this LlamaForCausalLM has 4"):
        load_gates(deeper, tmp_path)
    assert not is_patched(deeper) and not list(gates(deeper))
    # patched alike beforehand (layers=[1]) does not make it fit either
    patched = patch(_llama(4), layers=[1])
    with pytest.raises(ValueError, match=r"with 2 llama layers .* has 4"):
        load_gates(patched, tmp_path)


def test_gates_of_every_layer_do_not_load_into_a_deeper_or_shallower_model(tmp_path):
    save_gates(patch(_llama(2)), tmp_path / "two")
    with pytest.raises(ValueError, match=r"with 2 llama layers .* has 3"):
        load_gates(_llama(3), tmp_path / "two")
    save_gates(patch(_llama(3)), tmp_path / "three")
    with pytest.raises(ValueError, match=r"with 3 llama layers .* has 2"):
        load_gates(_llama(2), tmp_path / "three")
    assert read_gate_config(tmp_path / "three").num_layers == 3


def test_llama_gates_do_not_load_into_a_qwen2_model_of_the_same_family_and_width(tmp_path):
    save_gates(patch(_llama(2)), tmp_path)
    qwen = _llama(2, qwen=True)
    with pytest.raises(ValueError, match=r"saved from a LlamaForCausalLM \(model_type 'llama'\), but this "
                                         r"Qwen2ForCausalLM is a 'qwen2' model"):
        load_gates(qwen, tmp_path)
    assert not is_patched(qwen)


def test_gates_built_otherwise_do_not_load_into_an_already_patched_model(tmp_path):
    """Same layers and shapes, other gates: a cap, or another input, is refused, not copied over."""
    save_gates(patch(_llama(2), max_curvature=2.0), tmp_path / "capped")
    model = patch(_llama(2))
    before = {n: g.curvature.clone() for n, g in gates(model)}
    with pytest.raises(ValueError, match=r"other gate arguments than those this LlamaForCausalLM is patched with: "
                                         r".*'max_curvature': \(2.0, None\).*vectorgate.unpatch"):
        load_gates(model, tmp_path / "capped")
    save_gates(patch(_llama(2), gate_source="normed"), tmp_path / "normed")
    with pytest.raises(ValueError, match=r"read 'normed' \(gate_source\), the gates this LlamaForCausalLM is patched "
                                         r"with read 'x'"):
        load_gates(model, tmp_path / "normed")
    assert all(torch.equal(g.curvature, before[n]) for n, g in gates(model))
    assert is_patched(load_gates(_llama(2), tmp_path / "capped"))  # a fresh model is patched as saved


def test_gates_still_load_across_heads_of_the_same_architecture_and_depth(tmp_path):
    model = patch(_llama(2), layers=[-1])
    _train_gates_a_little(model)
    save_gates(model, tmp_path)
    base = load_gates(_llama(2, head=False), tmp_path)  # LlamaModel: names lack "model."
    assert [n for n, _ in gates(base)] == [n.removeprefix("model.") for n, _ in gates(model)]
    ids = torch.randint(0, 128, (2, 5))
    with torch.no_grad():
        assert torch.equal(base(ids).last_hidden_state, model.model(ids).last_hidden_state)


def test_a_gate_file_without_the_layer_count_and_model_type_loads_as_before(tmp_path):
    """Written by vectorgate 0.3 to 0.4.0: no num_layers, no model_type; loaded without those checks."""
    save_gates(patch(_llama(2), layers=[-1]), tmp_path)
    raw = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert raw["num_layers"] == 2 and raw["model_type"] == "llama"
    for key in ("num_layers", "model_type"):
        del raw[key]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(raw))
    saved = read_gate_config(tmp_path)
    assert saved.num_layers is None and saved.model_type is None
    assert [n for n, _ in gates(load_gates(_llama(2), tmp_path))] == [
        "model.layers.1.residual_gates.attention", "model.layers.1.residual_gates.mlp"]
    assert is_patched(load_gates(_llama(4), tmp_path))  # as 0.4.0 did: nothing to check against


# --------------------------------------------------------------------------- from_pretrained_patched's report


def _tiny_bert(cls: str = "BertForSequenceClassification"):
    torch.manual_seed(0)
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                     num_attention_heads=4, vocab_size=128)
    return getattr(transformers, cls)(config).eval()


def test_from_pretrained_patched_does_not_report_the_gate_keys_as_unexpected(tmp_path, capfd, caplog):
    model = patch(_tiny_bert())
    _train_gates_a_little(model)
    save_pretrained(model, tmp_path)
    capfd.readouterr()
    with caplog.at_level("WARNING"):
        restored = from_pretrained_patched(transformers.AutoModelForSequenceClassification, tmp_path)
    printed = capfd.readouterr().err + caplog.text
    assert "UNEXPECTED" not in printed and "gate" not in printed and "LOAD REPORT" not in printed
    ids = torch.randint(0, 128, (2, 5))
    with torch.no_grad():
        assert torch.equal(restored.eval()(ids).logits, model(ids).logits)
    # what transformers would tell besides the gates still reaches the user
    restored, info = from_pretrained_patched(transformers.AutoModelForSequenceClassification, tmp_path,
                                             output_loading_info=True)
    assert is_patched(restored) and not info["unexpected_keys"] and not info["missing_keys"]


def test_from_pretrained_patched_still_reports_keys_that_are_not_gates(tmp_path, caplog):
    save_pretrained(patch(_tiny_bert("BertModel")), tmp_path)  # no classifier in the checkpoint
    with caplog.at_level("WARNING", logger="vectorgate.integrations.transformers.hub"):
        model, info = from_pretrained_patched(transformers.AutoModelForSequenceClassification, tmp_path,
                                              output_loading_info=True)
    assert is_patched(model) and sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert not info["unexpected_keys"]  # the checkpoint's gate keys (encoder.layer.0...gate...) are gates
    assert "missing (newly initialised) ['classifier.bias', 'classifier.weight']" in caplog.text
    assert "unexpected" not in caplog.text
