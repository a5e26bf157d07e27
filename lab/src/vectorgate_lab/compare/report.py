"""Turn ``runs.jsonl`` into a markdown table and plots, with paired statistics.

Per task and arm: the final metric's mean with a 95% t interval over seeds, and against each
reference arm of the task (``plain``; ``lora[r=8]`` where it ran) the paired difference
with its 95% interval, the paired t-test's p-value and, where both arms kept per-example
outcomes, McNemar's exact test pooled over seeds. "no difference measured" is written
wherever the paired t-test does not reject at 5% (see :mod:`vectorgate_lab.compare.stats`).
"""

from __future__ import annotations

import math
import os
import pathlib
import re
import statistics
from collections.abc import Sequence
from typing import Any

from vectorgate_lab.compare.stats import PairedResult, mcnemar_exact, paired_t, t_interval

__all__ = ["DEFAULT_REFERENCES", "compare_arms", "late_gain", "summarise", "write_markdown", "write_plots"]

#: Arms every other arm of a task is compared with, where the task has them.
DEFAULT_REFERENCES: tuple[str, ...] = ("plain", "lora[r=8]")


def _ok(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if "error" not in r and not r.get("diverged_at")]


def late_gain(record: dict[str, Any], share: float = 0.1) -> float | None:
    """How much the validation metric improved over the last ``share`` of a run's steps, as a
    fraction of its final value (positive: still improving; the convergence criterion of the
    converged comparisons is < 0.01). Read from the evaluation curve: the last point at or
    before ``(1 - share) * steps`` against the final one. None when the curve has no such point.
    """
    curve = record.get("curve") or []
    before = [m for step, m in curve if step <= (1 - share) * record["steps"]]
    if not before or not curve or curve[-1][1] == 0:
        return None
    final, earlier = curve[-1][1], before[-1]
    gain = (final - earlier) if record["higher_is_better"] else (earlier - final)
    return gain / abs(final)


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per task, one row per variant (in first-seen order): the final metric's mean, std and
    95% t-interval half-width over finished seeds, the per-seed finals, parameters, time,
    and how many runs diverged or failed."""
    tasks: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in runs:
        tasks.setdefault(r["task"], {}).setdefault(r["variant"], []).append(r)
    out: dict[str, list[dict[str, Any]]] = {}
    for task, by_variant in tasks.items():
        rows = []
        for variant, rs in by_variant.items():
            ok = _ok(rs)
            finals = [r["final"] for r in ok]
            mean, half = t_interval(finals)
            cs = [r["curvature"]["mean_abs_c"] for r in ok if r.get("curvature")]
            gains = [g for r in ok if (g := late_gain(r)) is not None]
            rows.append({
                "variant": variant,
                "metric": rs[0]["metric"],
                "higher_is_better": rs[0]["higher_is_better"],
                "mean": mean, "ci": half, "std": statistics.stdev(finals) if len(finals) > 1 else math.nan,
                "n": len(finals), "finals": finals, "by_seed": {r["seed"]: r["final"] for r in ok},
                "correct": {r["seed"]: r["correct"] for r in ok if r.get("correct")},
                "diverged": sum(1 for r in rs if r.get("diverged_at")),
                "failed": sum(1 for r in rs if "error" in r),
                "trainable_params": ok[0]["trainable_params"] if ok else None,
                "total_params": ok[0]["total_params"] if ok else None,
                "time_s": statistics.fmean(r["time_s"] for r in ok) if ok else math.nan,
                "mean_abs_c": statistics.fmean(cs) if cs else None,
                "steps": ok[0]["steps"] if ok else None,
                "late_gain": statistics.fmean(gains) if gains else None,
                "late_gain_max": max(gains) if gains else None,
            })
        out[task] = rows
    return out


def compare_arms(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``row`` against ``reference`` (rows of :func:`summarise`): the paired t result over
    shared seeds and, where both kept per-example outcomes, McNemar pooled over those seeds."""
    paired: PairedResult = paired_t(row["by_seed"], reference["by_seed"])
    seeds = sorted(set(row["correct"]) & set(reference["correct"]))
    mc = None
    if seeds:
        a = [ch == "1" for s in seeds for ch in row["correct"][s]]
        b = [ch == "1" for s in seeds for ch in reference["correct"][s]]
        if len(a) == len(b):
            mc = mcnemar_exact(a, b)
    return {"paired": paired, "mcnemar": mc}


def _commands(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The commands that made the runs, in first-seen order; a sweep that ran one seed at a
    time (``--seeds 1``, ``--seeds 2``, ...) is listed once, with its largest ``--seeds``."""
    largest: dict[str, tuple[int, str]] = {}
    for r in runs:
        command = r.get("command")
        if not command:
            continue
        match = re.search(r"--seeds (\d+)", command)
        key = re.sub(r"--seeds \d+", "--seeds N", command)
        n = int(match.group(1)) if match else 0
        if key not in largest or n > largest[key][0]:
            largest[key] = (n, command)
    return [command for _, command in largest.values()]


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


#: Fewer paired seeds than this make no claim, whatever the test says (STYLE: >= 5 seeds).
MIN_SEEDS_FOR_A_CLAIM = 5


def _verdict(result: PairedResult, higher_is_better: bool) -> str:
    if result.n < 2:
        return "too few seeds"
    if not result.significant():
        return "no difference measured"
    direction = "better" if (result.diff > 0) == higher_is_better else "worse"
    if result.n < MIN_SEEDS_FOR_A_CLAIM:
        return f"{direction} at p<0.05 on {result.n} seeds: too few for a claim"
    return f"**{direction}**"


def _comparison_cell(row: dict[str, Any], ref: dict[str, Any] | None) -> str:
    if ref is None or row is ref or not row["n"] or not ref["n"]:
        return ""
    cmp = compare_arms(row, ref)
    r: PairedResult = cmp["paired"]
    cell = f"{r.diff:+.4f} ± {_fmt(r.half_width)}, p={_p(r.p)}: {_verdict(r, row['higher_is_better'])}"
    if cmp["mcnemar"] is not None:
        a_only, b_only, p = cmp["mcnemar"]
        cell += f"; McNemar {a_only}/{b_only}, p={_p(p)}"
    return cell


def write_markdown(
    runs: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    command: str,
    plots: dict[str, list[str]] | None = None,
    note: str | None = None,
    references: Sequence[str] = DEFAULT_REFERENCES,
) -> str:
    """Write (and return) the results table of every task.

    ``command`` is the one that wrote the file; the commands that made the runs (stored in
    their records) are listed too. ``plots`` maps a task to image paths, linked relative
    to the markdown file's folder. ``note`` (e.g. what else loaded the machine) is printed
    under the machine line. Each arm named in ``references`` that a task ran gets a column:
    the paired difference to it (mean ± 95% half-width over shared seeds), the paired
    t-test's p-value and verdict, and McNemar's exact test pooled over seeds (examples
    only this arm got right / only the reference got right, p).
    """
    summary = summarise(runs)
    machine = next((r.get("machine") for r in runs if r.get("machine")), "unknown")
    lines = [
        "# vectorgate-lab compare: results",
        "",
        "Generated by `vectorgate-lab compare`; do not edit by hand (rerun the command).",
        "",
        f"- Report written by: `{command}`",
    ]
    lines += [f"- Runs made by: `{c}`" for c in _commands(runs)]
    lines += [
        f"- Machine: {machine}",
        *([f"- Note: {note}"] if note else []),
        f"- Runs: {len(runs)} (each: one task, one arm, one seed; every arm of a seed shares its data order "
        "and starting weights, so arms are compared paired, seed by seed)",
        "- Statistics: mean ± half-width of the 95% t interval over seeds; comparisons are paired differences "
        "(this arm minus the reference) with their 95% interval and a two-sided paired t-test; \"no difference "
        f"measured\" where it does not reject at 5%, and no claim from fewer than {MIN_SEEDS_FOR_A_CLAIM} seeds. "
        "No correction for the number of arms compared. McNemar: exact test on the held-out examples only one "
        "of the two arms got right, pooled over the shared seeds.",
        "",
    ]
    failed = [r for r in runs if "error" in r]
    if failed:
        lines += ["**Failed runs:**", ""] + [f"- {r['task']} / {r['variant']} / seed {r['seed']}: {r['error']}" for r in failed] + [""]
    for task, rows in summary.items():
        first = rows[0]
        arrow = "higher is better" if first["higher_is_better"] else "lower is better"
        refs = [next((r for r in rows if r["variant"] == name), None) for name in references]
        refs = [r for r in refs if r is not None]
        lines += [f"## {task}", "", f"Metric: `{first['metric']}` ({arrow}), final value after {first['steps']} steps.", ""]
        head = ["arm", f"{first['metric']} (95% CI)", *[f"vs {r['variant']}" for r in refs], "seeds",
                "trainable params", "time / run (s)", "mean abs c at end", "diverged",
                "gain over last 10% of steps (mean; max)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            params = "n/a" if r["trainable_params"] is None else f"{r['trainable_params']:,}"
            c = "" if r["mean_abs_c"] is None else f"{r['mean_abs_c']:.3f}"
            late = "" if r["late_gain"] is None else f"{100 * r['late_gain']:.2f}%; {100 * r['late_gain_max']:.2f}%"
            cells = [r["variant"], f"{_fmt(r['mean'])} ± {_fmt(r['ci'])}", *[_comparison_cell(r, ref) for ref in refs],
                     str(r["n"]), params, _fmt(r["time_s"], 1), c, str(r["diverged"]), late]
            lines.append("| " + " | ".join(cells) + " |")
        for image in (plots or {}).get(task, []):
            rel = pathlib.Path(os.path.relpath(image, pathlib.Path(path).parent)).as_posix()
            lines += ["", f"![{task}]({rel})"]
        lines.append("")
    text = "\n".join(lines)
    pathlib.Path(path).write_text(text)
    return text


def write_plots(runs: Sequence[dict[str, Any]], out_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Per task: validation curves (mean over seeds, band = std), and the final metric against
    trainable parameters (log scale, error bars = 95% t interval).

    Returns:
        ``{task: [paths]}`` of the PNGs written into ``out_dir``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    written: dict[str, list[str]] = {}
    for task, rows in summary.items():
        fig, (ax_c, ax_p) = plt.subplots(1, 2, figsize=(13, 4.8))
        # tab20: more arms than the default cycle's 10 colours, and still distinct.
        colours = dict(zip((r["variant"] for r in rows), plt.get_cmap("tab20").colors, strict=False))
        for row in rows:
            curves = [r["curve"] for r in _ok(runs) if r["task"] == task and r["variant"] == row["variant"]]
            if not curves:
                continue
            steps = [s for s, _ in curves[0]]
            values = [[v for _, v in c] for c in curves if len(c) == len(steps)]
            mean = [statistics.fmean(col) for col in zip(*values, strict=True)]
            std = [statistics.stdev(col) if len(col) > 1 else 0.0 for col in zip(*values, strict=True)]
            colour = colours[row["variant"]]
            ax_c.plot(steps, mean, marker="o", label=row["variant"], color=colour)
            ax_c.fill_between(steps, [m - s for m, s in zip(mean, std, strict=True)],
                              [m + s for m, s in zip(mean, std, strict=True)], color=colour, alpha=0.15)
        ax_c.set_xlabel("step")
        ax_c.set_ylabel(rows[0]["metric"])
        ax_c.set_title(f"{task}: held-out curve (mean ± std over seeds)")
        if ax_c.lines:
            ax_c.legend(fontsize=7)
        shown = [r for r in rows if r["n"] and r["trainable_params"]]
        for r in shown:
            err = 0.0 if math.isnan(r["ci"]) else r["ci"]
            ax_p.errorbar(r["trainable_params"], r["mean"], yerr=err, fmt="o", capsize=4,
                          color=colours[r["variant"]], label=r["variant"])
        ax_p.set_xscale("log")
        ax_p.set_xlabel("trainable parameters (log scale)")
        ax_p.set_ylabel(rows[0]["metric"])
        ax_p.set_title(f"{task}: final vs trainable parameters (95% CI)")
        ax_p.grid(alpha=0.3)
        if shown:
            ax_p.legend(fontsize=7)
        fig.tight_layout()
        image = out / f"{task}.png"
        fig.savefig(image, dpi=110)
        plt.close(fig)
        written[task] = [str(image)]
    return written
