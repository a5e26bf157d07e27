"""Pictures of the compound gain: against the training step, and along the stream's depth."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from vectorgate._figures import new_figure, save_figure
from vectorgate.compound_gain import CompoundGainReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_compound_gain"]

History = Sequence[tuple[int, CompoundGainReport]]


def plot_compound_gain(
    histories: History | Mapping[str, History],
    path: str | pathlib.Path | None = None,
    *,
    title: str = "",
) -> Figure:
    """Two panels: the largest and smallest compound gain (log10) against the step, and the
    log gain along the stream's depth at the last step, one line per run.

    Args:
        histories: ``[(step, report), ...]`` of one run, or ``{label: [(step, report), ...]}``
            for several (e.g. plain-budget and depth-capped gates side by side).
        path: where to save the figure (PNG); None: only return it.
        title: the figure's title.

    Returns:
        The matplotlib ``Figure``.

    Raises:
        ValueError: a run without any report.
    """
    runs = dict(histories) if isinstance(histories, Mapping) else {"": histories}
    for label, history in runs.items():
        if not history:
            raise ValueError(f"run {label!r} has no compound-gain report to plot")
    fig = new_figure(10, 3.8)
    by_step, by_depth = fig.subplots(1, 2)
    colors = [f"C{i}" for i in range(10)]
    budgets = set()
    for (label, history), color in zip(runs.items(), colors * (len(runs) // 10 + 1), strict=False):
        steps = [step for step, _ in history]
        hi = [max((s.max_log_gain for s in r.sites), default=0.0) / math.log(10) for _, r in history]
        lo = [min((s.min_log_gain for s in r.sites), default=0.0) / math.log(10) for _, r in history]
        by_step.plot(steps, hi, color=color, label=f"{label} max".strip())
        by_step.plot(steps, lo, color=color, linestyle="--", label=f"{label} min".strip())
        last = history[-1][1]
        rows = last.by_depth()
        by_depth.plot([d for d, _, _ in rows], [h / math.log(10) for _, h, _ in rows], color=color, label=label or None)
        by_depth.plot([d for d, _, _ in rows], [lo_ / math.log(10) for _, _, lo_ in rows], color=color, linestyle="--")
        if last.budget is not None:
            budgets.add(last.budget)
    for budget in budgets:
        for ax in (by_step, by_depth):
            for sign in (1, -1):
                ax.axhline(sign * budget / math.log(10), color="grey", linewidth=0.8, linestyle=":")
    by_step.set_xlabel("step")
    by_step.set_ylabel("compound gain, log10 (max solid, min dashed)")
    by_step.set_title("over training")
    by_step.legend(fontsize=7)
    by_depth.set_xlabel("gated site along the stream")
    by_depth.set_ylabel("log10 gain after the site")
    by_depth.set_title("along the stream, last step (dotted: budget)")
    if len(runs) > 1:
        by_depth.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig
