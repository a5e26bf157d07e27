"""One skippable branch: its gate, its threshold, and what it decided."""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import Tensor

from vectorgate.base import ResidualGate

__all__ = ["SkipSite"]


class _Controller(Protocol):
    """What a site reads from its :class:`vectorgate.skip.SkipController`."""

    recording: bool

    def real_tokens(self, shape: Any) -> Tensor | None: ...

    def count_tokens(self, shape: Any) -> int: ...


class SkipSite:
    """The skip decision of one gated branch (e.g. ``bert.encoder.layer.3.mlp``).

    A token is skipped when its gate's :meth:`~vectorgate.base.ResidualGate.skip_score` is
    below ``threshold``; ``-inf`` (the default) keeps every token and leaves the host's
    dense forward untouched. The decision depends on the token and the threshold alone,
    never on the other tokens of the batch, so batch-size-1 decoding decides as a batch does.

    Attributes:
        name: ``<layer name>.<site>`` (or the module name of a :class:`~vectorgate.GatedResidual`).
        gate: the gate whose score decides.
        threshold: skip below this score.
        seen, skipped: token counts since the last ``reset`` (real tokens only when the
            controller has a token mask). An idle site (threshold -inf) counts the tokens it
            sees too, all kept.
    """

    def __init__(self, name: str, gate: ResidualGate, controller: _Controller) -> None:
        self.name, self.gate = name, gate
        self.threshold = -math.inf
        self.controller = controller
        self.seen = 0
        self.skipped = 0
        self.scores: list[Tensor] = []
        """Scores of the real tokens of each call while the controller records (CPU, float32)."""
        self.decisions: list[Tensor] = []
        """Keep masks ``(batch, tokens)`` of each call while the controller records (CPU, bool)."""
        self._pending: tuple[Tensor, Tensor] | None = None

    @property
    def skip_ratio(self) -> float:
        """Share of tokens skipped since the counts were reset; 0.0 when none was (before
        any token too)."""
        return self.skipped / self.seen if self.seen else 0.0

    def decide(self, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """``(z, keep)`` for the residual input x ``(..., d)``.

        ``(None, None)`` when the site is idle (threshold -inf and not recording): run the
        host's dense forward. Otherwise z is the gate's pre-activation (hand it to the gate,
        so x is projected once) and keep is a bool ``x.shape[:-1]`` mask, or None if every
        token is kept.
        """
        if self.threshold == -math.inf and not self.controller.recording:
            self.seen += self.controller.count_tokens(x.shape[:-1])  # every one kept
            return None, None
        z = self.gate.pre_activation(x)
        score = self.gate.skip_score(z)
        if not torch.isfinite(score).all():
            raise FloatingPointError(
                f"vectorgate.skip: the gate at {self.name} gave non-finite skip scores "
                f"(nan or inf in {int((~torch.isfinite(score)).sum())} of {score.numel()} tokens)"
            )
        keep = score >= self.threshold
        real = self.controller.real_tokens(score.shape)
        self.seen += int(real.sum()) if real is not None else score.numel()
        self.skipped += int((~keep & real).sum()) if real is not None else int((~keep).sum())
        if self.controller.recording:
            self.scores.append((score[real] if real is not None else score.flatten()).detach().float().cpu())
            self.decisions.append(keep.detach().cpu())
        self._pending = (x, z)
        return z, None if bool(keep.all()) else keep

    def take_z(self, x: Tensor) -> Tensor | None:
        """The z :meth:`decide` computed from this very x (once), else None."""
        pending, self._pending = self._pending, None
        if pending is None or pending[0] is not x:
            return None
        return pending[1]

    def reset(self) -> None:
        """Clear counts and recordings."""
        self.seen = self.skipped = 0
        self.scores.clear()
        self.decisions.clear()

    def __repr__(self) -> str:
        return f"SkipSite({self.name!r}, threshold={self.threshold:.4g}, skipped={self.skipped}/{self.seen})"
