"""Depth: the budget that keeps a stack of gates from compounding.

Every gated site multiplies the residual stream by ``alpha = exp(s)`` per channel and
``|s| < |c|``, so along a stream of ``n`` gated sites a channel's compound gain lies within
``exp(+-(|c_1| + ... + |c_n|))``. A gate that knows its stream's depth ``n`` soft-caps its
curvature at ``log_gain_budget / n`` (``c = cap * tanh(c_raw / cap)``): whatever training
does, the sum stays below the budget, and the compound gain within ``e^+-budget``. The default
budget is float16's range, ``log(65504) ~ 11.09``: gates alone can never carry an O(1) stream
out of any training dtype. :func:`vectorgate.patch` counts the sites it gates and passes
``depth``; a hand-built stack passes ``GatedResidual(..., depth=n_sites)``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["DEFAULT_LOG_GAIN_BUDGET", "depth_curvature"]

DEFAULT_LOG_GAIN_BUDGET = math.log(torch.finfo(torch.float16).max)  # ~11.09
"""Default bound on ``|s_1 + ... + s_n|`` along a stream: float16's range, ``log(65504)``."""

#: The initial curvature of a gate that does not know its depth (VectorGate's default).
_SHALLOW_INIT = 1.0


def depth_curvature(depth: int, budget: float = DEFAULT_LOG_GAIN_BUDGET) -> tuple[float, float]:
    """The curvature cap and initial curvature of a gate on a stream of ``depth`` gated sites.

    Args:
        depth: number of gated sites on the stream (both residuals of a Transformer layer
            count: 2 per layer).
        budget: bound on the stream's log compound gain.

    Returns:
        ``(max_curvature, init_curvature)``: ``budget / depth``, and half of it but at most
        1.0 (VectorGate's default), so c starts inside the cap where its soft cap is steep.

    Raises:
        ValueError: ``depth`` is not a positive int or ``budget`` not a positive number.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int (the number of gated sites on the stream), got {depth!r}")
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"log_gain_budget must be a positive number, got {budget!r}")
    cap = float(budget) / depth
    return cap, min(_SHALLOW_INIT, cap / 2)
