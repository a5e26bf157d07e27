"""The skipping arms of the comparison harness (skip_budget keys, skip_curve) and their report."""

from __future__ import annotations

import json
import math

import pytest

from vectorgate_lab.compare.runner import run_comparison
from vectorgate_lab.compare.skip_report import main as report_main
from vectorgate_lab.compare.skip_report import skip_table, write_skip_markdown
from vectorgate_lab.compare.spec import parse_variant


def test_skip_keys_parse_and_bad_budgets_are_errors():
    spec = parse_variant("vectorgate[skip_budget=0.5,skip_weight=0.1,skip_warmup=0.2,rank=4]")
    assert (spec.skip_budget, spec.skip_weight, spec.skip_warmup) == (0.5, 0.1, 0.2)
    assert spec.kwargs == {"rank": 4}  # skip keys do not reach the gate
    assert parse_variant("vectorgate").skip_budget is None
    for bad in ("skip_budget=1", "skip_budget=-0.1", "skip_budget=nan", "skip_warmup=1.5", "skip_weight=-1"):
        with pytest.raises(ValueError, match="skip_"):
            parse_variant(f"vectorgate[{bad}]")


@pytest.mark.parametrize("task", ["vit_mnist", "charlm_shakespeare", "sms_full"])
def test_budget_arms_record_a_skip_curve_at_every_ratio(tmp_path, task):
    pytest.importorskip("timm" if task == "vit_mnist" else "transformers")
    arms = [parse_variant("plain"), parse_variant("vectorgate[skip_budget=0.5,init=random,init_curvature=0.4]"),
            parse_variant("mod_router[skip_budget=0.5]")]
    if task == "sms_full":  # the pretrained model is the slow one: one skipping arm is enough there
        arms = [arms[0], arms[1]]
    runs = run_comparison([task], arms, [0], tmp_path, quick=True, progress=False)
    by_arm = {r["variant"]: r for r in runs}
    assert all("error" not in r for r in runs), [r.get("error") for r in runs]
    assert by_arm["plain"]["skip_curve"] is None
    for spec in arms[1:]:
        curve = by_arm[spec.label]["skip_curve"]
        assert [c[0] for c in curve] == [0.0, 0.3, 0.7]  # --quick's ratios
        assert curve[0][1] == 0.0 and curve[0][2] == pytest.approx(by_arm[spec.label]["final"])
        assert all(0.0 <= achieved <= 1.0 and math.isfinite(metric) for _, achieved, metric in curve)
        assert curve[-1][1] > 0.2  # something was skipped at 70%
    # the model is left without skipping or budget edits: the records are plain JSON
    json.dumps(runs)


def _record(variant, seed, final, curve=None, name="vectorgate"):
    return {"task": "t", "metric": "accuracy", "higher_is_better": True, "variant": variant, "variant_name": name,
            "seed": seed, "final": final, "skip_curve": curve, "machine": "m", "command": "c --seeds 2"}


def test_skip_report_pairs_by_seed_and_writes_plot(tmp_path):
    runs = [_record("plain", 0, 0.80, name="plain"), _record("plain", 1, 0.70, name="plain")]
    runs += [_record("vectorgate[skip_budget=0]", s, f, [[0.0, 0.0, f], [0.5, 0.5 + s / 100, f - 0.02]]) for s, f in ((0, 0.82), (1, 0.74))]
    table = skip_table(runs)["t"]
    assert table["dense"] == {0: 0.80, 1: 0.70}
    cell = table["arms"]["vectorgate[skip_budget=0]"][0.5]
    assert cell["metric"] == {0: pytest.approx(0.80), 1: pytest.approx(0.72)} and cell["achieved"] == {0: 0.5, 1: 0.51}
    text = write_skip_markdown(runs, tmp_path / "r.md")
    # paired by seed: +0.00 and +0.02 over plain -> mean +0.0100; own dense shares 0.80/0.82 and 0.72/0.74
    assert "+0.0100" in text and "| 50% |" in text
    own = (0.80 / 0.82 + 0.72 / 0.74) / 2
    assert f"{own:.1%}" in text
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    assert report_main([str(tmp_path / "runs"), "--markdown", str(tmp_path / "out.md")]) == 0
    assert (tmp_path / "runs" / "t_skip.png").stat().st_size > 1000
    assert "![t](runs/t_skip.png)" in (tmp_path / "out.md").read_text()


def test_skip_report_refuses_runs_without_curves(tmp_path):
    (tmp_path / "runs.jsonl").write_text(json.dumps(_record("plain", 0, 0.8, name="plain")) + "\n")
    with pytest.raises(SystemExit, match="no run"):
        report_main([str(tmp_path), "--markdown", str(tmp_path / "out.md")])


def test_a_budget_arm_on_a_task_without_calibration_data_fails_before_training(tmp_path):
    from vectorgate_lab.compare.runner import run_one
    from vectorgate_lab.compare.task import Task

    class NoSkipTask(Task):
        def build_model(self, spec, seed):  # pragma: no cover - must not be reached
            raise AssertionError("trained although the task cannot skip")

    with pytest.raises(NotImplementedError, match="does not support token skipping"):
        run_one(NoSkipTask(name="noskip"), parse_variant("vectorgate[skip_budget=0.5]"), 0)
