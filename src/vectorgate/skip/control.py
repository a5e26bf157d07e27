"""Turn token skipping on and off for a patched model (or one built from GatedResidual)."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torch import Tensor, nn

import vectorgate.patching.state as model_edits
from vectorgate._context import as_token_mask, temporarily
from vectorgate.base import ResidualGate
from vectorgate.patching import FAMILIES, Change, GateSite, SetAttribute, patch_state
from vectorgate.patching.stacking import UNSTACK_BEFORE_SKIPPING
from vectorgate.skip.adapters import branch_skip_changes
from vectorgate.skip.decision import SkipSite

__all__ = ["SkipController", "disable_skipping", "enable_skipping", "find_skip_sites", "skip_controller"]

#: How to make one site skip: its name, its GateSite, and the edits for a given SkipSite.
_Target = tuple[str, GateSite, Callable[[SkipSite], list[Change]]]


def _skip_targets(model: nn.Module) -> list[_Target]:
    """Every branch of ``model`` that can skip tokens, in forward order (see :func:`find_skip_sites`)."""
    from vectorgate.residual import GatedResidual

    out: list[_Target] = []
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
                gate_site = state.gate_site(layer_name, site)
                if gate_site is None:
                    continue  # a layer without this site (e.g. no cross-attention)
                if not gate_site.gate.can_skip:
                    raise ValueError(
                        f"the {state.variant!r} gates of this model cannot skip tokens: "
                        f"{gate_site.gate._cannot_skip()}"
                    )
                branch = fam.skip_branches.get(site)  # one token-wise module, else the family's own edits
                edits = (functools.partial(branch_skip_changes, layer.get_submodule(branch), gate_site)
                         if branch is not None else functools.partial(fam.skip_changes, layer, site, gate_site))
                out.append((gate_site.name, gate_site, edits))
    for name, module in model.named_modules():
        if isinstance(module, GatedResidual):
            if not module.tokenwise:
                reasons.append(f"GatedResidual {name or '(root)'} was not built with tokenwise=True")
            elif not module.gate.can_skip:
                raise ValueError(f"GatedResidual {name or '(root)'}: {module.gate._cannot_skip()}")
            else:
                out.append((name or "root", module.site,
                            lambda skip, gs=module.site: [SetAttribute(gs, "skip", skip)]))
    if not out:
        why = "; ".join(reasons) or f"{type(model).__name__} is neither patched by vectorgate.patch nor holds a GatedResidual"
        raise ValueError(f"no branch of this model can skip tokens: {why}")
    return out


def find_skip_sites(model: nn.Module) -> list[tuple[str, ResidualGate, GateSite]]:
    """Every branch of ``model`` that can skip tokens, in forward order.

    Returns:
        ``(name, gate, site)`` triples: the site's qualified name (``<layer>.<site>``, or the
        module name of a :class:`~vectorgate.GatedResidual`), its gate and its
        :class:`~vectorgate.patching.GateSite`.

    Raises:
        ValueError: nothing in ``model`` can skip, with the reason (not patched, a variant
            whose gate is only known after the branch, no token-wise branch).
    """
    return [(name, gs.gate, gs) for name, gs, _ in _skip_targets(model)]


class SkipController:
    """The skipping state of one model: its sites, thresholds, counts and recordings.

    Made by :func:`enable_skipping`; find it again with :func:`skip_controller`.

    Raises:
        ValueError: the model's gate projections are stacked, or nothing in it can skip.
    """

    def __init__(self, model: nn.Module) -> None:
        self.sites: dict[str, SkipSite] = {}
        self.changes: list[Change] = []
        self.recording = False
        self.token_mask: Tensor | None = None
        self._mask_count: tuple[Tensor, int] | None = None  # (token_mask, its real tokens), counted once
        edits = model_edits.model_state(model)
        if edits is not None and edits.find("stack") is not None:
            raise ValueError(UNSTACK_BEFORE_SKIPPING)
        for name, gate_site, make_changes in _skip_targets(model):
            site = SkipSite(name, gate_site.gate, self)
            self.sites[name] = site
            self.changes.extend(make_changes(site))

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
        with temporarily(self, recording=True):
            yield self

    @contextlib.contextmanager
    def tokens(self, mask: Tensor | None) -> Iterator[SkipController]:
        """Within the block, count and record only the tokens where ``mask`` ``(batch, tokens)``
        is true (e.g. an attention mask: padding neither counts nor calibrates)."""
        with temporarily(self, token_mask=as_token_mask(mask), _mask_count=None):  # no count past the block
            yield self

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
    return model_edits.owner(model, "skip")


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
    model_edits.push(model, "skip", controller.changes, owner=controller)
    return controller


def disable_skipping(model: nn.Module) -> None:
    """Undo :func:`enable_skipping`: every branch runs on every token again.

    Raises:
        ValueError: skipping is not enabled on ``model``.
    """
    if skip_controller(model) is None:
        raise ValueError("token skipping is not enabled on this model")
    model_edits.pop(model, "skip")
