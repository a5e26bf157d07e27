"""VectorGate: per-dimension exponential gating for a residual connection.

For a residual input x in R^d and a branch output f(x):

    s     = c * tanh(g(x))        g: learnable projection R^d -> R^d (d^2 + d parameters)
                                  c: learnable curvature, one per dimension (or one scalar)
    alpha = exp(s),  beta = exp(-s)
    y     = alpha * x + beta * f(x)

|s| <= |c|, so exp(-|c|) <= alpha, beta <= exp(|c|) and alpha * beta = 1.

Initialisation (``init=``). At s = 0 the gate is exactly the plain residual y = x + f(x),
so a gate dropped into a pretrained model changes nothing until training moves it. s = 0
can come from c = 0 or from g(x) = 0, and the two train very differently, because
ds/dz = c * sech^2(z) and ds/dc = tanh(z):

- ``"zero_output"`` (the default): g's output starts at zero (full rank: weight and bias
  zero; low rank: ``up`` zero, ``down`` random, as LoRA's B = 0), c = 1. g gets a gradient
  from the first step; c from the second (its gradient is tanh(g(x)) = 0 at step 0, as
  LoRA's A gets none at step 0).
- ``"random"``: g gets ``nn.Linear``'s random init and c = 0 (vectorgate 0.1's default).
  The projection's gradient is exactly zero until c moves away from 0, which at a
  fine-tuning learning rate it barely does: the gates stay near 1.

Any init that is the exact identity must leave, in every channel, either c or g's row
without a step-0 gradient (s_i = c_i tanh(z_i) = 0 needs c_i = 0 or z_i = 0).
Evidence for the default (``docs/results.md``: pretrained MiniLM, 5 paired seeds, 95%
intervals): gate-only on Rotten Tomatoes, ``"zero_output"`` reached 0.749 +- 0.016 accuracy
where ``"random"`` stayed at the majority class (0.576) on every seed; in full fine-tuning at
the backbone's lr it was level with the plain model on both text tasks (no difference
measured). A 3-seed screen hints that c = 0.5 may suit gate-only adaptation better than
c = 1 and that c = 2 does worse; not enough seeds to move the default.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from vectorgate._checks import check_floating, check_last_dim, check_same_device
from vectorgate.base import ResidualGate
from vectorgate.depth import DEFAULT_LOG_GAIN_BUDGET, depth_curvature
from vectorgate.functional import exp_gated_residual
from vectorgate.kernels.reference import compute_dtype

__all__ = ["GATE_INITS", "GateOutput", "LowRankProjection", "VectorGate"]

#: init name -> default initial curvature. See the module docstring.
GATE_INITS: dict[str, float] = {"zero_output": 1.0, "random": 0.0}


class GateOutput(NamedTuple):
    """The gates for one input; each has the shape of that input, ``(..., d)``."""

    alpha: Tensor
    """Gate on the residual stream, ``exp(s)``."""
    beta: Tensor
    """Gate on the branch, ``exp(-s)``."""
    s: Tensor
    """Log-gate ``c * tanh(g(x))``, bounded by ``|c|``."""


class LowRankProjection(nn.Module):
    """``g(x) = up(down(x))``: a rank-``r`` projection ``d -> r -> d`` (2dr + d parameters)."""

    def __init__(
        self, dim: int, rank: int, *, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, dim, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self, *, zero_output: bool = False) -> None:
        """PyTorch's Linear init for both factors; with ``zero_output`` the up-projection
        (weight and bias) starts at zero, so g(x) = 0 while ``down`` stays random."""
        self.down.reset_parameters()
        self.up.reset_parameters()
        if zero_output:
            nn.init.zeros_(self.up.weight)
            if self.up.bias is not None:
                nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``up(down(x))``: ``(..., dim)`` -> ``(..., dim)`` through ``(..., rank)``."""
        return self.up(self.down(x))


def _autocasting(x: Tensor) -> bool:
    """Whether autocast is on for x's device (then the projection casts its own inputs)."""
    try:
        return torch.is_autocast_enabled(x.device.type)
    except (RuntimeError, TypeError):  # a device type autocast does not know (meta)
        return False


class VectorGate(ResidualGate):
    """Per-dimension exponential gate ``alpha = exp(s)``, ``beta = exp(-s)``, ``s = c * tanh(g(x))``.

    Args:
        dim: feature dimension d of the residual stream.
        rank: if given, g is low-rank (``d -> rank -> d``); by default g is a full
            ``d x d`` linear map.
        curvature: ``"vector"`` for one learnable bound per dimension (the method), or
            ``"scalar"`` for one shared bound (the xLSTM-style ablation).
        init: how the gate starts (see the module docstring). ``"zero_output"`` (default):
            g's output is zero and c = 1, exact identity and g trains from step 0.
            ``"random"``: random g and c = 0, vectorgate 0.1's default (identity, but g gets
            no gradient until c moves).
        init_curvature: initial value of every entry of c; ``None`` takes the init's
            default (1.0 for ``"zero_output"``, 0.0 for ``"random"``; half of
            ``max_curvature`` when the cap is at or below that default). With ``"random"`` any
            value other than 0 makes the gate non-identity at init.
        max_curvature: if given, c is soft-capped as ``cap * tanh(c_raw / cap)`` so that
            ``|c| < cap`` always; the stored parameter is the raw value.
        depth: number of gated sites on the residual stream this gate sits on (2 per
            Transformer layer with both residuals gated). When given and ``max_curvature``
            is not, c is soft-capped at ``log_gain_budget / depth``, so the compound gain of
            the whole stream stays within ``e^+-log_gain_budget`` however the gates train
            (:mod:`vectorgate.depth`), and with ``init="zero_output"`` c starts at half that
            cap (at most 1.0). :func:`vectorgate.patch` passes the count it gates.
        log_gain_budget: bound on the stream's log compound gain used with ``depth``
            (default ``log(65504)``, float16's range).
        bias: whether g has a bias.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shapes:
        ``forward(x)``: x ``(..., d)`` -> :class:`GateOutput` of three ``(..., d)`` tensors,
        in x's dtype. ``residual(x, f_x)``: x, f_x ``(..., d)`` -> y ``(..., d)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        rank: int | None = None,
        curvature: Literal["vector", "scalar"] = "vector",
        init: Literal["zero_output", "random"] = "zero_output",
        init_curvature: float | None = None,
        max_curvature: float | None = None,
        depth: int | None = None,
        log_gain_budget: float = DEFAULT_LOG_GAIN_BUDGET,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if depth is not None:
            cap, depth_init = depth_curvature(depth, log_gain_budget)
            if max_curvature is None:
                max_curvature = cap
                if init_curvature is None and init == "zero_output":
                    init_curvature = depth_init
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(f"rank must be None or a positive int, got {rank!r}")
        if rank is not None and rank >= dim:
            raise ValueError(
                f"rank={rank} is not a low rank for dim={dim}: a rank-{rank} g has {2 * dim * rank + dim:,} "
                f"parameters, a full-rank one {dim * dim + dim:,}. Use rank < dim, or rank=None for full rank"
            )
        if curvature not in ("vector", "scalar"):
            raise ValueError(f"curvature must be 'vector' or 'scalar', got {curvature!r}")
        if init not in GATE_INITS:
            raise ValueError(f"init must be one of {sorted(GATE_INITS)}, got {init!r}")
        if init_curvature is None:
            init_curvature = GATE_INITS[init]
            if max_curvature is not None and max_curvature > 0 and abs(init_curvature) >= max_curvature:
                init_curvature = max_curvature / 2  # the default must fit under the user's cap
        if isinstance(init_curvature, bool) or not isinstance(init_curvature, int | float) or not math.isfinite(init_curvature):
            raise ValueError(f"init_curvature must be finite (a number), got {init_curvature!r}")
        if init == "zero_output" and init_curvature == 0:
            raise ValueError(
                "init='zero_output' with init_curvature=0 would never train: g's gradient is "
                "c * sech^2(z) = 0 and c's is tanh(g(x)) = 0. Use a nonzero init_curvature "
                "(default 1.0) or init='random'"
            )
        if max_curvature is not None:
            if not (math.isfinite(float(max_curvature)) and max_curvature > 0):
                raise ValueError(f"max_curvature must be None or a positive number, got {max_curvature!r}")
            if abs(init_curvature) >= max_curvature:
                why = ""
                if depth is not None and max_curvature == depth_curvature(depth, log_gain_budget)[0]:
                    why = (f" (the depth cap: log_gain_budget {log_gain_budget:.4g} / depth {depth}; pass a "
                           "smaller init_curvature, or max_curvature yourself to replace the depth cap)")
                raise ValueError(
                    f"|init_curvature| must be below max_curvature, got init_curvature={init_curvature} "
                    f"and max_curvature={max_curvature:.4g}{why}"
                )
        self.dim = dim
        self.rank = rank
        self.curvature_mode = curvature
        self.init = init
        self.init_curvature = float(init_curvature)
        self.max_curvature = None if max_curvature is None else float(max_curvature)
        self.depth = depth
        factory = {"device": device, "dtype": dtype}
        if rank is None:
            self.proj: nn.Module = nn.Linear(dim, dim, bias=bias, **factory)
        else:
            self.proj = LowRankProjection(dim, rank, bias=bias, **factory)
        # Named for what it is: transformers renames parameters called gamma/beta on load.
        self.curvature = nn.Parameter(torch.empty(dim if curvature == "vector" else 1, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise g and c as ``init`` says (g's output zero, or PyTorch's Linear init)."""
        zero_output = self.init == "zero_output"
        if isinstance(self.proj, LowRankProjection):
            self.proj.reset_parameters(zero_output=zero_output)
        elif zero_output:
            nn.init.zeros_(self.proj.weight)
            if self.proj.bias is not None:
                nn.init.zeros_(self.proj.bias)
        else:
            self.proj.reset_parameters()
        raw = self.init_curvature
        if self.max_curvature is not None:
            raw = self.max_curvature * math.atanh(self.init_curvature / self.max_curvature)
        with torch.no_grad():
            self.curvature.fill_(raw)
        # transformers' weight init (``init_weights()``, ``post_init()``) re-draws every
        # nn.Linear it finds unless the tensor says it is initialised: with c != 0 a re-drawn
        # g would break the identity at init. The flag is a plain attribute, inert elsewhere.
        # Not on meta tensors: from_pretrained must still materialise those (it skips flagged ones).
        for p in self.parameters():
            if p.device.type != "meta":
                p._is_hf_initialized = True

    can_skip = True

    @property
    def num_parameters(self) -> int:
        """Number of learnable parameters (``d^2 + 2d`` for the default full-rank vector gate)."""
        return sum(p.numel() for p in self.parameters())

    def effective_curvature(self) -> Tensor:
        """c as used in the gate: the raw parameter, soft-capped when ``max_curvature`` is set."""
        c = self.curvature
        if self.max_curvature is None:
            return c
        return self.max_curvature * torch.tanh(c / self.max_curvature)

    def pre_activation(self, x: Tensor) -> Tensor:
        """z = g(x), shape ``(..., d)``. Checks that x is a floating tensor of shape (..., d)
        on the gate's device.

        Outside autocast, an x narrower than the gate's parameters (bf16/fp16 x, float32 gate:
        ``patch(model, dtype=torch.float32)`` on a bf16 model) is cast up to them, losslessly,
        and z is in the parameters' dtype; y keeps x's dtype. An x that the cast would round
        (float64 into a float32 gate, fp16 into a bf16 one) is refused.

        Raises:
            TypeError: x is not a floating tensor, or is wider than the gate's parameters.
            ValueError: x's last dimension is not d, or x is on another device.
        """
        check_floating("x", x)
        check_last_dim("x", x, self.dim)
        check_same_device(x=x, gate_parameters=self.curvature)
        own = self.curvature.dtype
        if x.dtype != own and not _autocasting(x):
            if torch.promote_types(x.dtype, own) != own:
                raise TypeError(
                    f"x has dtype {x.dtype} but the gate's parameters are {own}, and casting x to {own} "
                    f"would round it: build the gate in x's dtype (gate.to({x.dtype}) or patch(model, "
                    f"dtype={x.dtype})), cast x yourself, or run under torch.autocast"
                )
            x = x.to(own)
        return self.proj(x)

    def gates_from_pre_activation(self, z: Tensor, dtype: torch.dtype | None = None) -> GateOutput:
        """alpha, beta, s from z = g(x); computed in float32 (float64 for float64 input)."""
        c = self.effective_curvature()
        acc = compute_dtype(z, c)
        s = c.to(acc) * torch.tanh(z.to(acc))
        out_dtype = dtype or z.dtype
        return GateOutput(
            alpha=torch.exp(s).to(out_dtype),
            beta=torch.exp(-s).to(out_dtype),
            s=s.to(out_dtype),
        )

    def skip_score(self, z: Tensor) -> Tensor:
        """Mean branch gate per token, ``mean_d beta = mean_d exp(-c tanh z)``, float32 ``(...,)``.

        A token whose score is low passes its branch through a nearly closed gate; skipping
        the branch there changes y by ``beta * f(x)`` only (see :mod:`vectorgate.skip`).
        """
        c = self.effective_curvature()
        acc = compute_dtype(z, c)
        return torch.exp(-c.to(acc) * torch.tanh(z.to(acc))).mean(-1).float()

    def forward(self, x: Tensor) -> GateOutput:
        """Gates for x.

        Args:
            x: residual input, shape ``(..., d)``.

        Returns:
            ``GateOutput(alpha, beta, s)``, each ``(..., d)`` in x's dtype.
        """
        return self.gates_from_pre_activation(self.pre_activation(x), dtype=x.dtype)

    def residual(self, x: Tensor, f_x: Tensor, z: Tensor | None = None) -> Tensor:
        """The gated residual ``alpha(x) * x + beta(x) * f_x`` through the fused op.

        Args:
            x: residual input, shape ``(..., d)``.
            f_x: branch output, same shape as x.
            z: optional precomputed ``g(x)`` (saves a projection when the caller has it).

        Returns:
            y, shape ``(..., d)``.
        """
        if z is None:
            z = self.pre_activation(x)
        return exp_gated_residual(x, f_x, z, self.effective_curvature())

    def residual_delta(self, x: Tensor, f_x: Tensor, z: Tensor | None = None) -> Tensor:
        """``y - x`` as ``expm1(s) * x + beta * f_x``: exactly ``f_x`` at c = 0.

        For hosts that add the residual themselves (``x + delta``), e.g. Llama or timm
        blocks, so that a patched model stays bit-for-bit equal to the original at init.
        """
        if z is None:
            z = self.pre_activation(x)
        return exp_gated_residual(x, f_x, z, self.effective_curvature(), delta=True)

    def extra_repr(self) -> str:
        parts = [f"dim={self.dim}"]
        parts.append("rank=full" if self.rank is None else f"rank={self.rank}")
        parts.append(f"curvature={self.curvature_mode}")
        parts.append(f"init={self.init}")
        parts.append(f"init_curvature={self.init_curvature:g}")
        if self.max_curvature is not None:
            parts.append(f"max_curvature={self.max_curvature:g}")
        if self.depth is not None:
            parts.append(f"depth={self.depth}")
        parts.append(f"params={self.num_parameters:,}")
        return ", ".join(parts)
