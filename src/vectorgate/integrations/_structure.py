"""Recognise residual layers by their module structure (shared by the integrations' families).

A family accepts a layer when it has the family's *structural signature*: named children
of the right kinds (``nn.Linear``, a norm, a module with its own ``forward``). Two tiers:

- **Known classes** (and their subclasses, checked through the MRO by module and class name
  so nothing is imported): the core signature suffices, since their forward is known.
- **Any other class** (a renamed copy, a user's own layer) must also pass the family's
  stricter *lookalike* rule, e.g. "no norm besides the two pre-norms", because attribute
  names alone do not say where the residual is added (OpenAI GPT's ``Block`` has GPT-2's
  names and is post-norm).

A layer that a registered family finds by naming its class (not by structure) is left to
that family (:func:`claimed_elsewhere`), so such a family never becomes ambiguous.

Nothing here imports an optional dependency.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

from torch import nn

from vectorgate.base import ResidualGate

__all__ = [
    "callable_module",
    "child_names",
    "claimed_elsewhere",
    "find_outermost",
    "forward_takes",
    "inherits",
    "is_linear",
    "is_norm",
    "norm_children",
    "norm_dim",
]

_NORM_TYPES: tuple[type[nn.Module], ...] = tuple(
    t for t in (nn.LayerNorm, getattr(nn, "RMSNorm", None), nn.GroupNorm) if t is not None
)


def is_norm(module: object) -> bool:
    """Whether ``module`` is a normalisation layer: ``nn.LayerNorm``/``nn.RMSNorm``/
    ``nn.GroupNorm`` or a module whose class name contains "Norm" (``LlamaRMSNorm``,
    ``T5LayerNorm``, timm's ``LayerNorm``, ...)."""
    if not isinstance(module, nn.Module):
        return False
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


def is_linear(module: object) -> bool:
    """Whether ``module`` is an ``nn.Linear`` (subclasses included)."""
    return isinstance(module, nn.Linear)


def callable_module(module: object) -> bool:
    """Whether ``module`` is an ``nn.Module`` with a ``forward`` of its own (not a bare
    container such as ``nn.ModuleDict``, whose children a layer would call one by one:
    a forward hook on the container would never fire)."""
    return isinstance(module, nn.Module) and type(module).forward is not nn.Module.forward


def _is_gate_holder(module: nn.Module) -> bool:
    """A gate of vectorgate, or a container of them (``residual_gates``): added by a patch,
    not part of the layer's own structure."""
    if isinstance(module, ResidualGate):
        return True
    return isinstance(module, nn.ModuleDict) and all(isinstance(m, ResidualGate) for m in module.values())


def child_names(module: nn.Module) -> set[str]:
    """Names of the direct child modules of ``module``, leaving out vectorgate's own gates
    (so a layer is recognised the same before and after :func:`vectorgate.patch`)."""
    return {name for name, child in module.named_children() if not _is_gate_holder(child)}


def norm_children(module: nn.Module) -> set[str]:
    """Names of the direct children of ``module`` that are norms (see :func:`is_norm`)."""
    return {name for name, child in module.named_children() if is_norm(child)}


def inherits(module: nn.Module, known: Iterable[tuple[str, str]]) -> bool:
    """Whether the class of ``module`` is, or derives from, one of ``known``: pairs of
    (defining module, class name), e.g. ``("transformers.models.bert.modeling_bert",
    "BertLayer")``. Checked through the MRO, so the library need not be imported."""
    wanted = set(known)
    return any((cls.__module__, cls.__qualname__) in wanted for cls in type(module).__mro__)


def forward_takes(module: nn.Module, n_positional: int) -> bool:
    """Whether ``module.forward`` accepts ``n_positional`` positional arguments (besides self).

    True when the signature cannot be read (C extensions, wrapped forwards): structure then
    decides on its own.
    """
    try:
        sig = inspect.signature(type(module).forward)
    except (TypeError, ValueError):
        return True
    params = list(sig.parameters.values())[1:]  # drop self
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    return len(required) <= n_positional <= len(positional)


def norm_dim(norm: nn.Module) -> int | None:
    """The feature dimension a norm normalises: ``normalized_shape[-1]``, else its weight's
    last dimension, else ``hidden_size``/``dim`` attributes; None if none of these exist."""
    shape = getattr(norm, "normalized_shape", None)
    if shape:
        return int(shape[-1]) if isinstance(shape, tuple | list) else int(shape)
    weight = getattr(norm, "weight", None)
    if isinstance(weight, nn.Parameter) and weight.dim() >= 1:
        return int(weight.shape[-1])
    for attr in ("hidden_size", "dim", "num_channels"):
        value = getattr(norm, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def find_outermost(model: nn.Module, accept: Callable[[nn.Module], bool]) -> list[tuple[str, nn.Module]]:
    """Every submodule of ``model`` (itself included) that ``accept`` takes, in module order,
    leaving out those nested inside an accepted one (a layer is gated once, at its outermost
    match)."""
    found: list[tuple[str, nn.Module]] = []
    inside: str | None = None  # named_modules is pre-order: a match's submodules follow it
    for name, module in model.named_modules():
        if inside is not None and (inside == "" or name.startswith(inside + ".")):
            continue
        inside = None
        if accept(module):
            found.append((name, module))
            inside = name
    return found


def claimed_elsewhere(model: nn.Module) -> set[int]:
    """Ids of the layers of ``model`` that a registered family *not* matching by structure
    finds (a family naming its layer classes, e.g. a user's ``PreNormFamily`` with
    ``layer_classes``; a family counts as structural when its ``structural`` attribute is
    true). Structural families leave those layers alone, so an explicit family is never made
    ambiguous by a structural one that happens to fit the same layer."""
    from vectorgate.patching import FAMILIES

    return {
        id(layer)
        for family in list(FAMILIES.values())
        if not getattr(family, "structural", False)
        for _, layer in family.find_layers(model)
    }
