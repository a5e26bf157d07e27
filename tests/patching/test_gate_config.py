"""GateConfig from the call to the file: patch(model, config), the config kept on the model,
the gate files (one atomic unit, hash-checked, old format still read), loading across heads."""

from __future__ import annotations

import copy
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import vectorgate  # noqa: E402
from vectorgate import GateConfig  # noqa: E402
from vectorgate.patching import files, gate_config, gates, load_gates, patch, save_gates  # noqa: E402
from vectorgate.patching.files import CONFIG_NAME, read_gate_config, weights_path  # noqa: E402


def _bert_classifier(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=32, num_labels=3)
    return transformers.BertForSequenceClassification(config).eval()


def _moved(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, gate in gates(model):
            for p in gate.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _gate_tensors(model) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, g in gates(model) for k, v in g.state_dict().items()}


IDS = torch.tensor([[2, 5, 9, 11, 3, 7]])


# --------------------------------------------------------------------------- GateConfig


def test_config_and_keywords_patch_the_same_way_and_the_model_keeps_the_resolved_config():
    a = patch(_bert_classifier(), GateConfig(sites="mlp", layers=[-1, 0], rank=4))
    b = patch(_bert_classifier(), sites=("mlp",), layers=(0, -1), rank=4)
    assert [n for n, _ in gates(a)] == [n for n, _ in gates(b)] == [
        "bert.encoder.layer.0.output.gate", "bert.encoder.layer.2.output.gate"]
    kept = gate_config(a)
    assert kept == gate_config(b)
    assert (kept.family, kept.sites, kept.layers, kept.gate_kwargs) == ("bert", ("mlp",), (0, 2), {"rank": 4})
    assert vectorgate.patching.patch_state(a).config is kept


def test_default_config_gates_every_site_the_layers_have():
    model = patch(_bert_classifier())
    assert gate_config(model).sites == ("attention", "mlp")
    assert len(list(gates(model))) == 6


def test_config_and_keywords_together_are_refused():
    with pytest.raises(TypeError, match="GateConfig or keyword arguments, not both"):
        patch(_bert_classifier(), GateConfig(), rank=4)
    with pytest.raises(TypeError, match=r"must be a vectorgate\.GateConfig"):
        patch(_bert_classifier(), {"rank": 4})


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"variant": "nosuch"}, ValueError, "unknown variant 'nosuch'"),
    ({"sites": ()}, ValueError, "non-empty subset"),
    ({"sites": ("mlp", "mlp")}, ValueError, "duplicates"),
    ({"layers": [0, 1.5]}, TypeError, r"layers must be ints \(layer indices\), got 1.5"),
    ({"layers": True}, TypeError, "layers must be"),
    ({"family": 3}, TypeError, "family must be None or a family name"),
    ({"gate_kwargs": {"init": object()}}, TypeError, "cannot be stored in a GateConfig"),
    ({"gate_kwargs": {"rank": 4}, "rank": 8}, TypeError, r"got \['rank'\] both in gate_kwargs and as keywords"),
    ({"modules_to_save": [""]}, TypeError, "modules_to_save must be module names"),
])
def test_bad_config_fields_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        GateConfig(**kwargs)


def test_to_dict_from_dict_round_trip_and_strict_fields():
    config = GateConfig(variant="vectorgate", sites=["mlp"], layers=-1, rank=8, dtype=torch.float64,
                        init_curvature=0.5, modules_to_save="classifier")
    data = json.loads(json.dumps(config.to_dict()))
    assert data["gate_kwargs"] == {"rank": 8, "dtype": "float64", "init_curvature": 0.5}
    assert GateConfig.from_dict(data) == config
    with pytest.raises(ValueError, match=r"unknown fields \['colour'\], missing fields \[\]"):
        GateConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(ValueError, match=r"missing fields \['layers'\]"):
        GateConfig.from_dict({k: v for k, v in data.items() if k != "layers"})
    with pytest.raises(ValueError, match="not a torch dtype"):
        GateConfig.from_dict({**data, "gate_kwargs": {"dtype": "float99"}})


def test_a_preset_gives_a_gate_config_for_patch():
    from vectorgate.presets import PRESETS

    config = PRESETS["from_scratch"].config(sites="mlp", init_curvature=0.25)
    assert config == GateConfig(sites=("mlp",), init="random", init_curvature=0.25)
    model = patch(_bert_classifier(), config)
    assert all(torch.allclose(g.effective_curvature().detach(), torch.full_like(g.curvature, 0.25)) for _, g in gates(model))
    assert vectorgate.presets.PRESETS is PRESETS  # reachable from the top level as a subpackage


def test_device_is_not_part_of_a_config():
    assert GateConfig(device="cpu", rank=2).gate_kwargs == {"rank": 2}


# --------------------------------------------------------------------------- gate files


def test_the_file_holds_the_config_and_the_version_and_reads_back(tmp_path):
    model = _moved(patch(_bert_classifier(), GateConfig(sites="mlp", rank=4)))
    save_gates(model, tmp_path)
    raw = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert raw["format_version"] == files.FORMAT_VERSION and raw["vectorgate_version"] == vectorgate.__version__
    assert GateConfig.from_dict(raw["config"]) == gate_config(model)
    saved = read_gate_config(tmp_path)
    assert saved.config == gate_config(model)
    assert saved.weights_path.name.startswith("gates-") and saved.weights_path.is_file()
    fresh = load_gates(_bert_classifier(), tmp_path)
    assert gate_config(fresh) == gate_config(model)
    assert all(torch.equal(a, b) for a, b in zip(_gate_tensors(fresh).values(), _gate_tensors(model).values(),
                                                 strict=True))


@pytest.mark.parametrize("field", ["config", "weights_sha256"])
def test_a_file_missing_a_field_is_a_clear_error(tmp_path, field):
    save_gates(patch(_bert_classifier()), tmp_path)
    raw = json.loads((tmp_path / CONFIG_NAME).read_text())
    del raw[field]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=rf"misses fields \['{field}'\]"):
        load_gates(_bert_classifier(), tmp_path)


def test_a_file_with_an_unknown_field_is_a_clear_error(tmp_path):
    save_gates(patch(_bert_classifier()), tmp_path)
    raw = json.loads((tmp_path / CONFIG_NAME).read_text())
    raw["config"]["colour"] = "red"
    (tmp_path / CONFIG_NAME).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"field 'config'.*unknown fields \['colour'\]"):
        load_gates(_bert_classifier(), tmp_path)


def test_a_file_written_by_vectorgate_0_2_still_loads(tmp_path):
    """Format 1 as 0.2 wrote it: flat keys, a fixed gates.safetensors, no hash (and no depth cap)."""
    model = _moved(patch(_bert_classifier(), sites=["attention"], rank=4, log_gain_budget=None))
    save_gates(model, tmp_path)
    new = json.loads((tmp_path / CONFIG_NAME).read_text())
    weights_path(tmp_path).rename(tmp_path / "gates.safetensors")
    old = {"format_version": 1, "vectorgate_version": "0.2.0",
           **{k: new["config"][k] for k in ("family", "variant", "sites", "layers", "gate_kwargs", "modules_to_save")},
           **{k: new[k] for k in ("layer_names", "dims", "model_class", "num_parameters", "extra_tensors")}}
    (tmp_path / CONFIG_NAME).write_text(json.dumps(old))
    fresh = load_gates(_bert_classifier(), tmp_path)
    assert gate_config(fresh) == gate_config(model)
    assert all(torch.equal(a, b) for a, b in zip(_gate_tensors(fresh).values(), _gate_tensors(model).values(),
                                                 strict=True))
    # saving again writes format 2 and removes the old file
    save_gates(fresh, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_NAME, weights_path(tmp_path).name])
    assert not (tmp_path / "gates.safetensors").exists()


def test_a_crash_while_writing_the_config_keeps_the_old_pair(tmp_path, monkeypatch):
    model = _moved(patch(_bert_classifier()))
    save_gates(model, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    expected = _gate_tensors(model)

    real = files._atomic_write

    def crash(path, write):
        if path.name == CONFIG_NAME:
            raise OSError("power cut")
        real(path, write)

    monkeypatch.setattr(files, "_atomic_write", crash)
    _moved(model, seed=2)
    with pytest.raises(OSError, match="power cut"):
        save_gates(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # new weights removed, old pair intact
    fresh = load_gates(_bert_classifier(), tmp_path)
    assert all(torch.equal(a, expected[k]) for k, a in _gate_tensors(fresh).items())


def test_weights_that_do_not_match_the_recorded_hash_are_refused(tmp_path):
    import safetensors.torch

    save_gates(_moved(patch(_bert_classifier())), tmp_path)
    path = weights_path(tmp_path)
    tensors = safetensors.torch.load_file(str(path))
    key = next(iter(tensors))
    tensors[key] = tensors[key] + 1
    safetensors.torch.save_file(tensors, str(path))  # a valid file, other values
    model = _bert_classifier()
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        load_gates(model, tmp_path)
    assert not vectorgate.patching.is_patched(model)


# --------------------------------------------------------------------------- across heads


def test_gates_saved_from_a_classifier_load_into_the_base_model_and_back(tmp_path):
    classifier = _moved(patch(_bert_classifier(), rank=4))
    save_gates(classifier, tmp_path / "from_head", modules_to_save=["classifier"])
    base = copy.deepcopy(_bert_classifier().bert)  # same backbone, no head: names lack "bert."
    with pytest.warns(UserWarning, match=r"no place for 2 tensor\(s\) saved with modules_to_save \['classifier'\]"):
        load_gates(base, tmp_path / "from_head")
    head = {k.removeprefix("bert."): v for k, v in _gate_tensors(classifier).items()}
    assert _gate_tensors(base).keys() == head.keys()
    assert all(torch.equal(v, head[k]) for k, v in _gate_tensors(base).items())
    # the gated encoder computes what the classifier's gated encoder computes
    with torch.no_grad():
        assert torch.equal(base(IDS).last_hidden_state, classifier.bert(IDS).last_hidden_state)

    save_gates(base, tmp_path / "from_base")
    other = load_gates(_bert_classifier(), tmp_path / "from_base")
    assert all(torch.equal(v, _gate_tensors(classifier)[k]) for k, v in _gate_tensors(other).items())


def test_gates_saved_with_a_head_load_the_head_into_the_same_class(tmp_path):
    model = vectorgate.make_gate_adapter(_bert_classifier(), rank=4)
    with torch.no_grad():
        model.classifier.weight.add_(1.0)
    save_gates(_moved(model), tmp_path)
    fresh = load_gates(_bert_classifier(), tmp_path)
    assert torch.equal(fresh.classifier.weight, model.classifier.weight)
    assert gate_config(fresh).modules_to_save == ("classifier",)
    with torch.no_grad():
        assert torch.equal(fresh(IDS).logits, model(IDS).logits)
