"""Learned scales on the branch: ReZero (one scalar) and LayerScale (one per dimension)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.variants._common import check_dim, check_pair

__all__ = ["LayerScaleResidual", "ReZeroResidual"]


class _BranchScale(ResidualGate):
    """``y = x + scale * f(x)``; ``scale`` has shape ``(1,)`` or ``(d,)``."""

    def __init__(self, dim: int, size: int, init: float, *, device=None, dtype=None) -> None:
        super().__init__()
        self.dim = check_dim(dim)
        if not math.isfinite(float(init)):
            raise ValueError(f"init must be finite, got {init!r}")
        self.init = float(init)
        self.scale = nn.Parameter(torch.full((size,), self.init, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.scale.fill_(self.init)

    def residual(self, x: Tensor, f_x: Tensor) -> Tensor:
        return x + self.residual_delta(x, f_x)

    def residual_delta(self, x: Tensor, f_x: Tensor) -> Tensor:
        """``scale * f_x`` (computed directly, so ``x + delta`` matches the formula exactly)."""
        check_pair(x, f_x, self.dim)
        return self.scale.to(f_x.dtype) * f_x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, init={self.init:g}, params={self.scale.numel()}"


class ReZeroResidual(_BranchScale):
    """ReZero: ``y = x + a * f(x)`` with one learnable scalar ``a`` initialised to 0.

    Bachlechner et al., 2020, "ReZero is All You Need: Fast Convergence at Large Depth"
    (arXiv:2003.04887). At init the block is the identity ``y = x`` (not the plain residual).
    Parameters: 1.

    Args:
        dim: feature dimension d.
        init: initial value of ``a`` (0 in the paper).
        device: device of ``a``.
        dtype: dtype of ``a``.

    Shapes:
        ``residual(x, f_x)``: x, f_x ``(..., d)`` -> y ``(..., d)``.
    """

    def __init__(self, dim: int, *, init: float = 0.0, device=None, dtype=None) -> None:
        super().__init__(dim, 1, init, device=device, dtype=dtype)


class LayerScaleResidual(_BranchScale):
    """LayerScale: ``y = x + diag(gamma) f(x)``, gamma per dimension, small init.

    Touvron et al., 2021, "Going deeper with Image Transformers" (CaiT, arXiv:2103.17239);
    the paper uses 0.1 for shallow models down to 1e-5/1e-6 for deep ones; timm's ViT
    ``init_values`` is the same thing. Parameters: d.

    Args:
        dim: feature dimension d.
        init: initial value of every gamma entry (default 0.1).
        device: device of gamma.
        dtype: dtype of gamma.

    Shapes:
        ``residual(x, f_x)``: x, f_x ``(..., d)`` -> y ``(..., d)``.
    """

    def __init__(self, dim: int, *, init: float = 0.1, device=None, dtype=None) -> None:
        super().__init__(dim, check_dim(dim), init, device=device, dtype=dtype)
