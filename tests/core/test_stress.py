"""Numerical stress, CI-sized: the harness of ``benchmarks/stress.py`` on a 48-layer stack.

A 48-layer pre-norm stack of gated blocks (width 16) trains on real Shakespeare text at
lr 1e-2 under fp16 autocast + GradScaler and under bf16 autocast, with and without a
curvature cap: no NaN/Inf in the loss, the gradient norm or any parameter. The
configuration measured to be unstable (curvature started at 1 in all 48 gates) is
reported by a warning that names the fix before the first step, never silently.
The 1000-step runs are in ``benchmarks/stress.py``; results in ``docs/reliability.md``.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys

import pytest
import torch

from vectorgate.stability import check_gates

STRESS_PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "stress.py"


def _load_stress():
    # The tests run the very harness the long benchmark runs, not a copy of it.
    spec = importlib.util.spec_from_file_location("vectorgate_benchmark_stress", STRESS_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


stress = _load_stress()
SMALL = {"depth": 48, "dim": 16, "hidden": 32, "batch": 32, "steps": 60, "check_every": 10}


@pytest.fixture(scope="module")
def data():
    # One intra-op thread: at this size a step is Python-bound, and on a shared CI core two
    # OpenMP threads spin-waiting on each other were measured to be several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield stress.CharData(max_chars=200_000)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("cap", [None, 3.0], ids=["uncapped", "cap3"])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_deep_stack_trains_without_non_finite_values(data, precision, cap):
    cfg = stress.StressConfig(precision=precision, lr=1e-2, max_curvature=cap, **SMALL)
    result = stress.run_config(cfg, data)
    assert result.finite, result.error
    assert result.steps_done == cfg.steps
    assert result.final_loss < result.first_loss - 0.3  # it really trained
    assert math.isfinite(result.val_bpc)
    assert result.skipped_steps <= 2  # GradScaler may skip a step while finding its scale
    if cap is not None:
        assert result.max_abs_curvature < cap


def test_unstable_configuration_is_reported_before_it_produces_nan(data):
    # Measured: 48 uncapped gates with c = 1 scale the stream by ~e^48, which overflows
    # fp16 in the first forward pass. The harness (any loop using check_gates) warns first.
    cfg = stress.StressConfig(precision="fp16", lr=1e-2, init_curvature=1.0, **{**SMALL, "steps": 3})
    result = stress.run_config(cfg, data)
    assert result.first_warning_step == 0
    assert any("max_curvature <=" in w for w in result.warnings)
    if not result.finite:  # and if NaN does appear, it is an error naming where
        assert "loss" in result.error or "parameter" in result.error


def test_the_named_fix_trains_cleanly_under_fp16(data):
    # The cap the warning suggests for 48 gates (log(65504) / 48 ~ 0.23).
    cfg = stress.StressConfig(
        precision="fp16", lr=1e-2, init_curvature=0.1, max_curvature=0.2, **SMALL
    )
    result = stress.run_config(cfg, data)
    assert result.finite, result.error
    assert result.first_warning_step is None, result.warnings
    assert result.sum_max_abs_curvature < 48 * 0.2


def test_stack_gradients_are_finite_under_fp16_autocast(data):
    cfg = stress.StressConfig(precision="fp16", init_curvature=0.1, max_curvature=0.2, **SMALL)
    torch.manual_seed(0)
    model = stress.GatedStack(data.vocab_size, cfg)
    ids, targets = data.batch("train", 8, cfg.context, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.float16):
        logits = model(ids)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits.float(), targets).backward()
    report = check_gates(model)  # raises NonFiniteError if any gate's grad is NaN/Inf
    assert len(report.gates) == 48
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name


def test_bad_precision_is_rejected(data):
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'bf16', 'fp16'\), got 'fp8'"):
        stress.run_config(stress.StressConfig(precision="fp8", **SMALL), data)
