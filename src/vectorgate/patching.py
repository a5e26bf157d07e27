"""Gate the residual connections of an existing model in place: the model-agnostic machinery.

A *family* knows one kind of model (BERT-like encoders, Llama-like decoders, ...): it finds
the residual layers inside any model that contains them (base models and task heads alike),
says which residual *sites* each layer has (``"attention"``, ``"mlp"``) and what feature
dimension they carry, and describes how to gate one site as a list of reversible
:class:`Change` objects. :func:`patch` builds every gate and every change first and only
then applies them, undoing the applied ones if anything fails, so a model is either fully
patched or left exactly as it was.

Adding a family is one small class registered with :func:`register_family`; an optional
dependency's families live in a module listed in :data:`FAMILY_MODULES`, imported the
first time :func:`patch` looks for a family.

Two reusable ways to gate a site are provided here:

- :class:`ReplaceModule`: swap a child module for a gated one (post-LN output modules).
- :class:`GateBranchOutput`: forward hooks that turn a branch's output ``f`` into the gate's
  delta ``expm1(s) * x + exp(-s) * f`` (:meth:`ResidualGate.residual_delta`), for hosts that
  add the residual themselves (``x + f``): the host then computes ``alpha * x + beta * f``
  and, at ``c = 0``, exactly ``x + f``. The residual stream ``x`` is read either from the
  branch's own input (post-LN blocks whose branch reads x) or captured by a forward
  pre-hook on the pre-norm module that reads it, held only until the branch returns.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.variants import build_gate

__all__ = [
    "FAMILIES",
    "FAMILY_MODULES",
    "AddModule",
    "Change",
    "Family",
    "GateBranchOutput",
    "PatchState",
    "ReplaceModule",
    "SetAttribute",
    "count_parameters",
    "find_family",
    "gates",
    "is_patched",
    "make_gate_adapter",
    "mark_only_gates_trainable",
    "param_groups",
    "patch",
    "patch_state",
    "register_family",
    "reset_gates",
    "unpatch",
]

#: Modules whose import registers families for an optional dependency. A module whose
#: dependency is not installed is skipped (its models cannot exist then).
FAMILY_MODULES: list[str] = [
    "vectorgate.integrations.transformers",
    "vectorgate.integrations.timm",
]

#: name -> family instance, filled by :func:`register_family`.
FAMILIES: dict[str, Family] = {}

#: Attribute of a patched model that holds its :class:`PatchState`.
_STATE_ATTR = "_vectorgate_patch"


# ----------------------------------------------------------------------------- changes


class Change:
    """One reversible edit of a model. :func:`patch` applies a list of them all-or-nothing."""

    def apply(self) -> None:
        raise NotImplementedError

    def revert(self) -> None:
        raise NotImplementedError


class ReplaceModule(Change):
    """Replace ``parent.<name>`` by ``new`` (and back on :meth:`revert`)."""

    def __init__(self, parent: nn.Module, name: str, new: nn.Module) -> None:
        self.parent, self.name, self.new = parent, name, new
        self.old = getattr(parent, name)

    def apply(self) -> None:
        setattr(self.parent, self.name, self.new)

    def revert(self) -> None:
        setattr(self.parent, self.name, self.old)


class AddModule(Change):
    """Register ``module`` as ``parent.<name>`` (a new child: the gates of a hooked layer)."""

    def __init__(self, parent: nn.Module, name: str, module: nn.Module) -> None:
        if hasattr(parent, name):
            raise ValueError(
                f"cannot add the gates as {type(parent).__name__}.{name}: that attribute already exists"
            )
        self.parent, self.name, self.module = parent, name, module

    def apply(self) -> None:
        self.parent.add_module(self.name, self.module)

    def revert(self) -> None:
        delattr(self.parent, self.name)


class SetAttribute(Change):
    """Set an instance attribute (e.g. a ``forward`` override) and restore what was there on revert."""

    _MISSING = object()

    def __init__(self, obj: Any, name: str, value: Any) -> None:
        self.obj, self.name, self.value = obj, name, value
        self.old = self._MISSING

    def apply(self) -> None:
        self.old = self.obj.__dict__.get(self.name, self._MISSING)
        self.obj.__dict__[self.name] = self.value

    def revert(self) -> None:
        if self.old is self._MISSING:
            self.obj.__dict__.pop(self.name, None)
        else:
            self.obj.__dict__[self.name] = self.old


def _first_tensor_input(args: tuple, kwargs: dict[str, Any], module: nn.Module) -> Tensor:
    """The residual stream passed to a norm or branch: its first positional argument or
    ``hidden_states=``."""
    x = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(x, Tensor):
        raise TypeError(
            f"vectorgate expected {type(module).__name__} to be called with the residual stream "
            f"(a Tensor) as first argument or hidden_states=, got {type(x).__name__}"
        )
    return x


class _DeltaHooks:
    """The hook callables of one :class:`GateBranchOutput` site (a plain, picklable object).

    ``x`` is the residual stream of the call in progress: set by :meth:`capture` just before
    the branch runs and cleared by :meth:`replace_output`, so no tensor outlives the layer
    call. Gradient checkpointing re-runs the layer's forward, which re-runs both hooks in
    the same order, so the recomputation reads its own x.
    """

    def __init__(self, gate: ResidualGate) -> None:
        self.gate = gate
        self.x: Tensor | None = None
        self.z_source: Any = None
        """Set while token skipping is on: ``z_source(x)`` returns the z the skip decision
        already computed from this x (or None), so the gate does not project x twice."""

    def _delta(self, x: Tensor, f: Tensor) -> Tensor:
        z = None if self.z_source is None else self.z_source(x)
        return self.gate.residual_delta(x, f) if z is None else self.gate.residual_delta(x, f, z)

    def capture(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self.x = _first_tensor_input(args, kwargs, module)

    def replace_output(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        x = self.x
        self.x = None
        if x is None:
            raise RuntimeError(
                f"vectorgate: {type(module).__name__} ran before the module that reads its residual "
                "input; this layer's forward does not follow the order its family expects"
            )
        return _with_first(output, lambda f: self._delta(x, f))

    def replace_output_reading_input(
        self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any
    ) -> Any:
        x = _first_tensor_input(args, kwargs, module)
        return _with_first(output, lambda f: self._delta(x, f))


def _with_first(output: Any, fn) -> Any:
    """Apply ``fn`` to a branch output, or to the first element of a tuple output
    (attention modules return ``(out, weights, ...)``)."""
    if isinstance(output, Tensor):
        return fn(output)
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return (fn(output[0]), *output[1:])
    raise TypeError(
        f"vectorgate expected the branch to return a Tensor or a tuple starting with one, "
        f"got {type(output).__name__}"
    )


class GateBranchOutput(Change):
    """Make ``branch`` return the gate's delta instead of its output ``f`` (forward hooks).

    Args:
        branch: the module whose output the host adds to the residual stream x.
        gate: the gate for this site.
        capture: the module called with x just before ``branch`` (the pre-norm), or None
            when ``branch`` itself is called with x as first argument.
    """

    def __init__(self, branch: nn.Module, gate: ResidualGate, capture: nn.Module | None) -> None:
        self.branch, self.capture = branch, capture
        self.hooks = _DeltaHooks(gate)
        self.handles: list[Any] = []

    def apply(self) -> None:
        if self.capture is None:
            self.handles.append(
                self.branch.register_forward_hook(self.hooks.replace_output_reading_input, with_kwargs=True)
            )
        else:
            self.handles.append(
                self.capture.register_forward_pre_hook(self.hooks.capture, with_kwargs=True)
            )
            self.handles.append(
                self.branch.register_forward_hook(self.hooks.replace_output, with_kwargs=True)
            )

    def revert(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.hooks.x = None


# ----------------------------------------------------------------------------- families


class Family:
    """How to gate one kind of model. Subclass, set the class attributes, implement the methods.

    Attributes:
        name: registry key (e.g. ``"bert"``), stored in saved gate configs.
        description: the models it covers, shown when a model is not supported.
        sites: the residual sites of one layer, in forward order.
    """

    name: str = ""
    description: str = ""
    sites: tuple[str, ...] = ("attention", "mlp")

    def find_layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The residual layers of ``model`` in forward order, as (qualified name, layer).

        Empty when the model is not of this family."""
        raise NotImplementedError

    def site_dim(self, layer: nn.Module, site: str) -> int:
        """Feature dimension d of the residual stream at ``site`` of ``layer``."""
        raise NotImplementedError

    skip_sites: tuple[str, ...] = ()
    """Sites whose branch :mod:`vectorgate.skip` can run on the kept tokens only."""

    def gate_at(self, layer: nn.Module, site: str) -> ResidualGate:
        """The gate :func:`patch` put at ``site`` of ``layer``."""
        raise NotImplementedError(f"family {self.name!r} does not say where its gates live")

    def skip_changes(self, layer: nn.Module, site: str, skip: Any, patch_changes: Sequence[Change]) -> list[Change]:
        """The reversible edits that make ``site`` of a patched ``layer`` run its branch on the
        tokens ``skip`` (a :class:`vectorgate.skip.SkipSite`) keeps; see :mod:`vectorgate.skip`."""
        raise NotImplementedError(f"family {self.name!r} cannot skip tokens at site {site!r}")

    def changes(self, layer: nn.Module, gates: dict[str, ResidualGate]) -> list[Change]:
        """The edits that gate ``layer``'s sites (``gates`` maps site -> gate). Must not
        modify anything: :func:`patch` applies them."""
        raise NotImplementedError

    @staticmethod
    def layers_of_class(model: nn.Module, class_names: Iterable[str]) -> list[tuple[str, nn.Module]]:
        """Helper: every submodule whose class name is in ``class_names``, in module order."""
        wanted = set(class_names)
        return [(n, m) for n, m in model.named_modules() if type(m).__name__ in wanted]


def register_family(cls: type[Family]) -> type[Family]:
    """Class decorator: register a :class:`Family` subclass under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute `name`")
    if cls.name in FAMILIES and type(FAMILIES[cls.name]) is not cls:
        raise ValueError(f"a family named {cls.name!r} is already registered ({type(FAMILIES[cls.name]).__name__})")
    FAMILIES[cls.name] = cls()
    return cls


def _load_family_modules() -> None:
    for module_path in FAMILY_MODULES:
        try:
            importlib.import_module(module_path)
        except ImportError as err:
            # Only a missing optional dependency is expected here; anything else is a bug.
            if "pip install vectorgate[" not in str(err):
                raise


def _supported() -> str:
    return "; ".join(f"{f.name}: {f.description}" for f in FAMILIES.values()) or "none registered"


def find_family(model: nn.Module, family: str | None = None) -> tuple[Family, list[tuple[str, nn.Module]]]:
    """The family that recognises ``model`` and the layers it found.

    Raises:
        ValueError: no family (or more than one) recognises the model, or ``family`` is unknown.
    """
    _load_family_modules()
    if family is not None:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; supported families: {_supported()}")
        layers = FAMILIES[family].find_layers(model)
        if not layers:
            raise ValueError(f"family {family!r} found no layers in {type(model).__name__}")
        return FAMILIES[family], layers
    found = [(f, layers) for f in FAMILIES.values() if (layers := f.find_layers(model))]
    if not found:
        raise ValueError(
            f"vectorgate.patch does not support {type(model).__name__}: no registered family "
            f"recognises its layers. Supported families: {_supported()}. For other models, wrap "
            "the branches yourself with vectorgate.GatedResidual or register a Family."
        )
    if len(found) > 1:
        names = ", ".join(f.name for f, _ in found)
        raise ValueError(f"{type(model).__name__} matches several families ({names}); pass family=...")
    return found[0]


# ----------------------------------------------------------------------------- patch


@dataclass
class PatchState:
    """What :func:`patch` did to a model (kept on it; saved by :func:`vectorgate.save_gates`)."""

    family: str
    variant: str
    sites: tuple[str, ...]
    layers: tuple[int, ...]
    gate_kwargs: dict[str, Any]
    layer_names: tuple[str, ...]
    dims: dict[str, int] = field(default_factory=dict)
    """Qualified gate module name -> feature dimension."""
    changes: list[Change] = field(default_factory=list, repr=False)
    modules_to_save: tuple[str, ...] = ()
    """Non-gate modules trained with the gates (set by :func:`make_gate_adapter`); saved with them."""


def patch_state(model: nn.Module) -> PatchState | None:
    """The :class:`PatchState` of a model patched by :func:`patch`, else None."""
    return getattr(model, _STATE_ATTR, None)


def is_patched(model: nn.Module) -> bool:
    """Whether :func:`patch` has gated this model."""
    return patch_state(model) is not None


def _normalise_layers(layers: int | Sequence[int] | None, n: int) -> tuple[int, ...]:
    if layers is None:
        return tuple(range(n))
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    out = []
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"layers must be ints (layer indices), got {i!r}")
        if not -n <= i < n:
            raise ValueError(f"layer index {i} is out of range for a model with {n} layers")
        out.append(i % n)
    if len(set(out)) != len(out):
        raise ValueError(f"layers has duplicates: {list(layers)}")
    if not out:
        raise ValueError("layers is empty: nothing to patch")
    return tuple(sorted(out))


def _layer_factory(layer: nn.Module) -> dict[str, Any]:
    """Device and floating dtype of a layer's parameters, for its gates."""
    for p in layer.parameters():
        if p.is_floating_point():
            return {"device": p.device, "dtype": p.dtype}
    return {}


def patch(
    model: nn.Module,
    *,
    sites: Sequence[str] = ("attention", "mlp"),
    layers: int | Sequence[int] | None = None,
    variant: str = "vectorgate",
    family: str | None = None,
    **gate_kwargs: Any,
) -> nn.Module:
    """Gate the residual connections of ``model`` in place, keeping every pretrained weight.

    With the default gate (``init="zero_output"``: g's output zero, c = 1) the patched
    model's outputs equal the original's bit for bit, and every gate projection gets a
    gradient from the first step.

    Args:
        model: a supported model, base model or task head (e.g. ``BertModel``,
            ``BertForSequenceClassification``, ``LlamaForCausalLM``).
        sites: which residuals of each layer to gate: ``"attention"``, ``"mlp"``.
        layers: indices of the layers to gate (negative counts from the end); all by default.
        variant: residual variant, built with :func:`vectorgate.variants.build_gate`.
        family: force a family by name (only needed if several recognise the model).
        **gate_kwargs: passed to the gate (``rank``, ``curvature``, ``init``, ``init_curvature``, ...).
            Gates are created on each layer's device and in its parameter dtype.

    Returns:
        ``model`` itself, patched.

    Raises:
        ValueError: unsupported model, already patched, unknown site, bad layer indices,
            or a gate that cannot be built. The model is unchanged in every error case.
    """
    if is_patched(model):
        raise ValueError(
            f"{type(model).__name__} is already patched by vectorgate (state: {patch_state(model)}); "
            "patching twice would gate the residuals twice. Call vectorgate.unpatch(model) first."
        )
    fam, found = find_family(model, family)
    if isinstance(sites, str):
        sites = (sites,)
    sites = tuple(sites)
    unknown = [s for s in sites if s not in fam.sites]
    if unknown or not sites:
        raise ValueError(f"sites must be a non-empty subset of {fam.sites} for family {fam.name!r}, got {sites}")
    if len(set(sites)) != len(sites):
        raise ValueError(f"sites has duplicates: {sites}")
    sites = tuple(s for s in fam.sites if s in sites)  # forward order, whatever the caller's order
    chosen = _normalise_layers(layers, len(found))
    for name, _ in found:
        for sub_name, sub in model.get_submodule(name).named_modules() if name else model.named_modules():
            if isinstance(sub, ResidualGate):
                raise ValueError(
                    f"{type(model).__name__} already holds a gate at {name}.{sub_name}; refusing to "
                    "gate the same residual twice"
                )

    # Build everything first; nothing below touches the model until the loop that applies.
    changes: list[Change] = []
    for i in chosen:
        _, layer = found[i]
        factory = _layer_factory(layer)
        layer_gates = {}
        for site in sites:
            gate = build_gate(variant, fam.site_dim(layer, site), **gate_kwargs)
            layer_gates[site] = gate.to(**factory) if factory else gate
        changes.extend(fam.changes(layer, layer_gates))

    applied: list[Change] = []
    try:
        for change in changes:
            change.apply()
            applied.append(change)
        dims = {name: g.dim for name, g in gates(model)}
        state = PatchState(
            family=fam.name,
            variant=variant,
            sites=sites,
            layers=chosen,
            gate_kwargs=dict(gate_kwargs),
            layer_names=tuple(found[i][0] for i in chosen),
            dims=dims,
            changes=changes,
        )
        object.__setattr__(model, _STATE_ATTR, state)
    except BaseException:
        for change in reversed(applied):
            change.revert()
        raise
    return model


def unpatch(model: nn.Module) -> nn.Module:
    """Undo :func:`patch`: remove every gate and hook; the original modules come back
    (with whatever training did to their weights)."""
    state = patch_state(model)
    if state is None:
        raise ValueError(f"{type(model).__name__} is not patched by vectorgate")
    skipping = getattr(model, "_vectorgate_skipping", None)  # vectorgate.skip edits sit on top
    if skipping is not None:
        for change in reversed(skipping.changes):
            change.revert()
        object.__delattr__(model, "_vectorgate_skipping")
    for change in reversed(state.changes):
        change.revert()
    object.__delattr__(model, _STATE_ATTR)
    return model


# ----------------------------------------------------------------------------- training helpers


def gates(model: nn.Module) -> Iterator[tuple[str, ResidualGate]]:
    """Yield ``(qualified name, gate)`` for every :class:`ResidualGate` in ``model``.

    Nested gates (a gate inside a gate) are not yielded twice.
    """
    seen: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, ResidualGate):
            if any(name.startswith(p + ".") for p in seen):
                continue
            seen.append(name)
            yield name, module


def reset_gates(model: nn.Module) -> int:
    """Re-apply every gate's own initialisation (``reset_parameters``); returns how many.

    Needed after transformers initialised weights it did not load: a ``PreTrainedModel``
    subclass that builds gates in ``__init__`` and is loaded with ``from_pretrained``
    gets its gate parameters allocated but never initialised (transformers' ``_init_weights``
    does not know them: the curvature can come out as NaN or garbage), and
    ``model.init_weights()`` re-draws the gates' Linear layers with the backbone's init.
    """
    n = 0
    for _, gate in gates(model):
        reset = getattr(gate, "reset_parameters", None)
        if not callable(reset):
            raise TypeError(f"{type(gate).__name__} has no reset_parameters() to re-initialise it")
        reset()
        n += 1
    return n


def _gate_param_names(model: nn.Module) -> set[str]:
    return {
        f"{name}.{p_name}" if name else p_name
        for name, gate in gates(model)
        for p_name, _ in gate.named_parameters()
    }


def _matches(param_name: str, module_name: str) -> bool:
    """Whether ``param_name`` lies inside a module called ``module_name`` (by path components)."""
    parts = param_name.split(".")
    target = module_name.split(".")
    return any(parts[i : i + len(target)] == target for i in range(len(parts) - len(target)))


def mark_only_gates_trainable(model: nn.Module, extra: Sequence[str] = ("classifier",)) -> int:
    """Freeze everything but the gates (and the modules named in ``extra``), PEFT-style.

    Args:
        model: a model holding gates (see :func:`patch`).
        extra: module names to keep trainable too, matched against path components of
            parameter names (``"classifier"`` matches ``classifier.weight`` and
            ``model.classifier.dense.bias``). A name that matches nothing gets a warning.

    Returns:
        The number of trainable parameters left.

    Raises:
        ValueError: the model holds no gate.
    """
    if isinstance(extra, str):
        extra = (extra,)
    gate_params = _gate_param_names(model)
    if not gate_params:
        raise ValueError(f"{type(model).__name__} holds no vectorgate gate: call vectorgate.patch(model) first")
    used = dict.fromkeys(extra, False)
    trainable = 0
    for name, p in model.named_parameters():
        keep = name in gate_params
        for e in extra:
            if _matches(name, e):
                keep = used[e] = True
        p.requires_grad_(keep)
        trainable += p.numel() if keep else 0
    missing = [e for e, hit in used.items() if not hit]
    if missing:
        warnings.warn(
            f"mark_only_gates_trainable: no parameter of {type(model).__name__} lies in a module "
            f"named {missing}; those stay frozen",
            stacklevel=2,
        )
    return trainable


def make_gate_adapter(
    model: nn.Module, *, modules_to_save: Sequence[str] = ("classifier",), **patch_kwargs: Any
) -> nn.Module:
    """Gate-only adaptation in one call: gate ``model`` and freeze everything else.

    Patches ``model`` (unless it is patched already), then leaves trainable only the gates
    and the modules named in ``modules_to_save`` (e.g. a new classifier head), PEFT-style.
    :func:`vectorgate.save_gates` then saves exactly what trained (gates + those modules)
    and :func:`vectorgate.load_gates` puts it back onto a fresh base model::

        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        vectorgate.make_gate_adapter(model)                 # 1.78M trainable of 24.5M (MiniLM)
        opt = torch.optim.AdamW(vectorgate.param_groups(model, lr=2e-3))
        ...                                                 # train
        vectorgate.save_gates(model, "adapter/")            # gates + classifier

    Args:
        model: a supported model (see :func:`patch`), patched or not.
        modules_to_save: non-gate modules that train too, matched by name component.
        **patch_kwargs: passed to :func:`patch` (``sites``, ``layers``, ``rank``, ...);
            only when the model is not patched yet.

    Returns:
        ``model``, patched, with only the adapter trainable.

    Raises:
        ValueError: ``patch_kwargs`` given for an already patched model, or a name in
            ``modules_to_save`` that matches no parameter.
    """
    if isinstance(modules_to_save, str):
        modules_to_save = (modules_to_save,)
    if is_patched(model):
        if patch_kwargs:
            raise ValueError(f"{type(model).__name__} is already patched; patch options {sorted(patch_kwargs)} "
                             "would be ignored. Pass them only for an unpatched model.")
    else:
        patch(model, **patch_kwargs)
    names = [n for n, _ in model.named_parameters()]
    missing = [m for m in modules_to_save if not any(_matches(n, m) for n in names)]
    if missing:
        raise ValueError(f"modules_to_save: {type(model).__name__} has no module named {missing}")
    mark_only_gates_trainable(model, extra=tuple(modules_to_save))
    patch_state(model).modules_to_save = tuple(modules_to_save)
    return model


def param_groups(
    model: nn.Module,
    *,
    weight_decay: float = 0.01,
    lr: float | None = None,
    gate_lr: float | None = None,
    gate_weight_decay: float | None = 0.0,
    gate_lr_width_ref: int | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: weight decay only on matrices, gates on their own lr.

    nanoGPT's rule: tensors with ``dim >= 2`` (Linear weights, embeddings) are decayed;
    biases, norm weights and the gates' curvature (all ``dim < 2``) are not. The gates
    get their own groups so they can use a larger learning rate: at a backbone lr such as
    5e-5 the curvature barely leaves zero during fine-tuning.

    Args:
        model: any model; only parameters with ``requires_grad`` are included.
        weight_decay: decay of the backbone's matrices.
        lr: backbone learning rate (omitted from the groups when None: the optimizer's default).
        gate_lr: learning rate of the gates (defaults to ``lr``).
        gate_weight_decay: decay of the gates' matrices; default 0 (the gates start at the
            identity, and decay would only pull them back there). ``None``: ``weight_decay``.
        gate_lr_width_ref: width-aware gate learning rate. When set, ``gate_lr`` is the
            rate of a gate of width ``gate_lr_width_ref`` and the matrices of a gate of
            width d train at ``gate_lr * gate_lr_width_ref / d`` (vectors such as c and
            biases keep ``gate_lr``). Why: under Adam every weight moves by about the lr per
            step, so the change of z = W x grows with the d inputs it sums; scaling by 1/d
            (as muP does for hidden matrices) keeps the per-step change of the gate
            pre-activation the same at d = 384 and d = 4096. Our measurements tuned
            ``gate_lr`` at MiniLM's d = 384, so 384 is the reference to use with them.

    Returns:
        Groups (empty ones dropped), each ``{"params", "weight_decay", ["lr"], "name"}``: the
        backbone's and the gates' matrices and vectors (the gates' matrices once per width
        when ``gate_lr_width_ref`` is set); pass them to ``torch.optim.AdamW``.

    Raises:
        ValueError: no trainable parameter, or ``gate_lr_width_ref`` set without a gate lr
            (neither ``gate_lr`` nor ``lr``) or not a positive int.
    """
    gate_lr = gate_lr if gate_lr is not None else lr
    if gate_lr_width_ref is not None:
        if isinstance(gate_lr_width_ref, bool) or not isinstance(gate_lr_width_ref, int) or gate_lr_width_ref < 1:
            raise ValueError(f"gate_lr_width_ref must be None or a positive int, got {gate_lr_width_ref!r}")
        if gate_lr is None:
            raise ValueError("gate_lr_width_ref scales the gate learning rate: pass gate_lr (or lr)")
    gate_dims = {
        f"{name}.{p_name}" if name else p_name: getattr(gate, "dim", None)
        for name, gate in gates(model)
        for p_name, _ in gate.named_parameters()
    }
    # (is_gate, decay, width the lr is scaled for or None) -> parameters
    buckets: dict[tuple[bool, bool, int | None], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_gate, decay = name in gate_dims, p.dim() >= 2
        width = gate_dims.get(name) if is_gate and decay and gate_lr_width_ref is not None else None
        buckets.setdefault((is_gate, decay, width), []).append(p)
    groups = []
    for (is_gate, decay, width), params in sorted(buckets.items(), key=lambda kv: (kv[0][0], not kv[0][1], kv[0][2] or 0)):
        wd = (weight_decay if gate_weight_decay is None else gate_weight_decay) if is_gate else weight_decay
        label = f"{'gates' if is_gate else 'backbone'}/{'decay' if decay else 'no_decay'}"
        group: dict[str, Any] = {"params": params, "weight_decay": wd if decay else 0.0, "name": label}
        group_lr = gate_lr if is_gate else lr
        if width is not None:
            group_lr = gate_lr * gate_lr_width_ref / width
            group["name"] = f"{label}/d={width}"
        if group_lr is not None:
            group["lr"] = group_lr
        groups.append(group)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameter")
    return groups


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


