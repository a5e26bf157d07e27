"""GatedResidual: wrap any branch module f as ``y = alpha(x) * x + beta(x) * f(x)``."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from vectorgate.gate import GateOutput, VectorGate

__all__ = ["GatedResidual"]


class GatedResidual(nn.Module):
    """A residual connection around ``fn`` gated by a :class:`VectorGate`.

    The gate reads the residual input x (not the branch output), so a pre-norm block
    is simply ``GatedResidual(nn.Sequential(norm, mlp), dim)``.

    Args:
        fn: the branch; called as ``fn(x, *args, **kwargs)`` and must return a tensor of
            x's shape.
        dim: feature dimension d (x has shape ``(..., d)``).
        return_gates: if True, ``forward`` returns ``(y, GateOutput)`` instead of ``y``.
        **gate_kwargs: passed to :class:`VectorGate` (rank, curvature, init_curvature, ...).

    Shapes:
        x ``(..., d)`` -> y ``(..., d)``.
    """

    def __init__(self, fn: nn.Module, dim: int, *, return_gates: bool = False, **gate_kwargs: Any):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be a callable module, got {type(fn).__name__}")
        self.fn = fn
        self.gate = VectorGate(dim, **gate_kwargs)
        self.return_gates = return_gates

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor | tuple[Tensor, GateOutput]:
        z = self.gate.pre_activation(x)
        f_x = self.fn(x, *args, **kwargs)
        if not isinstance(f_x, Tensor):
            raise TypeError(
                f"the branch fn must return a Tensor of x's shape {tuple(x.shape)}, "
                f"got {type(f_x).__name__}"
            )
        y = self.gate.residual(x, f_x, z=z)
        if self.return_gates:
            return y, self.gate.gates_from_pre_activation(z, dtype=x.dtype)
        return y

    def extra_repr(self) -> str:
        return f"return_gates={self.return_gates}"
