"""Gate-driven token skipping: the gate is known before the branch, so skip the branch where it is not needed.

VectorGate's alpha(x) and beta(x) depend on the residual input alone: for every token the
gate is computed *before* the branch. Where the branch gate beta is small, the branch
hardly contributes and ``y ~ alpha * x`` without running it. This package

- trains gates to close for a target share of tokens (:class:`SkipBudget`),
- runs the branch on the kept tokens only (:func:`enable_skipping`), with per-site
  thresholds calibrated on held-out data (:func:`calibrate_skipping`),
- and reports what was skipped (:class:`SkipController`, :func:`skip_map`).

A skipped token's output is what the gate makes of x alone: ``alpha * x`` for VectorGate,
x for the sigmoid and router peers. See ``docs/skipping.md``.
"""

from vectorgate.skip.budget import SkipBudget
from vectorgate.skip.calibrate import calibrate_skipping, skip_map
from vectorgate.skip.control import (
    SkipController,
    disable_skipping,
    enable_skipping,
    find_skip_sites,
    skip_controller,
)
from vectorgate.skip.decision import SkipSite
from vectorgate.skip.gather import run_on_kept
from vectorgate.skip.plot import plot_skip_map, plot_skip_ratios

__all__ = [
    "SkipBudget",
    "SkipController",
    "SkipSite",
    "calibrate_skipping",
    "disable_skipping",
    "enable_skipping",
    "find_skip_sites",
    "plot_skip_map",
    "plot_skip_ratios",
    "run_on_kept",
    "skip_controller",
    "skip_map",
]
