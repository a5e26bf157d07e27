"""One gated residual site: its gate, the tensor the gate reads, and where its z comes from.

Every place that applies a gate (the forward hooks of pre-norm sites, BERT's gated output
modules, :class:`~vectorgate.GatedResidual`, BERT's skipping feed-forward) asks its
:class:`GateSite` for y (or the delta y - x) and nothing else. What the gate reads and how its
pre-activation z is found is decided here once, in this order:

1. the skip decision, while token skipping is on (:attr:`GateSite.skip`): it already
   projected the gate's input to choose the tokens;
2. the stacked GEMM, after :func:`vectorgate.patching.stack_gate_projections` (:attr:`GateSite.link`);
3. the gate's own projection of what it reads: the residual stream x, or the pre-norm's
   output (``reads="normed"``, :attr:`GateConfig.gate_source`).

Stacking and skipping attach to a site through reversible edits
(:class:`~vectorgate.patching.changes.SetAttribute` on :attr:`~GateSite.link` /
:attr:`~GateSite.skip`), so ``unpatch`` and ``disable_skipping`` restore it exactly.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from vectorgate.base import ResidualGate

__all__ = ["GATE_READS", "GateSite"]

#: What a gate's projection can read: the residual stream, or the pre-norm's output.
GATE_READS = ("x", "normed")


class GateSite:
    """The state of one gated residual (a plain object: no parameters, no state-dict keys).

    Args:
        gate: the site's gate (registered as a module where the site lives).
        name: the site's qualified name, e.g. ``"encoder.layer.3.mlp"`` (set by
            :func:`vectorgate.patch`; empty for a module built gated).
        reads: ``"x"`` (the residual stream) or ``"normed"`` (the pre-norm's output).

    Attributes:
        inflight: the tensor the gate reads in the layer call in progress (set by the hook
            that captures it, cleared when the gate has run), for the skipping branch.
        link: set while the gate's projection is stacked into a branch GEMM.
        skip: set while token skipping is on.
        budget: set while a :class:`vectorgate.skip.SkipBudget` trains this site.
    """

    def __init__(self, gate: ResidualGate, *, name: str = "", reads: str = "x") -> None:
        if not isinstance(gate, ResidualGate):
            raise TypeError(f"a GateSite needs a vectorgate ResidualGate, got {type(gate).__name__}")
        if reads not in GATE_READS:
            raise ValueError(f"reads must be one of {GATE_READS}, got {reads!r}")
        self.gate = gate
        self.name = name
        self.reads = reads
        self.inflight: Tensor | None = None
        # Typed Any: their classes (stacking.GateLink, skip.SkipSite, skip.SkipBudget) build on
        # this module, and naming them here, even for type checkers only, would close a cycle.
        self.link: Any = None
        self.skip: Any = None
        self.budget: Any = None

    def pre_activation(self, u: Tensor) -> Tensor | None:
        """z for the gate input ``u``, or None where the gate computes it inside ``residual``.

        Taken from the skip decision or the stacked GEMM when they computed it from this very
        ``u``; projected here when the gate reads the pre-norm's output (the gate's own
        ``residual`` would project x) or a skip budget needs it.
        """
        z = None if self.skip is None else self.skip.take_z(u)
        if z is None and self.link is not None:
            z = self.link.take(u)
        if z is None and (self.reads == "normed" or self._budget_active()):
            z = self.gate.pre_activation(u)
        return z

    def _budget_active(self) -> bool:
        return self.budget is not None and self.gate.training

    def _branch(self, z: Tensor | None, f_x: Tensor) -> Tensor:
        """f_x as an attached skip budget wants it (training only): it ranks the tokens by
        their skip score and zeroes the dropped ones' branch output."""
        if z is None or not self._budget_active():
            return f_x
        assert self.budget is not None
        return self.budget.on_gate(self.gate, z, f_x)

    def residual(self, x: Tensor, f_x: Tensor, u: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """y = the gate applied to x and f_x; ``u`` is what the gate reads (default: x), ``z``
        its pre-activation when the caller computed it already.

        Shapes: x, f_x ``(..., d)`` -> ``(..., d)``.
        """
        if z is None:
            z = self.pre_activation(x if u is None else u)
        f_x = self._branch(z, f_x)
        return self.gate.residual(x, f_x) if z is None else self.gate.residual(x, f_x, z)

    def residual_delta(self, x: Tensor, f_x: Tensor, u: Tensor | None = None) -> Tensor:
        """``y - x`` (exact at the identity), for hosts that add x themselves."""
        z = self.pre_activation(x if u is None else u)
        f_x = self._branch(z, f_x)
        return self.gate.residual_delta(x, f_x) if z is None else self.gate.residual_delta(x, f_x, z)

    def __repr__(self) -> str:
        extras = [f"reads={self.reads}"] + [k for k in ("link", "skip", "budget") if getattr(self, k) is not None]
        return f"GateSite({self.name!r}, {type(self.gate).__name__}, {', '.join(extras)})"

    def __getstate__(self) -> dict[str, Any]:
        # No activation is pickled or deep-copied with a model.
        return {**self.__dict__, "inflight": None}
