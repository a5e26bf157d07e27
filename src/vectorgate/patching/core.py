"""``patch`` and ``unpatch``: gate the residual connections of an existing model in place.

:func:`patch` finds the model's family (:mod:`vectorgate.patching.families`), builds every
gate and every :class:`~vectorgate.patching.changes.Change` first and only then applies them,
undoing the applied ones if anything fails, so a model is either fully patched or left
exactly as it was. What was done is the ``"patch"`` group of the model's
:class:`~vectorgate.patching.state.ModelState`, owned by a :class:`PatchState`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

import vectorgate.patching.state as model_edits
from vectorgate.base import ResidualGate
from vectorgate.discovery import gates
from vectorgate.patching.changes import Change, GateBranchOutput
from vectorgate.patching.config import GateConfig
from vectorgate.patching.families import find_family
from vectorgate.patching.gate_site import GateSite
from vectorgate.variants import DEPTH_AWARE_VARIANTS, build_gate

__all__ = ["PatchState", "gate_config", "is_patched", "patch", "patch_state", "site_name", "unpatch"]

@dataclass
class PatchState:
    """What :func:`patch` did to a model (kept on it; saved by :func:`vectorgate.save_gates`).

    Attributes:
        config: the :class:`GateConfig`, resolved: ``family`` named, ``sites`` and ``layers``
            as gated (sites in forward order, layer indices non-negative).
        layer_names: qualified names of the gated layers, in ``layers`` order.
        dims: qualified gate module name -> feature dimension.
        changes: the applied edits, reverted by :func:`unpatch`.
        gate_sites: ``"<layer name>.<site>"`` -> its :class:`~vectorgate.patching.gate_site.GateSite`,
            for every site the family gated through one (all built-in families do).
    """

    config: GateConfig
    layer_names: tuple[str, ...]
    dims: dict[str, int] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list, repr=False)
    gate_sites: dict[str, GateSite] = field(default_factory=dict, repr=False)

    def gate_site(self, layer_name: str, site: str) -> GateSite | None:
        """The :class:`GateSite` of ``site`` in the gated layer ``layer_name``, else None."""
        return self.gate_sites.get(site_name(layer_name, site))

    @property
    def family(self) -> str:
        """The family's registry name."""
        return self.config.family

    @property
    def variant(self) -> str:
        """The residual variant."""
        return self.config.variant

    @property
    def sites(self) -> tuple[str, ...]:
        """The gated sites, in forward order."""
        return self.config.sites

    @property
    def layers(self) -> tuple[int, ...]:
        """Indices of the gated layers."""
        return self.config.layers

    @property
    def gate_kwargs(self) -> dict[str, Any]:
        """The variant's arguments."""
        return self.config.gate_kwargs

    @property
    def modules_to_save(self) -> tuple[str, ...]:
        """Non-gate modules trained and saved with the gates."""
        return self.config.modules_to_save

    @modules_to_save.setter
    def modules_to_save(self, value: Sequence[str]) -> None:
        self.config = self.config.replace(modules_to_save=value)


def site_name(layer_name: str, site: str) -> str:
    """A site's qualified name: ``"<layer name>.<site>"`` (just the site for a root layer)."""
    return f"{layer_name}.{site}" if layer_name else site


def patch_state(model: nn.Module) -> PatchState | None:
    """The :class:`PatchState` of a model patched by :func:`patch`, else None."""
    return model_edits.owner(model, "patch")


def gate_config(model: nn.Module) -> GateConfig | None:
    """The resolved :class:`GateConfig` a model was patched with, else None."""
    state = patch_state(model)
    return None if state is None else state.config


def is_patched(model: nn.Module) -> bool:
    """Whether :func:`patch` has gated this model."""
    return patch_state(model) is not None


def _resolve_layers(layers: tuple[int, ...] | None, n: int) -> tuple[int, ...]:
    if layers is None:
        return tuple(range(n))
    out = []
    for i in layers:
        if not -n <= i < n:
            raise ValueError(f"layer index {i} is out of range for a model with {n} layers")
        out.append(i % n)
    if len(set(out)) != len(out):
        raise ValueError(f"layers has duplicates: {layers}")
    if not out:
        raise ValueError("layers is empty: nothing to patch")
    return tuple(sorted(out))


def _layer_factory(layer: nn.Module) -> dict[str, Any]:
    """Device and dtype of a layer's floating-point parameters, for its gates."""
    for p in layer.parameters():
        if p.is_floating_point():
            return {"device": p.device, "dtype": p.dtype}
    return {}


def patch(model: nn.Module, config: GateConfig | None = None, /, **kwargs: Any) -> nn.Module:
    """Gate the residual connections of ``model`` in place, keeping every pretrained weight.

    With the default gate (``init="zero_output"``: g's output zero) the patched model's
    outputs equal the original's bit for bit, and every gate projection gets a gradient from
    the first step. ``patch`` counts the sites it gates (n) and gives each VectorGate
    ``depth=n``: its curvature is soft-capped at ``config.log_gain_budget / n`` and starts at
    half that (at most 1), so the gates together can never scale the residual stream by more
    than ``e^log_gain_budget`` at any depth (:mod:`vectorgate.depth`). An explicit
    ``max_curvature`` or ``depth`` in the config, or ``log_gain_budget=None``, overrides it.

    Call it with a :class:`GateConfig` or with its fields as keywords (a shortcut: keywords
    that are not fields are the variant's arguments)::

        vectorgate.patch(model, GateConfig(sites=("mlp",), rank=64))
        vectorgate.patch(model, sites="mlp", rank=64)               # the same

    Args:
        model: a supported model, base model or task head (e.g. ``BertModel``,
            ``BertForSequenceClassification``, ``LlamaForCausalLM``).
        config: what to gate and how; see :class:`GateConfig` for the fields (``variant``,
            ``sites``, ``layers``, ``family``, ``gate_kwargs``). Gates are created on each
            layer's device, in its parameter dtype unless ``gate_kwargs`` names a ``dtype``.
        **kwargs: the fields of a :class:`GateConfig`, when ``config`` is not given.

    Returns:
        ``model`` itself, patched.

    Raises:
        TypeError: both ``config`` and keywords given, or ``config`` is not a GateConfig.
        ValueError: unsupported model, already patched, unknown site, bad layer indices,
            or a gate that cannot be built. The model is unchanged in every error case.
    """
    if config is None:
        config = GateConfig(**kwargs)
    elif kwargs:
        raise TypeError(f"patch() takes a GateConfig or keyword arguments, not both (got {sorted(kwargs)})")
    elif not isinstance(config, GateConfig):
        raise TypeError(f"config must be a vectorgate.GateConfig, got {type(config).__name__}")
    if is_patched(model):
        raise ValueError(
            f"{type(model).__name__} is already patched by vectorgate (config: {gate_config(model)}); "
            "patching twice would gate the residuals twice. Call vectorgate.unpatch(model) first."
        )
    fam, found = find_family(model, config.family)
    sites = fam.sites if config.sites is None else config.sites
    unknown = [s for s in sites if s not in fam.sites]
    if unknown:
        raise ValueError(f"sites must be a non-empty subset of {fam.sites} for family {fam.name!r}, got {sites}")
    sites = tuple(s for s in fam.sites if s in sites)  # forward order, whatever the caller's order
    if config.gate_source not in fam.gate_sources:
        raise ValueError(
            f"gate_source={config.gate_source!r} is not available for family {fam.name!r} (it takes "
            f"{fam.gate_sources}); 'normed' needs pre-norm layers (x + f(norm(x))), where the gate can "
            "read norm(x) like the branch does. In post-LN layers x is already a LayerNorm's output."
        )
    chosen = _resolve_layers(config.layers, len(found))
    for name, _ in found:
        for sub_name, sub in model.get_submodule(name).named_modules() if name else model.named_modules():
            if isinstance(sub, ResidualGate):
                raise ValueError(
                    f"{type(model).__name__} already holds a gate at {name}.{sub_name}; refusing to "
                    "gate the same residual twice"
                )

    # Build everything first; nothing below touches the model until the loop that applies.
    present_sites = [(i, [s for s in sites if s in fam.layer_sites(found[i][1])]) for i in chosen]
    gate_kwargs = dict(config.gate_kwargs)
    if config.log_gain_budget is not None and config.variant in DEPTH_AWARE_VARIANTS:
        # The stream's depth, so that the gates together keep within the budget (vectorgate.depth).
        gate_kwargs.setdefault("depth", sum(len(s) for _, s in present_sites))
        gate_kwargs.setdefault("log_gain_budget", config.log_gain_budget)
    changes: list[Change] = []
    gate_sites: dict[str, GateSite] = {}
    gated_sites: set[str] = set()
    for i, layer_sites in present_sites:
        layer_name, layer = found[i]
        # The layer's device, and its dtype unless the config asks for another.
        factory = {k: v for k, v in _layer_factory(layer).items() if k not in gate_kwargs}
        layer_gates = {}
        for site in layer_sites:  # e.g. cross-attention only where decoder layers have it
            gate = build_gate(config.variant, fam.site_dim(layer, site), **gate_kwargs)
            layer_gates[site] = gate.to(**factory) if factory else gate
            gated_sites.add(site)
        layer_changes = fam.changes(layer, layer_gates)
        if config.gate_source == "normed":
            for change in layer_changes:
                if isinstance(change, GateBranchOutput):
                    change.read_normed()
        by_gate = {id(gs.gate): gs for change in layer_changes for gs in change.gate_sites()}
        for site, gate in layer_gates.items():
            gs = by_gate.get(id(gate))
            if gs is not None:
                gs.name = site_name(layer_name, site)
                gate_sites[gs.name] = gs
        changes.extend(layer_changes)
    if config.sites is not None and set(sites) - gated_sites:
        raise ValueError(
            f"no chosen layer of {type(model).__name__} has site(s) {sorted(set(sites) - gated_sites)}"
        )
    sites = tuple(s for s in sites if s in gated_sites)

    state = PatchState(
        config=config.replace(family=fam.name, sites=sites, layers=chosen),
        layer_names=tuple(found[i][0] for i in chosen),
        changes=changes,
        gate_sites=gate_sites,
    )
    model_edits.push(model, "patch", changes, owner=state)
    state.dims = {name: g.dim for name, g in gates(model)}
    return model


def unpatch(model: nn.Module) -> nn.Module:
    """Undo :func:`patch`: remove every gate and hook; the original modules come back
    (with whatever training did to their weights). Token skipping, if enabled, is undone too.

    Raises:
        ValueError: the model is not patched.
    """
    if patch_state(model) is None:
        raise ValueError(f"{type(model).__name__} is not patched by vectorgate")
    model_edits.pop(model, "patch")  # the skipping and stacking edits above it go first
    return model
