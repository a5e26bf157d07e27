"""GatedResidual: wrap any branch module f as ``y = alpha(x) * x + beta(x) * f(x)``."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.gate import GateOutput, VectorGate
from vectorgate.patching.gate_site import GateSite
from vectorgate.skip.gather import run_on_kept
from vectorgate.variants import build_gate

__all__ = ["GatedResidual"]


class GatedResidual(nn.Module):
    """A residual connection around ``fn`` gated by a :class:`VectorGate` (or any variant).

    The gate reads the residual input x (not the branch output), so a pre-norm block
    is simply ``GatedResidual(nn.Sequential(norm, mlp), dim)``.

    Args:
        fn: the branch; called as ``fn(x, *args, **kwargs)`` and must return a tensor of
            x's shape.
        dim: feature dimension d (x has shape ``(..., d)``).
        variant: residual variant by name (see :func:`vectorgate.variants.build_gate`), e.g.
            ``"highway"`` or ``"vectorgate_lowrank"``; default ``"vectorgate"``.
        return_gates: if True, ``forward`` returns ``(y, GateOutput)`` instead of ``y``
            (VectorGate variants only).
        tokenwise: declare that ``fn`` acts on every token independently (an MLP, not
            attention). Required for :func:`vectorgate.skip.enable_skipping`, which then
            runs ``fn`` on the kept tokens only.
        **gate_kwargs: passed to the variant (rank, init_curvature, ...).

    Attributes:
        site: the :class:`~vectorgate.patching.gate_site.GateSite` that applies the gate (token
            skipping attaches to it).

    Shapes:
        x ``(..., d)`` -> y ``(..., d)``.
    """

    def __init__(
        self,
        fn: nn.Module,
        dim: int,
        *,
        variant: str = "vectorgate",
        return_gates: bool = False,
        tokenwise: bool = False,
        **gate_kwargs: Any,
    ):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be a callable module, got {type(fn).__name__}")
        self.fn = fn
        self.gate: ResidualGate = build_gate(variant, dim, **gate_kwargs)
        self.site = GateSite(self.gate)
        if return_gates and not isinstance(self.gate, VectorGate):
            raise ValueError(f"return_gates=True needs a VectorGate variant; {variant!r} has no (alpha, beta, s)")
        self.variant = variant
        self.return_gates = return_gates
        self.tokenwise = bool(tokenwise)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor | tuple[Tensor, GateOutput]:
        """``y = gate.residual(x, fn(x, *args, **kwargs))``.

        With token skipping on (:func:`vectorgate.skip.enable_skipping`), ``fn`` runs on the
        kept tokens only and a skipped token's branch output is zero.

        Args:
            x: residual input, ``(..., dim)``.
            *args: passed to ``fn`` after ``x`` (not allowed while tokens are skipped).
            **kwargs: passed to ``fn``.

        Returns:
            ``y`` of x's shape, or ``(y, GateOutput)`` when built with ``return_gates=True``.

        Raises:
            TypeError: ``fn`` returned something other than a tensor, or extra arguments
                were given while tokens are skipped.
        """
        skip = self.site.skip
        z, keep = (None, None) if skip is None else skip.decide(x)
        if z is None and isinstance(self.gate, VectorGate):
            z = self.gate.pre_activation(x)  # checks x before the branch runs
        elif skip is not None:
            skip.take_z(x)  # z is used right here; the decision holds nothing past the call
        if keep is not None:
            if args or kwargs:
                raise TypeError("a GatedResidual that skips tokens calls fn(x) alone; extra arguments cannot be split by token")
            f_x = run_on_kept(self.fn, x, keep)
        else:
            f_x = self.fn(x, *args, **kwargs)
        if not isinstance(f_x, Tensor):
            raise TypeError(
                f"the branch fn must return a Tensor of x's shape {tuple(x.shape)}, "
                f"got {type(f_x).__name__}"
            )
        y = self.site.residual(x, f_x, z=z)
        if self.return_gates:
            if z is None:
                z = self.gate.pre_activation(x)
            return y, self.gate.gates_from_pre_activation(z, dtype=x.dtype)
        return y

    def extra_repr(self) -> str:
        return f"variant={self.variant}, return_gates={self.return_gates}, tokenwise={self.tokenwise}"
