"""Turn token skipping on and off for a patched model (or one built from GatedResidual)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.patching import FAMILIES, Change, patch_state
from vectorgate.patching.changes import apply_all
from vectorgate.skip.decision import SkipSite

__all__ = ["SkipController", "disable_skipping", "enable_skipping", "find_skip_sites", "skip_controller"]

_ATTR = "_vectorgate_skipping"


def find_skip_sites(model: nn.Module) -> list[tuple[str, ResidualGate, Any]]:
    """Every branch of ``model`` that can skip tokens, in forward order.

    Returns:
        ``(name, gate, where)`` triples; ``where`` is ``(family, layer, site)`` for a site
        gated by :func:`vectorgate.patch`, or the :class:`~vectorgate.GatedResidual` itself.

    Raises:
        ValueError: nothing in ``model`` can skip, with the reason (not patched, a variant
            whose gate is only known after the branch, no token-wise branch).
    """
    from vectorgate.residual import GatedResidual

    out: list[tuple[str, ResidualGate, Any]] = []
    state = patch_state(model)
    reasons: list[str] = []
    if state is not None:
        fam = FAMILIES[state.family]
        sites = [s for s in state.sites if s in fam.skip_sites]
        if not sites:
            reasons.append(f"family {fam.name!r} skips tokens at sites {list(fam.skip_sites) or 'none'}, "
                           f"but the model was patched at {list(state.sites)}")
        for layer_name in state.layer_names:
            layer = model.get_submodule(layer_name)
            for site in sites:
                gate = fam.gate_at(layer, site)
                if not gate.can_skip:
                    raise ValueError(
                        f"the {state.variant!r} gates of this model cannot skip tokens: "
                        f"{gate._cannot_skip()}"
                    )
                out.append((f"{layer_name}.{site}" if layer_name else site, gate, (fam, layer, site)))
    for name, module in model.named_modules():
        if isinstance(module, GatedResidual):
            if not module.tokenwise:
                reasons.append(f"GatedResidual {name or '(root)'} was not built with tokenwise=True")
            elif not module.gate.can_skip:
                raise ValueError(f"GatedResidual {name or '(root)'}: {module.gate._cannot_skip()}")
            else:
                out.append((name or "root", module.gate, module))
    if not out:
        why = "; ".join(reasons) or f"{type(model).__name__} is neither patched by vectorgate.patch nor holds a GatedResidual"
        raise ValueError(f"no branch of this model can skip tokens: {why}")
    return out


class SkipController:
    """The skipping state of one model: its sites, thresholds, counts and recordings.

    Made by :func:`enable_skipping`; find it again with :func:`skip_controller`.
    """

    def __init__(self, model: nn.Module) -> None:
        self.sites: dict[str, SkipSite] = {}
        self.changes: list[Change] = []
        self.recording = False
        self.token_mask: Tensor | None = None
        self._mask_count: tuple[Tensor, int] | None = None  # (token_mask, its real tokens), counted once
        state = patch_state(model)
        for name, gate, where in find_skip_sites(model):
            site = SkipSite(name, gate, self)
            self.sites[name] = site
            if isinstance(where, tuple):
                fam, layer, site_name = where
                self.changes.extend(fam.skip_changes(layer, site_name, site, state.changes))
            else:
                self.changes.extend(where.skip_changes(site))

    # -- thresholds ---------------------------------------------------------------------

    def set_thresholds(self, thresholds: float | Mapping[str, float]) -> None:
        """One threshold for every site, or a per-site mapping (every site named exactly once).

        Raises:
            ValueError: unknown or missing site names, or a NaN threshold.
        """
        if isinstance(thresholds, Mapping):
            unknown = sorted(set(thresholds) - set(self.sites))
            missing = sorted(set(self.sites) - set(thresholds))
            if unknown or missing:
                raise ValueError(f"thresholds must name every skip site exactly; unknown: {unknown}, missing: {missing}")
            values = dict(thresholds)
        else:
            values = dict.fromkeys(self.sites, thresholds)
        for name, t in values.items():
            if isinstance(t, bool) or not isinstance(t, int | float) or math.isnan(t):
                raise ValueError(f"threshold of {name} must be a number (-inf keeps every token), got {t!r}")
        for name, t in values.items():
            self.sites[name].threshold = float(t)

    @property
    def thresholds(self) -> dict[str, float]:
        """Per site, the current skip threshold (``-inf``: every token runs the branch)."""
        return {name: s.threshold for name, s in self.sites.items()}

    # -- what happened ------------------------------------------------------------------

    def skip_ratios(self) -> dict[str, float]:
        """Per site, the share of (real) tokens skipped since the last :meth:`reset`; 0.0 where
        none was (a site at threshold -inf, or no token yet)."""
        return {name: s.skip_ratio for name, s in self.sites.items()}

    def skip_ratio(self) -> float:
        """Share of (real) tokens skipped over all sites since the last :meth:`reset`: the share
        of the skippable branches' FLOPs saved, when every site's branch costs the same. Sites
        at threshold -inf count their tokens as kept; 0.0 when nothing was skipped."""
        seen = sum(s.seen for s in self.sites.values())
        return sum(s.skipped for s in self.sites.values()) / seen if seen else 0.0

    def reset(self) -> None:
        """Clear every site's counts and recordings."""
        for s in self.sites.values():
            s.reset()

    @contextlib.contextmanager
    def record(self) -> Iterator[SkipController]:
        """Within the block, every site keeps its scores and keep masks (``site.scores``,
        ``site.decisions``), and computes them even where the threshold is -inf."""
        previous, self.recording = self.recording, True
        try:
            yield self
        finally:
            self.recording = previous

    @contextlib.contextmanager
    def tokens(self, mask: Tensor | None) -> Iterator[SkipController]:
        """Within the block, count and record only the tokens where ``mask`` ``(batch, tokens)``
        is true (e.g. an attention mask: padding neither counts nor calibrates)."""
        previous, self.token_mask = self.token_mask, None if mask is None else mask.bool()
        try:
            yield self
        finally:
            self.token_mask, self._mask_count = previous, None  # hold no mask past the block

    def real_tokens(self, shape: Any) -> Tensor | None:
        """The token mask (None: count every token).

        Raises:
            ValueError: the mask's shape is not the scores' ``(batch, tokens)``.
        """
        m = self.token_mask
        if m is not None and tuple(m.shape) != tuple(shape):
            raise ValueError(f"the token mask has shape {tuple(m.shape)} but this site scores tokens of shape "
                             f"{tuple(shape)}; pass a mask with one entry per token the branch sees")
        return m

    def count_tokens(self, shape: Any) -> int:
        """How many (real) tokens a branch input of token shape ``shape`` holds: all of them,
        or the token mask's count (computed once per mask: one device sync, not one a site).

        Raises:
            ValueError: the mask's shape is not ``shape``.
        """
        mask = self.real_tokens(shape)
        if mask is None:
            return math.prod(shape)
        if self._mask_count is None or self._mask_count[0] is not mask:
            self._mask_count = (mask, int(mask.sum()))
        return self._mask_count[1]

    def __repr__(self) -> str:
        return f"SkipController({len(self.sites)} sites, skip ratio {self.skip_ratio():.3f})"


def skip_controller(model: nn.Module) -> SkipController | None:
    """The :class:`SkipController` :func:`enable_skipping` put on ``model``, else None."""
    return getattr(model, _ATTR, None)


def enable_skipping(model: nn.Module, thresholds: float | Mapping[str, float] | None = None) -> SkipController:
    """Make the skippable branches of ``model`` run on the kept tokens only.

    Per site, the gate is computed from the residual input first; tokens whose skip score
    is below the site's threshold are removed before the branch's GEMMs (gathered out, the
    branch runs on the rest, its output scattered back), and their y is what the gate makes
    of x alone (``alpha * x`` for VectorGate). Use :func:`vectorgate.skip.calibrate_skipping`
    to choose thresholds for a target skip ratio. With every threshold at -inf (the
    default) the model computes exactly what it computed before.

    Covered: the MLP branch of BERT-like post-LN layers, of pre-norm transformers layers
    (GPT-2, Llama family, HF ViT) and of timm ViT blocks patched by :func:`vectorgate.patch`,
    and :class:`~vectorgate.GatedResidual` built with ``tokenwise=True``. Attention branches
    are not skipped.

    Returns:
        The model's :class:`SkipController`.

    Raises:
        ValueError: skipping is already on, or nothing in the model can skip (with why).
    """
    if skip_controller(model) is not None:
        raise ValueError("token skipping is already enabled on this model; call disable_skipping(model) first")
    controller = SkipController(model)
    if thresholds is not None:
        controller.set_thresholds(thresholds)  # checked before the model is touched
    apply_all(controller.changes, lambda: object.__setattr__(model, _ATTR, controller))
    return controller


def disable_skipping(model: nn.Module) -> None:
    """Undo :func:`enable_skipping`: every branch runs on every token again.

    Raises:
        ValueError: skipping is not enabled on ``model``.
    """
    controller = skip_controller(model)
    if controller is None:
        raise ValueError("token skipping is not enabled on this model")
    for change in reversed(controller.changes):
        change.revert()
    object.__delattr__(model, _ATTR)
