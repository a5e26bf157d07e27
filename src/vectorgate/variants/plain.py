"""The plain residual ``y = x + f(x)`` (He et al., 2016, "Deep Residual Learning for Image Recognition")."""

from __future__ import annotations

from torch import Tensor

from vectorgate.base import ResidualGate
from vectorgate.variants._common import check_dim, check_pair

__all__ = ["PlainResidual"]


class PlainResidual(ResidualGate):
    """``y = x + f(x)``: the baseline every gate must beat. No parameters.

    Args:
        dim: feature dimension d (checked against inputs).
        device: ignored (no parameters); accepted so every variant builds alike.
        dtype: ignored, as ``device``.

    Shapes:
        ``residual(x, f_x)``: x, f_x ``(..., d)`` -> y ``(..., d)``.
    """

    def __init__(self, dim: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.dim = check_dim(dim)

    def residual(self, x: Tensor, f_x: Tensor) -> Tensor:
        check_pair(x, f_x, self.dim)
        return x + f_x

    def residual_delta(self, x: Tensor, f_x: Tensor) -> Tensor:
        """``f_x`` itself, so that ``x + delta`` is exactly the host's own residual."""
        check_pair(x, f_x, self.dim)
        return f_x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, params=0"
