"""GateTrainer and gate_optimizer: the gates on their own optimizer groups.

The gates get their own learning rate and no decay on their vectors (the curvature above
all: decayed, it drifts to 0, where the gate cannot learn); the backbone keeps its decay
rule. Checked on the optimizer's groups, through a short real Trainer run on a tiny random
BERT (CPU), and through ``Accelerator.prepare``.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from vectorgate.integrations.accelerate import gate_optimizer  # noqa: E402
from vectorgate.integrations.transformers.trainer import GateTrainer  # noqa: E402
from vectorgate.patching import gates, mark_only_gates_trainable, patch  # noqa: E402

LR, GATE_LR, WD = 1e-3, 1e-2, 0.1


def _model() -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    return patch(transformers.BertForSequenceClassification(config))


class _Data(torch.utils.data.Dataset):
    """Random token sequences whose label is whether token 7 occurs: learnable, tiny."""

    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 128, (n, 16), generator=g)
        self.labels = (self.ids == 7).any(-1).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(16, dtype=torch.long), "labels": self.labels[i]}


def _args(tmp_path, **overrides) -> transformers.TrainingArguments:
    options = {"output_dir": str(tmp_path), "max_steps": 4, "per_device_train_batch_size": 8, "learning_rate": LR,
               "weight_decay": WD, "lr_scheduler_type": "constant", "save_strategy": "no", "report_to": "none",
               "use_cpu": True, "seed": 0, "dataloader_num_workers": 0, "disable_tqdm": True, "logging_steps": 100}
    options.update(overrides)
    return transformers.TrainingArguments(**options)


def _gate_param_ids(model) -> set[int]:
    return {id(p) for _, g in gates(model) for p in g.parameters()}


def _group_of(optimizer) -> dict[int, dict]:
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


def test_gate_trainer_groups(tmp_path):
    model = _model()
    trainer = GateTrainer(model=model, args=_args(tmp_path), gate_lr=GATE_LR)
    optimizer = trainer.create_optimizer()
    group_of = _group_of(optimizer)
    trainable = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    assert set(group_of) == set(trainable), "every trainable parameter sits in exactly one group"
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)
    gate_ids = _gate_param_ids(model)
    decayed_by_trainer = set(trainer.get_decay_parameter_names(model))
    for pid, name in trainable.items():
        group = group_of[pid]
        if pid in gate_ids:
            assert group["lr"] == GATE_LR and group["weight_decay"] == 0.0, name
        else:
            assert group["lr"] == LR, name
            assert group["weight_decay"] == (WD if name in decayed_by_trainer else 0.0), name  # Trainer's own rule
            # ... which for BERT is: decay on matrices only
            assert (group["weight_decay"] > 0) == (model.get_parameter(name).dim() >= 2), name
    # the motivation: plain Trainer would decay the curvature
    curvatures = [n for n in trainable.values() if n.endswith(".curvature")]
    assert curvatures and set(curvatures) <= decayed_by_trainer


def test_gate_weight_decay_applies_to_gate_matrices_only(tmp_path):
    model = _model()
    trainer = GateTrainer(model=model, args=_args(tmp_path), gate_lr=GATE_LR, gate_weight_decay=0.05)
    group_of = _group_of(trainer.create_optimizer())
    for name, gate in gates(model):
        assert group_of[id(gate.proj.weight)]["weight_decay"] == 0.05, name
        assert group_of[id(gate.curvature)]["weight_decay"] == 0.0, name
        assert group_of[id(gate.proj.bias)]["weight_decay"] == 0.0, name


def test_gate_lr_defaults_to_the_trainer_lr(tmp_path):
    model = _model()
    group_of = _group_of(GateTrainer(model=model, args=_args(tmp_path)).create_optimizer())
    assert all(group_of[pid]["lr"] == LR and group_of[pid]["weight_decay"] == 0.0 for pid in _gate_param_ids(model))


def test_training_with_gate_trainer_moves_the_gates_and_never_decays_the_curvature(tmp_path):
    model = _model()
    before = {f"{n}.{k}": v.clone() for n, g in gates(model) for k, v in g.state_dict().items()}
    trainer = GateTrainer(model=model, args=_args(tmp_path, max_steps=1), train_dataset=_Data(), gate_lr=GATE_LR)
    trainer.train()
    after = {f"{n}.{k}": v for n, g in gates(trainer.model) for k, v in g.state_dict().items()}
    # Step 0 at the default init: g's output is zero, so c's gradient is tanh(0) = 0. Without
    # decay c stays exactly at its init; Trainer's plain groups would have shrunk it by lr * wd.
    for key in before:
        if key.endswith(".curvature"):
            assert torch.equal(after[key], before[key]), key
        elif key.endswith("proj.weight"):
            assert not torch.equal(after[key], before[key]), f"{key} did not train"

    # The same step under plain Trainer: the curvature is decayed.
    plain = _model()
    transformers.Trainer(model=plain, args=_args(tmp_path / "plain", max_steps=1), train_dataset=_Data()).train()
    assert all(g.effective_curvature().lt(g.init_curvature).all() for _, g in gates(plain))


def test_a_few_steps_train_every_gate_tensor_and_the_schedule_keeps_the_ratio(tmp_path):
    model = _model()
    before = {f"{n}.{k}": v.clone() for n, g in gates(model) for k, v in g.state_dict().items()}
    trainer = GateTrainer(model=model, args=_args(tmp_path, max_steps=5, lr_scheduler_type="linear"),
                          train_dataset=_Data(), gate_lr=GATE_LR)
    trainer.train()
    after = {f"{n}.{k}": v for n, g in gates(trainer.model) for k, v in g.state_dict().items()}
    assert all(not torch.equal(after[k], before[k]) for k in before), "every gate tensor should train"
    lrs = trainer.lr_scheduler.get_last_lr()
    gate_groups = [i for i, g in enumerate(trainer.optimizer.param_groups) if g["name"].startswith("gates/")]
    backbone = [i for i in range(len(lrs)) if i not in gate_groups]
    assert gate_groups and backbone
    for i in gate_groups:
        for j in backbone:
            assert lrs[i] == pytest.approx(lrs[j] * GATE_LR / LR)


def test_gate_trainer_resumes_its_optimizer_from_a_checkpoint(tmp_path):
    args = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2}
    trainer = GateTrainer(model=_model(), args=_args(tmp_path / "a", **args), train_dataset=_Data(), gate_lr=GATE_LR)
    trainer.train()
    final = {n: p.clone() for n, p in trainer.model.named_parameters()}
    resumed = GateTrainer(model=_model(), args=_args(tmp_path / "b", **args), train_dataset=_Data(), gate_lr=GATE_LR)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))
    for name, p in resumed.model.named_parameters():
        assert torch.equal(p, final[name]), name


def test_gate_only_training(tmp_path):
    model = _model()
    mark_only_gates_trainable(model)  # gates + classifier
    trainer = GateTrainer(model=model, args=_args(tmp_path), gate_lr=GATE_LR)
    optimizer = trainer.create_optimizer()
    assert all(g["params"] for g in optimizer.param_groups), "no empty group is left"
    names = {id(p): n for n, p in model.named_parameters()}
    backbone = [names[id(p)] for g in optimizer.param_groups if not g["name"].startswith("gates/") for p in g["params"]]
    assert sorted(backbone) == ["classifier.bias", "classifier.weight"]


def test_gate_trainer_errors(tmp_path):
    plain = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ValueError, match="holds no vectorgate gate"):
        GateTrainer(model=plain, args=_args(tmp_path)).create_optimizer()
    model = _model()
    with pytest.raises(ValueError, match="builds the optimizer itself"):
        GateTrainer(model=model, args=_args(tmp_path), optimizers=(torch.optim.SGD(model.parameters(), lr=0.1), None))
    with pytest.raises(ValueError, match="gate_lr"):
        GateTrainer(model=model, args=_args(tmp_path), gate_lr=-1.0)


# ----------------------------------------------------------------------------- accelerate


def test_gate_optimizer_groups():
    model = _model()
    optimizer = gate_optimizer(model, lr=LR, gate_lr=GATE_LR, weight_decay=WD)
    assert isinstance(optimizer, torch.optim.AdamW)
    group_of = _group_of(optimizer)
    gate_ids = _gate_param_ids(model)
    for name, p in model.named_parameters():
        group = group_of[id(p)]
        if id(p) in gate_ids:
            assert (group["lr"], group["weight_decay"]) == (GATE_LR, 0.0), name
        else:
            assert (group["lr"], group["weight_decay"]) == (LR, WD if p.dim() >= 2 else 0.0), name


def test_gate_optimizer_through_accelerator_prepare_trains_the_gates():
    from accelerate import Accelerator

    model = _model()
    before = {f"{n}.{k}": v.clone() for n, g in gates(model) for k, v in g.state_dict().items()}
    optimizer = gate_optimizer(model, lr=LR, gate_lr=GATE_LR, weight_decay=WD)
    loader = torch.utils.data.DataLoader(_Data(), batch_size=8)
    accelerator = Accelerator(cpu=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    # the prepared optimizer keeps the groups
    gate_groups = [g for g in optimizer.param_groups if g["name"].startswith("gates/")]
    assert gate_groups and all(g["lr"] == GATE_LR and g["weight_decay"] == 0.0 for g in gate_groups)
    model.train()
    for step, batch in enumerate(loader):
        loss = model(**batch).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        if step == 2:
            break
    inner = accelerator.unwrap_model(model)
    after = {f"{n}.{k}": v for n, g in gates(inner) for k, v in g.state_dict().items()}
    assert all(not torch.equal(after[k], before[k]) for k in before), "every gate tensor should train"


def test_gate_optimizer_errors():
    plain = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match="holds no vectorgate gate"):
        gate_optimizer(plain, lr=1e-3)
    with pytest.raises(ValueError, match="lr must be"):
        gate_optimizer(_model(), lr=0.0)


def test_gate_trainer_is_importable_from_the_integration_package():
    from vectorgate.integrations import transformers as integration

    assert integration.GateTrainer is GateTrainer
    assert "GateTrainer" in integration.__all__
