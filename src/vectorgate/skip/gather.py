"""Run a token-wise branch on the kept tokens only (gather, run, scatter back)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["run_on_kept"]


def run_on_kept(fn: Callable[[Tensor], Tensor], h: Tensor, keep: Tensor | None) -> Tensor:
    """``fn`` applied to the rows of ``h`` that ``keep`` selects; zeros for the others.

    ``fn`` must act on each token independently (an MLP, not attention). The kept rows are
    gathered into one ``(n_kept, d_in)`` matrix, so the branch's GEMMs shrink with the
    share of tokens kept; the result is scattered back into a zero tensor.

    Args:
        fn: the branch, ``(n, d_in) -> (n, d_out)`` (any leading shape works as well).
        h: branch input, ``(..., d_in)``.
        keep: bool ``h.shape[:-1]``; None (or all True) runs ``fn(h)`` directly, unchanged.

    Returns:
        ``(..., d_out)``: ``fn``'s output at kept tokens, exactly 0 at skipped ones.

    Raises:
        ValueError: ``keep`` has the wrong shape or is not boolean.
    """
    if keep is None:
        return fn(h)
    if keep.dtype != torch.bool or keep.shape != h.shape[:-1]:
        raise ValueError(
            f"keep must be a bool tensor of shape {tuple(h.shape[:-1])} (h's shape without its last dim), "
            f"got {keep.dtype} {tuple(keep.shape)}"
        )
    if bool(keep.all()):
        return fn(h)
    flat = h.reshape(-1, h.shape[-1])
    idx = keep.reshape(-1).nonzero().squeeze(1)
    out_kept = fn(flat.index_select(0, idx))
    out = out_kept.new_zeros(flat.shape[0], out_kept.shape[-1])
    out = out.index_copy(0, idx, out_kept)
    return out.reshape(*h.shape[:-1], out_kept.shape[-1])
