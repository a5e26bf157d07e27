"""The interface every residual combiner implements (VectorGate and its peers).

Integrations (``patch()``, ``GatedResidual``, timm blocks) only ever call this interface,
so any variant can stand wherever a VectorGate can.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["ResidualGate"]


class ResidualGate(nn.Module):
    """Combines a residual input x and a branch output f_x into y, both ``(..., dim)``.

    Subclasses set ``self.dim`` and implement :meth:`residual`. :meth:`residual_delta`
    serves sites where the host model adds x itself (``x + delta``); override it when
    ``residual(x, f_x) - x`` would lose exactness (as VectorGate does).

    Token skipping (:mod:`vectorgate.skip`): a variant whose gate reads x alone can decide,
    before the branch runs, which tokens need it. Such a variant sets ``can_skip = True``
    and implements :meth:`pre_activation`, :meth:`skip_score` and accepts ``z=`` in
    :meth:`residual`/:meth:`residual_delta`; a skipped token's branch output is zero, so
    its y is what the gate makes of x alone.
    """

    dim: int
    can_skip: bool = False
    """Whether the gate is known before the branch runs (see :mod:`vectorgate.skip`)."""

    def residual(self, x: Tensor, f_x: Tensor) -> Tensor:
        """y from x and f_x; shapes ``(..., dim)`` -> ``(..., dim)``."""
        raise NotImplementedError

    def residual_delta(self, x: Tensor, f_x: Tensor) -> Tensor:
        """``residual(x, f_x) - x``, for hosts that compute ``x + delta`` themselves."""
        return self.residual(x, f_x) - x

    def pre_activation(self, x: Tensor) -> Tensor:
        """What the gate computes from x alone, ``(..., k)``; the input of :meth:`skip_score`."""
        raise TypeError(self._cannot_skip())

    def skip_score(self, z: Tensor) -> Tensor:
        """How much each token needs its branch, ``(...,)`` in float32; low scores are skipped.

        Args:
            z: :meth:`pre_activation` of x, ``(..., k)``.
        """
        raise TypeError(self._cannot_skip())

    def _cannot_skip(self) -> str:
        return (f"{type(self).__name__} cannot decide to skip a token before its branch runs "
                "(its gate does not read x alone); variants that can: vectorgate, "
                "vectorgate_lowrank, vectorgate_scalar, gateskip[gate_input=x], mod_router")

    def _budgeted(self, z: Tensor, f_x: Tensor) -> Tensor:
        """f_x as a :class:`vectorgate.skip.SkipBudget` attached to this gate wants it (training only).

        The budget records the tokens' skip scores (for its loss) and, once its capacity
        schedule has begun, zeroes the branch output of the tokens it drops this step.
        """
        budget: Any = self.__dict__.get("_skip_budget")
        if budget is None or not self.training:
            return f_x
        return budget.on_gate(self, z, f_x)
