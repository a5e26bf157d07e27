"""The family registry: which kinds of model :func:`vectorgate.patch` knows, and how to find them.

A *family* knows one kind of model (BERT-like encoders, Llama-like decoders, ...): it finds
the residual layers inside any model that contains them (base models and task heads alike),
says which residual *sites* each layer has (``"attention"``, ``"mlp"``, ...) and what feature
dimension they carry, and describes how to gate one site as a list of reversible
:class:`~vectorgate.patching.changes.Change` objects.

Adding a family is one small class registered with :func:`register_family`. Families that
need an optional library live in an *integration* module, registered with
:func:`register_integration` (the built-in ones) or through the ``vectorgate.families``
entry-point group (third-party packages); an integration is imported the first time a
family is looked up, and only when the library it requires is installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from vectorgate._registry import register
from vectorgate.base import ResidualGate
from vectorgate.patching.changes import Change
from vectorgate.patching.gate_site import GateSite

if TYPE_CHECKING:
    from vectorgate.patching.config import GateConfig

__all__ = [
    "ENTRY_POINT_GROUP",
    "FAMILIES",
    "FAMILIES_DOC",
    "INTEGRATIONS",
    "Family",
    "check_model",
    "describe_families",
    "find_family",
    "load_integrations",
    "register_family",
    "register_integration",
]

#: name -> family instance, filled by :func:`register_family`.
FAMILIES: dict[str, Family] = {}

#: integration module -> the top-level package it needs (imported only when that is installed).
INTEGRATIONS: dict[str, str] = {}

#: Entry-point group through which other packages register integration modules.
ENTRY_POINT_GROUP = "vectorgate.families"

#: Where the docs list the families and the layer structure each recognises.
FAMILIES_DOC = (
    "'Supported models' in docs/transformers.md (timm: docs/vision_and_distributed.md)"
)

_loaded: set[str] = set()


class Family:
    """How to gate one kind of model. Subclass, set the class attributes, implement the methods.

    What a site is, beyond the edits that gate it, is data: the features (stacking,
    skipping) read these attributes and need no method of their own.

    Attributes:
        name: registry key (e.g. ``"bert"``), stored in saved gate configs.
        description: the models it covers (listed by :func:`describe_families`).
        expects: the module structure it recognises, in words (listed with ``description``).
        sites: every residual site a layer of this family can have, in forward order.
        skip_sites: sites whose branch :mod:`vectorgate.skip` can run on the kept tokens only.
        skip_branches: site -> dotted path (from the layer) of its token-wise branch, for sites
            gated by :class:`GateBranchOutput`: token skipping runs that module on the kept
            tokens. Sites of :attr:`skip_sites` not listed here need :meth:`skip_changes`.
        gate_sources: the values of :attr:`GateConfig.gate_source` the family supports;
            ``"normed"`` needs sites gated by :class:`GateBranchOutput` with a pre-norm.
        stack_targets: site -> dotted path (from the layer) of the branch's first projection,
            into which :func:`vectorgate.patching.stack_gate_projections` stacks the gate's.
        stack_reads: what those projections read: ``"normed"`` (a pre-norm's output: only
            gates patched with ``gate_source="normed"`` read it too) or ``"x"``.
    """

    name: str = ""
    description: str = ""
    expects: str = ""
    sites: tuple[str, ...] = ("attention", "mlp")
    skip_sites: tuple[str, ...] = ()
    skip_branches: ClassVar[dict[str, str]] = {}
    gate_sources: tuple[str, ...] = ("x",)
    stack_targets: ClassVar[dict[str, str]] = {}
    stack_reads: str = "normed"

    def find_layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The residual layers of ``model`` in forward order, as (qualified name, layer).

        Empty when the model is not of this family."""
        raise NotImplementedError

    def all_layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """Every layer of this family in ``model``, in forward order: those
        :meth:`find_layers` finds and those built with their gates in them (see
        :meth:`built_in_config`). Layer indices (``GateConfig.layers``) count these.
        Default: :meth:`find_layers`."""
        return self.find_layers(model)

    def built_in_config(self, layer: nn.Module) -> GateConfig | None:
        """For a layer *built* with its gates (a gated layer class of the integration, e.g.
        timm's :class:`~vectorgate.integrations.timm.GatedBlock`, not a layer
        :func:`vectorgate.patch` gated): the :class:`GateConfig` its gates were built with
        (``variant``, ``gate_kwargs``, ``sites``). None (default) for any other layer.

        :func:`vectorgate.save_gates` and :func:`vectorgate.load_gates` use it for models that
        were never patched, so gates move between a patched model and one built gated."""
        return None

    def layer_sites(self, layer: nn.Module) -> tuple[str, ...]:
        """The sites ``layer`` has (a subset of :attr:`sites`; e.g. only decoder layers with
        cross-attention have ``"cross_attention"``). Default: all of :attr:`sites`."""
        return self.sites

    def site_dim(self, layer: nn.Module, site: str) -> int:
        """Feature dimension d of the residual stream at ``site`` of ``layer``."""
        raise NotImplementedError

    def skip_changes(self, layer: nn.Module, site: str, gate_site: GateSite, skip: Any) -> list[Change]:
        """The reversible edits that make ``site`` of a patched ``layer`` run its branch on the
        tokens ``skip`` (a :class:`vectorgate.skip.SkipSite`) keeps, for a site whose branch is
        not simply one module (see :attr:`skip_branches`); see :mod:`vectorgate.skip`."""
        raise NotImplementedError(f"family {self.name!r} cannot skip tokens at site {site!r}")

    def changes(self, layer: nn.Module, gates: dict[str, ResidualGate]) -> list[Change]:
        """The edits that gate ``layer``'s sites (``gates`` maps site -> gate). Must not
        modify anything: :func:`vectorgate.patch` applies them."""
        raise NotImplementedError

    @staticmethod
    def layers_of_class(model: nn.Module, class_names: Iterable[str]) -> list[tuple[str, nn.Module]]:
        """Helper: every submodule whose class name is in ``class_names``, in module order."""
        wanted = set(class_names)
        return [(n, m) for n, m in model.named_modules() if type(m).__name__ in wanted]


def register_family(cls: type[Family]) -> type[Family]:
    """Class decorator: register a :class:`Family` subclass under its ``name``.

    Raises:
        ValueError: ``name`` is empty or taken by another class.
    """
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute `name`")
    register(FAMILIES, cls.name, cls(), kind="family", same=lambda old, new: type(old) is type(new))
    return cls


def register_integration(module: str, *, requires: str) -> None:
    """Import ``module`` (which registers families) the first time a family is looked up,
    provided the package ``requires`` is installed.

    Any error raised while importing ``module`` when ``requires`` *is* installed propagates:
    a broken integration is a bug, not a missing option.
    """
    INTEGRATIONS[module] = requires


def load_integrations() -> None:
    """Import every registered integration whose library is installed, and the modules
    registered under the :data:`ENTRY_POINT_GROUP` entry points (once each)."""
    for module, requires in INTEGRATIONS.items():
        if module not in _loaded and importlib.util.find_spec(requires) is not None:
            importlib.import_module(module)
            _loaded.add(module)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.value not in _loaded:
            entry.load()
            _loaded.add(entry.value)


register_integration("vectorgate.integrations.transformers", requires="transformers")
register_integration("vectorgate.integrations.timm", requires="timm")


def _supported() -> str:
    """The registered family names, on one line, and where to read what each recognises."""
    names = ", ".join(FAMILIES) or "none registered"
    return f"{names} (what each recognises: {FAMILIES_DOC}, or print(vectorgate.patching.describe_families()))"


def describe_families() -> str:
    """Every registered family, one per line: its name, the models it covers and the module
    structure it recognises (what :func:`vectorgate.patch` looks for in a model)."""
    load_integrations()

    def one(f: Family) -> str:
        return f"{f.name}: {f.description}" + (f" (expects {f.expects})" if f.expects else "")

    return "\n".join(one(f) for f in FAMILIES.values()) or "no family registered"


def check_model(model: Any, what: str = "vectorgate.patch") -> None:
    """Raise a TypeError that says what arrived unless ``model`` is a torch ``nn.Module``.

    A string (or path) gets the hint to load the model first: ``patch("bert-base-uncased")``
    is a natural first try.
    """
    if isinstance(model, nn.Module):
        return
    if isinstance(model, str | os.PathLike):
        raise TypeError(
            f"{what} expected a torch nn.Module (the model itself), got the {type(model).__name__} "
            f"{os.fspath(model)!r}; load the model first, e.g. model = "
            f"AutoModel.from_pretrained({os.fspath(model)!r}) (or the task class you train, such as "
            "AutoModelForSequenceClassification), then pass that model"
        )
    raise TypeError(f"{what} expected a torch nn.Module (the model itself), got {type(model).__name__}: {model!r:.80}")


def _holds_gates(model: nn.Module) -> str | None:
    """The name of a vectorgate gate inside ``model``, if it holds one."""
    return next((name for name, m in model.named_modules() if isinstance(m, ResidualGate)), None)


def find_family(model: nn.Module, family: str | None = None) -> tuple[Family, list[tuple[str, nn.Module]]]:
    """The family that recognises ``model`` and the layers it found.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` (e.g. a model name: load it first).
        ValueError: no family (or more than one) recognises the model, or ``family`` is unknown.
    """
    check_model(model)
    load_integrations()
    if family is not None:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; supported families: {_supported()}")
        layers = FAMILIES[family].find_layers(model)
        if not layers:
            raise ValueError(f"family {family!r} found no layers in {type(model).__name__}")
        return FAMILIES[family], layers
    found = [(f, layers) for f in FAMILIES.values() if (layers := f.find_layers(model))]
    if not found:
        gate = _holds_gates(model)
        held = (
            f" It already holds vectorgate gates (e.g. {gate or '(root)'}): a model built with gated "
            "layers needs no patch." if gate is not None else ""
        )
        raise ValueError(
            f"vectorgate.patch does not support {type(model).__name__}: no registered family "
            f"recognises its layers.{held} Supported families: {_supported()}. For other models, wrap "
            "the branches yourself with vectorgate.GatedResidual or register a Family."
        )
    if len(found) > 1:
        names = ", ".join(f.name for f, _ in found)
        raise ValueError(f"{type(model).__name__} matches several families ({names}); pass family=...")
    return found[0]
