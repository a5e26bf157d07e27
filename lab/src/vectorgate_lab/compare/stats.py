"""Statistics for paired comparisons: t intervals over seeds, paired t-tests, exact McNemar.

Every arm of a comparison shares seeds, data order and backbone init with the others, so two
arms are compared *paired*: per seed, the difference of their scores; over the seeds, its
mean with a 95% t interval and a two-sided paired t-test. Where both arms were scored on the
same held-out examples, McNemar's exact test on the discordant examples (pooled over seeds)
asks the same question per example. A test that does not reject is reported as "no
difference measured", never as a win.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PairedResult", "mcnemar_exact", "paired_t", "t_interval"]


def _t_quantile(p: float, dof: int) -> float:
    try:
        from scipy import stats
    except ImportError as err:
        raise ImportError("the comparison statistics need scipy: `pip install scipy`") from err
    return float(stats.t.ppf(p, dof))


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean of ``values`` and the half-width of its two-sided t interval (nan with < 2 values)."""
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    sem = statistics.stdev(values) / math.sqrt(len(values))
    return mean, _t_quantile(0.5 + level / 2, len(values) - 1) * sem


@dataclass(frozen=True)
class PairedResult:
    """A paired comparison of arm A against arm B (difference = A - B).

    Attributes:
        n: number of paired seeds.
        diff: mean difference over seeds.
        half_width: half-width of its 95% t interval (nan when n < 2).
        p: two-sided paired t-test p-value (nan when n < 2; 1.0 when every difference is 0).
    """

    n: int
    diff: float
    half_width: float
    p: float

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the test rejects "no difference" at level ``alpha``."""
        return not math.isnan(self.p) and self.p < alpha


def paired_t(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> PairedResult:
    """Paired t-test of ``a`` against ``b``, each ``{seed: score}``, on the seeds both have."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    mean, half = t_interval(diffs, level)
    if len(diffs) < 2:
        return PairedResult(len(diffs), mean, math.nan, math.nan)
    sd = statistics.stdev(diffs)
    if sd == 0:
        return PairedResult(len(diffs), mean, 0.0, 1.0 if mean == 0 else 0.0)
    t = mean / (sd / math.sqrt(len(diffs)))
    try:
        from scipy import stats
    except ImportError as err:
        raise ImportError("the comparison statistics need scipy: `pip install scipy`") from err
    p = float(2 * stats.t.sf(abs(t), len(diffs) - 1))
    return PairedResult(len(diffs), mean, half, p)


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> tuple[int, int, float]:
    """McNemar's exact test on paired per-example outcomes.

    Returns:
        ``(a_only, b_only, p)``: examples only A got right, only B got right, and the
        two-sided exact binomial p-value of that split (1.0 when there is no discordant pair).

    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(correct_a) != len(correct_b):
        raise ValueError(f"paired outcomes must have equal lengths, got {len(correct_a)} and {len(correct_b)}")
    a_only = sum(1 for x, y in zip(correct_a, correct_b, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(correct_a, correct_b, strict=True) if y and not x)
    n = a_only + b_only
    if n == 0:
        return 0, 0, 1.0
    k = min(a_only, b_only)
    # Two-sided exact binomial test with p = 1/2: twice the smaller tail, capped at 1.
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return a_only, b_only, min(1.0, 2 * tail)
