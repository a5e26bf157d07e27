"""A Mixture-of-Depths-style token router as a residual variant."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.variants._common import check_dim, check_pair, num_parameters

__all__ = ["MoDRouterResidual"]


class MoDRouterResidual(ResidualGate):
    """``y = x + sigmoid(w . x + b) * f(x)``: one scalar router weight per token.

    Raposo et al., 2024, "Mixture-of-Depths: Dynamically allocating compute in
    transformer-based language models" (arXiv:2404.02258): a linear router scores each
    token; the top-k tokens of a block go through it and their output is scaled by the
    router weight, the rest pass by on the residual stream. Here the router weight is
    squashed by a sigmoid (so it starts near 1 with a large ``init_bias`` and the
    pretrained model is kept), the top-k selection is the capacity schedule of
    :class:`vectorgate.skip.SkipBudget` during training, and at inference
    :mod:`vectorgate.skip` skips tokens below a calibrated threshold (MoD's own top-k over
    a sequence would make a token's fate depend on the others, which decoding cannot).
    Parameters: d + 1.

    Args:
        dim: feature dimension d.
        init_bias: initial router bias (default 5: weight ``sigmoid(5) = 0.993``).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shapes:
        ``residual(x, f_x)``: x, f_x ``(..., d)`` -> y ``(..., d)``.
    """

    can_skip = True

    def __init__(self, dim: int, *, init_bias: float = 5.0, device=None, dtype=None) -> None:
        super().__init__()
        self.dim = check_dim(dim)
        if not math.isfinite(float(init_bias)):
            raise ValueError(f"init_bias must be finite, got {init_bias!r}")
        self.init_bias = float(init_bias)
        self.router = nn.Linear(dim, 1, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small random router weight (std d^-1/2 / 10) and bias ``init_bias`` (mostly open)."""
        nn.init.normal_(self.router.weight, std=self.dim ** -0.5 / 10)
        with torch.no_grad():
            self.router.bias.fill_(self.init_bias)

    @property
    def num_parameters(self) -> int:
        """Number of learnable parameters: d + 1."""
        return num_parameters(self)

    def pre_activation(self, x: Tensor) -> Tensor:
        """Router logit, ``(..., 1)``."""
        return self.router(x)

    def skip_score(self, z: Tensor) -> Tensor:
        """Router weight per token, ``sigmoid(z)``, float32 ``(...,)``."""
        return torch.sigmoid(z.float()).squeeze(-1)

    def residual(self, x: Tensor, f_x: Tensor, z: Tensor | None = None) -> Tensor:
        return x + self.residual_delta(x, f_x, z)

    def residual_delta(self, x: Tensor, f_x: Tensor, z: Tensor | None = None) -> Tensor:
        check_pair(x, f_x, self.dim)
        if z is None:
            z = self.router(x)
        return torch.sigmoid(z) * f_x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, init_bias={self.init_bias:g}, params={self.num_parameters:,}"
