"""SkipBudget: train gates to close the branch for a target share of tokens."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from vectorgate._context import as_token_mask, temporarily
from vectorgate.base import ResidualGate
from vectorgate.patching.gate_site import GateSite
from vectorgate.skip.control import find_skip_sites

__all__ = ["SkipBudget", "check_skip_ratio"]


def check_skip_ratio(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1), else a ValueError that says so."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a share of tokens in [0, 1), got {value!r}")
    return float(value)


class SkipBudget:
    """An opt-in regulariser and capacity schedule that teaches gates to skip a share of tokens.

    Attached to every skippable gate of ``model`` (the sites :func:`vectorgate.skip.enable_skipping`
    can skip). At each training forward, per site, the tokens are ranked by their skip score
    (for VectorGate the mean branch gate ``mean_d beta``); the ``ratio`` lowest

    - add their mean score to the penalty (:meth:`loss`), pushing their gate further shut, and
    - with ``drop=True``, have their branch output zeroed for this step (their y is the gate's
      term on x alone, as when skipped at inference), so the rest of the model learns to
      live without them, as Mixture-of-Depths trains its top-k.

    ``ratio`` rises linearly to ``target`` over ``warmup_steps`` optimizer steps (``target *
    (step + 1) / warmup_steps``), so a pretrained model is not cut at once. Ranking is per batch and site; at inference
    thresholds replace it (:func:`vectorgate.skip.calibrate_skipping`).

    Usage::

        budget = SkipBudget(model, target=0.5, weight=1.0, warmup_steps=100)
        for batch in loader:
            with budget.tokens(batch["attention_mask"]):   # padding neither ranks nor counts
                loss = task_loss(model, batch) + budget.loss()
            loss.backward(); optimizer.step(); budget.step()
        budget.remove()

    Args:
        model: a model patched by :func:`vectorgate.patch` or holding
            ``GatedResidual(..., tokenwise=True)``, with a variant that can skip.
        target: share of tokens per site to close, in [0, 1).
        weight: multiplies the penalty (>= 0; 0 keeps only the capacity schedule).
        warmup_steps: steps over which the share rises from 0 to ``target`` (>= 0).
        drop: zero the branch output of the ranked-out tokens during training.

    Raises:
        ValueError: a target outside [0, 1) (NaN included), a negative or non-finite weight,
            a negative warmup, or a model with nothing to skip.
    """

    def __init__(self, model: nn.Module, target: float, *, weight: float = 1.0, warmup_steps: int = 0, drop: bool = True) -> None:
        self.target = check_skip_ratio("target", target)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        self.weight, self.warmup_steps, self.drop = float(weight), warmup_steps, bool(drop)
        self.steps_done = 0
        self.token_mask: Tensor | None = None
        self._penalties: list[Tensor] = []
        self.sites: list[GateSite] = [site for _, _, site in find_skip_sites(model)]
        if any(site.budget is not None for site in self.sites):
            raise ValueError("a SkipBudget is already attached to this model; call its remove() first")
        for site in self.sites:
            site.budget = self

    @property
    def gates(self) -> list[ResidualGate]:
        """The gates this budget trains, one per skippable site."""
        return [site.gate for site in self.sites]

    @property
    def ratio(self) -> float:
        """The share of tokens ranked out at the current step (``target`` after warm-up)."""
        if self.warmup_steps == 0:
            return self.target
        return self.target * min(1.0, (self.steps_done + 1) / self.warmup_steps)

    def on_gate(self, gate: ResidualGate, z: Tensor, f_x: Tensor) -> Tensor:
        """Called by the gate in training: rank, record the penalty, drop. Returns f_x to use."""
        score = gate.skip_score(z)
        mask = self.token_mask
        if mask is not None and mask.shape != score.shape:
            raise ValueError(f"SkipBudget: the token mask has shape {tuple(mask.shape)} but the gate scores "
                             f"tokens of shape {tuple(score.shape)}; pass one entry per token the branch sees")
        real = score[mask] if mask is not None else score.reshape(-1)
        k = int(self.ratio * real.numel())
        if k == 0:
            return f_x
        lowest = torch.topk(real, k, largest=False).values
        self._penalties.append(lowest.mean())
        if not self.drop:
            return f_x
        dropped = score <= lowest.max().detach()
        if mask is not None:
            dropped = dropped & mask
        return f_x * (~dropped).unsqueeze(-1).to(f_x.dtype)

    def loss(self) -> Tensor:
        """``weight`` times the mean penalty of the forwards since the last call (0 before the
        schedule starts); add it to the task loss.

        Raises:
            FloatingPointError: the penalty is not finite (a gate produced NaN or inf).
        """
        if not self._penalties:
            return torch.zeros(())
        penalty = torch.stack(self._penalties).mean() * self.weight
        self._penalties = []
        if not torch.isfinite(penalty):
            raise FloatingPointError("SkipBudget: the skip penalty is not finite (a gate produced nan or inf)")
        return penalty

    def step(self) -> None:
        """Advance the warm-up schedule by one optimizer step."""
        self.steps_done += 1

    @contextlib.contextmanager
    def tokens(self, mask: Tensor | None) -> Iterator[SkipBudget]:
        """Within the block, rank only the tokens where ``mask`` ``(batch, tokens)`` is true."""
        with temporarily(self, token_mask=as_token_mask(mask)):
            yield self

    def remove(self) -> None:
        """Detach from the gates (they train and run as before)."""
        for site in self.sites:
            if site.budget is self:
                site.budget = None
        self.sites = []

    def __enter__(self) -> SkipBudget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (f"SkipBudget(target={self.target}, ratio now={self.ratio:.3f}, weight={self.weight}, "
                f"warmup_steps={self.warmup_steps}, drop={self.drop}, sites={len(self.sites)})")
