"""examples/bert_example.py runs end to end with tiny settings and writes what it promises."""

from __future__ import annotations

import json

import pytest
from example_loader import load_example

pytest.importorskip("transformers")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")


@pytest.mark.parametrize("mode", ["full", "gates-only"])
def test_bert_example_runs_and_reports(tmp_path, capsys, minilm_path, mode):
    example = load_example("bert_example.py")
    results = example.main([
        "--steps", "2", "--batch-size", "4", "--val-size", "8", "--test-size", "8", "--eval-every", "1",
        "--max-length", "16", "--mode", mode, "--output-dir", str(tmp_path), "--no-progress", "--device", "cpu",
        "--report-texts", "4" if mode == "full" else "0",
    ])
    printed = capsys.readouterr().out
    assert "Test split (8 examples): gated" in printed and "McNemar's exact test" in printed
    v = results["verdict"]
    assert v["gated_only"] + v["plain_only"] <= 8 and 0 < v["p_value"] <= 1
    assert ("no significant difference" in printed) == (v["p_value"] >= 0.05)
    assert results["models"]["gated"]["gates"]["rms_s"] > 0, "the gates did not move"
    for name in ("results.json", "curves.png", "curvature.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    from vectorgate.patching.files import weights_path

    assert weights_path(tmp_path / "gates").stat().st_size > 0
    report_files = ("summary.txt", "curvature.png", "s_distribution.png", "token_beta.png")
    for name in report_files:  # the gate report is written only when asked for
        assert (tmp_path / "gate_report" / name).exists() == (mode == "full"), name
    saved = json.loads((tmp_path / "results.json").read_text())
    plain, gated = saved["models"]["plain"], saved["models"]["gated"]
    assert plain["history"]["val_step"] == [1, 2] and len(gated["history"]["train_loss"]) == 2
    assert len(gated["curvature"]["attention"]) == len(gated["curvature"]["mlp"]) == 6
    assert all(c > 0 for c in gated["curvature"]["mlp"])
    if mode == "gates-only":
        assert plain["trainable_parameters"] == 384 * 2 + 2  # the classifier head only
        assert gated["trainable_parameters"] == plain["trainable_parameters"] + 12 * (384 * 384 + 2 * 384)
    else:
        assert plain["trainable_parameters"] == plain["total_parameters"]


def test_bert_example_rejects_bad_flags(capsys):
    example = load_example("bert_example.py")
    with pytest.raises(SystemExit):
        example.main(["--steps", "0"])
    assert "--steps must be a positive integer" in capsys.readouterr().err
