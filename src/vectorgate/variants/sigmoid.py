"""Sigmoid residual gates: Highway (convex mix) and a GateSkip-style gate on the branch."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.variants._common import check_dim, check_pair, num_parameters

__all__ = ["GateSkipResidual", "HighwayResidual"]


class _SigmoidGate(ResidualGate):
    """Holds ``proj: d -> d`` (with bias) whose sigmoid is the gate; bias starts at ``init_bias``."""

    def __init__(self, dim: int, init_bias: float, *, device=None, dtype=None) -> None:
        super().__init__()
        self.dim = check_dim(dim)
        if not math.isfinite(float(init_bias)):
            raise ValueError(f"init_bias must be finite, got {init_bias!r}")
        self.init_bias = float(init_bias)
        self.proj = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.proj.reset_parameters()
        with torch.no_grad():
            self.proj.bias.fill_(self.init_bias)

    @property
    def num_parameters(self) -> int:
        return num_parameters(self)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, init_bias={self.init_bias:g}, params={self.num_parameters:,}"


class HighwayResidual(_SigmoidGate):
    """Highway: ``T = sigmoid(W x + b)``, ``y = T * f(x) + (1 - T) * x`` (a convex mix).

    Srivastava, Greff and Schmidhuber, 2015, "Highway Networks" (arXiv:1505.00387). The
    paper initialises the transform-gate bias negative (-1 to -3) so blocks start mostly
    carrying x; here ``carry_bias`` (default 1.0) is that bias with the sign flipped,
    so T starts near ``sigmoid(-1) = 0.27``. Parameters: d^2 + d.

    Args:
        dim: feature dimension d.
        carry_bias: the transform gate's bias is initialised to ``-carry_bias``.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shapes:
        ``residual(x, f_x)``: x, f_x ``(..., d)`` -> y ``(..., d)``.
    """

    def __init__(self, dim: int, *, carry_bias: float = 1.0, device=None, dtype=None) -> None:
        super().__init__(dim, -float(carry_bias), device=device, dtype=dtype)

    def residual(self, x: Tensor, f_x: Tensor) -> Tensor:
        check_pair(x, f_x, self.dim)
        t = torch.sigmoid(self.proj(x))
        return torch.lerp(x, f_x, t)

    def residual_delta(self, x: Tensor, f_x: Tensor) -> Tensor:
        check_pair(x, f_x, self.dim)
        return torch.sigmoid(self.proj(x)) * (f_x - x)


class GateSkipResidual(_SigmoidGate):
    """GateSkip-style: ``y = x + sigmoid(W u + b) * f(x)``, a sigmoid-linear gate per dimension.

    Laitenberger, Kopiczko, Snoek and Asano, 2025, "What Layers When: Learning to Skip
    Compute in LLMs with Residual Gates" (GateSkip, arXiv:2510.13876): each attention/MLP
    branch gets a sigmoid-linear gate that condenses the branch's output before it
    re-enters the residual stream. ``gate_input`` says what the gate reads (u):

    - ``"branch"`` (default): u = f(x), the branch output (our first reading of the paper).
      The gate is only known after the branch ran, so it cannot skip tokens.
    - ``"x"``: u = x, the residual input. The gate is then known before the branch, and
      :mod:`vectorgate.skip` can skip the tokens whose mean gate is low (the skipped token's
      y is x). This is the form the token-skipping comparison trains.

    With ``init_bias`` 0 the gate starts near 0.5; pass a large ``init_bias`` (e.g. 5) to
    start near the plain residual (as for a pretrained model). Parameters: d^2 + d.

    Args:
        dim: feature dimension d.
        init_bias: initial bias of the gate's linear map.
        gate_input: ``"branch"`` or ``"x"``, see above.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shapes:
        ``residual(x, f_x)``: x, f_x ``(..., d)`` -> y ``(..., d)``.
    """

    def __init__(self, dim: int, *, init_bias: float = 0.0, gate_input: str = "branch", device=None, dtype=None) -> None:
        if gate_input not in ("branch", "x"):
            raise ValueError(f"gate_input must be 'branch' or 'x', got {gate_input!r}")
        super().__init__(dim, init_bias, device=device, dtype=dtype)
        self.gate_input = gate_input
        self.can_skip = gate_input == "x"

    def pre_activation(self, x: Tensor) -> Tensor:
        """``W x + b``, ``(..., d)`` (only for ``gate_input="x"``)."""
        if not self.can_skip:
            raise TypeError(self._cannot_skip() + " (GateSkipResidual with gate_input='branch' reads f(x))")
        return self.proj(x)

    def skip_score(self, z: Tensor) -> Tensor:
        """Mean gate per token, ``mean_d sigmoid(z)``, float32 ``(...,)``."""
        if not self.can_skip:
            raise TypeError(self._cannot_skip() + " (GateSkipResidual with gate_input='branch' reads f(x))")
        return torch.sigmoid(z.float()).mean(-1)

    def residual(self, x: Tensor, f_x: Tensor, z: Tensor | None = None) -> Tensor:
        return x + self.residual_delta(x, f_x, z)

    def residual_delta(self, x: Tensor, f_x: Tensor, z: Tensor | None = None) -> Tensor:
        check_pair(x, f_x, self.dim)
        if self.gate_input == "branch":
            return torch.sigmoid(self.proj(f_x)) * f_x
        if z is None:
            z = self.proj(x)
        return torch.sigmoid(z) * f_x

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gate_input={self.gate_input}"
