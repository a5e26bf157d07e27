"""The statistics of `vectorgate-lab compare`: t intervals, paired t-tests, exact McNemar, and
what the report writes from them (checked against scipy's own tests)."""

from __future__ import annotations

import math

import pytest

stats = pytest.importorskip("scipy.stats")

from vectorgate_lab.compare.report import write_markdown  # noqa: E402
from vectorgate_lab.compare.stats import mcnemar_exact, paired_t, t_interval  # noqa: E402


def test_t_interval_matches_scipy():
    values = [0.71, 0.74, 0.69, 0.75, 0.72]
    mean, half = t_interval(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    assert mean == pytest.approx(sum(values) / 5)
    assert half == pytest.approx((hi - lo) / 2)
    assert math.isnan(t_interval([0.5])[1]) and math.isnan(t_interval([])[0])


def test_paired_t_matches_scipy_and_pairs_by_seed():
    a = {0: 0.80, 1: 0.78, 2: 0.83, 3: 0.79, 4: 0.81, 9: 0.1}  # seed 9 has no partner: ignored
    b = {0: 0.76, 1: 0.77, 2: 0.80, 3: 0.78, 4: 0.77}
    result = paired_t(a, b)
    seeds = range(5)
    ref = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    assert result.n == 5 and result.p == pytest.approx(ref.pvalue)
    assert result.diff == pytest.approx(sum(a[s] - b[s] for s in seeds) / 5)
    assert result.significant() == (ref.pvalue < 0.05)


def test_paired_t_edge_cases():
    assert paired_t({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6}).p == 1.0  # identical arms: no difference
    assert paired_t({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.6}).p == 0.0  # a constant, nonzero shift
    one = paired_t({0: 0.6}, {0: 0.5})
    assert one.n == 1 and math.isnan(one.p) and not one.significant()


@pytest.mark.parametrize(("a_only", "b_only"), [(3, 12), (10, 10), (0, 7), (25, 9)])
def test_mcnemar_exact_matches_a_two_sided_binomial_test(a_only, b_only):
    both, neither = 40, 5
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    got = mcnemar_exact(a, b)
    ref = stats.binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue
    assert got[:2] == (a_only, b_only) and got[2] == pytest.approx(min(1.0, ref))


def test_mcnemar_without_discordant_pairs_and_length_mismatch():
    assert mcnemar_exact([True, False], [True, False]) == (0, 0, 1.0)
    with pytest.raises(ValueError, match="equal lengths"):
        mcnemar_exact([True], [True, False])


def _run(variant: str, seed: int, final: float, correct: str) -> dict:
    return {"task": "t", "metric": "accuracy", "higher_is_better": True, "variant": variant, "seed": seed,
            "final": final, "curve": [[10, final]], "trainable_params": 10, "total_params": 20, "time_s": 1.0,
            "steps": 10, "correct": correct}


def test_report_writes_intervals_paired_tests_and_no_difference(tmp_path):
    runs = []
    for seed in range(5):
        runs.append(_run("plain", seed, 0.70 + 0.01 * seed, "1100"))
        runs.append(_run("better", seed, 0.75 + 0.01 * seed + 0.001 * (seed % 2), "1110"))
        runs.append(_run("same", seed, 0.70 + 0.01 * seed + 0.002 * (-1) ** seed, "1100"))
    text = write_markdown(runs, tmp_path / "r.md", command="test")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "**better**" in rows["better"] and "McNemar 5/0" in rows["better"]
    assert "no difference measured" in rows["same"]
    assert "(z)" not in text and "95% CI" in text


def test_report_lists_a_seed_by_seed_sweep_once(tmp_path):
    runs = [{**_run("plain", k, 0.7, "1"), "command": f"vectorgate compare --tasks t --seeds {k + 1} --output-dir o"}
            for k in range(3)]
    text = write_markdown(runs, tmp_path / "r.md", command="report")
    made_by = [line for line in text.splitlines() if line.startswith("- Runs made by")]
    assert made_by == ["- Runs made by: `vectorgate compare --tasks t --seeds 3 --output-dir o`"]


def test_cli_report_compares_with_the_named_references(tmp_path):
    import json

    from vectorgate_lab.cli import main

    runs = [_run(v, k, 0.7 + 0.01 * k + (0.02 if v == "b" else 0.0), "10") for k in range(5) for v in ("a", "b")]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    assert main(["compare", "--report-only", "--output-dir", str(tmp_path), "--references", "a"]) == 0
    text = (tmp_path / "results.md").read_text()
    assert "| vs a |" in text and "vs plain" not in text
    assert "+0.0200 ± 0.0000, p=<0.001: **better**" in text
