"""`vectorgate-lab compare`: variant specs, the quick end-to-end run, equal data order, resume,
matched LoRA/gate parameter counts, and a user-defined task in a few lines."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from vectorgate.variants import build_gate
from vectorgate_lab.cli import main
from vectorgate_lab.compare import (
    ClassificationTask,
    VariantSpec,
    load_runs,
    parse_variant,
    run_comparison,
)


@pytest.mark.parametrize(
    "text, variant, kwargs, lr_mult, gate_lr_mult",
    [
        ("plain", "plain", {}, 1.0, 1.0),
        ("vectorgate[init_curvature=0.5,max_curvature=None]", "vectorgate", {"init_curvature": 0.5, "max_curvature": None}, 1.0, 1.0),
        ("vectorgate_lowrank[rank=7,gate_lr_mult=10]", "vectorgate_lowrank", {"rank": 7}, 1.0, 10.0),
        ("lora[r=8, lr_mult=0.5]", "lora", {"r": 8}, 0.5, 1.0),
    ],
)
def test_parse_variant(text, variant, kwargs, lr_mult, gate_lr_mult):
    spec = parse_variant(text)
    assert spec == VariantSpec(label=text, variant=variant, kwargs=kwargs, lr_mult=lr_mult, gate_lr_mult=gate_lr_mult)


@pytest.mark.parametrize(
    "text, match",
    [
        ("vectorgate[rank]", "key=value"),
        ("vectorgate[rank=2,rank=3]", "given twice"),
        ("vectorgate[gate_lr_mult=0]", "positive"),
        ("vectorgate[gate_lr_mult=nan]", "positive"),
        ("vector gate", "name"),
    ],
)
def test_parse_variant_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_variant(text)


def test_compare_quick_end_to_end(tmp_path, capsys):
    """Two tasks x two variants x two seeds through the CLI: records, table, plots; then resume."""
    args = ["compare", "--quick", "--seeds", "2", "--tasks", "vit_mnist", "charlm_shakespeare",
            "--variants", "plain", "vectorgate[gate_lr_mult=10]", "--output-dir", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    runs = load_runs(tmp_path)
    assert len(runs) == 8 and not any("error" in r for r in runs)
    for r in runs:
        assert r["steps"] == 3 and len(r["curve"]) == 2 and r["trainable_params"] > 0
        assert r["gate_lr"] == pytest.approx(r["lr"] * (10 if r["variant"] != "plain" else 1))
    # Same seed, same data order and backbone init, and vectorgate is the plain residual at
    # init: the first training loss is bit-identical across the two variants.
    for task in ("vit_mnist", "charlm_shakespeare"):
        for seed in (0, 1):
            first = {r["variant"]: r["train_loss"][0] for r in runs if r["task"] == task and r["seed"] == seed}
            assert first["plain"] == first["vectorgate[gate_lr_mult=10]"]
    table = (tmp_path / "results.md").read_text()
    assert "## vit_mnist" in table and "## charlm_shakespeare" in table
    assert "| vectorgate[gate_lr_mult=10] |" in table and "val_bpc" in table
    assert (tmp_path / "vit_mnist.png").stat().st_size > 0
    # Resume: nothing left to do, nothing appended.
    assert main(args) == 0
    assert len(load_runs(tmp_path)) == 8


def test_failed_run_is_recorded_and_reported(tmp_path):
    rc = main(["compare", "--quick", "--seeds", "1", "--tasks", "vit_mnist", "--variants", "layerscale[bogus=1]",
               "--output-dir", str(tmp_path), "--no-progress"])
    assert rc == 1
    (record,) = load_runs(tmp_path)
    assert "does not accept" in record["error"]
    assert "Failed runs" in (tmp_path / "results.md").read_text()


def test_unknown_task_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="unknown task"):
        main(["compare", "--tasks", "nope", "--output-dir", str(tmp_path)])


def test_adapter_arms_match_trainable_parameters_exactly():
    """Matched budgets of the *_adapt tasks: lora r=8 = gates of rank 7 (73,728), lora r=193 =
    the full-rank gate (1,778,688), each + the classifier; DoRA and (IA)^3 build through PEFT."""
    pytest.importorskip("peft")
    from vectorgate_lab.compare.tasks import TextAdapterTask

    task = TextAdapterTask()
    counts = {}
    for text in ("lora[r=8]", "vectorgate_lowrank[rank=7]", "plain", "lora[r=193]", "vectorgate", "dora[r=8]", "ia3"):
        torch.manual_seed(0)
        model = task.build_model(parse_variant(text), 0)
        counts[text] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    classifier = 384 * 2 + 2
    assert counts["plain"] == classifier
    assert counts["lora[r=8]"] == counts["vectorgate_lowrank[rank=7]"] == 73_728 + classifier
    assert counts["lora[r=193]"] == counts["vectorgate"] == 1_778_688 + classifier
    assert counts["dora[r=8]"] == 73_728 + 12 * 384 + classifier  # + one magnitude per output
    assert classifier < counts["ia3"] < 73_728  # (IA)^3 learns scaling vectors only


def test_peft_arm_rejects_unknown_arguments():
    pytest.importorskip("peft")
    from vectorgate_lab.compare.tasks.peft_arms import build_peft_arm

    with pytest.raises(ValueError, match="ia3 takes no arguments"):
        build_peft_arm(nn.Linear(2, 2), parse_variant("ia3[r=4]"), keep_trainable=())
    with pytest.raises(ValueError, match="not a PEFT arm"):
        build_peft_arm(nn.Linear(2, 2), parse_variant("bogus"), keep_trainable=())


def test_text_tasks_load_real_data_and_keep_per_example_outcomes(tmp_path):
    pytest.importorskip("transformers")
    runs = run_comparison(["sms_adapt"], [parse_variant("plain"), parse_variant("vectorgate_lowrank[rank=2]")],
                          [0], tmp_path, quick=True, progress=False)
    assert [r["variant"] for r in runs] == ["plain", "vectorgate_lowrank[rank=2]"]
    for r in runs:
        assert "error" not in r and len(r["correct"]) == 16 and set(r["correct"]) <= {"0", "1"}
        assert r["final"] == pytest.approx(r["correct"].count("1") / 16)


def test_sms_spam_loader_reads_the_bundled_csv():
    pytest.importorskip("pandas")
    from vectorgate_lab.assets import load_sms_spam

    data = load_sms_spam()
    assert len(data) == 4837 and data.label_names == ("ham", "spam")
    assert int(data.labels.sum()) == 638 and all(isinstance(t, str) and t for t in data.texts[:50])


def test_gate_weight_decay_is_a_training_key():
    spec = parse_variant("vectorgate[gate_weight_decay=0,rank=4]")
    assert spec.gate_weight_decay == 0.0 and spec.kwargs == {"rank": 4}
    assert parse_variant("vectorgate").gate_weight_decay is None
    with pytest.raises(ValueError, match="a number >= 0"):
        parse_variant("vectorgate[gate_weight_decay=-1]")


# A user's own task: real data, their model, any variant by name. This is the whole of it.
@dataclass
class DigitsTask(ClassificationTask):
    name: str = "digits_mlp"
    steps: int = 30
    lr: float = 3e-3

    def load(self) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = torch.tensor(digits.data, dtype=torch.float32) / 16, torch.tensor(digits.target)
        self.x_train, self.y_train, self.x_val, self.y_val = x[:1400], y[:1400], x[1400:], y[1400:]

    def build_model(self, spec: VariantSpec, seed: int) -> nn.Module:
        return DigitsNet(spec)


class DigitsNet(nn.Module):
    def __init__(self, spec: VariantSpec, dim: int = 32) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(64, dim), nn.Linear(dim, 10)
        self.branch = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.gate = build_gate(spec.variant, dim, **spec.kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(self.gate.residual(h, self.branch(h)))


@pytest.mark.parametrize("variant", ["plain", "vectorgate[init_curvature=0.5]", "highway"])
def test_user_defined_task_trains(tmp_path, variant):
    runs = run_comparison([DigitsTask()], [parse_variant(variant)], [0], tmp_path, progress=False)
    (run,) = runs
    assert run["task"] == "digits_mlp" and run["final"] > 0.5  # chance is 0.1
    assert json.loads((tmp_path / "runs.jsonl").read_text())["variant"] == variant
