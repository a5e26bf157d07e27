"""LAuReL: learned augmented residual layers (residual weights, low-rank, and both).

Menghani, Kumar and Kumar, 2025, "LAuReL: Learned Augmented Residual Layer" (ICML 2025,
arXiv:2411.07501) generalise ``x_{i+1} = f(x_i) + x_i`` to
``x_{i+1} = alpha * f(x_i) + g(x_i, ...)`` with a learned linear ``g``:

- **LAuReL-RW** (residual weights): ``y = alpha * f(x) + beta_ * x`` with two learned
  scalars per site (the paper's section 2.1), normalised so that neither grows without
  bound. The paper says only "a normalization function such as softmax or sigmoid" and gives
  no initial values; here softmax over the pair is the default and both start at 0.5 (the
  site starts at ``(x + f) / 2``: our choice, not the paper's). Two parameters per site.
- **LAuReL-LR** (low rank, eq. 3): ``y = f(x) + x + B A x`` with ``A: d -> r``, ``B: r -> d``
  (``2 r d`` parameters). ``B`` starts at zero as in the paper, so the site starts as the
  plain residual bit for bit. ``A`` starts as a random matrix with orthonormal rows; the
  paper used Xavier (ResNet) or a fixed column-orthogonal matrix with entries
  ``1/sqrt(r d)`` (LLMs), r times smaller than ours, which makes B's first steps r times
  smaller there. The default rank 16 is the paper's ResNet value (its LLMs used 4 to 64).
- **LAuReL-RW+LR** (eq. 5): ``y = alpha * f(x) + beta_ * (x + B A x)``.

Checked against the paper's text (arXiv 2411.07501v4, sections 2 and 3.3). The paper does not
say whether attention and MLP residuals each get their own LAuReL; here every gated site does.

The paper's third form, LAuReL-PA (a learned mix of earlier layers' activations), needs the
activations of previous layers and is not a per-site ``(x, f) -> y`` gate; it is not here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.variants._common import check_dim, check_pair, num_parameters

__all__ = ["LaurelLowRankResidual", "LaurelResidual", "LaurelWeightsResidual"]

_NORMS = ("softmax", "sigmoid", "none")


class LaurelResidual(ResidualGate):
    """LAuReL with learned residual weights and/or a low-rank residual map.

    ``y = alpha * f(x) + beta_ * (x + B A x)``, where ``(alpha, beta_)`` come from two learned
    logits (``weights=True``; otherwise both are 1) and ``B A`` is a rank-``rank`` map
    (``rank > 0``; otherwise absent). Use the registered names: ``laurel_rw``,
    ``laurel_lr[rank=R]``, ``laurel_rw_lr[rank=R]``.

    Args:
        dim: feature dimension d.
        weights: learn the residual weights (LAuReL-RW).
        rank: rank r of the low-rank map (LAuReL-LR); 0 for none. Clamped to d.
        norm: how the two weight logits become ``(alpha, beta_)``: ``"softmax"`` (default,
            one of the two the paper suggests: ``alpha + beta_ = 1``, both 0.5 at init), ``"sigmoid"``
            (each in (0, 1), both 0.5 at init) or ``"none"`` (the raw logits, both 1 at init:
            the plain residual).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shapes:
        ``residual(x, f_x)``: x, f_x ``(..., d)`` -> y ``(..., d)``.
    """

    def __init__(self, dim: int, *, weights: bool = True, rank: int = 0, norm: str = "softmax",
                 device=None, dtype=None) -> None:
        super().__init__()
        self.dim = check_dim(dim)
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ValueError(f"rank must be an int >= 0, got {rank!r}")
        if not weights and rank == 0:
            raise ValueError("LaurelResidual needs weights=True or rank > 0 (otherwise it is 'plain')")
        self.weights, self.rank, self.norm = bool(weights), min(rank, dim), norm
        factory = {"device": device, "dtype": dtype}
        # [branch logit, skip logit]; named for what they are (never `beta`, see DESIGN.md).
        self.weight_logits = nn.Parameter(torch.empty(2, **factory)) if self.weights else None
        self.down = nn.Linear(dim, self.rank, bias=False, **factory) if self.rank else None
        self.up = nn.Linear(self.rank, dim, bias=False, **factory) if self.rank else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise: logits at their neutral value, ``A`` orthogonal, ``B = 0``."""
        with torch.no_grad():
            if self.weight_logits is not None:
                self.weight_logits.fill_(1.0 if self.norm == "none" else 0.0)
            if self.down is not None:
                nn.init.orthogonal_(self.down.weight)
                nn.init.zeros_(self.up.weight)

    @property
    def num_parameters(self) -> int:
        """Trainable parameters: 2 (weights) + 2 r d (low rank)."""
        return num_parameters(self)

    def residual_weights(self, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """``(alpha, beta_)``, the weights of f(x) and of the skip path, as 0-d tensors."""
        if self.weight_logits is None:
            one = torch.ones((), device=self.down.weight.device, dtype=dtype or self.down.weight.dtype)
            return one, one
        logits = self.weight_logits.float()
        if self.norm == "softmax":
            w = torch.softmax(logits, dim=0)
        elif self.norm == "sigmoid":
            w = torch.sigmoid(logits)
        else:
            w = logits
        w = w.to(dtype or self.weight_logits.dtype)
        return w[0], w[1]

    def _skip(self, x: Tensor) -> Tensor | None:
        """``B A x`` (None without a low-rank map)."""
        return None if self.down is None else self.up(self.down(x))

    def residual(self, x: Tensor, f_x: Tensor) -> Tensor:
        """``alpha * f_x + beta_ * (x + B A x)``; x, f_x ``(..., d)`` -> ``(..., d)``."""
        return x + self.residual_delta(x, f_x)

    def residual_delta(self, x: Tensor, f_x: Tensor) -> Tensor:
        """``y - x``, computed so that it is exactly ``f_x`` at the identity init (``laurel_lr``)."""
        check_pair(x, f_x, self.dim)
        low = self._skip(x)
        if self.weight_logits is None:
            return f_x + low
        alpha, skip = self.residual_weights(f_x.dtype)
        delta = alpha * f_x + (skip - 1) * x
        return delta if low is None else delta + skip * low

    def extra_repr(self) -> str:
        parts = [f"dim={self.dim}"]
        if self.weights:
            parts.append(f"weights={self.norm}")
        if self.rank:
            parts.append(f"rank={self.rank}")
        return ", ".join([*parts, f"params={self.num_parameters:,}"])


class LaurelWeightsResidual(LaurelResidual):
    """LAuReL-RW: ``y = alpha * f(x) + beta_ * x``, two learned scalars (2 parameters).

    With the default ``norm="softmax"``, ``alpha + beta_ = 1`` and the site starts at
    ``(x + f) / 2``; ``norm="none"`` starts at the plain residual ``x + f``. See
    :class:`LaurelResidual` for the arguments.

    Shapes:
        ``residual(x, f_x)``: x, f_x ``(..., d)`` -> y ``(..., d)``.
    """

    def __init__(self, dim: int, *, norm: str = "softmax", device=None, dtype=None) -> None:
        super().__init__(dim, weights=True, rank=0, norm=norm, device=device, dtype=dtype)


class LaurelLowRankResidual(LaurelResidual):
    """LAuReL-LR: ``y = f(x) + x + B A x`` with ``A: d -> r``, ``B: r -> d`` (2 r d parameters).

    ``B = 0`` at init: the plain residual ``x + f`` bit for bit. ``rank`` defaults to 16
    (clamped to d). See :class:`LaurelResidual`.

    Shapes:
        ``residual(x, f_x)``: x, f_x ``(..., d)`` -> y ``(..., d)``.
    """

    def __init__(self, dim: int, *, rank: int = 16, device=None, dtype=None) -> None:
        super().__init__(dim, weights=False, rank=rank, device=device, dtype=dtype)


def laurel_rw_lr(dim: int, *, rank: int = 16, norm: str = "softmax", **kwargs) -> LaurelResidual:
    """LAuReL-RW+LR: ``y = alpha * f(x) + beta_ * (x + B A x)`` (2 + 2 r d parameters)."""
    return LaurelResidual(dim, weights=True, rank=rank, norm=norm, **kwargs)
