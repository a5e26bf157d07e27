"""The compound-gain diagnostic: the running sum of s along the stream, measured per forward."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import vectorgate
from vectorgate import GatedResidual, VectorGate
from vectorgate.compound_gain import (
    CompoundGainMonitor,
    CompoundGainReport,
    SiteGain,
    compound_gain,
)

D = 8


def stack(n: int, c: float = 0.5) -> nn.Sequential:
    """n gated blocks whose gates have g = identity-like constant: z = 10 everywhere, so s = c*tanh(10)."""
    blocks = nn.Sequential(*(GatedResidual(nn.Linear(D, D), D) for _ in range(n)))
    with torch.no_grad():
        for block in blocks:
            block.gate.proj.weight.zero_()
            block.gate.proj.bias.fill_(10.0)
            block.gate.curvature.fill_(c)
    return blocks


def test_the_gain_after_each_site_is_the_running_sum_of_s():
    model = stack(4, c=0.5)
    report = compound_gain(model, torch.randn(2, 5, D))
    s = 0.5 * math.tanh(10.0)
    assert [site.depth for site in report.sites] == [0, 1, 2, 3]
    for k, site in enumerate(report.sites):
        assert site.max_log_gain == pytest.approx((k + 1) * s, rel=1e-6)
        assert site.min_log_gain == pytest.approx((k + 1) * s, rel=1e-6)
        assert site.max_abs_s == pytest.approx(s, rel=1e-6)
        assert site.saturated == 1.0  # |tanh(10)| >= 0.95
    assert report.max_gain == pytest.approx(math.exp(4 * s), rel=1e-5)
    assert report.max_abs_log_gain == pytest.approx(4 * s, rel=1e-6)
    assert report.within_budget
    assert [d for d, _, _ in report.by_depth()] == [0, 1, 2, 3]


def test_a_new_forward_pass_starts_a_new_stream():
    model = stack(3)
    monitor = CompoundGainMonitor(model)
    with monitor, torch.no_grad():
        model(torch.randn(2, D))
        model(torch.randn(4, D))
    assert len(monitor.report().sites) == 3  # the last pass only


def test_calls_of_another_shape_are_another_stream():
    gate_a, gate_b = GatedResidual(nn.Identity(), D), GatedResidual(nn.Identity(), D)

    class TwoStreams(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = gate_a, gate_b

        def forward(self, x, y):
            return self.a(x), self.b(y)

    report = compound_gain(TwoStreams(), torch.randn(2, D), torch.randn(3, D))
    assert [(s.stream, s.depth) for s in report.sites] == [(0, 0), (1, 0)]


def test_a_fresh_default_model_is_exactly_gain_one():
    model = nn.Sequential(*(GatedResidual(nn.Linear(D, D), D, depth=6) for _ in range(6)))
    report = compound_gain(model, torch.randn(3, D))
    assert report.max_gain == 1.0 and report.min_gain == 1.0 and report.saturated == 0.0


def test_gradient_norms_per_gated_layer_after_backward():
    model = stack(3)
    monitor = CompoundGainMonitor(model)
    with monitor:
        model(torch.randn(2, D)).sum().backward()
    report = monitor.report()
    assert set(report.grad_norms) == {"0", "1", "2"}
    expected = torch.stack([p.grad.norm() for p in model[1].parameters()]).norm()
    assert report.grad_norms["1"] == pytest.approx(float(expected), rel=1e-5)
    assert monitor.report(grads=False).grad_norms == {}


def test_a_patched_model_reports_per_patched_layer():
    transformers = pytest.importorskip("transformers")
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=16))
    vectorgate.patch(model)
    monitor = CompoundGainMonitor(model)
    with monitor:
        model(torch.randint(0, 32, (2, 8)), labels=torch.randint(0, 32, (2, 8))).loss.backward()
    report = monitor.report()
    assert len(report.sites) == 6
    assert set(report.grad_norms) == {f"model.layers.{i}" for i in range(3)}


def test_out_of_budget_and_scalars():
    report = CompoundGainReport(
        (SiteGain("a", 0, 0, 12.0, -1.0, 12.0, 0.5), SiteGain("b", 1, 0, 3.0, -20.0, 2.0, 0.25)),
        budget=11.0, grad_norms={"x": 2.0},
    )
    assert not report.within_budget and report.max_abs_log_gain == 20.0
    values = report.scalars()
    assert values["gates/compound_gain_max_log10"] == pytest.approx(12 / math.log(10))
    assert values["gates/compound_gain_min_log10"] == pytest.approx(-20 / math.log(10))
    assert values["gates/saturated"] == pytest.approx(0.375)
    assert values["gates/max_layer_grad_norm"] == 2.0
    assert "OUTSIDE" in report.summary()
    assert report.to_dict()["sites"][1]["min_log_gain"] == -20.0
    assert CompoundGainReport((), budget=None).within_budget


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        CompoundGainMonitor("model")
    with pytest.raises(ValueError, match="contains no VectorGate"):
        CompoundGainMonitor(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="threshold"):
        CompoundGainMonitor(stack(1), threshold=0.0)
    with pytest.raises(ValueError, match="budget must be None or a positive number"):
        CompoundGainMonitor(stack(1), budget=-1)
    monitor = CompoundGainMonitor(stack(1)).start()
    with pytest.raises(RuntimeError, match="already running"):
        monitor.start()
    monitor.stop()
    monitor.stop()


def test_hooks_exist_only_while_running():
    model = stack(2)
    monitor = CompoundGainMonitor(model)
    with monitor:
        assert monitor.running and model[0].gate.proj._forward_hooks
    assert not monitor.running and not model[0].gate.proj._forward_hooks and not model._forward_pre_hooks


def test_plot_compound_gain(tmp_path):
    pytest.importorskip("matplotlib")
    from vectorgate.compound_gain_plot import plot_compound_gain

    model = stack(3)
    history = [(step, compound_gain(model, torch.randn(2, D))) for step in (1, 2)]
    fig = plot_compound_gain({"a": history, "b": history}, tmp_path / "gain.png", title="t")
    assert (tmp_path / "gain.png").stat().st_size > 1000
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="no compound-gain report"):
        plot_compound_gain({"a": []})


def test_trainer_callback_logs_the_gain_where_reporters_see_it(tmp_path):
    transformers = pytest.importorskip("transformers")
    from vectorgate.integrations.transformers.callbacks import CompoundGainCallback

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=16))
    vectorgate.patch(model)
    ids = torch.randint(0, 32, (16, 8))
    data = [{"input_ids": row, "labels": row} for row in ids]

    seen = []

    class Reporter(transformers.TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(dict(logs))

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=4, logging_steps=100,
        report_to=[], learning_rate=1e-3, use_cpu=True, save_strategy="no", disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[Reporter()])
    callback = CompoundGainCallback.attach(trainer, every=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", vectorgate.stability.UnstableGateWarning)
        trainer.train()
    assert [step for step, _ in callback.history] == [1, 2, 4]
    logged = [log for log in seen if "gates/compound_gain_max_log10" in log]
    assert len(logged) == 3 and all("gates/max_layer_grad_norm" in log for log in logged)
    assert sum("gates/saturated" in h for h in trainer.state.log_history) == 3
    assert not any(m.proj._forward_hooks for _, m in vectorgate.gates(model))  # stopped at the end
    with pytest.raises(ValueError, match="every must be a positive int"):
        CompoundGainCallback(every=0)


def test_accelerate_log_compound_gain_logs_and_checks():
    from vectorgate.integrations.accelerate import log_compound_gain

    class Tracker:
        def __init__(self):
            self.calls = []

        def log(self, values, step=None):
            self.calls.append((step, values))

    tracker = Tracker()
    report = compound_gain(stack(2), torch.randn(2, D))
    values = log_compound_gain(tracker, report, 7)
    assert tracker.calls == [(7, values)] and "gates/max_abs_log_gain" in values
    bad = CompoundGainReport((SiteGain("a", 0, 0, 30.0, 0.0, 1.0, 0.0),))
    with pytest.warns(vectorgate.stability.UnstableGateWarning, match="left its budget"):
        log_compound_gain(tracker, bad, 8)


def test_vectorgate_default_gate_without_depth_is_unchanged():
    gate = VectorGate(D)
    assert gate.max_curvature is None and float(gate.effective_curvature().detach()[0]) == 1.0
