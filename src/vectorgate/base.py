"""The interface every residual combiner implements (VectorGate and its peers).

Integrations (``patch()``, ``GatedResidual``, timm blocks) only ever call this interface,
so any variant can stand wherever a VectorGate can.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ResidualGate"]


class ResidualGate(nn.Module):
    """Combines a residual input x and a branch output f_x into y, both ``(..., dim)``.

    Subclasses set ``self.dim`` and implement :meth:`residual`. :meth:`residual_delta`
    serves sites where the host model adds x itself (``x + delta``); override it when
    ``residual(x, f_x) - x`` would lose exactness (as VectorGate does).
    """

    dim: int

    def residual(self, x: Tensor, f_x: Tensor) -> Tensor:
        """y from x and f_x; shapes ``(..., dim)`` -> ``(..., dim)``."""
        raise NotImplementedError

    def residual_delta(self, x: Tensor, f_x: Tensor) -> Tensor:
        """``residual(x, f_x) - x``, for hosts that compute ``x + delta`` themselves."""
        return self.residual(x, f_x) - x
